"""Validation of an exported version directory against the serving contract.

``validate(version_dir, model=None)`` runs, in order:

``layout``         saved_model.pb, variables/ and the warmup file are where TF Serving
                   looks, under an integer version directory.
``signatures``     the set of signatures is the one the export's kind carries.
``signature_def``  every input and output key, dtype and shape matches ``export.contract``,
                   with the batch dimension unknown, and the method is Predict.
``ops``            every op a signature runs has a GPU kernel, and none is a Python
                   callback, an unknown op or a stateful random op (``export.graph_ops``).
``variables``      a decoder-only export holds none of the encoder's variables.
``reload``         ``tf.saved_model.load`` and every signature at two batch sizes: output
                   keys, dtypes, shapes and finiteness; ``serving_default`` equals
                   ``decode``.
``live_model``     (with ``model``) each signature is allclose to the live Keras model.
``seeds``          for seeded signatures: the same rows give identical outputs, different
                   rows give different outputs, and a row's output is the same alone and
                   inside a bigger batch.
``session``        the TF1 session loader (what ``tensorflow_model_server`` does) loads the
                   graph with tag "serve" and runs every signature through its SignatureDef
                   tensor names; results match the reloaded functions.
``warmup``         the warmup records parse as PredictionLogs, cover every signature, carry
                   the right inputs and run.

Without the live model every check but ``live_model`` still runs. Every failure names
the signature, the check and the values; ``validate`` raises ``ValidationError`` (whose
``report`` holds all results) when any check fails.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.util import deprecation

from export import contract, graph_ops, warmup

MANIFEST_FILE = "tfp_vae_export.json"
SERVE_TAG = "serve"
DEFAULT_BATCH_SIZES = (2, 5)

# Exported graph against the live (eager) model: different executors, same kernels.
LIVE_RTOL, LIVE_ATOL = 1e-4, 1e-5
# One row alone against the same row inside a batch, and TF1 session against TF2 reload.
ROW_RTOL, ROW_ATOL = 1e-5, 1e-6

_DTYPES = {"float32": tf.float32, "int32": tf.int32}


class ValidationError(Exception):
    """An export broke the contract; ``report`` holds every check's result."""

    def __init__(self, report):
        self.report = report
        super().__init__(report.failure_message())


@dataclasses.dataclass
class CheckResult:
    check: str
    signature: str  # None for checks about the whole export
    ok: bool
    detail: str

    def __str__(self):
        where = f"[{self.signature}] " if self.signature else ""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check:<13} {where}{self.detail}"


class ValidationReport:
    """The results of every check run on one version directory."""

    def __init__(self, version_dir):
        self.version_dir = version_dir
        self.results = []
        self.kind = None
        self.decoder_only = None
        self.latent_dim = None
        self.data_shape = None
        self.signatures = ()
        self.ops = {}  # signature -> sorted op types it runs
        self.not_written = False  # set by the exporter when validation stops an export

    def add(self, check, ok, detail, signature=None):
        self.results.append(CheckResult(check, signature, bool(ok), detail))
        return ok

    @property
    def ok(self):
        return all(r.ok for r in self.results)

    @property
    def failures(self):
        return [r for r in self.results if not r.ok]

    def failure_message(self):
        lines = [f"Validation of {self.version_dir} failed ({len(self.failures)} check(s)):"]
        if self.not_written:
            lines[0] = lines[0][:-1] + "; the version was not written:"
        lines += [f"  {r}" for r in self.failures]
        return "\n".join(lines)

    def __str__(self):
        head = (
            f"Validation of {self.version_dir}: {'PASSED' if self.ok else 'FAILED'} "
            f"({len(self.results) - len(self.failures)}/{len(self.results)} checks passed)"
        )
        facts = []
        if self.kind:
            facts.append(
                f"  kind={self.kind} decoder_only={self.decoder_only} latent_dim={self.latent_dim} "
                f"data_shape={self.data_shape} signatures={list(self.signatures)}"
            )
        return "\n".join([head, *facts, *(f"  {r}" for r in self.results)])


# --------------------------------------------------------------------------- helpers


def _describe_shape(dims):
    return "[" + ", ".join("B" if d in (-1, None) else str(d) for d in dims) + "]"


def _tensor_info_dims(info):
    if info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in info.tensor_shape.dim]


