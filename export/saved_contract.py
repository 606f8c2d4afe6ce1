"""The contract an exported version carries, read from its files.

``resolve_contract`` says what kind of export a version is (from the manifest the
exporter writes, or else inferred from its signature names), its latent size and
data shape, and so the ``contract.SignatureSpec`` of each signature, which every
other check compares against.
"""

import json
import os

from tensorflow.core.protobuf import saved_model_pb2

from export import contract, warmup
from export.report import Checks, ExportContract

MANIFEST_FILE = "tfp_vae_export.json"
SERVE_TAG = "serve"


def read_manifest(version_dir):
    path = os.path.join(version_dir, warmup.ASSETS_EXTRA, MANIFEST_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_meta_graph(version_dir, tag=SERVE_TAG):
    """The MetaGraphDef tagged ``tag`` from saved_model.pb."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    tags = [list(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ValueError(f"No MetaGraph tagged {tag!r} in {version_dir}; found tags {tags}.")


def saved_variable_names(meta_graph):
    """Names of every variable in the SavedModel's object graph (without ':0')."""
    return sorted(
        node.variable.name.split(":")[0]
        for node in meta_graph.object_graph_def.nodes
        if node.WhichOneof("kind") == "variable"
    )


def contract_signatures(meta_graph):
    return sorted(k for k in meta_graph.signature_def if not k.startswith("__"))


def describe_shape(dims):
    return "[" + ", ".join("B" if d in (-1, None) else str(d) for d in dims) + "]"


def tensor_info_dims(info):
    if info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in info.tensor_shape.dim]


def resolve_contract(meta_graph, manifest, model=None):
    """(ExportContract or None, results): what the export is, from its manifest or signatures."""
    out = Checks()
    names = contract_signatures(meta_graph)
    kind = decoder_only = None
    if manifest and manifest.get("kind") in contract.KINDS:
        kind, decoder_only = manifest["kind"], bool(manifest.get("decoder_only"))
    else:
        encode = meta_graph.signature_def.get(contract.ENCODE)
        inferred = contract.infer_kind(names, list(encode.outputs) if encode else None)
        if inferred:
            kind, decoder_only = inferred
    if kind is None:
        out.add(
            "signatures",
            False,
            f"signatures {names} match no export kind; expected one of "
            + "; ".join(
                f"{k}{' decoder-only' if d else ''}: {list(contract.expected_signatures(k, d))}"
                for k in contract.KINDS
                for d in (False, True)
            ),
        )
        return None, out.results
    if model is not None:
        from export.endpoints import model_kind

        live_kind = model_kind(model)
        out.add(
            "signatures",
            live_kind == kind,
            f"export kind {kind!r}, live model kind {live_kind!r}",
        )
    expected = contract.expected_signatures(kind, decoder_only)
    missing = sorted(set(expected) - set(names))
    extra = sorted(set(names) - set(expected))
    out.add(
        "signatures",
        not missing and not extra,
        f"{kind}{' decoder-only' if decoder_only else ''} export carries {names}"
        + (f"; missing {missing}" if missing else "")
        + (f"; unexpected {extra}" if extra else ""),
    )

    latent_dim = data_shape = None
    if manifest and "latent_dim" in manifest and "data_shape" in manifest:
        latent_dim, data_shape = int(manifest["latent_dim"]), tuple(manifest["data_shape"])
    elif contract.DECODE in meta_graph.signature_def:
        sig = meta_graph.signature_def[contract.DECODE]
        z_dims = tensor_info_dims(sig.inputs["z"]) if "z" in sig.inputs else None
        mean_dims = tensor_info_dims(sig.outputs["mean"]) if "mean" in sig.outputs else None
        if z_dims and len(z_dims) == 2 and mean_dims and len(mean_dims) >= 2:
            latent_dim, data_shape = z_dims[1], tuple(mean_dims[1:])
    if latent_dim is None or any(d is None or d < 0 for d in (latent_dim, *data_shape)):
        out.add("signature_def", False, "cannot tell the latent size and data shape from decode")
        return None, out.results
    if model is not None:
        out.add(
            "signatures",
            (model.latent_dim, tuple(model.data_shape)) == (latent_dim, data_shape),
            f"export latent_dim={latent_dim} data_shape={data_shape}; live model "
            f"latent_dim={model.latent_dim} data_shape={tuple(model.data_shape)}",
        )
    specs = {
        n: contract.signature_spec(n, kind, latent_dim, data_shape) for n in expected if n in names
    }
    return ExportContract(kind, decoder_only, latent_dim, data_shape, specs), out.results
