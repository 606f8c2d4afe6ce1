"""``tfp-vae generate --runner beam`` and ``tfp-vae score --runner beam``: Apache Beam pipelines.

The same pipeline runs on the local FnApiRunner (the default: one worker
thread per core), Flink, Spark or Dataflow; options after a bare ``--`` go to
Beam's `PipelineOptions` unchanged (``-- --runner=FlinkRunner
--flink_master=HOST:8081 ...``).

The pipeline, for either job::

    Create(output shards)            one element per output shard with its
                                     fixed-grid requests: the rows asked
                                     together are the local job's (answers'
                                     bytes depend on that)
    RunInference(handler)            `serving.beam_handlers`: a SavedModel in
                                     the worker, or a server through Beam's
                                     RemoteModelHandler (retries, throttling);
                                     one call per grid request, the answers
                                     put together into the shard's arrays
    Map(write shard)                 in the same worker (fused): deterministic
                                     name, temporary + rename -> the shard's
                                     manifest entry (sha256)
    ToList | Map(write manifest)     once, at the end, from the entries

The samples never leave the worker that computes them (only the entries
travel), and the work spreads over the workers by output shard: give
--shard-size at most N / workers.

A retried bundle writes the same bytes under the same name again (a rename
replaces), so it can leave neither a partial nor a duplicate shard; the
manifest (or the score summary) is written once, from all shards' digests.
For the same flags the files are byte-identical to ``--runner local``.

Files go through `apache_beam.io.filesystems.FileSystems`, so --out may be
gs://, s3://, hdfs:// as well as a local or shared directory (``--format
png``, a directory per shard, needs a local or shared one).

Beam is imported only here and in `serving.beam_handlers`, and only when a
``--runner beam`` job starts; without it the job says to ``pip install
tfp-vae[beam]``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from serving import manifest as manifest_lib
from serving.errors import EXIT_OK, EXIT_USAGE, JobError, ServingError

INSTALL_HINT = "pip install 'tfp-vae[beam]'"
LOCAL_RUNNERS = ("fnapirunner", "directrunner", "switchingdirectrunner",
                 "bundlebaseddirectrunner", "prismrunner", "testdirectrunner")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_beam():
    """The apache_beam module, or a JobError saying how to install it."""
    try:
        import apache_beam
        from apache_beam.ml.inference import base  # noqa: F401
    except ImportError as e:
        raise JobError(f"--runner beam needs Apache Beam, which is not "
                       f"installed ({e}); {INSTALL_HINT}", EXIT_USAGE) from e
    return apache_beam


def _has_flag(args: list, name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args)


def pipeline_args_with_defaults(pipeline_args: list) -> list:
    """The user's options, and without a --runner the local FnApiRunner with
    one worker per core (``--direct_num_workers=0``).

    The local workers are threads of this process (``multi_threading``), which
    has TensorFlow loaded and shares one SavedModel between them; TensorFlow
    runs outside the GIL.  ``--direct_running_mode=multi_processing`` gives
    worker processes instead: each a fresh interpreter that imports TensorFlow
    and loads the model, tens of seconds more before the first sample and, on
    few cores, their thread pools competing (`bench/bench_beam.py`).
    """
    args = list(pipeline_args)
    if not _has_flag(args, "--runner"):
        args.insert(0, "--runner=FnApiRunner")
        if not _has_flag(args, "--direct_running_mode"):
            args.append("--direct_running_mode=multi_threading")
        if not _has_flag(args, "--direct_num_workers"):
            args.append("--direct_num_workers=0")
    if not _has_flag(args, "--default_sdk_harness_log_level"):
        args.append("--default_sdk_harness_log_level=WARNING")
    return args


def pipeline_options(pipeline_args: list):
    """Beam `PipelineOptions`, checked: unknown options and runners are
    JobError(EXIT_USAGE) naming them (Beam itself only warns of the former)."""
    import_beam()
    from apache_beam.options.pipeline_options import (PipelineOptions,
                                                      StandardOptions)
    from apache_beam.runners.runner import create_runner

    args = pipeline_args_with_defaults(pipeline_args)
    shown = " ".join(pipeline_args) or "(none)"
    try:
        options = PipelineOptions(args)
        known = options.get_all_options()
        everything = options.get_all_options(retain_unknown_options=True)
    except SystemExit as e:     # Beam's argparse rejected a value
        raise JobError(f"bad Beam pipeline options after '--': {shown}",
                       EXIT_USAGE) from e
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise JobError(f"unknown Beam pipeline option(s) after '--': "
                       + ", ".join("--" + u for u in unknown)
                       + f" (in {shown})", EXIT_USAGE)
    runner = options.view_as(StandardOptions).runner
    try:
        create_runner(runner)
    except (ValueError, ImportError) as e:
        raise JobError(f"--runner={runner} (after '--'): {e}", EXIT_USAGE) from e
    if runner.lower() in LOCAL_RUNNERS:
        # Local worker processes are fresh interpreters: let them import this
        # very copy of the package (and not another one installed).
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if _PACKAGE_ROOT not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [_PACKAGE_ROOT] + [p for p in paths if p])
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return options


def _out_path(out: str) -> str:
    return out if "://" in out else os.path.abspath(out)


def _prepare_out(out: str, finals: set) -> None:
    if "://" in out:
        return
    from tfp_vae import files

    os.makedirs(out, exist_ok=True)
    files.remove_stale_temporaries(out, finals=finals)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Steps (module-level functions: they pickle by reference).
# ---------------------------------------------------------------------------

def _write_generate_shard(result, out: str, fmt: str, num_samples: int,
                          shards: dict, quiet: bool) -> dict:
    import numpy as np

    from serving import beam_handlers, writers

    shard = shards[result.example[0]]
    arrays = result.inference
    if fmt == "png":
        digest = writers.ShardWriter(out, fmt, num_samples).write(shard, arrays)
    else:
        sample_index = np.arange(shard.start, shard.stop, dtype=np.int64)
        data = (writers.npz_bytes({**arrays, "index": sample_index})
                if fmt == "npz" else writers.tfrecord_bytes(arrays, sample_index))
        beam_handlers.write_file_atomically(
            beam_handlers.join(out, shard.name), data)
        digest = manifest_lib.sha256(data)
    if not quiet:
        _log(f"generate: wrote {shard.name}")
    return manifest_lib.shard_entry(shard, digest)


def _write_manifest(entries: list, path: str, job: dict, total: int,
                    shards: list, done: list) -> None:
    from serving import beam_handlers

    entries = unique_entries(list(entries) + list(done))
    manifest = manifest_lib.make_manifest(job, total, shards, entries)
    beam_handlers.write_file_atomically(path, manifest_lib.encode(manifest))


def unique_entries(entries: list) -> list:
    """Entries by shard, one each; a shard written twice (a retried bundle
    whose first output also arrived) must have the same digest both times."""
    by_shard = {}
    for entry in entries:
        seen = by_shard.setdefault(entry["shard"], entry)
        if seen["sha256"] != entry["sha256"]:
            raise JobError(f"{entry['file']} was written twice with different "
                           f"contents ({seen['sha256']} and {entry['sha256']}): "
                           f"the model does not answer deterministically")
    return [by_shard[k] for k in sorted(by_shard)]


def _write_score_shard(result, out: str, shards: dict, quiet: bool) -> dict:
    from serving import beam_handlers, score

    shard = shards[result.example[0]]
    data, stats = score.shard_file(shard, result.inference)
    beam_handlers.write_file_atomically(beam_handlers.join(out, shard.name), data)
    if not quiet:
        _log(f"score: wrote {shard.name}")
    return score.shard_entry(shard, manifest_lib.sha256(data), stats)


def _write_summary(entries: list, path: str, job: dict) -> None:
    from serving import beam_handlers, score

    beam_handlers.write_file_atomically(
        path, score.summary_bytes(job, unique_entries(list(entries))))


# ---------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------

def _run(options, elements: list, handler, write_shard, finish) -> None:
    beam = import_beam()
    from apache_beam.ml.inference.base import RunInference

    with beam.Pipeline(options=options) as p:
        (p
         | "Shards" >> beam.Create(elements)
         | "RunInference" >> RunInference(handler)
         | "WriteShard" >> beam.Map(write_shard)
         | "AllShards" >> beam.combiners.ToList()
         | "Finish" >> beam.Map(finish))


def _handler(args, where, signature: str, inputs_fn, check_fn):
    """The SavedModel at ``where`` in each worker, or version ``where`` of the server."""
    from serving import beam_handlers

    if args.target:
        return beam_handlers.ServerHandler(args.target, args.model_name, where,
                                           args.timeout, signature, inputs_fn,
                                           check_fn, args.max_retries)
    return beam_handlers.SavedModelHandler(where, signature, inputs_fn, check_fn)


def _retrying(max_retries: int):
    from serving import generate, retry

    policy = generate.retry_policy(max_retries)
    return lambda fn, *a: retry.call_with_retries(lambda _: fn(*a), policy)


def run_generate_beam(args) -> int:
    """`tfp-vae generate --runner beam`: the job's files, written by a Beam pipeline."""
    import functools

    options = pipeline_options(args.pipeline_args)
    if args.num_shards != 1 or args.shard_index != 0:
        raise JobError("--num-shards/--shard-index split the job by hand; with "
                       "--runner beam the pipeline runner spreads the work "
                       "itself: leave them out", EXIT_USAGE)
    from serving import beam_handlers
    from serving.generate import Job, png_image_check
    from serving.plan import grid_requests, plan_shards, shard_count
    from serving.sources import SIGNATURE, ServerSource, check_generate_signature

    started = time.monotonic()
    if args.target:
        source = ServerSource(args.target, args.model_name, args.model_version,
                              args.timeout)
        try:
            model = source.prepare(_retrying(args.max_retries))
        except ServingError as e:
            raise JobError(f"cannot use model {args.model_name!r} at "
                           f"{args.target}: {e.code.name}: {e.message}") from e
        finally:
            source.close()
        outputs = source.outputs
    else:
        from serving.client import signature_info
        from serving.score import saved_model_meta_graph

        path, meta_graph = saved_model_meta_graph(args.saved_model)
        signature = meta_graph.signature_def.get(SIGNATURE)
        if signature is None:
            raise JobError(f"--saved-model {path!r} has no '{SIGNATURE}' "
                           f"signature; it has {sorted(meta_graph.signature_def)}")
        outputs = check_generate_signature(signature_info(signature),
                                           f"--saved-model {path!r}")
        model = {"saved_model": path}
    if args.format == "png":
        x = outputs.get("x")
        why = ("the model has no output 'x'" if x is None
               else png_image_check(None if x.shape is None else x.shape[1:]))
        if why:
            raise JobError(f"--format png cannot write these samples: {why}; "
                           f"use npz or tfrecord", EXIT_USAGE)
        if "://" in args.out:
            raise JobError(f"--format png writes a directory per shard and needs "
                           f"a local or shared --out; got {args.out!r}", EXIT_USAGE)

    out = _out_path(args.out)
    shards = plan_shards(args.num_samples, args.shard_size, args.format)
    total = shard_count(args.num_samples, args.shard_size)
    manifest_path = beam_handlers.join(out, manifest_lib.manifest_name(0, 1))
    job = Job(args, stream=sys.stderr, source=object())._job_identity(model)
    existing = _read_json(manifest_path)
    if existing is not None and existing.get("job") != job:
        diffs = manifest_lib.job_differences(existing.get("job", {}), job)
        raise JobError(f"{manifest_path} belongs to a different job ("
                       + "; ".join(diffs) + "); rerun with the same flags or "
                       "use another --out", EXIT_USAGE)
    _prepare_out(out, {s.name for s in shards} | {"manifest.json"})
    done = _verified(existing, shards, out)
    pending = [s for s in shards if s.index not in done]
    elements = [(s.index, s.start, s.stop,
                 tuple(grid_requests(s, args.batch_size, args.num_samples)))
                for s in pending]
    _log(f"generate: {len(pending)} of {len(shards)} shard(s) to write "
         f"({sum(len(e[3]) for e in elements)} requests) on Beam's "
         f"{options.get_all_options()['runner']}")

    inputs_fn = functools.partial(beam_handlers.generate_inputs, args.seed)
    check_fn = functools.partial(Job._check_outputs, specs=sorted(outputs))
    handler = _handler(args, model.get("model_version", model.get("saved_model")),
                       SIGNATURE, inputs_fn, check_fn)
    by_index = {s.index: s for s in pending}
    if elements:
        _run(options, elements, handler,
             functools.partial(_write_generate_shard, out=out, fmt=args.format,
                               num_samples=args.num_samples, shards=by_index,
                               quiet=args.quiet),
             functools.partial(_write_manifest, path=manifest_path, job=job,
                               total=total, shards=shards,
                               done=list(done.values())))
    else:
        _write_manifest([], manifest_path, job, total, shards, list(done.values()))
    generated = sum(s.count for s in pending)
    seconds = time.monotonic() - started
    _log(f"generate: {generated} samples generated in {seconds:.1f} s "
         f"({generated / max(seconds, 1e-9):.0f} samples/s) with Beam; "
         f"{args.num_samples - generated} already complete; manifest "
         f"{manifest_path}")
    return EXIT_OK


