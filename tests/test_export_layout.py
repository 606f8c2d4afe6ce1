"""The model directory: versions, atomic writes, server configs, warmup records, the CLI."""

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

import export
import tfp_vae
from export import contract, exporter, saved_contract, server_config, validation, warmup

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_SHAPE = (8, 8, 1)


def make_vae(prior="normal", latent_dim=2):
    encoder, decoder = tfp_vae.networks.build("mlp", latent_dim, DATA_SHAPE, hidden=(16,))
    return tfp_vae.VAE(encoder, decoder, latent_dim=latent_dim, prior=prior)


def entries(model_dir):
    return sorted(os.listdir(model_dir))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One validated full export shared by the read-only tests of this module."""
    base = tmp_path_factory.mktemp("models")
    model = make_vae("mog")
    result = export.export_version(model, base, "vae", num_ll_samples=3, session_check=False)
    return model, result


# ------------------------------------------------------------------------- versions


def test_default_version_is_one_more_than_the_highest(tmp_path):
    model = make_vae()
    model_dir = tmp_path / "vae"
    assert export.export_model(model, tmp_path, "vae", validate=False) == str(model_dir / "1")
    assert export.export_model(model, tmp_path, "vae", validate=False) == str(model_dir / "2")
    assert export.export_model(model, tmp_path, "vae", version=7, validate=False) == str(
        model_dir / "7"
    )
    # Non-integer entries are not versions (TF Serving ignores them too).
    (model_dir / "notes").mkdir()
    (model_dir / "12.bak").mkdir()
    (model_dir / "99").write_text("a file, not a version directory")
    assert export.list_versions(model_dir) == [1, 2, 7]
    assert export.export_model(model, tmp_path, "vae", validate=False) == str(model_dir / "8")


def test_existing_version_is_never_overwritten(tmp_path):
    model = make_vae()
    path = export.export_model(model, tmp_path, "vae", version=3, validate=False)
    marker = os.path.join(path, "saved_model.pb")
    before = os.stat(marker).st_mtime_ns
    with pytest.raises(export.ExportError, match=r"Version 3 already exists.*next free one is 4"):
        export.export_model(model, tmp_path, "vae", version=3, validate=False)
    assert os.stat(marker).st_mtime_ns == before
    assert entries(tmp_path / "vae") == [
        ".export.lock",
        "3",
        "batching_parameters.txt",
        "models.config",
    ]


@pytest.mark.parametrize("version", [-1, "2", 1.5, True])
def test_bad_version_is_refused(tmp_path, version):
    with pytest.raises(
        export.ExportError, match=f"version must be a non-negative integer, got {version!r}"
    ):
        export.export_model(make_vae(), tmp_path, "vae", version=version, validate=False)


def test_version_beyond_int64_is_refused(tmp_path):
    # TF Serving parses version directory names as int64 and skips the rest
    # (file_system_storage_path_source.cc): such a version would never be served.
    with pytest.raises(export.ExportError, match=r"version must fit in int64 \(at most 9223372036854775807\)"):
        export.export_model(make_vae(), tmp_path, "vae", version=2**63, validate=False)
    assert export.list_versions(tmp_path / "vae") == []


def test_base_path_under_a_regular_file_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(export.ExportError, match=r"file is a file, not a directory"):
        export.export_model(make_vae(), tmp_path / "file" / "models", "vae", validate=False)
    run = tmp_path / "run"
    run.mkdir()
    make_vae().save(run / "model.keras")
    proc = subprocess.run(
        [sys.executable, "-m", "serving.cli", "export", str(run), "--base-path",
         str(tmp_path / "file" / "models"), "--name", "vae", "--no-validate"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "is a file, not a directory" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "..", "x y"])
def test_bad_model_name_is_refused(tmp_path, name):
    with pytest.raises(export.ExportError, match="Model name"):
        export.export_model(make_vae(), tmp_path, name, validate=False)
    assert os.listdir(tmp_path) == []


def test_bad_num_ll_samples_is_refused_before_writing(tmp_path):
    with pytest.raises(
        export.ExportError, match="num_ll_samples must be a positive integer, got 0"
    ):
        export.export_model(make_vae(), tmp_path, "vae", num_ll_samples=0)
    assert not (tmp_path / "vae").exists()


# ------------------------------------------------------------------------ atomicity


def test_interrupted_export_leaves_no_version(tmp_path, monkeypatch):
    seen = {}

    def interrupted(version_dir, *args, **kwargs):
        # The SavedModel is complete in the temporary directory at this point.
        seen["tmp"] = version_dir
        assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
        raise KeyboardInterrupt

    monkeypatch.setattr(validation, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_model(make_vae(), tmp_path, "vae")
    assert os.path.basename(seen["tmp"]).startswith(".1.tmp-")
    assert not os.path.exists(seen["tmp"])
    assert entries(tmp_path / "vae") == [".export.lock"]  # no version, no temp, no configs
    assert export.list_versions(tmp_path / "vae") == []


def test_failed_write_leaves_no_version(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(warmup, "write_warmup_requests", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_model(make_vae(), tmp_path, "vae", validate=False)
    assert entries(tmp_path / "vae") == [".export.lock"]


_KILLED_EXPORT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {repo!r})
    import tfp_vae
    from export import exporter, validation

    def hang(version_dir, *args, **kwargs):
        with open({marker!r}, "w") as f:
            f.write(version_dir)
        time.sleep(300)

    validation.validate = hang
    encoder, decoder = tfp_vae.networks.build("mlp", 2, (8, 8, 1), hidden=(16,))
    model = tfp_vae.VAE(encoder, decoder, latent_dim=2)
    exporter.export_model(model, {base!r}, "vae")
    """
)


