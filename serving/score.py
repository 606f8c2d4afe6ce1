"""The scoring job: per-example log-likelihood and ELBO of a dataset.

    tfp-vae score --saved-model models/vae --data test.npz --out scores/
    tfp-vae score --target localhost:8500 --model_name vae --data x.npy \\
        --out scores/ --runner beam -- --runner=FlinkRunner ...

Each example goes through the export's ``log_likelihood`` signature
(`export.contract`): inputs ``x`` float32 [B, *S] and ``seed`` int32 [B, 2],
outputs ``log_likelihood`` (importance-sampled log p(x), K samples) and
``elbo`` (the mean of the same K log weights), both float32 [B].  K is fixed
when the model is exported (``tfp-vae export --num-ll-samples``); the summary
records it when the export's manifest says it.

Example i is scored with seed row (S, i) (S = --seed), as sample i of the
generation job is drawn from it, and requests lie on the same fixed grid:
request k holds examples [k * B, (k + 1) * B) (B = --batch-size), cut at the
dataset's end, so the same command gives the same bytes, with either runner.

Written to --out: shards ``scores-00000-of-0000N.npz`` (``log_likelihood``,
``elbo``, ``index``; --shard-size examples each) and ``summary.json`` (the
job, count, mean and standard error of each output, each shard's sha256),
every file under a temporary name and renamed into place.

--runner local (default) runs here, --concurrency requests at a time;
--runner beam builds an Apache Beam pipeline (`serving.beam_pipeline`) whose
options follow a bare ``--``.

This module's flags and checks import neither TensorFlow nor Beam.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from export import contract
from serving.errors import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, JobError,
                            ServingError)
from serving.plan import Shard, assemble_shard, grid_requests
from serving.sources import (INT32_MAX, add_source_arguments, check_request_args,
                             check_runner_args, check_source_args, server_signature)

SIGNATURE = contract.LOG_LIKELIHOOD
_X, _SEED = contract.signature(SIGNATURE).input_keys
OUTPUTS = contract.signature(SIGNATURE).output_keys      # log_likelihood, elbo
SUMMARY_NAME = "summary.json"
SUMMARY_VERSION = 1
RUNNERS = ("local", "beam")


# ---------------------------------------------------------------------------
# Flags.
# ---------------------------------------------------------------------------

def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the scoring job's flags to `parser`."""
    add_source_arguments(parser, "Score with this SavedModel directory "
                                 "(BASE/NAME/VERSION, or BASE/NAME for its highest "
                                 "version); no server.")
    parser.add_argument("--data", required=True,
                        help="Examples to score: a .npy array [N, *S] or a .npz "
                             "holding one (see --key).")
    parser.add_argument("--key", default="x",
                        help="The array of a .npz to score (default 'x').")
    parser.add_argument("--out", required=True, help="Output directory.")
    parser.add_argument("--runner", choices=RUNNERS, default="local",
                        help="local: in this process (default); beam: an Apache "
                             "Beam pipeline (pip install tfp-vae[beam]); its "
                             "options follow a bare '--' (default: the local "
                             "FnApiRunner, one worker per core).")
    parser.add_argument("--batch-size", dest="batch_size", type=int,
                        default=256, help="Examples per request (default 256).")
    parser.add_argument("--seed", type=int, default=0,
                        help="Job seed S; example i uses seed row (S, i) "
                             "(default 0).")
    parser.add_argument("--num-samples", dest="num_samples", type=int,
                        help="K, importance samples per example. K is fixed "
                             "when the model is exported (tfp-vae export "
                             "--num-ll-samples); given here, it is checked "
                             "against the export's manifest.")
    parser.add_argument("--shard-size", dest="shard_size", type=int,
                        default=10000, help="Examples per output shard "
                                            "(default 10000).")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="Requests in flight at once, --runner local "
                             "(default 4).")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="Deadline of each request in seconds.")
    parser.add_argument("--max-retries", dest="max_retries", type=int,
                        default=8, help="Retries of a request after a "
                                        "transient error (default 8).")
    parser.add_argument("--quiet", action="store_true",
                        help="No per-shard progress lines.")


