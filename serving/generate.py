"""The batch generation job: N samples from a model's `generate` signature.

    python -m serving.generate --target localhost:8500 --model_name vae \\
        --num-samples 100000 --batch-size 256 --seed 7 --out samples/

Sample i is generated from the seed row (seed, i) -- int32 [2] -- and
requests are formed on a fixed grid of seed rows: request k asks for rows
[k * B, (k + 1) * B) (B = --batch-size, the last one cut at N), whichever
shard, worker or restart needs them.  So for the same model, --seed,
--num-samples and --batch-size the files are byte-identical across restarts,
kills, --concurrency, --num-shards/--shard-index and the source (a server
that runs each request as its own batch, or --saved-model in process).  A
different --batch-size gives the same latent z bit for bit and the decoded x
within float32 rounding (1e-6 absolute): matrix kernels may round
differently for different batch sizes.  A grid request that straddles two
output shards is computed for each of them.

Samples are written in fixed-size shards (--shard-size samples
each), each written to a temporary name and renamed into place, and a
manifest (JSON: job, shard ranges, file names, sha256) is rewritten
atomically after every shard.  Running the same command again skips the
shards the manifest lists whose checksum still matches and finishes the
rest, so a killed job resumes to exactly the same files as an uninterrupted
one.

With --num-shards n --shard-index i, worker i takes the output shards
j with j % n == i; workers may share --out, each with its own manifest.

With --runner beam the same files come from an Apache Beam pipeline
(`serving.beam_pipeline`; Flink, Spark, Dataflow or the local FnApiRunner),
its options after a bare ``--``; docs/beam.md.

Transient server errors (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
are retried with backoff, --max-retries times per request (`serving.retry`,
the only retry loop on the way: the job's gRPC client does not retry); any
other error stops the job, keeping the shards already complete, and the exit
status is non-zero.

Words: --num-samples (``num_samples``) is N, the number of samples the job
writes, one per seed row; it is not the importance-sample count that
``log_likelihood`` and ``tfp-vae evaluate --num-samples`` mean.

Progress is a `keras.utils.Progbar` on stdout (--quiet turns it off); the
log lines and the closing summary ("N samples generated in ...") go to stderr.

The parts: `serving.plan` (shards, grid, seed rows), `serving.sources` (server
or in process), `serving.writers` (npz, png, tfrecord), `serving.manifest`;
this module holds the flags and the `Job` that runs them on threads.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from typing import Optional

import numpy as np

from serving import manifest as manifest_lib
from serving import retry
from serving.errors import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,
                            TRANSIENT_CODES, JobError, ServingError)
from serving.plan import Shard, grid_requests, plan_shards, shard_count
from serving.sources import (INT32_MAX, SIGNATURE, InProcessSource, ServerSource,
                             add_source_arguments, check_request_args,
                             check_runner_args, check_source_args)
from serving.writers import FORMATS, ShardWriter, png_image_check


# ---------------------------------------------------------------------------
# Flags.
# ---------------------------------------------------------------------------

def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the generation job's flags to `parser`."""
    add_source_arguments(parser, "Generate in process from this SavedModel "
                                 "directory (BASE/NAME/VERSION, or BASE/NAME for "
                                 "its highest version); no server.")
    parser.add_argument("--num-samples", dest="num_samples", type=int,
                        required=True, help="N, samples to generate.")
    parser.add_argument("--batch-size", dest="batch_size", type=int,
                        default=256, help="Rows per request (default 256).")
    parser.add_argument("--seed", type=int, default=0,
                        help="Job seed S; sample i comes from seed row (S, i).")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="Requests in flight at once, --runner local "
                             "(default 4).")
    parser.add_argument("--out", required=True, help="Output directory.")
    parser.add_argument("--format", choices=FORMATS, default="npz",
                        help="npz (the outputs and 'index' per shard), png "
                             "(a directory of images per shard, pixel = "
                             "round(255 * clip(x, 0, 1))) or tfrecord (one "
                             "tf.Example per sample: 'index', each output "
                             "flattened and its '<name>/shape').")
    parser.add_argument("--shard-size", dest="shard_size", type=int,
                        default=1000, help="Samples per output shard "
                                           "(default 1000).")
    parser.add_argument("--shard-index", dest="shard_index", type=int,
                        default=0, help="This worker's index i (default 0).")
    parser.add_argument("--num-shards", dest="num_shards", type=int,
                        default=1, help="Number of workers n sharing the job "
                                        "(default 1).")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="Deadline of each request in seconds.")
    parser.add_argument("--max-retries", dest="max_retries", type=int,
                        default=8, help="Retries of a request after a "
                                        "transient error (default 8).")
    parser.add_argument("--quiet", action="store_true",
                        help="No progress bar (the summary is still printed).")
    parser.add_argument("--runner", choices=("local", "beam"), default="local",
                        help="local: threads in this process (default); beam: "
                             "an Apache Beam pipeline with the same files "
                             "(pip install tfp-vae[beam]); its options follow "
                             "a bare '--' (default: the local FnApiRunner, one "
                             "worker per core), e.g. -- --runner=FlinkRunner "
                             "--flink_master=HOST:8081.")