def _read_json(path: str):
    from serving import beam_handlers

    data = beam_handlers.read_file(path)
    if data is None:
        return None
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise JobError(f"cannot read the manifest {path!r}: {e}; move it away "
                       f"to start over", EXIT_USAGE) from e
    if not isinstance(manifest, dict) or manifest.get(
            "manifest_version") != manifest_lib.MANIFEST_VERSION:
        raise JobError(f"{path!r} is not a manifest of this job format "
                       f"(manifest_version {manifest_lib.MANIFEST_VERSION})",
                       EXIT_USAGE)
    return manifest


def _verified(existing, shards: list, out: str) -> dict:
    """{index: entry} of listed shards whose files still match (a rerun skips them)."""
    if existing is None:
        return {}
    if "://" not in out:
        return manifest_lib.verified_entries(existing, shards, out, _log)
    from serving import beam_handlers

    listed = {e["shard"]: e for e in existing.get("shards", [])}
    done = {}
    for shard in shards:
        entry = listed.get(shard.index)
        if entry is None or entry.get("file") != shard.name:
            continue
        data = beam_handlers.read_file(beam_handlers.join(out, shard.name))
        if data is not None and manifest_lib.sha256(data) == entry.get("sha256"):
            done[shard.index] = entry
    return done


def run_score_beam(args) -> int:
    """`tfp-vae score --runner beam`: the scoring job's files, written by Beam."""
    import functools

    options = pipeline_options(args.pipeline_args)
    from serving import beam_handlers, score

    started = time.monotonic()
    x = beam_handlers.load_examples(args.data, args.key)
    model, k, where = score.prepare_model(args, x.shape[1:],
                                          _retrying(args.max_retries))
    job = score.job_identity(args, model, k, len(x))
    out = _out_path(args.out)
    shards = score.plan_shards(len(x), args.shard_size)
    _prepare_out(out, {s.name for s in shards} | {score.SUMMARY_NAME})
    elements = [score.shard_element(s, args.batch_size, len(x)) for s in shards]
    _log(f"score: {len(x)} examples, {len(shards)} shard(s), "
         f"{sum(len(e[3]) for e in elements)} requests on Beam's "
         f"{options.get_all_options()['runner']}")
    data = args.data if "://" in args.data else os.path.abspath(args.data)
    key = args.key if args.data.endswith(".npz") else None
    inputs_fn = functools.partial(beam_handlers.score_inputs, args.seed, data, key)
    handler = _handler(args, where, score.SIGNATURE, inputs_fn, score.check_answer)
    summary_path = beam_handlers.join(out, score.SUMMARY_NAME)
    _run(options, elements, handler,
         functools.partial(_write_score_shard, out=out,
                           shards={s.index: s for s in shards}, quiet=args.quiet),
         functools.partial(_write_summary, path=summary_path, job=job))
    summary = json.loads(beam_handlers.read_file(summary_path))
    parts = [f"{name} {summary[name]['mean']:.4f} +- "
             f"{summary[name]['stderr'] or 0:.4f}" for name in score.OUTPUTS]
    _log(f"score: {len(x)} examples in {time.monotonic() - started:.1f} s with "
         f"Beam: " + ", ".join(parts) + f"; {summary_path}")
    return EXIT_OK