def validate_args(args: argparse.Namespace) -> None:
    """Raises JobError(EXIT_USAGE) naming the first bad flag."""
    def usage(message):
        raise JobError(message, EXIT_USAGE)

    check_source_args(args, usage)
    if args.target and args.num_samples is not None:
        usage("--num-samples can be checked only against an export's "
              "manifest (--saved-model); a server does not say its K. "
              "Leave it out with --target")
    for flag in ("batch_size", "shard_size", "concurrency"):
        value = getattr(args, flag)
        if value < 1:
            usage(f"--{flag.replace('_', '-')} must be a positive integer; "
                  f"got {value}")
    if args.num_samples is not None and args.num_samples < 1:
        usage(f"--num-samples must be a positive integer; got {args.num_samples}")
    check_request_args(args, usage)
    if not args.data.endswith((".npy", ".npz")):
        usage(f"--data must be a .npy or .npz file; got {args.data!r}")
    if "://" not in args.data and not os.path.isfile(args.data):
        usage(f"--data {args.data!r} does not exist or is not a file")
    if "://" not in args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        usage(f"--out {args.out!r} exists and is not a directory")
    check_runner_args(args, usage)


# ---------------------------------------------------------------------------
# Pure parts, shared by both runners.
# ---------------------------------------------------------------------------

def read_examples(source, name: str, key: Optional[str]) -> np.ndarray:
    """The float32 examples [N, *S] in a .npy or .npz (``source``: a path or
    a binary file object; ``name`` says which, for messages)."""
    try:
        loaded = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise JobError(f"cannot read --data {name!r}: {e}", EXIT_USAGE) from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if key not in loaded.files:
                raise JobError(f"--data {name!r} has no array {key!r} (--key); "
                               f"it has {sorted(loaded.files)}", EXIT_USAGE)
            array = loaded[key]
    else:
        array = loaded
    if array.ndim < 2 or array.shape[0] < 1:
        raise JobError(f"--data {name!r}: expected examples [N, *S] with N >= 1; "
                       f"got shape {list(array.shape)}", EXIT_USAGE)
    if array.dtype.kind not in "biuf":
        raise JobError(f"--data {name!r}: expected numbers; got dtype "
                       f"{array.dtype}", EXIT_USAGE)
    if array.shape[0] > INT32_MAX + 1:
        raise JobError(f"--data {name!r}: {array.shape[0]} examples; at most "
                       f"{INT32_MAX + 1} (example indices are int32)", EXIT_USAGE)
    return np.ascontiguousarray(array, dtype=np.float32)


def check_signature(info, where: str, example_shape: tuple) -> None:
    """JobError unless ``info`` is a log_likelihood signature for these examples."""
    inputs, outputs = info.inputs, info.outputs
    if set(inputs) != {_X, _SEED} or not set(OUTPUTS) <= set(outputs):
        raise JobError(f"{where}: the '{SIGNATURE}' signature must take "
                       f"'{_X}' and '{_SEED}' and give {list(OUTPUTS)}; it takes "
                       f"{sorted(inputs)} and gives {sorted(outputs)}")
    x = inputs[_X]
    if x.shape is not None:
        wanted = tuple(x.shape[1:])
        if len(wanted) != len(example_shape) or any(
                w is not None and w != s for w, s in zip(wanted, example_shape)):
            raise JobError(f"{where} scores examples of shape {list(wanted)}; "
                           f"--data has examples of shape {list(example_shape)}",
                           EXIT_USAGE)


def shard_name(index: int, total: int) -> str:
    width = max(5, len(str(total)))
    return f"scores-{index:0{width}d}-of-{total:0{width}d}.npz"


def plan_shards(num_examples: int, shard_size: int) -> list:
    total = math.ceil(num_examples / shard_size)
    return [Shard(j, j * shard_size, min((j + 1) * shard_size, num_examples),
                  shard_name(j, total)) for j in range(total)]


def check_answer(outputs: dict, rows: int) -> None:
    for name in OUTPUTS:
        value = outputs.get(name)
        if value is None:
            raise JobError(f"the model's answer lacks output {name!r}")
        if value.shape != (rows,):
            raise JobError(f"the model answered {name!r} with shape "
                           f"{list(value.shape)} for {rows} examples; "
                           f"expected [{rows}]")


def shard_stats(arrays: dict) -> dict:
    """{output: (count, mean, M2)} in float64, for merging (`merge_stats`)."""
    stats = {}
    for name in OUTPUTS:
        v = np.asarray(arrays[name], dtype=np.float64)
        mean = float(v.mean())
        stats[name] = (int(v.size), mean, float(((v - mean) ** 2).sum()))
    return stats