def test_killed_export_leaves_no_version_and_is_cleaned_up(tmp_path):
    base, marker = str(tmp_path / "models"), str(tmp_path / "marker")
    script = _KILLED_EXPORT.format(repo=REPO_ROOT, marker=marker, base=base)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 180
        while not os.path.exists(marker) or not open(marker).read():
            if proc.poll() is not None:
                pytest.fail(f"export process exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("export process never reached validation")
            time.sleep(0.2)
        tmp = open(marker).read()
        assert os.path.isfile(os.path.join(tmp, "saved_model.pb"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    model_dir = os.path.join(base, "vae")
    # The killed process left its temporary directory, which is not a version.
    assert os.path.isdir(tmp)
    assert export.list_versions(model_dir) == []
    assert not any(e.isdigit() for e in os.listdir(model_dir))

    result = export.export_version(make_vae(), base, "vae", validate=False)
    assert result.version == 1
    assert result.removed_stale == [tmp]
    assert not os.path.exists(tmp)


def test_temporary_directory_of_a_live_process_is_kept(tmp_path):
    model_dir = tmp_path / "vae"
    live = model_dir / f".4.tmp-{os.getppid()}-abcdef12"
    live.mkdir(parents=True)
    gone = model_dir / ".5.tmp-999999999-abcdef12"  # no such pid
    gone.mkdir()
    assert exporter.remove_stale_temporaries(model_dir) == [str(gone)]
    assert live.exists() and not gone.exists()


# ------------------------------------------------------------- models.config, batching


def test_server_configs_parse_and_describe_the_model(exported, tmp_path):
    _, result = exported
    model_dir = os.path.dirname(result.path)
    assert result.models_config == os.path.join(model_dir, "models.config")
    config = server_config.read_models_config(result.models_config)
    assert isinstance(config, model_server_config_pb2.ModelServerConfig)
    (model,) = config.model_config_list.config
    assert model.name == "vae"
    assert model.base_path == os.path.abspath(model_dir)
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1

    batching = server_config.read_batching_parameters(result.batching_parameters)
    assert batching.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert batching.max_batch_size.value == 256
    assert list(batching.allowed_batch_sizes) == [8, 16, 32, 64, 128, 256]
    assert batching.batch_timeout_micros.value == 1000
    assert batching.num_batch_threads.value == 4
    assert batching.max_enqueued_batches.value == 100


def test_server_config_flags_are_written(tmp_path):
    options = export.BatchingOptions(
        max_batch_size=100,
        batch_timeout_micros=50,
        num_batch_threads=2,
        max_enqueued_batches=7,
        allowed_batch_sizes=[10, 50, 100],
    )
    result = export.export_version(
        make_vae(),
        tmp_path,
        "vae",
        validate=False,
        batching=options,
        server_base_path="/models/vae",
        num_versions=2,
    )
    text = open(result.batching_parameters).read()
    msg = text_format.Parse(text, server_config.batching_parameters_class()())
    assert (
        msg.max_batch_size.value,
        msg.batch_timeout_micros.value,
        msg.num_batch_threads.value,
        msg.max_enqueued_batches.value,
    ) == (100, 50, 2, 7)
    assert list(msg.allowed_batch_sizes) == [10, 50, 100]
    config = server_config.read_models_config(result.models_config)
    assert config.model_config_list.config[0].base_path == "/models/vae"
    assert config.model_config_list.config[0].model_version_policy.latest.num_versions == 2


def test_batching_parameters_text_matches_the_serving_proto_fields():
    """The field numbers and types mirror session_bundle_config.proto's BatchingParameters."""
    descriptor = server_config.batching_parameters_class().DESCRIPTOR
    fields = {
        f.name: (f.number, f.message_type.full_name if f.message_type else f.type)
        for f in descriptor.fields
    }
    assert fields["max_batch_size"] == (1, "google.protobuf.Int64Value")
    assert fields["batch_timeout_micros"] == (2, "google.protobuf.Int64Value")
    assert fields["max_enqueued_batches"] == (3, "google.protobuf.Int64Value")
    assert fields["num_batch_threads"] == (4, "google.protobuf.Int64Value")
    assert fields["allowed_batch_sizes"][0] == 6
    assert descriptor.fields_by_name["allowed_batch_sizes"].is_repeated
    # A file in TF Serving's documented format parses.
    text = (
        "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n"
        "allowed_batch_sizes: 32\nallowed_batch_sizes: 128\npad_variable_length_inputs: true\n"
    )
    msg = text_format.Parse(text, server_config.batching_parameters_class()())
    assert msg.max_batch_size.value == 128 and msg.pad_variable_length_inputs


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"max_batch_size": 64, "allowed_batch_sizes": [8, 32]},
            r"last allowed batch size must equal max_batch_size=64, "
            r"got allowed_batch_sizes=\[8, 32\]",
        ),
        (
            {"max_batch_size": 64, "allowed_batch_sizes": [32, 16, 64]},
            r"strictly increasing, got \[32, 16, 64\]",
        ),
        ({"max_batch_size": 0}, r"max_batch_size must be an integer >= 1, got 0"),
        ({"batch_timeout_micros": -5}, r"batch_timeout_micros must be an integer >= 0, got -5"),
    ],
)
def test_bad_batching_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.BatchingOptions(**kwargs)


