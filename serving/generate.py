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

Transient server errors (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
are retried with backoff; any other error stops the job, keeping the shards
already complete, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import queue
import re
import struct
import sys
import threading
import time
import zipfile
import zlib
from typing import Optional

import numpy as np

SIGNATURE = "generate"
MANIFEST_VERSION = 1
FORMATS = ("npz", "png", "tfrecord")
INT32_MAX = 2**31 - 1
INT32_MIN = -2**31
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class JobError(Exception):
    """Stops the job; `exit_code` says how (usage error or failure)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------
# Flags.
# ---------------------------------------------------------------------------

def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the generation job's flags to `parser`."""
    source = parser.add_argument_group("model (one of)")
    source.add_argument("--target", help="HOST:PORT of a TF Serving gRPC API.")
    source.add_argument("--model_name", help="Model to ask (with --target).")
    source.add_argument("--model_version", type=int,
                        help="Version to ask (with --target); default: the "
                             "latest, pinned for the whole job.")
    source.add_argument("--saved-model", dest="saved_model",
                        help="Generate in process from this SavedModel "
                             "directory (BASE/NAME/VERSION, or BASE/NAME for "
                             "its highest version); no server.")
    parser.add_argument("--num-samples", dest="num_samples", type=int,
                        required=True, help="N, samples to generate.")
    parser.add_argument("--batch-size", dest="batch_size", type=int,
                        default=256, help="Rows per request (default 256).")
    parser.add_argument("--seed", type=int, default=0,
                        help="Job seed S; sample i comes from seed row (S, i).")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="Requests in flight at once (default 4).")
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


