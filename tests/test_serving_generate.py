"""The batch generation job: determinism, shards, resume, errors, kills."""

import argparse
import glob
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import grpc
import numpy as np
import pytest

import serving_fixtures as fx

from serving import generate as gen
from serving import plan, writers
from serving.errors import EXIT_FAILED, EXIT_USAGE, JobError, ServingError
from serving.manifest import digest_of
from serving.results import TensorSpec
from tfp_vae import row_sampling

pytestmark = pytest.mark.timeout(170)


def _args(*argv):
    parser = argparse.ArgumentParser()
    gen.add_generate_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def _run(*argv) -> tuple:
    """Runs the job in this process; returns (exit status, stderr text)."""
    args = _args(*argv)
    stream = io.StringIO()
    try:
        gen.validate_args(args)
        code = gen.Job(args, stream=stream).run()
    except JobError as e:
        stream.write(f"generate: error: {e}\n")
        code = e.exit_code
    return code, stream.getvalue()


def _files(out) -> dict:
    """{relative path: bytes} of every file under `out`."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, out)] = f.read()
    return found


def _shard_files(out) -> dict:
    return {k: v for k, v in _files(out).items() if k.startswith("samples-")}


def _load_npz(out) -> dict:
    parts = [np.load(p) for p in sorted(glob.glob(os.path.join(out, "*.npz")))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}


@pytest.fixture(scope="module")
def model():
    return fx.shared_versions()[1]


# ---------------------------------------------------------------------------
# In process.
# ---------------------------------------------------------------------------

def _grid_reference(model, seed, num_samples, batch_size) -> dict:
    """The model's generate outputs for rows (seed, 0..N-1), asked on the job's grid."""
    parts = [fx.reference_outputs(model, "generate",
                                  {"seed": row_sampling.seed_rows(seed, start, min(start + batch_size, num_samples))})
             for start in range(0, num_samples, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# The determinism contract: the same --seed, --num-samples and --batch-size give
# byte-identical files whatever the concurrency, sharding or restarts; another
# --batch-size gives the same z bit for bit and x within X_TOLERANCE (matrix kernels
# may round differently for another batch size on some CPUs).
X_TOLERANCE = 1e-6


def test_output_does_not_depend_on_concurrency_or_sharding(model, tmp_path):
    common = ["--saved-model", model, "--num-samples", 90, "--seed", 5,
              "--shard-size", 20, "--quiet", "--batch-size", 7]
    code, text = _run(*common, "--concurrency", 1, "--out", tmp_path / "a")
    assert code == 0, text
    assert _run(*common, "--concurrency", 3, "--out", tmp_path / "b")[0] == 0
    for i in range(3):
        assert _run(*common, "--num-shards", 3, "--shard-index", i,
                    "--out", tmp_path / "c")[0] == 0
    a = _shard_files(tmp_path / "a")
    assert len(a) == 5                        # ceil(90 / 20) shards
    assert a == _shard_files(tmp_path / "b") == _shard_files(tmp_path / "c")
    manifests = sorted(os.listdir(tmp_path / "c"))
    assert "manifest-00002-of-00003.json" in manifests

    data = _load_npz(tmp_path / "a")
    np.testing.assert_array_equal(data["index"], np.arange(90))
    # Sample i is the model's sample for seed row (5, i), asked in grid batches of 7
    # (rows [7k, 7k + 7)) even where a batch straddles two shards of 20.
    rows = row_sampling.seed_rows(5, 0, 90)
    np.testing.assert_array_equal(rows[17], [5, 17])
    expected = _grid_reference(model, 5, 90, 7)
    np.testing.assert_array_equal(data["x"], expected["x"])
    np.testing.assert_array_equal(data["z"], expected["z"])

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["complete_samples"] == 90
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == [
        (0, 20), (20, 40), (40, 60), (60, 80), (80, 90)]
    assert manifest["job"]["seed"] == 5
    assert manifest["job"]["model"] == {"saved_model": model}
    for entry in manifest["shards"]:
        assert digest_of(str(tmp_path / "a" / entry["file"])) == entry["sha256"]


def test_other_shard_sizes_on_the_same_grid_give_the_same_samples(model, tmp_path):
    common = ["--saved-model", model, "--num-samples", 45, "--seed", 1,
              "--batch-size", 6, "--quiet"]
    assert _run(*common, "--shard-size", 12, "--out", tmp_path / "a")[0] == 0
    assert _run(*common, "--shard-size", 10, "--out", tmp_path / "b")[0] == 0
    a, b = _load_npz(tmp_path / "a"), _load_npz(tmp_path / "b")
    for key in ("index", "x", "z"):
        np.testing.assert_array_equal(a[key], b[key])


def test_another_batch_size_gives_the_same_z_and_x_within_tolerance(model, tmp_path):
    common = ["--saved-model", model, "--num-samples", 60, "--seed", 5,
              "--shard-size", 20, "--quiet"]
    outs = {}
    for batch in (20, 7, 60):
        assert _run(*common, "--batch-size", batch, "--out", tmp_path / str(batch))[0] == 0
        outs[batch] = _load_npz(tmp_path / str(batch))
    for batch in (7, 60):
        np.testing.assert_array_equal(outs[batch]["index"], outs[20]["index"])
        np.testing.assert_array_equal(outs[batch]["z"], outs[20]["z"])
        np.testing.assert_allclose(outs[batch]["x"], outs[20]["x"], rtol=0, atol=X_TOLERANCE)


def test_grid_requests_cover_a_shard_on_the_fixed_grid():
    shard = plan.Shard(1, 20, 40, "s")
    assert plan.grid_requests(shard, 7, 90) == [(14, 21), (21, 28), (28, 35), (35, 42)]
    assert plan.grid_requests(plan.Shard(4, 80, 90, "s"), 7, 90) == [(77, 84), (84, 90)]
    assert plan.grid_requests(plan.Shard(0, 0, 20, "s"), 20, 90) == [(0, 20)]


def test_rerun_skips_complete_shards_and_redoes_damaged_ones(model, tmp_path):
    argv = ["--saved-model", model, "--num-samples", 50, "--shard-size", 10,
            "--batch-size", 10, "--out", tmp_path, "--quiet"]
    assert _run(*argv)[0] == 0
    before = _files(tmp_path)
    names = sorted(_shard_files(tmp_path))
    untouched = tmp_path / names[0]
    mtime = untouched.stat().st_mtime_ns
    (tmp_path / names[1]).write_bytes(b"damaged")
    os.remove(tmp_path / names[2])
    # A temporary (tfp_vae.files' naming) left by a writer that has died.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / f".{names[3]}.tmp-{int(dead.stdout)}-0badf00d").write_bytes(
        b"left by a crash")
    code, text = _run(*argv)
    assert code == 0, text
    assert f"{names[1]} is missing or does not match its checksum" in text
    assert "20 samples generated" in text and "30 already complete" in text
    assert _files(tmp_path) == before            # byte-identical, no leftovers
    assert untouched.stat().st_mtime_ns == mtime  # skipped, not rewritten


def test_png_and_tfrecord_formats(model, tmp_path):
    import tensorflow as tf

    argv = ["--saved-model", model, "--num-samples", 12, "--shard-size", 5,
            "--batch-size", 4, "--seed", 2, "--quiet"]
    assert _run(*argv, "--format", "png", "--out", tmp_path / "p1")[0] == 0
    assert _run(*argv, "--format", "png", "--out", tmp_path / "p2")[0] == 0
    pngs = _shard_files(tmp_path / "p1")
    assert pngs == _shard_files(tmp_path / "p2")
    assert len(pngs) == 12
    expected = _grid_reference(model, 2, 12, 4)
    data = pngs[os.path.join("samples-00001-of-00003", "000007.png")]
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (height, width, depth, color) == (*fx.DATA_SHAPE, 8, 0)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = zlib.decompress(data[idat + 4:idat + 4 + length])
    pixels = np.frombuffer(raw, np.uint8).reshape(height, width + 1)[:, 1:]
    np.testing.assert_array_equal(pixels, writers.to_uint8(expected["x"][7]))

    assert _run(*argv, "--format", "tfrecord", "--out", tmp_path / "t")[0] == 0
    records = sorted(glob.glob(str(tmp_path / "t" / "*.tfrecord")))
    assert len(records) == 3
    examples = [tf.train.Example.FromString(r.numpy())
                for r in tf.data.TFRecordDataset(records)]
    assert [e.features.feature["index"].int64_list.value[0]
            for e in examples] == list(range(12))
    x3 = np.array(examples[3].features.feature["x"].float_list.value,
                  np.float32).reshape(
        examples[3].features.feature["x/shape"].int64_list.value)
    np.testing.assert_array_equal(x3, expected["x"][3])


@pytest.mark.parametrize("argv,fragment", [
    (["--num-samples", 5], "give exactly one of --target"),
    (["--target", "h:1", "--saved-model", "m", "--num-samples", 5], "got both"),
    (["--target", "h:1", "--num-samples", 5], "--model_name is required"),
    (["--target", "nohostport", "--model_name", "m", "--num-samples", 5],
     "--target must be HOST:PORT; got 'nohostport'"),
    (["--saved-model", "m", "--num-samples", 0],
     "--num-samples must be in [1, 2147483648]"),
    (["--saved-model", "m", "--num-samples", 5, "--batch-size", -3],
     "--batch-size must be a positive integer; got -3"),
    (["--saved-model", "m", "--num-samples", 5, "--shard-size", 0],
     "--shard-size must be a positive integer; got 0"),
    (["--saved-model", "m", "--num-samples", 5, "--concurrency", 0],
     "--concurrency must be a positive integer; got 0"),
    (["--saved-model", "m", "--num-samples", 5, "--num-shards", 2,
      "--shard-index", 2], "--shard-index must be in [0, 1] for --num-shards 2;"
                           " got 2"),
    (["--saved-model", "m", "--num-samples", 5, "--seed", 2**31],
     "--seed must fit in int32"),
    (["--saved-model", "/no/such/model", "--num-samples", 5],
     "no saved_model.pb there"),
])
def test_bad_flags_stop_before_writing(tmp_path, argv, fragment):
    out = tmp_path / "out"
    code, text = _run(*argv, "--out", out)
    assert code == EXIT_USAGE
    assert fragment in text
    assert not out.exists()


def test_png_needs_image_shaped_samples(tmp_path):
    source = _StubSource(outputs={"x": TensorSpec("x", np.dtype("float32"),
                                                  (None, 7))})
    args = _args("--saved-model", "m", "--num-samples", 4, "--format", "png",
                 "--out", tmp_path / "out")
    with pytest.raises(JobError) as info:
        gen.Job(args, stream=io.StringIO(), source=source).run()
    assert info.value.exit_code == EXIT_USAGE
    assert "samples have shape [7]" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_rerun_with_other_flags_is_refused(model, tmp_path):
    argv = ["--saved-model", model, "--num-samples", 10, "--out", tmp_path,
            "--quiet"]
    assert _run(*argv, "--seed", 1)[0] == 0
    before = _files(tmp_path)
    code, text = _run(*argv, "--seed", 2)
    assert code == EXIT_USAGE
    assert "seed: 1 in the manifest, 2 now" in text
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------------
# Errors from the server, with a scripted source.
# ---------------------------------------------------------------------------

class _StubSource:
    """Answers like a server; fails as scripted (call number -> error)."""

    def __init__(self, failures=None, outputs=None):
        self.failures = dict(failures or {})
        self.outputs = outputs or {"x": TensorSpec("x", np.dtype("float32"),
                                                   (None, 2))}
        self.calls = 0

    def prepare(self, call_with_retries):
        return {"model_name": "stub", "model_version": 1}

    def generate(self, rows):
        self.calls += 1
        error = self.failures.pop(self.calls, None)
        if error is not None:
            raise error
        return {"x": rows.astype(np.float32)}

    def close(self):
        pass


def test_transient_errors_are_retried(tmp_path):
    unavailable = ServingError(grpc.StatusCode.UNAVAILABLE, "connection lost")
    source = _StubSource({2: unavailable, 3: ServingError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")})
    args = _args("--target", "h:1", "--model_name", "stub", "--num-samples", 12,
                 "--batch-size", 4, "--shard-size", 4, "--concurrency", 1,
                 "--out", tmp_path, "--quiet")
    stream = io.StringIO()
    assert gen.Job(args, stream=stream, source=source).run() == 0
    text = stream.getvalue()
    assert "UNAVAILABLE: connection lost; retrying" in text
    assert "RESOURCE_EXHAUSTED: queue full; retrying" in text
    data = _load_npz(tmp_path)
    np.testing.assert_array_equal(data["x"][:, 1], np.arange(12))


def test_permanent_error_stops_and_keeps_complete_shards(tmp_path):
    source = _StubSource({3: ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                          "bad seed")})
    args = _args("--target", "h:1", "--model_name", "stub", "--num-samples", 40,
                 "--batch-size", 4, "--shard-size", 8, "--concurrency", 1,
                 "--out", tmp_path, "--quiet")
    stream = io.StringIO()
    assert gen.Job(args, stream=stream, source=source).run() == EXIT_FAILED
    text = stream.getvalue()
    assert "refused a request: INVALID_ARGUMENT: bad seed" in text
    assert "retrying" not in text
    assert source.calls == 3                  # stopped at once
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["shard"] for s in manifest["shards"]] == [0]
    assert not manifest["complete"]
    assert sorted(_shard_files(tmp_path)) == ["samples-00000-of-00005.npz"]
    # The same command finishes the job.
    assert gen.Job(args, stream=io.StringIO(), source=_StubSource()).run() == 0
    data = _load_npz(tmp_path)
    np.testing.assert_array_equal(data["index"], np.arange(40))


def test_retries_are_bounded(tmp_path):
    down = ServingError(grpc.StatusCode.UNAVAILABLE, "down")
    source = _StubSource({i: down for i in range(1, 10)})
    args = _args("--target", "h:1", "--model_name", "stub", "--num-samples", 4,
                 "--max-retries", 1, "--out", tmp_path, "--quiet")
    stream = io.StringIO()
    assert gen.Job(args, stream=stream, source=source).run() == EXIT_FAILED
    assert "gave up after 2 attempts: UNAVAILABLE: down" in stream.getvalue()


# ---------------------------------------------------------------------------
# Killed mid-way: first the server, then the job itself.
# ---------------------------------------------------------------------------

def _complete_shards(out) -> int:
    try:
        with open(os.path.join(out, "manifest.json")) as f:
            return len(json.load(f)["shards"])
    except (OSError, ValueError):
        return 0


def test_killed_server_then_killed_job_resume_identically(model, tmp_path):
    n, shard_size, batch = 640, 16, 8
    total_shards = n // shard_size
    reference = tmp_path / "reference"
    code, text = _run("--saved-model", model, "--num-samples", n, "--seed", 9,
                      "--batch-size", batch, "--shard-size", shard_size,
                      "--out", reference, "--quiet")
    assert code == 0, text

    base = tmp_path / "models" / "vae"
    fx.copy_version(model, str(base), 1)
    params = tmp_path / "batching.txt"
    # Every request waits 40 ms in the batch queue: the job takes seconds.
    params.write_text("max_batch_size { value: 64 } "
                      "batch_timeout_micros { value: 40000 } "
                      "num_batch_threads { value: 1 }")
    port = fx.free_port()
    server_argv = ["--port", str(port), "--model_name", "vae",
                   "--model_base_path", str(base), "--enable_batching",
                   "--batching_parameters_file", str(params)]
    out = tmp_path / "out"
    job_argv = [sys.executable, "-m", "serving.generate", "--target",
                f"127.0.0.1:{port}", "--model_name", "vae", "--num-samples",
                str(n), "--seed", "9", "--batch-size", str(batch),
                "--shard-size", str(shard_size), "--concurrency", "1",
                "--max-retries", "12", "--out", str(out)]
    job_log = open(tmp_path / "job.log", "wb")

    def start_job():
        return subprocess.Popen(job_argv, cwd=fx.REPO_ROOT,
                                env=fx.subprocess_env(), stdout=job_log,
                                stderr=subprocess.STDOUT)

    server = fx.ServerProcess(server_argv, str(tmp_path / "server1.log"))
    job = start_job()
    try:
        fx.wait_for(lambda: _complete_shards(out) >= 2, 90,
                    message="the job to complete two shards")
        server.kill()                                   # the server dies
        at_server_kill = _complete_shards(out)
        assert at_server_kill < total_shards
        time.sleep(1.0)
        assert job.poll() is None                       # the job waits, retrying
        server = fx.ServerProcess(server_argv, str(tmp_path / "server2.log"))
        fx.wait_for(lambda: _complete_shards(out) >= at_server_kill + 2, 90,
                    message="the job to go on with the new server")
        job.send_signal(signal.SIGKILL)                 # the job dies
        assert job.wait(30) == -signal.SIGKILL
        at_job_kill = _complete_shards(out)
        assert at_job_kill < total_shards

        job = start_job()                               # the same command
        assert job.wait(120) == 0
    finally:
        if job.poll() is None:
            job.kill()
        server.kill()
        job_log.close()
    log = (tmp_path / "job.log").read_text()
    assert "UNAVAILABLE" in log and "retrying" in log
    assert f"{at_job_kill * shard_size} already complete" in log

    assert _shard_files(out) == _shard_files(reference)
    assert not [f for f in os.listdir(out) if ".tmp-" in f]
    manifest = json.loads((out / "manifest.json").read_text())
    ref_manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["shards"] == ref_manifest["shards"]
    assert manifest["complete"] and manifest["complete_samples"] == n
    assert manifest["job"]["model"] == {"model_name": "vae", "model_version": 1}
    data = _load_npz(out)
    np.testing.assert_array_equal(data["index"], np.arange(n))
