"""Checks of an exported version's files, without running it.

Each returns a list of ``CheckResult`` (``check_ops`` also the ops it found).
"""

import os

import tensorflow as tf

from export import contract, graph_ops, warmup
from export.report import Checks
from export.saved_contract import describe_shape, saved_variable_names, tensor_info_dims


def check_layout(version_dir, expect_version_name):
    """The files TF Serving reads are where it looks; results."""
    out = Checks()
    if not os.path.isdir(version_dir):
        out.add("layout", False, f"{version_dir!r} is not a directory")
        return out.results
    name = os.path.basename(os.path.normpath(version_dir))
    if expect_version_name:
        out.add(
            "layout",
            name.isdigit(),
            f"version directory name {name!r} "
            + ("is an integer" if name.isdigit() else "is not an integer; TF Serving ignores it"),
        )
    for rel in (
        "saved_model.pb",
        os.path.join("variables", "variables.index"),
        os.path.join(warmup.ASSETS_EXTRA, warmup.WARMUP_FILE),
    ):
        present = os.path.isfile(os.path.join(version_dir, rel))
        out.add("layout", present, f"{rel} {'present' if present else 'missing'}")
    return out.results


def check_signature_defs(meta_graph, specs):
    """Every SignatureDef matches its spec: keys, dtypes, shapes, unknown batch; results."""
    out = Checks()
    for name, spec in specs.items():
        sig = meta_graph.signature_def[name]
        problems = []
        if sig.method_name != contract.PREDICT_METHOD_NAME:
            problems.append(
                f"method_name {sig.method_name!r}, expected {contract.PREDICT_METHOD_NAME!r}"
            )
        for side, want, got in (
            ("input", spec.inputs, sig.inputs),
            ("output", spec.outputs, sig.outputs),
        ):
            if set(got) != set(want):
                problems.append(f"{side} keys {sorted(got)}, expected {sorted(want)}")
            for key in sorted(set(got) & set(want)):
                info, tensor = got[key], want[key]
                dtype = tf.as_dtype(info.dtype).name
                dims = tensor_info_dims(info)
                if dtype != tensor.dtype:
                    problems.append(f"{side} {key!r} dtype {dtype}, expected {tensor.dtype}")
                if dims is None or not tensor.matches_shape(dims):
                    problems.append(
                        f"{side} {key!r} shape "
                        f"{'unknown' if dims is None else describe_shape(dims)}"
                        f", expected {describe_shape(tensor.shape)}"
                    )
                elif dims[0] != -1:
                    problems.append(
                        f"{side} {key!r} batch dimension is {dims[0]}, expected unknown (B)"
                    )
        summary = (
            ", ".join(f"{k} {t.describe()}" for k, t in spec.inputs.items())
            + " -> "
            + ", ".join(f"{k} {t.describe()}" for k, t in spec.outputs.items())
        )
        out.add("signature_def", not problems, "; ".join(problems) or summary, name)
    return out.results


def check_ops(meta_graph, names):
    """(results, {signature: sorted op types}): every op has a GPU kernel (``graph_ops``)."""
    out = Checks()
    found = {}
    for name in names:
        problems, ops = graph_ops.check_signature(meta_graph, name)
        found[name] = sorted(ops)
        if problems:
            out.add(
                "ops",
                False,
                "; ".join(f"{p.rule}: {p.op} (node {p.node}): {p.detail}" for p in problems),
                name,
            )
        else:
            out.add("ops", True, f"{len(ops)} op types, all with GPU kernels", name)
    return out.results, found


def check_variables(meta_graph, manifest, model, kind, decoder_only):
    """A decoder-only export holds none of the encoder's variables; results."""
    out = Checks()
    saved = sorted(set(saved_variable_names(meta_graph)))
    if not decoder_only:
        out.add("variables", bool(saved), f"{len(saved)} variables saved")
        return out.results
    forbidden = set((manifest or {}).get("encoder_variables", []))
    if model is not None:
        from export.endpoints import encoder_variable_paths

        forbidden |= set(encoder_variable_paths(model, kind))
    if not forbidden:
        out.add(
            "variables",
            True,
            f"{len(saved)} variables saved (encoder variables unknown: not compared)",
        )
        return out.results
    leaked = sorted(set(saved) & forbidden)
    out.add(
        "variables",
        not leaked,
        f"decoder-only export saves encoder variables {leaked}"
        if leaked
        else f"{len(saved)} variables saved, none of the {len(forbidden)} encoder variables",
    )
    return out.results