def test_default_allowed_batch_sizes_end_at_the_maximum():
    assert server_config.default_allowed_batch_sizes(256) == [8, 16, 32, 64, 128, 256]
    assert server_config.default_allowed_batch_sizes(100) == [8, 16, 32, 64, 100]
    assert server_config.default_allowed_batch_sizes(4) == [4]
    assert server_config.default_allowed_batch_sizes(1) == [1]


def test_relative_server_base_path_is_refused(tmp_path):
    with pytest.raises(export.ExportError, match="must be absolute.*got 'models/vae'"):
        export.export_model(
            make_vae(), tmp_path, "vae", server_base_path="models/vae", validate=False
        )


# --------------------------------------------------------------------------- warmup


def test_warmup_records_cover_every_signature(exported):
    _, result = exported
    path = os.path.join(result.path, "assets.extra", "tf_serving_warmup_requests")
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        logs.append(log)
    requests = {
        log.predict_log.request.model_spec.signature_name: log.predict_log.request for log in logs
    }
    assert len(logs) == 6
    assert set(requests) == set(contract.expected_signatures(contract.VAE, False))
    loaded = tf.saved_model.load(result.path)
    for name, request in requests.items():
        assert request.model_spec.name == "vae"
        fn = loaded.signatures[name]
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert set(inputs) == set(fn.structured_input_signature[1])
        for key, value in inputs.items():
            assert value.shape[0] == 2
            assert tf.as_dtype(value.dtype) == fn.structured_input_signature[1][key].dtype
        fn(**{k: tf.constant(v) for k, v in inputs.items()})