def validate_args(args: argparse.Namespace) -> None:
    """Raises JobError(EXIT_USAGE) naming the first bad flag."""
    def usage(message):
        raise JobError(message, EXIT_USAGE)

    check_source_args(args, usage)
    if not 1 <= args.num_samples <= INT32_MAX + 1:
        usage(f"--num-samples must be in [1, {INT32_MAX + 1}] (sample indices "
              f"are int32); got {args.num_samples}")
    for flag in ("batch_size", "shard_size", "concurrency", "num_shards"):
        value = getattr(args, flag)
        if value < 1:
            usage(f"--{flag.replace('_', '-')} must be a positive integer; "
                  f"got {value}")
    if not 0 <= args.shard_index < args.num_shards:
        usage(f"--shard-index must be in [0, {args.num_shards - 1}] for "
              f"--num-shards {args.num_shards}; got {args.shard_index}")
    check_request_args(args, usage)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        usage(f"--out {args.out!r} exists and is not a directory")
    check_runner_args(args, usage)


# ---------------------------------------------------------------------------
# The job.
# ---------------------------------------------------------------------------

def retry_policy(max_retries: int) -> retry.RetryPolicy:
    """The job's policy: its transient codes, 0.5 s doubling to 10 s."""
    return retry.RetryPolicy(max_retries=max_retries, retryable=TRANSIENT_CODES,
                             initial_backoff=0.5, max_backoff=10.0)


class _ShardBuffer:
    def __init__(self, shard: Shard):
        self.shard = shard
        self.arrays = None
        self.filled = 0


class _Progress:
    """Samples done, on a `keras.utils.Progbar` unless --quiet; safe across threads."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.generated = 0
        self.done = done
        self._lock = threading.Lock()
        self._bar = None
        if enabled:
            from keras.utils import Progbar

            tty = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
            self._bar = Progbar(total, unit_name="sample",
                                interval=0.1 if tty else 2.0)
            self._bar.update(done)

    def add(self, n: int) -> None:
        with self._lock:
            self.generated += n
            self.done += n
            if self._bar is not None:
                self._bar.add(n)

    def close(self) -> None:
        """Ends the bar's line, finished or not, so the summary starts on its own."""
        with self._lock:
            if self._bar is not None:
                self._bar.update(self.done, finalize=True)
                self._bar = None