def validate_args(args: argparse.Namespace) -> None:
    """Raises JobError(EXIT_USAGE) naming the first bad flag."""
    def usage(message):
        raise JobError(message, EXIT_USAGE)

    if bool(args.target) == bool(args.saved_model):
        usage("give exactly one of --target HOST:PORT (with --model_name) or "
              "--saved-model DIR; got "
              + ("both" if args.target else "neither"))
    if args.target:
        if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}",
                            args.target):
            usage(f"--target must be HOST:PORT; got {args.target!r}")
        if not args.model_name:
            usage("--model_name is required with --target")
        if args.model_version is not None and args.model_version < 0:
            usage(f"--model_version must be >= 0; got {args.model_version}")
    else:
        if args.model_name or args.model_version is not None:
            usage("--model_name/--model_version go with --target, not with "
                  "--saved-model")
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
    if not INT32_MIN <= args.seed <= INT32_MAX:
        usage(f"--seed must fit in int32 [{INT32_MIN}, {INT32_MAX}]; got "
              f"{args.seed}")
    if not args.timeout > 0:
        usage(f"--timeout must be a positive number of seconds; got "
              f"{args.timeout}")
    if args.max_retries < 0:
        usage(f"--max-retries must be >= 0; got {args.max_retries}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        usage(f"--out {args.out!r} exists and is not a directory")


# ---------------------------------------------------------------------------
# The plan.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Shard:
    """Output shard `index` holds samples [start, stop)."""

    index: int
    start: int
    stop: int
    name: str

    @property
    def count(self) -> int:
        return self.stop - self.start


def shard_file_name(index: int, total: int, fmt: str) -> str:
    width = max(5, len(str(total)))
    suffix = "" if fmt == "png" else f".{fmt}"
    return f"samples-{index:0{width}d}-of-{total:0{width}d}{suffix}"


def plan_shards(num_samples: int, shard_size: int, fmt: str,
                shard_index: int = 0, num_shards: int = 1) -> list:
    """This worker's output shards, in order."""
    total = math.ceil(num_samples / shard_size)
    return [Shard(j, j * shard_size, min((j + 1) * shard_size, num_samples),
                  shard_file_name(j, total, fmt))
            for j in range(shard_index, total, num_shards)]


def grid_requests(shard: Shard, batch_size: int, num_samples: int) -> list:
    """The grid requests [start, stop) that cover `shard`.

    Request k is always rows [k * batch_size, (k + 1) * batch_size), cut at
    num_samples, so a row is computed in the same batch whoever asks for it.
    """
    first = shard.start - shard.start % batch_size
    return [(start, min(start + batch_size, num_samples))
            for start in range(first, shard.stop, batch_size)]


def seed_rows(seed: int, start: int, stop: int) -> np.ndarray:
    """int32 [stop - start, 2]: row i is (seed, i)."""
    rows = np.empty((stop - start, 2), dtype=np.int32)
    rows[:, 0] = seed
    rows[:, 1] = np.arange(start, stop, dtype=np.int64)
    return rows


def manifest_name(shard_index: int, num_shards: int) -> str:
    if num_shards == 1:
        return "manifest.json"
    return f"manifest-{shard_index:05d}-of-{num_shards:05d}.json"


# ---------------------------------------------------------------------------
# Where samples come from.
# ---------------------------------------------------------------------------

def _check_signature(info, where: str) -> dict:
    """{output: TensorSpec} of a usable `generate` signature, else JobError."""
    inputs = info.inputs
    seed = inputs.get("seed")
    if (set(inputs) != {"seed"} or seed.dtype != np.int32
            or (seed.shape is not None and (len(seed.shape) != 2
                                            or seed.shape[1] not in (None, 2)))):
        described = {k: (str(v.dtype), v.shape) for k, v in inputs.items()}
        raise JobError(f"{where}: the '{SIGNATURE}' signature must take one "
                       f"input 'seed' int32 [B, 2]; it takes {described}")
    if not info.outputs:
        raise JobError(f"{where}: the '{SIGNATURE}' signature has no outputs")
    return dict(info.outputs)


class ServerSource:
    """Samples from a model server over gRPC, one pinned version."""

    def __init__(self, target: str, model_name: str,
                 version: Optional[int], timeout: float):
        from serving.client import Client

        self._client_class = Client
        self.target = target
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self._client = None
        self.outputs = None

    def prepare(self, call_with_retries) -> dict:
        """Resolves (and pins) the version; returns the model identity."""
        probe = self._client_class(self.target, self.model_name,
                                   version=self.version, timeout=self.timeout)
        try:
            meta = call_with_retries(probe.metadata)
        finally:
            probe.close()
        where = f"model {self.model_name!r} version {meta.version} at {self.target}"
        info = meta.signatures.get(SIGNATURE)
        if info is None:
            raise JobError(f"{where} has no '{SIGNATURE}' signature; it has "
                           f"{sorted(meta.signatures)}")
        self.outputs = _check_signature(info, where)
        self.version = meta.version
        self._client = self._client_class(self.target, self.model_name,
                                          version=self.version,
                                          timeout=self.timeout)
        return {"model_name": self.model_name, "model_version": self.version}

    def generate(self, rows: np.ndarray) -> dict:
        return self._client.predict(SIGNATURE, {"seed": rows})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class InProcessSource:
    """Samples from a SavedModel loaded into this process."""

    def __init__(self, path: str):
        self.path = resolve_saved_model(path)
        self.outputs = None
        self._fn = None

    def prepare(self, call_with_retries) -> dict:
        import tensorflow as tf

        from serving import errors
        from serving.client import signature_info
        from serving.servable import read_meta_graph

        try:
            meta_graph = read_meta_graph(self.path)
        except errors.ServingError as e:
            raise JobError(f"--saved-model {self.path!r}: {e.message}") from e
        signature = meta_graph.signature_def.get(SIGNATURE)
        if signature is None:
            raise JobError(f"--saved-model {self.path!r} has no '{SIGNATURE}' "
                           f"signature; it has "
                           f"{sorted(meta_graph.signature_def)}")
        self.outputs = _check_signature(signature_info(signature),
                                        f"--saved-model {self.path!r}")
        try:
            loaded = tf.saved_model.load(self.path)
        except Exception as e:  # noqa: BLE001 - reported with the path
            raise JobError(f"cannot load --saved-model {self.path!r}: {e}") from e
        self._loaded = loaded
        self._fn = loaded.signatures[SIGNATURE]
        # One row through the model: it works, and later timings are warm.
        try:
            self.generate(seed_rows(0, 0, 1))
        except errors.ServingError as e:
            raise JobError(f"--saved-model {self.path!r} fails on one seed "
                           f"row: {e.code.name}: {e.message}") from e
        return {"saved_model": self.path}

    def generate(self, rows: np.ndarray) -> dict:
        import tensorflow as tf

        from serving import errors

        try:
            out = self._fn(seed=tf.constant(rows))
        except Exception as e:  # noqa: BLE001 - classified by its code
            raise errors.from_exception(e) from e
        return {k: v.numpy() for k, v in out.items()}

    def close(self) -> None:
        self._fn = None


def resolve_saved_model(path: str) -> str:
    """A SavedModel version directory, or the highest version under a base."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(
            os.path.join(path, "saved_model.pbtxt")):
        return path
    versions = []
    if os.path.isdir(path):
        versions = [int(n) for n in os.listdir(path) if n.isdigit()
                    and os.path.isdir(os.path.join(path, n))]
    if not versions:
        raise JobError(f"--saved-model {path!r}: no saved_model.pb there and "
                       f"no integer version directories; expected a SavedModel "
                       f"directory (BASE/NAME/VERSION) or a model base path",
                       EXIT_USAGE)
    return os.path.join(path, str(max(versions)))


# ---------------------------------------------------------------------------
# Writing shards.
# ---------------------------------------------------------------------------

def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def npz_bytes(arrays: dict) -> bytes:
    """An .npz (np.load reads it) with fixed timestamps: same data, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            zf.writestr(_zip_entry(f"{name}.npy"), data.getvalue())
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of a uint8 [H, W] or [H, W, C] (C in 1, 3, 4) image."""
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 9))
            + _png_chunk(b"IEND", b""))


def png_image_check(shape) -> Optional[str]:
    """None if samples of `shape` (without batch) can be PNGs, else why not."""
    if shape is None:
        return "its rank is unknown"
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        return None
    return (f"samples have shape {list(shape)}; expected (H, W) or (H, W, C) "
            f"with C in 1, 3, 4")


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def digest_of(path: str) -> Optional[str]:
    """sha256 of a shard file, or of a png shard directory; None if absent."""
    if os.path.isdir(path):
        lines = []
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                lines.append(f"{name} {_sha256(f.read())}\n")
        return _sha256("".join(lines).encode())
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except FileNotFoundError:
        return None


class ShardWriter:
    """Writes a complete shard atomically; returns its sha256."""

    def __init__(self, out_dir: str, fmt: str, num_samples: int):
        self.out_dir = out_dir
        self.fmt = fmt
        self.width = max(6, len(str(num_samples - 1)))

    def temp_path(self, shard: Shard) -> str:
        return os.path.join(self.out_dir, f".{shard.name}.tmp-{os.getpid()}")

    def write(self, shard: Shard, arrays: dict) -> str:
        final = os.path.join(self.out_dir, shard.name)
        temp = self.temp_path(shard)
        index = np.arange(shard.start, shard.stop, dtype=np.int64)
        if self.fmt == "npz":
            data = npz_bytes({**arrays, "index": index})
            _fsync_write(temp, data)
            digest = _sha256(data)
        elif self.fmt == "tfrecord":
            self._write_tfrecord(temp, arrays, index)
            digest = digest_of(temp)
        else:
            digest = self._write_pngs(temp, arrays["x"], index)
        if self.fmt == "png" and os.path.isdir(final):
            import shutil
            shutil.rmtree(final)
        os.replace(temp, final)
        return digest

    def _write_pngs(self, temp: str, x: np.ndarray, index: np.ndarray) -> str:
        import shutil

        if os.path.isdir(temp):
            shutil.rmtree(temp)
        os.makedirs(temp)
        images = to_uint8(x)
        lines = []
        for i, image in zip(index, images):
            name = f"{int(i):0{self.width}d}.png"
            data = png_bytes(image)
            _fsync_write(os.path.join(temp, name), data)
            lines.append(f"{name} {_sha256(data)}\n")
        return _sha256("".join(sorted(lines)).encode())

    @staticmethod
    def _write_tfrecord(temp: str, arrays: dict, index: np.ndarray) -> None:
        import tensorflow as tf

        with tf.io.TFRecordWriter(temp) as writer:
            for row, i in enumerate(index):
                feature = {"index": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(i)]))}
                for name in sorted(arrays):
                    value = np.asarray(arrays[name][row])
                    if value.dtype.kind == "f":
                        f = tf.train.Feature(float_list=tf.train.FloatList(
                            value=value.reshape(-1).astype(np.float32)))
                    else:
                        f = tf.train.Feature(int64_list=tf.train.Int64List(
                            value=value.reshape(-1).astype(np.int64)))
                    feature[name] = f
                    feature[f"{name}/shape"] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=list(value.shape)))
                example = tf.train.Example(
                    features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString(deterministic=True))
        with open(temp, "rb") as f:
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------
# Manifest.
# ---------------------------------------------------------------------------

def read_manifest(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise JobError(f"cannot read the manifest {path!r}: {e}; move it away "
                       f"to start over", EXIT_USAGE) from e
    if not isinstance(manifest, dict) or manifest.get(
            "manifest_version") != MANIFEST_VERSION:
        raise JobError(f"{path!r} is not a manifest of this job format "
                       f"(manifest_version {MANIFEST_VERSION})", EXIT_USAGE)
    return manifest


def write_manifest(path: str, manifest: dict) -> None:
    temp = os.path.join(os.path.dirname(path),
                        f".{os.path.basename(path)}.tmp-{os.getpid()}")
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    _fsync_write(temp, data)
    os.replace(temp, path)


def _job_differences(old: dict, new: dict) -> list:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the manifest, {new.get(k)!r} now"
            for k in keys if old.get(k) != new.get(k)]


# ---------------------------------------------------------------------------
# Progress.
# ---------------------------------------------------------------------------

class Progress:
    """A one-line progress bar with samples/s on stderr."""

    def __init__(self, total: int, done: int, stream=None, enabled: bool = True):
        self.total = total
        self.done = done
        self.generated = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.generated / elapsed if elapsed > 0 else 0.0

    def update(self, n: int) -> None:
        with self._lock:
            self.done += n
            self.generated += n
            now = time.monotonic()
            if not self.enabled or now - self._last < (0.1 if self.tty else 2.0):
                return
            self._last = now
            self._render()

    def _render(self, end: str = "") -> None:
        fraction = self.done / self.total if self.total else 1.0
        width = 30
        filled = int(width * fraction)
        bar = "#" * filled + "-" * (width - filled)
        rate = self.rate()
        remaining = self.total - self.done
        eta = f"{remaining / rate:6.0f}s" if rate > 0 else "     ?s"
        line = (f"generate [{bar}] {self.done}/{self.total} "
                f"{100 * fraction:5.1f}% {rate:9.1f} samples/s ETA {eta}")
        self.stream.write(("\r" + line + end) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                self._render(end="\n")


# ---------------------------------------------------------------------------
# The job.
# ---------------------------------------------------------------------------

class _ShardBuffer:
    def __init__(self, shard: Shard):
        self.shard = shard
        self.arrays = None
        self.filled = 0


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
            self.out, manifest_name(args.shard_index, args.num_shards))
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._errors = []
        self._entries = {}

    def log(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    # -- retries ------------------------------------------------------------
    def call_with_retries(self, fn, *args):
        from serving.errors import ServingError

        delay = 0.5
        for attempt in range(self.args.max_retries + 1):
            try:
                return fn(*args)
            except ServingError as e:
                if not e.transient or attempt == self.args.max_retries:
                    if e.transient:
                        raise JobError(
                            f"gave up after {attempt + 1} attempts: "
                            f"{e.code.name}: {e.message}") from e
                    raise
                self.log(f"generate: {e.code.name}: {e.message}; retrying in "
                         f"{delay:.1f} s (attempt {attempt + 2} of "
                         f"{self.args.max_retries + 1})")
                if self.stop.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)

    # -- running ------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        existing = read_manifest(self.manifest_path)
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

    def _run(self, source, existing: Optional[dict]) -> int:
        from serving.errors import ServingError

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
        job = {"signature": SIGNATURE, "model": model, "seed": args.seed,
               "num_samples": args.num_samples, "shard_size": args.shard_size,
               "format": args.format, "shard_index": args.shard_index,
               "num_shards": args.num_shards}
        if existing is not None and existing.get("job") != job:
            diffs = _job_differences(existing.get("job", {}), job)
            raise JobError(
                f"{self.manifest_path} belongs to a different job ("
                + "; ".join(diffs) + "); rerun with the same flags or use "
                "another --out", EXIT_USAGE)

        os.makedirs(self.out, exist_ok=True)
        self._remove_stale_temporaries()
        done = self._verified_shards(existing)
        pending = [s for s in self.shards if s.index not in done]
        total = sum(s.count for s in self.shards)
        skipped = sum(s.count for s in self.shards if s.index in done)
        self._job = job
        self._save_manifest()
        progress = Progress(total, skipped, self.stream,
                            enabled=not args.quiet)
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

    def _remove_stale_temporaries(self) -> None:
        mine = {s.name for s in self.shards} | {
            os.path.basename(self.manifest_path)}
        pattern = re.compile(r"^\.(.+)\.tmp-\d+$")
        for name in os.listdir(self.out):
            m = pattern.match(name)
            if m and m.group(1) in mine:
                path = os.path.join(self.out, name)
                if os.path.isdir(path):
                    import shutil
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)

    def _verified_shards(self, existing: Optional[dict]) -> set:
        """Shards listed in the manifest whose files still match."""
        done = set()
        if existing is None:
            return done
        listed = {e["shard"]: e for e in existing.get("shards", [])}
        for shard in self.shards:
            entry = listed.get(shard.index)
            if entry is None or entry.get("file") != shard.name or (
                    entry.get("start"), entry.get("stop")) != (shard.start,
                                                               shard.stop):
                continue
            if digest_of(os.path.join(self.out, shard.name)) == entry.get("sha256"):
                done.add(shard.index)
                self._entries[shard.index] = entry
            else:
                self.log(f"generate: {shard.name} is missing or does not match "
                         f"its checksum; generating it again")
        return done

    def _save_manifest(self) -> None:
        entries = [self._entries[k] for k in sorted(self._entries)]
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "job": self._job,
            "total_shards": math.ceil(self.args.num_samples / self.args.shard_size),
            "worker_shards": len(self.shards),
            "worker_samples": sum(s.count for s in self.shards),
            "shards": entries,
            "complete_samples": sum(e["count"] for e in entries),
            "complete": len(entries) == len(self.shards),
        }
        write_manifest(self.manifest_path, manifest)

    def _generate(self, source, pending: list, progress: Progress) -> None:
        args = self.args
        writer = ShardWriter(self.out, args.format, args.num_samples)
        work = queue.Queue(maxsize=2 * args.concurrency)
        buffers = {}

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
                 start: int, outputs: dict, progress: Progress) -> None:
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
                self._entries[shard.index] = {
                    "shard": shard.index, "file": shard.name,
                    "start": shard.start, "stop": shard.stop,
                    "count": shard.count, "sha256": digest}
                self._save_manifest()
        progress.update(rows)


def run_generate(args: argparse.Namespace) -> int:
    """Runs the job described by `args`; returns the exit status."""
    try:
        validate_args(args)
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
    return run_generate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
