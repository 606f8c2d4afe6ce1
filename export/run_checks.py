"""Checks that load an exported version and run it.

``check_reload`` (tf.saved_model.load at two batch sizes, and the live model),
``check_seeds`` (per-row seeds), ``check_session`` (the TF1 session loader that
``tensorflow_model_server`` uses) and ``check_warmup``. Each returns its results;
``reference_outputs`` runs the signature table's ``compute`` eagerly on the live model.
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow.python.util import deprecation

from export import contract, warmup
from export.report import Checks
from export.saved_contract import SERVE_TAG

# Exported graph against the live (eager) model: different executors, same kernels.
LIVE_RTOL, LIVE_ATOL = 1e-4, 1e-5
# One row alone against the same row inside a batch, and TF1 session against TF2 reload.
ROW_RTOL, ROW_ATOL = 1e-5, 1e-6


def reference_outputs(model, kind, signature, inputs, num_ll_samples=None):
    """What the live model returns for ``signature`` on ``inputs`` (numpy dict).

    The signature table's own ``compute``, run eagerly: the same function the exporter
    traced into the SavedModel.
    """
    row = contract.signature(signature, kind)
    if signature == contract.LOG_LIKELIHOOD and num_ll_samples is None:
        raise ValueError("num_ll_samples is unknown (no manifest); cannot compare.")
    t = {k: tf.constant(v) for k, v in inputs.items()}
    out = row.compute(model, {"num_ll_samples": num_ll_samples}, **t)
    return {k: np.asarray(v) for k, v in out.items()}


def _call(fn, inputs):
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _check_outputs(checks, name, spec, out, batch):
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
    return checks.add(
        "reload",
        not problems,
        f"batch {batch}: " + ("; ".join(problems) or f"outputs {sorted(out)} as specified"),
        name,
    )


def check_reload(loaded, export_contract, batch_sizes, model, manifest):
    """(results, {(name, batch): (inputs, outputs)}): every reloaded signature at each batch
    size gives outputs as specified, and (with ``model``) what the live model gives."""
    checks = Checks()
    specs = export_contract.specs
    results = {}
    missing = sorted(set(specs) - set(loaded.signatures))
    if missing:
        checks.add("reload", False, f"tf.saved_model.load exposes no signatures {missing}")
    for name, spec in specs.items():
        if name not in loaded.signatures:
            continue
        fn = loaded.signatures[name]
        for batch in batch_sizes:
            inputs = contract.example_inputs(spec, batch, seed=batch)
            try:
                out = _call(fn, inputs)
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                checks.add(
                    "reload",
                    False,
                    f"batch {batch}: calling it raised {type(e).__name__}: {e}",
                    name,
                )
                continue
            if _check_outputs(checks, name, spec, out, batch):
                results[(name, batch)] = (inputs, out)
            if model is not None:
                try:
                    want = reference_outputs(
                        model, export_contract.kind, name, inputs, (manifest or {}).get("num_ll_samples")
                    )
                except Exception as e:  # noqa: BLE001
                    checks.add(
                        "live_model",
                        False,
                        f"batch {batch}: live model raised {type(e).__name__}: {e}",
                        name,
                    )
                    continue
                checks.compare("live_model",
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
            checks.compare("reload",
                contract.SERVING_DEFAULT,
                a[1],
                b[1],
                0.0,
                0.0,
                f"batch {batch} equals decode",
            )
    return checks.results, results


def _seed_rows(rows):
    return np.asarray(rows, np.int32)


def check_seeds(loaded, specs):
    """Seeded signatures: same rows give the same outputs, rows are independent; results."""
    checks = Checks()
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
            checks.add("seeds", False, f"calling it raised {type(e).__name__}: {e}", name)
            continue
        checks.compare("seeds",
            name,
            again,
            first,
            0.0,
            0.0,
            "same seeds called twice give identical outputs",
        )
        checks.compare("seeds",
            name,
            {k: v[3] for k, v in first.items()},
            {k: v[0] for k, v in first.items()},
            ROW_RTOL,
            ROW_ATOL,
            "two rows with seed (11, 0) in one batch agree",
        )
        checks.compare("seeds",
            name,
            alone,
            {k: v[1:2] for k, v in first.items()},
            ROW_RTOL,
            ROW_ATOL,
            "row with seed (11, 1) alone equals it inside a batch of 4",
        )
        if name == contract.GENERATE and "z" in first:
            # The determinism contract: a seed row's latent draw is bit-identical in
            # any batch (outputs computed through the decoder only agree within rounding).
            checks.compare("seeds",
                name,
                {"z": alone["z"]},
                {"z": first["z"][1:2]},
                0.0,
                0.0,
                "z of seed row (11, 1) alone is bit-identical to it inside a batch of 4",
            )
        same = [
            f"rows {i} and {j}"
            for i, j in ((0, 1), (0, 2), (1, 2))
            if all(np.array_equal(v[i], v[j]) for v in first.values())
        ]
        checks.add(
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
    return checks.results


def check_session(version_dir, specs, reloaded):
    """The TF1 session loader (TF Serving's path) runs every signature by tensor names,
    matching tf.saved_model.load; results."""
    checks = Checks()
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        try:
            with deprecation.silence():  # the TF1 loader is what TF Serving uses
                meta_graph = tf.compat.v1.saved_model.loader.load(sess, [SERVE_TAG], version_dir)
        except Exception as e:  # noqa: BLE001
            checks.add(
                "session", False, f"TF1 loader failed with tags ['serve']: {type(e).__name__}: {e}"
            )
            return checks.results
        for name in specs:
            sig = meta_graph.signature_def[name]
            runs = [(b, v) for (n, b), v in sorted(reloaded.items()) if n == name]
            if not runs:
                checks.add("session", False, "no reloaded outputs to compare with", name)
                continue
            for batch, (inputs, want) in runs:
                try:
                    feed = {sig.inputs[k].name: v for k, v in inputs.items()}
                    fetch = {k: sig.outputs[k].name for k in sig.outputs}
                    got = sess.run(fetch, feed_dict=feed)
                except Exception as e:  # noqa: BLE001
                    checks.add(
                        "session", False, f"batch {batch}: run raised {type(e).__name__}: {e}", name
                    )
                    continue
                checks.compare("session",
                    name,
                    got,
                    want,
                    ROW_RTOL,
                    ROW_ATOL,
                    f"batch {batch} through tensor names matches tf.saved_model.load",
                )
    return checks.results


def check_warmup(version_dir, specs, loaded):
    """The warmup records parse, cover every signature and replay; results."""
    checks = Checks()
    path = warmup.warmup_path(version_dir)
    if not os.path.isfile(path):
        checks.add("warmup", False, f"{path} missing")
        return checks.results
    try:
        records = warmup.read_warmup_requests(path)
    except Exception as e:  # noqa: BLE001
        checks.add("warmup", False, f"{path} does not parse: {type(e).__name__}: {e}")
        return checks.results
    covered = {name for name, _ in records}
    missing = sorted(set(specs) - covered)
    unknown = sorted(covered - set(specs))
    checks.add(
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
        checks.add(
            "warmup",
            not problems,
            f"record {index}: " + ("; ".join(problems) or "valid request, replays"),
            name,
        )
    return checks.results