def _first_difference(a, b, rtol, atol):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    bad = ~np.isclose(a, b, rtol=rtol, atol=atol)
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return (
        f"max |diff| = {np.max(np.abs(a - b)):.3g} (rtol={rtol}, atol={atol}); first at "
        f"index {index}: {a[index]:.6g} vs {b[index]:.6g}"
    )


def _compare(report, check, signature, got, want, rtol, atol, what):
    """allclose per output key; one result for the signature."""
    problems = []
    for key in sorted(want):
        if key not in got:
            problems.append(f"{key} missing")
            continue
        a, b = np.asarray(got[key]), np.asarray(want[key])
        if a.shape != b.shape:
            problems.append(f"{key} has shape {a.shape} vs {b.shape}")
        elif not np.allclose(a, b, rtol=rtol, atol=atol):
            problems.append(f"{key} differs: {_first_difference(a, b, rtol, atol)}")
    if problems:
        return report.add(check, False, f"{what}: " + "; ".join(problems), signature)
    how = "equal" if rtol == 0 and atol == 0 else "allclose"
    return report.add(check, True, f"{what}: {how} on {sorted(want)}", signature)


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


def reference_outputs(model, kind, signature, inputs, num_ll_samples=None):
    """What the live model returns for ``signature`` on ``inputs`` (numpy dict)."""
    t = {k: tf.constant(v) for k, v in inputs.items()}
    if signature in (contract.SERVING_DEFAULT, contract.DECODE):
        decode = getattr(model, "decode_mean", None) or model.decode
        out = {"mean": decode(t["z"])}
    elif signature == contract.GENERATE:
        out = model.generate(t["seed"])
    elif signature == contract.ENCODE:
        if kind == contract.AUTOENCODER:
            out = {"code": model.encode(t["x"])}
        else:
            q = model.posterior(t["x"])
            if hasattr(q, "scale"):  # Gaussian: the distribution's own mean and scale
                out = {"loc": q.mean(), "scale_tril": q.scale.to_dense()}
            else:  # a flow has no affine scale; its family defines the encoding
                loc, scale_tril = model.posterior_family.encoding(
                    model.posterior_params(t["x"]), model.latent_dim)
                out = {"loc": loc, "scale_tril": scale_tril}
    elif signature == contract.RECONSTRUCT:
        out = {"mean": model.reconstruct(t["x"])}
    elif signature == contract.LOG_LIKELIHOOD:
        if num_ll_samples is None:
            raise ValueError("num_ll_samples is unknown (no manifest); cannot compare.")
        ll, elbo = model.log_likelihood_from_seeds(t["x"], t["seed"], num_ll_samples)
        out = {"log_likelihood": ll, "elbo": elbo}
    else:
        raise ValueError(f"No reference for signature {signature!r}.")
    return {k: np.asarray(v) for k, v in out.items()}


def _call(fn, inputs):
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


# ------------------------------------------------------------------------ the checks


