"""The Beam runner of the generation and scoring jobs: same bytes as the local runner.

Pipelines run on Beam's FnApiRunner: once with two worker processes (fresh
interpreters, each importing TensorFlow: the slow case, done once per module),
once with the default options (worker threads, one per core), and otherwise in
this process (``--direct_running_mode=in_memory``), which runs the same
pipeline graph and DoFns without new interpreters.
"""

import argparse
import glob
import io
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest

import serving_fixtures as fx

from serving import beam_pipeline, cli, plan, score
from serving.errors import EXIT_USAGE, JobError, ServingError

pytestmark = pytest.mark.timeout(600)

IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
TWO_WORKERS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
               "--direct_num_workers=2"]


def _files(out) -> dict:
    """{relative path: bytes} of every file under `out` (hidden ones included)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(str(out), "**"), recursive=True)
                       + glob.glob(os.path.join(str(out), ".*"))):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, str(out))] = f.read()
    return found


def _cli(*argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def model():
    return fx.shared_versions()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "examples.npz"
    x = fx.example_inputs(300, seed=5)["log_likelihood"]["x"]
    np.savez(path, x=x, other=np.zeros(3))
    return str(path)


GEN = ("--num-samples", 530, "--batch-size", 48, "--shard-size", 200,
       "--seed", 11, "--quiet")
SCORE = ("--batch-size", 32, "--shard-size", 120, "--seed", 4, "--quiet")


@pytest.fixture(scope="module")
def local_generate(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-gen")
    assert _cli("generate", "--saved-model", model, *GEN, "--out", out) == 0
    return _files(out)


@pytest.fixture(scope="module")
def local_score(model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-score")
    assert _cli("score", "--saved-model", model, "--data", data, *SCORE,
                "--out", out) == 0
    return _files(out)


# ---------------------------------------------------------------------------
# Same bytes as the local job.
# ---------------------------------------------------------------------------

def test_generate_two_worker_processes_byte_identical(model, local_generate, tmp_path):
    out = tmp_path / "beam"
    assert _cli("generate", "--saved-model", model, *GEN, "--out", out,
                "--runner", "beam", "--", *TWO_WORKERS) == 0
    beam = _files(out)
    assert sorted(beam) == ["manifest.json", "samples-00000-of-00003.npz",
                            "samples-00001-of-00003.npz",
                            "samples-00002-of-00003.npz"]
    assert beam == local_generate


def test_generate_matches_the_model_itself(model, local_generate):
    """The reference: the SavedModel's generate signature on the job's grid."""
    rows = np.stack([np.full(530, 11, np.int32), np.arange(530, dtype=np.int32)], 1)
    want = np.concatenate([fx.reference_outputs(model, "generate",
                                                {"seed": rows[a:a + 48]})["x"]
                           for a in range(0, 530, 48)])
    got = np.concatenate([np.load(io.BytesIO(local_generate[n]))["x"]
                          for n in sorted(local_generate) if n.endswith(".npz")])
    np.testing.assert_array_equal(got, want)


def test_generate_tfrecord_default_options_byte_identical(model, tmp_path):
    """No options after --: the local FnApiRunner, one worker thread per core."""
    flags = ("--saved-model", model, "--num-samples", 100, "--batch-size", 30,
             "--shard-size", 40, "--seed", 2, "--format", "tfrecord", "--quiet")
    assert _cli("generate", *flags, "--out", tmp_path / "local") == 0
    assert _cli("generate", *flags, "--out", tmp_path / "beam", "--runner",
                "beam") == 0
    assert _files(tmp_path / "beam") == _files(tmp_path / "local")


def test_score_byte_identical_and_correct(model, data, local_score, tmp_path):
    out = tmp_path / "beam"
    assert _cli("score", "--saved-model", model, "--data", data, *SCORE,
                "--out", out, "--runner", "beam", "--", *IN_PROCESS) == 0
    beam = _files(out)
    assert sorted(beam) == ["scores-00000-of-00003.npz", "scores-00001-of-00003.npz",
                            "scores-00002-of-00003.npz", "summary.json"]
    assert beam == local_score

    # Against the model itself: example i with seed row (4, i), on the 32-grid.
    x = np.load(data)["x"]
    rows = np.stack([np.full(300, 4, np.int32), np.arange(300, dtype=np.int32)], 1)
    parts = [fx.reference_outputs(model, "log_likelihood",
                                  {"x": x[a:a + 32], "seed": rows[a:a + 32]})
             for a in range(0, 300, 32)]
    ll = np.concatenate([p["log_likelihood"] for p in parts])
    elbo = np.concatenate([p["elbo"] for p in parts])
    shards = [np.load(io.BytesIO(beam[n])) for n in sorted(beam) if n.endswith(".npz")]
    np.testing.assert_array_equal(np.concatenate([s["log_likelihood"] for s in shards]), ll)
    np.testing.assert_array_equal(np.concatenate([s["elbo"] for s in shards]), elbo)
    np.testing.assert_array_equal(np.concatenate([s["index"] for s in shards]),
                                  np.arange(300))
    import json

    summary = json.loads(beam["summary.json"])
    assert summary["count"] == 300
    assert summary["job"]["num_ll_samples"] == fx.NUM_IMPORTANCE_SAMPLES
    for name, values in (("log_likelihood", ll), ("elbo", elbo)):
        v = values.astype(np.float64)
        assert summary[name]["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert summary[name]["stderr"] == pytest.approx(
            v.std(ddof=1) / np.sqrt(v.size), rel=1e-9)
    # The ELBO is a lower bound of the importance-sampled log-likelihood.
    assert np.all(ll >= elbo - 1e-5)


def test_rerun_bundles_leave_same_files(model, local_generate, tmp_path):
    """Beam's FnApiRunner does not retry a failed bundle (a failure fails the
    pipeline); --direct_runner_bundle_repeat=1 replays every bundle, side
    effects included, as a runner that retries would: the files are unchanged,
    with no duplicates and no temporaries left."""
    out = tmp_path / "beam"
    assert _cli("generate", "--saved-model", model, *GEN, "--out", out,
                "--runner", "beam", "--", *IN_PROCESS,
                "--direct_runner_bundle_repeat=1") == 0
    assert _files(out) == local_generate


def test_rerun_skips_complete_shards_and_rewrites_a_damaged_one(
        model, local_generate, tmp_path):
    out = tmp_path / "beam"
    for name, content in local_generate.items():
        if name != "samples-00001-of-00003.npz":
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(content)
    (out / "samples-00002-of-00003.npz").write_bytes(b"damaged")
    assert _cli("generate", "--saved-model", model, *GEN, "--out", out,
                "--runner", "beam", "--", *IN_PROCESS) == 0
    assert _files(out) == local_generate


# ---------------------------------------------------------------------------
# Through a server: Beam's RemoteModelHandler and its retries.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = fx.start_one_model_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop(grace=1)


def test_server_source_score_byte_identical(server, data, tmp_path):
    flags = ("--target", f"127.0.0.1:{server.port}", "--model_name", "vae",
             "--data", data, *SCORE)
    assert _cli("score", *flags, "--out", tmp_path / "local") == 0
    assert _cli("score", *flags, "--out", tmp_path / "beam", "--runner", "beam",
                "--", *IN_PROCESS) == 0
    assert _files(tmp_path / "beam") == _files(tmp_path / "local")


_FLAKY = {"calls": 0, "failures": 0}


def test_transient_error_is_retried_by_remote_handler(server, local_generate,
                                                      tmp_path, monkeypatch):
    from serving import beam_handlers

    original = beam_handlers.ServerHandler.request

    def flaky(self, batch, model, inference_args=None):
        """The first call (one output shard's requests) fails UNAVAILABLE, as
        a restarting server would."""
        _FLAKY["calls"] += 1
        if _FLAKY["failures"] == 0:
            _FLAKY["failures"] += 1
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "injected: try again")
        return original(self, batch, model, inference_args)

    monkeypatch.setattr(beam_handlers.ServerHandler, "request", flaky)
    gen_local = tmp_path / "local"
    target = f"127.0.0.1:{server.port}"
    flags = ("--target", target, "--model_name", "vae", *GEN)
    assert _cli("generate", *flags, "--out", gen_local) == 0
    assert _cli("generate", *flags, "--out", tmp_path / "beam", "--runner",
                "beam", "--", *IN_PROCESS) == 0
    assert _FLAKY["failures"] == 1
    assert _FLAKY["calls"] == len(plan.plan_shards(530, 200, "npz")) + 1  # one retry
    assert _files(tmp_path / "beam") == _files(gen_local)
    # The samples are the saved model's: same shard bytes as in process.
    assert {k: v for k, v in _files(gen_local).items() if k != "manifest.json"} == {
        k: v for k, v in local_generate.items() if k != "manifest.json"}


def test_permanent_error_is_not_retried(server, tmp_path):
    from serving import beam_handlers

    assert beam_handlers.is_transient(ServingError(grpc.StatusCode.UNAVAILABLE, "x"))
    assert not beam_handlers.is_transient(
        ServingError(grpc.StatusCode.INVALID_ARGUMENT, "x"))
    assert not beam_handlers.is_transient(ValueError("x"))


# ---------------------------------------------------------------------------
# Options and errors.
# ---------------------------------------------------------------------------

def test_unknown_runner_is_named(model, data, tmp_path, capsys):
    code = _cli("score", "--saved-model", model, "--data", data, "--out", tmp_path,
                "--runner", "beam", "--", "--runner=NoSuchRunner")
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--runner=NoSuchRunner" in err and "FlinkRunner" in err
    assert os.listdir(tmp_path) == []


def test_unknown_pipeline_option_is_named(model, tmp_path, capsys):
    code = _cli("generate", "--saved-model", model, "--num-samples", 10,
                "--out", tmp_path / "o", "--runner", "beam", "--",
                "--direct_num_wrokers=2")
    assert code == EXIT_USAGE
    assert "--direct_num_wrokers" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_pipeline_options_need_runner_beam(model, data, tmp_path, capsys):
    assert _cli("generate", "--saved-model", model, "--num-samples", 10, "--out",
                tmp_path, "--", "--runner=FlinkRunner") == EXIT_USAGE
    assert "need --runner beam" in capsys.readouterr().err
    assert _cli("score", "--saved-model", model, "--data", data, "--out",
                tmp_path, "--", "--runner=FlinkRunner") == EXIT_USAGE
    assert "need --runner beam" in capsys.readouterr().err


def test_other_commands_take_no_pipeline_options(capsys):
    with pytest.raises(SystemExit):
        _cli("validate", "somewhere", "--", "--runner=FlinkRunner")
    assert "takes no options after '--'" in capsys.readouterr().err


def test_default_options_are_local_fnapirunner():
    assert beam_pipeline.pipeline_args_with_defaults([]) == [
        "--runner=FnApiRunner", "--direct_running_mode=multi_threading",
        "--direct_num_workers=0", "--default_sdk_harness_log_level=WARNING"]
    assert beam_pipeline.pipeline_args_with_defaults(
        ["--runner=FlinkRunner", "--flink_master=h:8081"]) == [
        "--runner=FlinkRunner", "--flink_master=h:8081",
        "--default_sdk_harness_log_level=WARNING"]


def test_missing_beam_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    with pytest.raises(JobError) as e:
        beam_pipeline.import_beam()
    assert "pip install 'tfp-vae[beam]'" in str(e.value)
    assert e.value.exit_code == EXIT_USAGE


def test_local_runner_and_flags_need_no_beam():
    code = ("import sys, argparse\n"
            "from serving import cli, generate, score\n"
            "p = argparse.ArgumentParser(); score.add_score_arguments(p)\n"
            "g = argparse.ArgumentParser(); generate.add_generate_arguments(g)\n"
            "assert 'apache_beam' not in sys.modules, 'beam imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=fx.REPO_ROOT,
                   env=fx.subprocess_env(), timeout=300)


# ---------------------------------------------------------------------------
# Score's checks.
# ---------------------------------------------------------------------------

def _score_args(*argv):
    parser = argparse.ArgumentParser()
    score.add_score_arguments(parser)
    args = parser.parse_args([str(a) for a in argv])
    args.pipeline_args = []
    return args


def test_score_bad_key_lists_keys(model, data, tmp_path, capsys):
    assert _cli("score", "--saved-model", model, "--data", data, "--key", "images",
                "--out", tmp_path / "o") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'images'" in err and "['other', 'x']" in err


def test_score_wrong_example_shape(model, tmp_path, capsys):
    path = tmp_path / "wrong.npy"
    np.save(path, np.zeros((5, 3, 3), np.float32))
    assert _cli("score", "--saved-model", model, "--data", path,
                "--out", tmp_path / "o") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "[4, 4]" in err and "[3, 3]" in err


def test_score_num_samples_checked_against_export(model, data, tmp_path, capsys):
    assert _cli("score", "--saved-model", model, "--data", data, "--num-samples",
                1000, "--out", tmp_path / "o") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--num-samples 1000" in err and f"K = {fx.NUM_IMPORTANCE_SAMPLES}" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (("--batch-size", 0), "--batch-size must be a positive integer; got 0"),
    (("--seed", 2**31), "--seed must fit in int32"),
    (("--shard-size", -1), "--shard-size must be a positive integer; got -1"),
])
def test_score_flag_checks(data, tmp_path, argv, message):
    args = _score_args("--saved-model", "m", "--data", data, "--out", tmp_path, *argv)
    with pytest.raises(JobError) as e:
        score.validate_args(args)
    assert message in str(e.value)


def test_score_data_must_be_npy_or_npz(tmp_path):
    args = _score_args("--saved-model", "m", "--data", tmp_path / "x.csv",
                       "--out", tmp_path)
    with pytest.raises(JobError, match=r"--data must be a .npy or .npz file; got"):
        score.validate_args(args)


def test_merge_stats_matches_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000) * 3 + 7
    parts = [score.shard_stats({"log_likelihood": values[a:a + 137],
                                "elbo": values[a:a + 137] - 1})
             for a in range(0, 1000, 137)]
    merged = score.merge_stats(parts)
    assert merged["log_likelihood"]["mean"] == pytest.approx(values.mean(), rel=1e-13)
    assert merged["log_likelihood"]["stderr"] == pytest.approx(
        values.std(ddof=1) / np.sqrt(1000), rel=1e-12)
    assert merged["elbo"]["mean"] == pytest.approx(values.mean() - 1, rel=1e-13)


# ---------------------------------------------------------------------------
# --out as a URI: files only through Beam's FileSystems.
# ---------------------------------------------------------------------------

def _uri_filesystem():
    """A Beam FileSystem for ``beamtest://PATH``, kept in the local PATH: a
    stand-in for gs:// that fails if the job touches a URI with os calls."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    prefix = "beamtest://"

    def local(path):
        assert path.startswith(prefix), path
        return path[len(prefix):]

    class UriFileSystem(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "beamtest"

        def split(self, path):
            directory, name = os.path.split(local(path))
            return prefix + directory, name

        def create(self, path, *a, **k):
            return super().create(local(path), *a, **k)

        def open(self, path, *a, **k):
            return super().open(local(path), *a, **k)

        def rename(self, sources, destinations):
            return super().rename([local(p) for p in sources],
                                  [local(p) for p in destinations])

        def exists(self, path):
            return super().exists(local(path))

        def delete(self, paths):
            return super().delete([local(p) for p in paths])

    return UriFileSystem


_URI_FS = None


def test_out_as_uri_goes_through_filesystems(model, local_generate, tmp_path):
    global _URI_FS
    if _URI_FS is None:
        _URI_FS = _uri_filesystem()     # registers the scheme (a subclass)
    out = tmp_path / "remote"
    assert _cli("generate", "--saved-model", model, *GEN, "--out",
                f"beamtest://{out}", "--runner", "beam", "--", *IN_PROCESS) == 0
    assert _files(out) == local_generate
    # Rerun: the manifest is read back through FileSystems, every shard verified
    # and skipped, the files unchanged.
    assert _cli("generate", "--saved-model", model, *GEN, "--out",
                f"beamtest://{out}", "--runner", "beam", "--", *IN_PROCESS) == 0
    assert _files(out) == local_generate


def test_saved_model_uri_on_unknown_file_system_is_named(data, tmp_path, capsys):
    assert _cli("score", "--saved-model", "nosuchfs://bucket/vae/1", "--data", data,
                "--out", tmp_path / "o") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "nosuchfs://bucket/vae/1" in err and "SavedModel version directory" in err