def test_manifest_records_the_export(exported):
    model, result = exported
    manifest = json.load(open(os.path.join(result.path, "assets.extra", "tfp_vae_export.json")))
    assert manifest["kind"] == "vae" and manifest["decoder_only"] is False
    assert manifest["latent_dim"] == 2 and manifest["data_shape"] == [8, 8, 1]
    assert manifest["num_ll_samples"] == 3
    assert manifest["prior"] == "MixtureOfGaussians"
    assert manifest["versions"]["tensorflow"] == tf.__version__


# ------------------------------------------------------------------------------ CLI


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def _run_dir(tmp_path, model):
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"prior": "normal"}))
    return run


def test_cli_export_then_validate(tmp_path):
    model = make_vae()
    run = _run_dir(tmp_path, model)
    base = tmp_path / "models"
    args = _parse(
        export.add_export_arguments,
        [
            str(run),
            "--base-path",
            str(base),
            "--name",
            "vae",
            "--num-ll-samples",
            "5",
            "--max-batch-size",
            "64",
            "--allowed-batch-sizes",
            "16,64",
            "--server-base-path",
            "/models/vae",
            "--no-session-check",
        ],
    )
    out, err = io.StringIO(), io.StringIO()
    assert export.run_export(args, out, err) == 0, err.getvalue()
    text = out.getvalue()
    assert "as version 1 of model 'vae'" in text
    assert "1/saved_model.pb" in text and "tf_serving_warmup_requests" in text
    assert "models.config" in text and "batching_parameters.txt" in text
    assert "PASSED" in text
    assert list(
        server_config.read_batching_parameters(
            base / "vae" / "batching_parameters.txt"
        ).allowed_batch_sizes
    ) == [16, 64]
    assert saved_contract.read_manifest(base / "vae" / "1")["num_ll_samples"] == 5

    args = _parse(export.add_validate_arguments, [str(base / "vae" / "1"), "--run-dir", str(run)])
    out, err = io.StringIO(), io.StringIO()
    assert export.run_validate(args, out, err) == 0, err.getvalue()
    assert "PASSED" in out.getvalue() and "live_model" in out.getvalue()

    # The same version again is refused with a message naming it.
    args = _parse(
        export.add_export_arguments,
        [str(run), "--base-path", str(base), "--name", "vae", "--version", "1", "--no-validate"],
    )
    out, err = io.StringIO(), io.StringIO()
    assert export.run_export(args, out, err) == 2
    assert "Version 1 already exists" in err.getvalue()


def test_cli_errors_name_the_bad_value(tmp_path, capsys):
    args = _parse(
        export.add_export_arguments,
        [str(tmp_path / "nope"), "--base-path", str(tmp_path), "--name", "vae"],
    )
    err = io.StringIO()
    assert export.run_export(args, io.StringIO(), err) == 2
    assert "nope" in err.getvalue() and "model.keras is missing" in err.getvalue()

    args = _parse(export.add_validate_arguments, [str(tmp_path / "missing")])
    err = io.StringIO()
    assert export.run_validate(args, io.StringIO(), err) == 2
    assert (
        "missing" in err.getvalue() and "expected an exported version directory" in err.getvalue()
    )

    with pytest.raises(SystemExit):
        _parse(
            export.add_export_arguments,
            ["run", "--base-path", "b", "--name", "n", "--version", "x"],
        )
    assert "expected an integer >= 0, got 'x'" in capsys.readouterr().err

    run = _run_dir(tmp_path, make_vae())
    args = _parse(
        export.add_export_arguments,
        [
            str(run),
            "--base-path",
            str(tmp_path / "m"),
            "--name",
            "v",
            "--max-batch-size",
            "64",
            "--allowed-batch-sizes",
            "8,32",
        ],
    )
    err = io.StringIO()
    assert export.run_export(args, io.StringIO(), err) == 2
    assert "max_batch_size=64" in err.getvalue() and "[8, 32]" in err.getvalue()


def test_python_dash_m_export_runs_validate(exported):
    _, result = exported
    proc = subprocess.run(
        [sys.executable, "-m", "export", "validate", result.path, "--no-session-check"],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PASSED" in proc.stdout
    assert "live_model" not in proc.stdout  # no live model: that check is skipped