def _check_layout(report, version_dir, expect_version_name):
    if not os.path.isdir(version_dir):
        report.add("layout", False, f"{version_dir!r} is not a directory")
        return False
    ok = True
    name = os.path.basename(os.path.normpath(version_dir))
    if expect_version_name:
        ok &= report.add(
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
        ok &= report.add("layout", present, f"{rel} {'present' if present else 'missing'}")
    return ok


def _resolve_contract(report, meta_graph, manifest, model):
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
        report.add(
            "signatures",
            False,
            f"signatures {names} match no export kind; expected one of "
            + "; ".join(
                f"{k}{' decoder-only' if d else ''}: {list(contract.expected_signatures(k, d))}"
                for k in contract.KINDS
                for d in (False, True)
            ),
        )
        return None
    if model is not None:
        from export.endpoints import model_kind

        live_kind = model_kind(model)
        report.add(
            "signatures",
            live_kind == kind,
            f"export kind {kind!r}, live model kind {live_kind!r}",
        )
    expected = contract.expected_signatures(kind, decoder_only)
    missing = sorted(set(expected) - set(names))
    extra = sorted(set(names) - set(expected))
    report.add(
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
        z_dims = _tensor_info_dims(sig.inputs["z"]) if "z" in sig.inputs else None
        mean_dims = _tensor_info_dims(sig.outputs["mean"]) if "mean" in sig.outputs else None
        if z_dims and len(z_dims) == 2 and mean_dims and len(mean_dims) >= 2:
            latent_dim, data_shape = z_dims[1], tuple(mean_dims[1:])
    if latent_dim is None or any(d is None or d < 0 for d in (latent_dim, *data_shape)):
        report.add("signature_def", False, "cannot tell the latent size and data shape from decode")
        return None
    if model is not None:
        report.add(
            "signatures",
            (model.latent_dim, tuple(model.data_shape)) == (latent_dim, data_shape),
            f"export latent_dim={latent_dim} data_shape={data_shape}; live model "
            f"latent_dim={model.latent_dim} data_shape={tuple(model.data_shape)}",
        )
    report.kind, report.decoder_only = kind, decoder_only
    report.latent_dim, report.data_shape = latent_dim, data_shape
    report.signatures = tuple(n for n in expected if n in names)
    return {n: contract.signature_spec(n, kind, latent_dim, data_shape) for n in report.signatures}


def _check_signature_defs(report, meta_graph, specs):
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
                dims = _tensor_info_dims(info)
                if dtype != tensor.dtype:
                    problems.append(f"{side} {key!r} dtype {dtype}, expected {tensor.dtype}")
                if dims is None or not tensor.matches_shape(dims):
                    problems.append(
                        f"{side} {key!r} shape "
                        f"{'unknown' if dims is None else _describe_shape(dims)}"
                        f", expected {_describe_shape(tensor.shape)}"
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
        report.add("signature_def", not problems, "; ".join(problems) or summary, name)


def _check_ops(report, meta_graph, names):
    for name in names:
        problems, ops = graph_ops.check_signature(meta_graph, name)
        report.ops[name] = sorted(ops)
        if problems:
            report.add(
                "ops",
                False,
                "; ".join(f"{p.rule}: {p.op} (node {p.node}): {p.detail}" for p in problems),
                name,
            )
        else:
            report.add("ops", True, f"{len(ops)} op types, all with GPU kernels", name)


def _check_variables(report, meta_graph, manifest, model, kind, decoder_only):
    saved = sorted(set(saved_variable_names(meta_graph)))
    if not decoder_only:
        report.add("variables", bool(saved), f"{len(saved)} variables saved")
        return
    forbidden = set((manifest or {}).get("encoder_variables", []))
    if model is not None:
        from export.endpoints import encoder_variable_paths

        forbidden |= set(encoder_variable_paths(model, kind))
    if not forbidden:
        report.add(
            "variables",
            True,
            f"{len(saved)} variables saved (encoder variables unknown: not compared)",
        )
        return
    leaked = sorted(set(saved) & forbidden)
    report.add(
        "variables",
        not leaked,
        f"decoder-only export saves encoder variables {leaked}"
        if leaked
        else f"{len(saved)} variables saved, none of the {len(forbidden)} encoder variables",
    )


def _check_outputs(report, name, spec, out, batch):
    problems = []
    if set(out) != set(spec.outputs):
        problems.append(f"output keys {sorted(out)}, expected {sorted(spec.outputs)}")
    for key in sorted(set(out) & set(spec.outputs)):
        value, tensor = out[key], spec.outputs[key]
        want_shape = (batch, *tensor.shape[1:])
        if value.dtype.name != tensor.dtype:
            problems.append(f"{key} dtype {value.dtype.name}, expected {tensor.dtype}")
        if tuple(value.shape) != want_shape:
            problems.append(f"{key} shape {tuple(value.shape)}, expected {want_shape}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            problems.append(f"{key} has {int(np.sum(~np.isfinite(value)))} non-finite values")
    return report.add(
        "reload",
        not problems,
        f"batch {batch}: " + ("; ".join(problems) or f"outputs {sorted(out)} as specified"),
        name,
    )


def _check_reload(report, loaded, specs, batch_sizes, model, manifest):
    """Runs every reloaded signature; returns {(name, batch): (inputs, outputs)}."""
    results = {}
    missing = sorted(set(specs) - set(loaded.signatures))
    if missing:
        report.add("reload", False, f"tf.saved_model.load exposes no signatures {missing}")
    for name, spec in specs.items():
        if name not in loaded.signatures:
            continue
        fn = loaded.signatures[name]
        for batch in batch_sizes:
            inputs = contract.example_inputs(spec, batch, seed=batch)
            try:
                out = _call(fn, inputs)
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                report.add(
                    "reload",
                    False,
                    f"batch {batch}: calling it raised {type(e).__name__}: {e}",
                    name,
                )
                continue
            if _check_outputs(report, name, spec, out, batch):
                results[(name, batch)] = (inputs, out)
            if model is not None:
                try:
                    want = reference_outputs(
                        model, report.kind, name, inputs, (manifest or {}).get("num_ll_samples")
                    )
                except Exception as e:  # noqa: BLE001
                    report.add(
                        "live_model",
                        False,
                        f"batch {batch}: live model raised {type(e).__name__}: {e}",
                        name,
                    )
                    continue
                _compare(
                    report,
                    "live_model",
                    name,
                    out,
                    want,
                    LIVE_RTOL,
                    LIVE_ATOL,
                    f"batch {batch} vs live model",
                )
    for batch in batch_sizes:
        a = results.get((contract.SERVING_DEFAULT, batch))
        b = results.get((contract.DECODE, batch))
        if a and b:
            _compare(
                report,
                "reload",
                contract.SERVING_DEFAULT,
                a[1],
                b[1],
                0.0,
                0.0,
                f"batch {batch} equals decode",
            )
    return results


def _seed_rows(rows):
    return np.asarray(rows, np.int32)


def _check_seeds(report, loaded, specs):
    for name in contract.SEEDED_SIGNATURES:
        if name not in specs or name not in loaded.signatures:
            continue
        spec = specs[name]
        fn = loaded.signatures[name]
        base = contract.example_inputs(spec, 1, seed=7)
        seeds = _seed_rows([[11, 0], [11, 1], [12, 0], [11, 0]])
        batch = {
            k: (seeds if k == "seed" else np.repeat(v, len(seeds), axis=0)) for k, v in base.items()
        }
        try:
            first = _call(fn, batch)
            again = _call(fn, batch)
            alone = _call(fn, {k: v[1:2] for k, v in batch.items()})
        except Exception as e:  # noqa: BLE001
            report.add("seeds", False, f"calling it raised {type(e).__name__}: {e}", name)
            continue
        _compare(
            report,
            "seeds",
            name,
            again,
            first,
            0.0,
            0.0,
            "same seeds called twice give identical outputs",
        )
        _compare(
            report,
            "seeds",
            name,
            {k: v[3] for k, v in first.items()},
            {k: v[0] for k, v in first.items()},
            ROW_RTOL,
            ROW_ATOL,
            "two rows with seed (11, 0) in one batch agree",
        )
        _compare(
            report,
            "seeds",
            name,
            alone,
            {k: v[1:2] for k, v in first.items()},
            ROW_RTOL,
            ROW_ATOL,
            "row with seed (11, 1) alone equals it inside a batch of 4",
        )
        same = [
            f"rows {i} and {j}"
            for i, j in ((0, 1), (0, 2), (1, 2))
            if all(np.array_equal(v[i], v[j]) for v in first.values())
        ]
        report.add(
            "seeds",
            not same,
            "seeds (11, 0), (11, 1), (12, 0) give different outputs"
            if not same
            else f"different seed rows give the same outputs ({', '.join(same)}): "
            + ", ".join(
                f"{k}={np.asarray(v[:3]).tolist()}" for k, v in sorted(first.items()) if v.ndim <= 2
            ),
            name,
        )


def _check_session(report, version_dir, specs, reloaded):
    """Loads with the TF1 session loader and runs every signature by tensor names."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        try:
            with deprecation.silence():  # the TF1 loader is what TF Serving uses
                meta_graph = tf.compat.v1.saved_model.loader.load(sess, [SERVE_TAG], version_dir)
        except Exception as e:  # noqa: BLE001
            report.add(
                "session", False, f"TF1 loader failed with tags ['serve']: {type(e).__name__}: {e}"
            )
            return
        for name in specs:
            sig = meta_graph.signature_def[name]
            runs = [(b, v) for (n, b), v in sorted(reloaded.items()) if n == name]
            if not runs:
                report.add("session", False, "no reloaded outputs to compare with", name)
                continue
            for batch, (inputs, want) in runs:
                try:
                    feed = {sig.inputs[k].name: v for k, v in inputs.items()}
                    fetch = {k: sig.outputs[k].name for k in sig.outputs}
                    got = sess.run(fetch, feed_dict=feed)
                except Exception as e:  # noqa: BLE001
                    report.add(
                        "session", False, f"batch {batch}: run raised {type(e).__name__}: {e}", name
                    )
                    continue
                _compare(
                    report,
                    "session",
                    name,
                    got,
                    want,
                    ROW_RTOL,
                    ROW_ATOL,
                    f"batch {batch} through tensor names matches tf.saved_model.load",
                )


def _check_warmup(report, version_dir, specs, loaded):
    path = warmup.warmup_path(version_dir)
    if not os.path.isfile(path):
        report.add("warmup", False, f"{path} missing")
        return
    try:
        records = warmup.read_warmup_requests(path)
    except Exception as e:  # noqa: BLE001
        report.add("warmup", False, f"{path} does not parse: {type(e).__name__}: {e}")
        return
    covered = {name for name, _ in records}
    missing = sorted(set(specs) - covered)
    unknown = sorted(covered - set(specs))
    report.add(
        "warmup",
        not missing and not unknown,
        f"{len(records)} records covering {sorted(covered)}"
        + (f"; no record for {missing}" if missing else "")
        + (f"; records for unknown signatures {unknown}" if unknown else ""),
    )
    for index, (name, inputs) in enumerate(records):
        if name not in specs:
            continue
        spec = specs[name]
        problems = []
        if set(inputs) != set(spec.inputs):
            problems.append(f"inputs {sorted(inputs)}, expected {sorted(spec.inputs)}")
        for key in sorted(set(inputs) & set(spec.inputs)):
            value, tensor = inputs[key], spec.inputs[key]
            if value.dtype.name != tensor.dtype or not tensor.matches_shape(value.shape):
                problems.append(
                    f"{key} is {value.dtype.name} {list(value.shape)}, expected {tensor.describe()}"
                )
        if not problems and name in loaded.signatures:
            try:
                _call(loaded.signatures[name], inputs)
            except Exception as e:  # noqa: BLE001
                problems.append(f"replaying it raised {type(e).__name__}: {e}")
        report.add(
            "warmup",
            not problems,
            f"record {index}: " + ("; ".join(problems) or "valid request, replays"),
            name,
        )


def validate(
    version_dir,
    model=None,
    *,
    session_check=True,
    batch_sizes=DEFAULT_BATCH_SIZES,
    raise_on_failure=True,
    expect_version_name=True,
):
    """Checks an exported version directory; returns a ValidationReport.

    Args:
      version_dir: BASE/NAME/<version>.
      model: the live Keras model it was exported from, for the ``live_model`` and
        encoder-variable checks; without it those are skipped.
      session_check: also load and run it with the TF1 session loader.
      batch_sizes: the (two or more) batch sizes every signature is run at.
      raise_on_failure: raise ValidationError when a check fails (else just report).
      expect_version_name: require the directory name to be an integer version.

    Raises:
      ValidationError: a check failed (and ``raise_on_failure``).
    """
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if len(set(batch_sizes)) < 2 or min(batch_sizes) < 1:
        raise ValueError(
            f"batch_sizes must hold two or more distinct positive sizes, got {batch_sizes}."
        )
    report = ValidationReport(version_dir)
    if not _check_layout(report, version_dir, expect_version_name) and not os.path.isfile(
        os.path.join(version_dir, "saved_model.pb")
    ):
        return _finish(report, raise_on_failure)
    try:
        meta_graph = read_meta_graph(version_dir)
    except Exception as e:  # noqa: BLE001
        report.add("layout", False, f"saved_model.pb does not parse: {type(e).__name__}: {e}")
        return _finish(report, raise_on_failure)
    manifest = read_manifest(version_dir)
    specs = _resolve_contract(report, meta_graph, manifest, model)
    _check_ops(report, meta_graph, contract_signatures(meta_graph))
    if specs is None:
        return _finish(report, raise_on_failure)
    _check_signature_defs(report, meta_graph, specs)
    _check_variables(report, meta_graph, manifest, model, report.kind, report.decoder_only)
    try:
        loaded = tf.saved_model.load(version_dir, tags=[SERVE_TAG])
    except Exception as e:  # noqa: BLE001
        report.add("reload", False, f"tf.saved_model.load failed: {type(e).__name__}: {e}")
        return _finish(report, raise_on_failure)
    reloaded = _check_reload(report, loaded, specs, batch_sizes, model, manifest)
    _check_seeds(report, loaded, specs)
    if session_check:
        _check_session(report, version_dir, specs, reloaded)
    _check_warmup(report, version_dir, specs, loaded)
    return _finish(report, raise_on_failure)


def _finish(report, raise_on_failure):
    if raise_on_failure and not report.ok:
        raise ValidationError(report)
    return report