class Job:
    """One run of the generation job (a worker's share of it)."""

    def __init__(self, args: argparse.Namespace, stream=None, source=None):
        self.args = args
        self.source = source
        self.stream = stream or sys.stderr
        self.out = os.path.abspath(args.out)
        self.shards = plan_shards(args.num_samples, args.shard_size, args.format,
                                  args.shard_index, args.num_shards)
        self.manifest_path = os.path.join(
            self.out, manifest_lib.manifest_name(args.shard_index, args.num_shards))
        self.retry_policy = retry_policy(args.max_retries)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._errors = []
        self._entries = {}

    def log(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    # -- retries ------------------------------------------------------------
    def call_with_retries(self, fn, *args):
        """``fn(*args)`` through `serving.retry` with the job's policy.

        A transient error that outlasts --max-retries becomes a JobError
        ("gave up after N attempts"); a permanent one is raised as it is.
        """
        attempts = 1

        def log_retry(error, attempt, delay):
            nonlocal attempts
            attempts = attempt
            self.log(f"generate: {error.code.name}: {error.message}; retrying in "
                     f"{delay:.1f} s (attempt {attempt} of "
                     f"{self.retry_policy.max_attempts})")

        try:
            return retry.call_with_retries(lambda _: fn(*args), self.retry_policy,
                                           stop=self.stop, on_retry=log_retry)
        except ServingError as e:
            if e.code in self.retry_policy.retryable and not self.stop.is_set():
                raise JobError(f"gave up after {attempts} attempts: "
                               f"{e.code.name}: {e.message}") from e
            raise

    # -- running ------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        existing = manifest_lib.read_manifest(self.manifest_path)
        if self.source is not None:
            source = self.source
        elif args.target:
            version = args.model_version
            if version is None and existing is not None:
                version = existing.get("job", {}).get("model", {}).get(
                    "model_version")
            source = ServerSource(args.target, args.model_name, version,
                                  args.timeout)
        else:
            source = InProcessSource(args.saved_model)
        try:
            return self._run(source, existing)
        finally:
            source.close()

    def _job_identity(self, model: dict) -> dict:
        args = self.args
        return {"signature": SIGNATURE, "model": model, "seed": args.seed,
                "num_samples": args.num_samples, "shard_size": args.shard_size,
                "format": args.format, "shard_index": args.shard_index,
                "num_shards": args.num_shards}

    def _run(self, source, existing: Optional[dict]) -> int:
        args = self.args
        try:
            model = source.prepare(self.call_with_retries)
        except ServingError as e:
            raise JobError(f"cannot use model {args.model_name!r} at "
                           f"{args.target}: {e.code.name}: {e.message}") from e
        if args.format == "png":
            x = source.outputs.get("x")
            why = ("the model has no output 'x'" if x is None
                   else png_image_check(None if x.shape is None else x.shape[1:]))
            if why:
                raise JobError(f"--format png cannot write these samples: {why};"
                               f" use npz or tfrecord", EXIT_USAGE)
        job = self._job_identity(model)
        if existing is not None and existing.get("job") != job:
            diffs = manifest_lib.job_differences(existing.get("job", {}), job)
            raise JobError(
                f"{self.manifest_path} belongs to a different job ("
                + "; ".join(diffs) + "); rerun with the same flags or use "
                "another --out", EXIT_USAGE)

        # tfp_vae (and so TensorFlow) loads here, not at import: --help stays quick.
        from tfp_vae import files

        os.makedirs(self.out, exist_ok=True)
        mine = {s.name for s in self.shards} | {os.path.basename(self.manifest_path)}
        files.remove_stale_temporaries(self.out, finals=mine)
        self._entries = manifest_lib.verified_entries(existing, self.shards,
                                                      self.out, self.log)
        pending = [s for s in self.shards if s.index not in self._entries]
        total = sum(s.count for s in self.shards)
        skipped = sum(s.count for s in self.shards if s.index in self._entries)
        self._job = job
        self._save_manifest()
        progress = _Progress(total, skipped, enabled=not args.quiet)
        start = time.monotonic()
        interrupted = False
        try:
            self._generate(source, pending, progress)
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
        progress.close()
        elapsed = time.monotonic() - start
        complete = len(self._entries)
        generated = progress.generated
        rate = generated / elapsed if elapsed > 0 else 0.0
        self.log(f"generate: {generated} samples generated in {elapsed:.1f} s "
                 f"({rate:.1f} samples/s), {skipped} already complete; "
                 f"{complete}/{len(self.shards)} shards complete in {self.out} "
                 f"(manifest {os.path.basename(self.manifest_path)})")
        if interrupted:
            self.log("generate: interrupted; rerun the same command to finish")
            return EXIT_INTERRUPTED
        if self._errors:
            error = self._errors[0]
            if isinstance(error, ServingError):
                what = (f"the model server refused a request: "
                        f"{error.code.name}: {error.message}"
                        if args.target else
                        f"the model failed: {error.code.name}: {error.message}")
            else:
                what = str(error)
            self.log(f"generate: error: {what}")
            self.log(f"generate: kept {complete} complete shard(s); fix the "
                     f"cause and rerun the same command to finish")
            return EXIT_FAILED
        return EXIT_OK

    def _save_manifest(self) -> None:
        entries = [self._entries[k] for k in sorted(self._entries)]
        manifest = manifest_lib.make_manifest(
            self._job, shard_count(self.args.num_samples, self.args.shard_size),
            self.shards, entries)
        from tfp_vae import files

        files.write_atomically(self.manifest_path, manifest_lib.encode(manifest))

    def _generate(self, source, pending: list, progress: _Progress) -> None:
        args = self.args
        writer = ShardWriter(self.out, args.format, args.num_samples)
        work = queue.Queue(maxsize=2 * args.concurrency)
        buffers = {}
        from tfp_vae.row_sampling import seed_rows  # the job runs: TensorFlow is loading

        def worker():
            while True:
                item = work.get()
                if item is None:
                    return
                if self.stop.is_set():
                    continue
                shard, start, stop = item
                try:
                    outputs = self.call_with_retries(
                        source.generate, seed_rows(args.seed, start, stop))
                    self._check_outputs(outputs, stop - start, source.outputs)
                    lo, hi = max(start, shard.start), min(stop, shard.stop)
                    outputs = {k: v[lo - start:hi - start]
                               for k, v in outputs.items()}
                    self._deliver(buffers, writer, shard, lo, outputs,
                                  progress)
                except Exception as e:  # noqa: BLE001 - stops the job
                    with self._lock:
                        self._errors.append(e)
                    self.stop.set()

        threads = [threading.Thread(target=worker, name=f"generate-{i}",
                                    daemon=True)
                   for i in range(args.concurrency)]
        for t in threads:
            t.start()
        try:
            for shard in pending:
                for start, stop in grid_requests(shard, args.batch_size,
                                                 args.num_samples):
                    item = (shard, start, stop)
                    while not self.stop.is_set():
                        try:
                            work.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if self.stop.is_set():
                        break
                if self.stop.is_set():
                    break
        except BaseException:
            self.stop.set()           # e.g. Ctrl-C: workers stop taking work
            raise
        finally:
            for _ in threads:
                while True:
                    try:
                        work.put(None, timeout=0.2)
                        break
                    except queue.Full:
                        continue
            for t in threads:
                while t.is_alive():
                    t.join(0.2)

    @staticmethod
    def _check_outputs(outputs: dict, rows: int, specs: dict) -> None:
        for name in specs:
            if name not in outputs:
                raise JobError(f"the model's answer lacks output {name!r}")
            value = outputs[name]
            if value.ndim == 0 or value.shape[0] != rows:
                raise JobError(f"the model answered {name!r} with shape "
                               f"{list(value.shape)} for {rows} seed rows; "
                               f"expected {rows} rows")

    def _deliver(self, buffers: dict, writer: ShardWriter, shard: Shard,
                 start: int, outputs: dict, progress: _Progress) -> None:
        rows = next(iter(outputs.values())).shape[0]
        with self._lock:
            buf = buffers.get(shard.index)
            if buf is None:
                buf = buffers[shard.index] = _ShardBuffer(shard)
                buf.arrays = {k: np.empty((shard.count, *v.shape[1:]), v.dtype)
                              for k, v in outputs.items()}
        offset = start - shard.start
        for k, v in outputs.items():
            buf.arrays[k][offset:offset + rows] = v
        with self._lock:
            buf.filled += rows
            complete = buf.filled == shard.count
            if complete:
                del buffers[shard.index]
        if complete:
            digest = writer.write(shard, buf.arrays)
            with self._lock:
                self._entries[shard.index] = manifest_lib.shard_entry(shard, digest)
                self._save_manifest()
        progress.add(rows)


def run_generate(args: argparse.Namespace) -> int:
    """Runs the job described by `args`; returns the exit status.

    ``args.pipeline_args`` (optional): Beam pipeline options, for --runner beam.
    """
    if not hasattr(args, "pipeline_args"):
        args.pipeline_args = []
    try:
        validate_args(args)
        if getattr(args, "runner", "local") == "beam":
            from serving import beam_pipeline  # Beam loads only here

            return beam_pipeline.run_generate_beam(args)
        return Job(args).run()
    except JobError as e:
        print(f"generate: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"generate: error: {e.strerror or e}: "
              f"{e.filename or args.out}", file=sys.stderr)
        return EXIT_FAILED


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.generate",
        description="Generate samples from a model's 'generate' signature, "
                    "resumably, through a model server or in process.")
    add_generate_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    pipeline_args = []
    if "--" in argv:                      # Beam pipeline options follow
        argv, pipeline_args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    args.pipeline_args = pipeline_args
    return run_generate(args)


if __name__ == "__main__":
    sys.exit(main())