def merge_stats(parts: list) -> dict:
    """Chan's merge of per-shard (count, mean, M2), in the order given -> mean, stderr."""
    summary = {}
    for name in OUTPUTS:
        n, mean, m2 = 0, 0.0, 0.0
        for part in parts:
            nb, mb, m2b = part[name]
            total = n + nb
            delta = mb - mean
            mean += delta * nb / total
            m2 += m2b + delta * delta * n * nb / total
            n = total
        stderr = math.sqrt(m2 / (n - 1) / n) if n > 1 else None
        summary[name] = {"mean": mean, "stderr": stderr}
    return summary


def shard_entry(shard: Shard, digest: str, stats: dict) -> dict:
    return {"shard": shard.index, "file": shard.name, "start": shard.start,
            "stop": shard.stop, "count": shard.count, "sha256": digest,
            "stats": {k: list(v) for k, v in stats.items()}}


def summary_bytes(job: dict, entries: list) -> bytes:
    """summary.json from the shards' entries (any order: sorted here)."""
    entries = sorted(entries, key=lambda e: e["shard"])
    parts = [{k: tuple(v) for k, v in e["stats"].items()} for e in entries]
    merged = merge_stats(parts)
    summary = {"summary_version": SUMMARY_VERSION, "job": job,
               "count": sum(e["count"] for e in entries), **merged,
               "shards": [{k: v for k, v in e.items() if k != "stats"}
                          for e in entries]}
    return (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode()


def shard_file(shard: Shard, arrays: dict) -> tuple:
    """(npz bytes, stats) of a shard from its {output: array}."""
    from serving.writers import npz_bytes

    arrays = {name: np.asarray(arrays[name], np.float32) for name in OUTPUTS}
    index = np.arange(shard.start, shard.stop, dtype=np.int64)
    return npz_bytes({**arrays, "index": index}), shard_stats(arrays)


def shard_element(shard: Shard, batch_size: int, num_examples: int) -> tuple:
    """(index, start, stop, grid requests): one shard and the requests covering it."""
    return (shard.index, shard.start, shard.stop,
            tuple(grid_requests(shard, batch_size, num_examples)))


# ---------------------------------------------------------------------------
# The model, prepared (both runners) and called (local runner).
# ---------------------------------------------------------------------------

def prepare_model(args, example_shape: tuple, call_with_retries) -> tuple:
    """(model identity, K or None, SavedModel path or pinned version), checked."""
    if args.target:
        try:
            version, info, where = server_signature(
                args.target, args.model_name, args.model_version, args.timeout,
                SIGNATURE, call_with_retries)
        except ServingError as e:
            raise JobError(f"cannot use model {args.model_name!r} at "
                           f"{args.target}: {e.code.name}: {e.message}") from e
        check_signature(info, where, example_shape)
        return ({"model_name": args.model_name, "model_version": version},
                None, version)
    from export import saved_contract
    from serving.client import signature_info

    path, meta_graph = saved_model_meta_graph(args.saved_model)
    where = f"--saved-model {path!r}"
    signature = meta_graph.signature_def.get(SIGNATURE)
    if signature is None:
        raise JobError(f"{where} has no '{SIGNATURE}' signature; it has "
                       f"{sorted(meta_graph.signature_def)}")
    check_signature(signature_info(signature), where, example_shape)
    manifest = saved_contract.read_manifest(path) if "://" not in path else None
    k = (manifest or {}).get("num_ll_samples")
    if args.num_samples is not None and args.num_samples != k:
        raise JobError(
            f"--num-samples {args.num_samples}: {where} was exported with "
            + (f"K = {k}" if k is not None else "an unknown K (no manifest)")
            + " importance samples, fixed in its graph; leave --num-samples "
              "out or export again with tfp-vae export --num-ll-samples "
            f"{args.num_samples}", EXIT_USAGE)
    return {"saved_model": path}, k, path


def saved_model_meta_graph(saved_model: str, what: str = "--saved-model") -> tuple:
    """(version directory, its serving MetaGraphDef), read here before any work.

    A local path may be a model base path (its highest version is taken); a
    URI (gs://...) must be the version directory itself, read with
    TensorFlow's file systems (those its build supports).
    """
    from serving.servable import read_meta_graph
    from serving.sources import resolve_saved_model

    if "://" not in saved_model:
        path = resolve_saved_model(saved_model)
        try:
            return path, read_meta_graph(path)
        except ServingError as e:
            raise JobError(f"{what} {path!r}: {e.message}") from e
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    path = saved_model.rstrip("/")
    proto = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(path + "/saved_model.pb", "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as e:  # noqa: BLE001 - any reason, reported with the path
        raise JobError(f"cannot read {what} {path!r} (a URI must name a "
                       f"SavedModel version directory on a file system "
                       f"TensorFlow reads): {e}", EXIT_USAGE) from e
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {"serve"}:
            return path, meta_graph
    raise JobError(f"{what} {path!r} has no MetaGraph tagged 'serve'", EXIT_USAGE)


def job_identity(args, model: dict, k, num_examples: int) -> dict:
    return {"signature": SIGNATURE, "model": model, "num_ll_samples": k,
            "data": args.data if "://" in args.data else os.path.abspath(args.data),
            "key": args.key if args.data.endswith(".npz") else None,
            "num_examples": num_examples, "seed": args.seed,
            "batch_size": args.batch_size, "shard_size": args.shard_size}


def _model_fn(args, where):
    """fn(inputs) -> {output: array} for the local runner, and a closer."""
    if args.target:
        from serving.client import Client

        client = Client(args.target, args.model_name, version=where,
                        timeout=args.timeout, max_attempts=1)
        return (lambda inputs: client.predict(SIGNATURE, inputs)), client.close
    import tensorflow as tf

    from serving import errors

    try:
        loaded = tf.saved_model.load(where)
    except Exception as e:  # noqa: BLE001 - reported with the path
        raise JobError(f"cannot load --saved-model {where!r}: {e}") from e
    fn = loaded.signatures[SIGNATURE]

    def call(inputs):
        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except Exception as e:  # noqa: BLE001 - classified by its code
            raise errors.from_exception(e) from e
        return {k: v.numpy() for k, v in out.items()}

    return call, (lambda: loaded)


# ---------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------

def _log(args, message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_local(args) -> int:
    from serving import generate, retry
    from tfp_vae import files
    from tfp_vae.row_sampling import seed_rows

    policy = generate.retry_policy(args.max_retries)

    def with_retries(fn, *a):
        return retry.call_with_retries(lambda _: fn(*a), policy)

    started = time.monotonic()
    x = read_examples(args.data, args.data, args.key)
    model, k, where = prepare_model(args, x.shape[1:], with_retries)
    job = job_identity(args, model, k, len(x))
    shards = plan_shards(len(x), args.shard_size)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    files.remove_stale_temporaries(
        out, finals={s.name for s in shards} | {SUMMARY_NAME})
    fn, close = _model_fn(args, where)

    def answer(request):
        a, b = request
        outputs = with_retries(fn, {_X: x[a:b], _SEED: seed_rows(args.seed, a, b)})
        check_answer(outputs, b - a)
        return a, b, outputs

    from serving.manifest import sha256

    entries = []
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            for shard in shards:
                requests = grid_requests(shard, args.batch_size, len(x))
                arrays = assemble_shard(shard.start, shard.stop,
                                        pool.map(answer, requests))
                data, stats = shard_file(shard, arrays)
                files.write_atomically(os.path.join(out, shard.name), data)
                entries.append(shard_entry(shard, sha256(data), stats))
                if not args.quiet:
                    _log(args, f"score: {shard.name} ({shard.stop} of {len(x)} "
                               f"examples)")
    except ServingError as e:
        raise JobError(f"the model failed: {e.code.name}: {e.message}; kept "
                       f"{len(entries)} complete shard(s)") from e
    finally:
        close()
    files.write_atomically(os.path.join(out, SUMMARY_NAME), summary_bytes(job, entries))
    _print_summary(out, len(x), time.monotonic() - started)
    return EXIT_OK


def _print_summary(out: str, count: int, seconds: float) -> None:
    with open(os.path.join(out, SUMMARY_NAME), encoding="utf-8") as f:
        summary = json.load(f)
    parts = [f"{name} {summary[name]['mean']:.4f} +- {summary[name]['stderr'] or 0:.4f}"
             for name in OUTPUTS]
    print(f"score: {count} examples in {seconds:.1f} s: " + ", ".join(parts)
          + f"; {os.path.join(out, SUMMARY_NAME)}", file=sys.stderr)


def run_score(args: argparse.Namespace) -> int:
    """Runs the job described by `args`; returns the exit status."""
    if not hasattr(args, "pipeline_args"):
        args.pipeline_args = []
    try:
        validate_args(args)
        if args.runner == "beam":
            from serving import beam_pipeline

            return beam_pipeline.run_score_beam(args)
        return run_local(args)
    except JobError as e:
        print(f"score: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"score: error: {e.strerror or e}: {e.filename or args.out}",
              file=sys.stderr)
        return EXIT_FAILED
