"""The tfp-vae command line, end to end on the bundled digits with a tiny budget."""

import json
import os
import subprocess
import sys

import pytest

from serving import cli
from tfp_vae import cli as library_cli

TINY = ["--dataset", "mnist5k", "--hidden", "32", "--epochs", "1", "--batch-size", "200",
        "--eval-samples", "5", "--eval-examples", "50"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    proc = run_cli("train", *TINY, "--network", "conv", "--posterior", "tril", "--prior", "mog",
                   "--latent-dim", "2", "--seed", "0", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_train_writes_a_complete_run_directory(run_dir):
    for name in ("model.keras", "config.json", "metrics.json", "history.csv"):
        assert (run_dir / name).exists(), name
    pictures = sorted(os.listdir(run_dir / "pictures"))
    assert pictures == ["curves.png", "latent.png", "latent_grid.png", "reconstructions.png", "samples.png"]
    assert any(files for _, _, files in os.walk(run_dir / "logs"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["network"] == "conv" and config["pad"] is None and config["prior"] == "mog"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # tril samples its KL with the path-derivative gradient (and a mixture prior has no closed form)
    assert metrics["kl_method"] == "path"
    assert metrics["test"]["num_samples"] == 5 and metrics["test"]["num_examples"] == 50
    assert set(metrics["train"]) == {"loss", "elbo", "kl", "reconstruction"}
    assert set(metrics["validation"]) == {"loss", "elbo", "kl", "reconstruction"}
    assert metrics["test"]["log_likelihood"] < 0
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,") and "val_elbo" in header


def test_evaluate_reports_log_likelihood_and_elbo(run_dir):
    proc = run_cli("evaluate", str(run_dir), "--num-samples", "20", "--num-examples", "30")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["num_samples"] == 20 and out["num_examples"] == 30
    assert out["log_likelihood"] > out["elbo"] - 5  # k = 20 tightens the bound
    assert json.loads((run_dir / "evaluation-k20.json").read_text()) == out


def test_refuses_to_overwrite_a_run(run_dir):
    before = (run_dir / "metrics.json").read_text()
    proc = run_cli("train", *TINY, "--out", str(run_dir))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (run_dir / "metrics.json").read_text() == before


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "cifar"], "dataset='cifar' is not valid"),
    (["--prior", "laplace"], "prior='laplace' is not valid; expected one of ['mog', 'normal', 'vamp']"),
    (["--latent-dim", "0"], "latent_dim=0 is not valid; expected a positive integer"),
    (["--batch-size", "-5"], "batch_size=-5 is not valid"),
    (["--network", "conv", "--pad", "false"], "divisible by 8, got (28, 28, 1)"),
    (["--learning-rate", "nan"], "learning_rate=nan is not valid"),
    (["--seed", "-1"], "--seed -1: seed=-1 is not valid; expected an integer in [0, 2**32 - 1]"),
    (["--steps-per-execution", "0"], "steps_per_execution=0 is not valid; expected a positive integer"),
    (["--steps-per-execution", "8", "--kl-warmup-epochs", "2"],
     "steps_per_execution=8 is not valid with kl_warmup_epochs=2"),
])
def test_bad_input_fails_before_training_and_writes_nothing(tmp_path, flags, message):
    out = tmp_path / "run"
    code = cli.main(["train", *TINY, *flags, "--quiet", "--out", str(out)])
    assert code == 2
    assert not out.exists() and os.listdir(tmp_path) == []


def test_bad_input_message_names_the_value(tmp_path, capsys, ):
    cli.main(["train", "--prior", "laplace", "--out", str(tmp_path / "r")])
    assert "prior='laplace' is not valid; expected one of ['mog', 'normal', 'vamp']" in capsys.readouterr().err


def test_nan_in_data_is_refused(tmp_path, capsys):
    import numpy as np

    x = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    x[7, 1, 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    assert cli.main(["train", "--dataset", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "r")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_failing_run_leaves_no_directory(tmp_path, monkeypatch):
    from tfp_vae import plots, train
    from tfp_vae.config import TrainConfig

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "save_all", broken)
    config = TrainConfig(dataset="digits", hidden=(8,), epochs=1, eval_samples=2, eval_examples=4)
    with pytest.raises(RuntimeError, match="disk full"):
        train.run(config, tmp_path / "run", verbose=0)
    assert os.listdir(tmp_path) == []  # neither the run nor its staging directory


def test_config_file_and_flag_override(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"dataset": "digits", "latent_dim": 3, "hidden": [8]}))
    args = cli.build_parser().parse_args(["train", "--config", str(tmp_path / "c.json"),
                                          "--latent-dim", "4", "--out", "x"])
    config = library_cli._train_config(args)
    assert (config.dataset, config.latent_dim, config.hidden) == ("digits", 4, (8,))
    (tmp_path / "bad.json").write_text(json.dumps({"latent": 3}))
    with pytest.raises(ValueError, match=r"Unknown config keys \['latent'\]"):
        library_cli._train_config(cli.build_parser().parse_args(["train", "--config", str(tmp_path / "bad.json"), "--out", "x"]))


def test_autoencoder_run(tmp_path):
    out = tmp_path / "ae"
    code = cli.main(["train", "--model", "ae", "--dataset", "digits", "--hidden", "16", "--epochs", "1",
                     "--sparsity", "l1", "--noise", "mask", "--latent-dim", "2", "--quiet", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "reconstruction", "penalty", "num_examples"}
    assert sorted(os.listdir(out / "pictures")) == ["curves.png", "latent.png", "latent_grid.png", "reconstructions.png"]


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "validate", "serve", "generate"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: tfp-vae " + command in capsys.readouterr().out


# Arguments are checked before TensorFlow is imported: each mistake below must fail with
# its message in a process that never loaded TensorFlow (importing it takes seconds).
_NO_TF = """
import sys
from serving.cli import main
code = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("words,message", [
    (["train", "--seed", "-1"], "--seed -1: seed=-1 is not valid"),
    (["train", "--posterior", "tirl"], "posterior='tirl' is not valid; expected one of"),
    (["train", "--dataset", "missing.npz"], "--dataset 'missing.npz': no such file"),
    (["train", "--config", "{tmp}/bad.json"], "Unknown config keys ['latent']"),
    (["train", "--out", "{tmp}/file/run"], "is a file, not a directory"),
    (["evaluate", "{tmp}"], "is not a complete run directory"),
    (["export", "{tmp}", "--base-path", "{tmp}/m", "--name", "vae"], "model.keras is missing"),
    (["export", "{tmp}/run", "--base-path", "{tmp}/m", "--name", "a/b"], "Model name 'a/b' is not valid"),
    (["export", "{tmp}/run", "--base-path", "{tmp}/file", "--name", "vae"], "is a file, not a directory"),
    (["export", "{tmp}/run", "--base-path", "{tmp}/m", "--name", "vae", "--version",
      str(2**63)], "version must fit in int64"),
    (["validate", "{tmp}/nothing"], "is not a directory"),
    (["serve", "--port", "99999", "--model_base_path", "{tmp}"], "--port must be in [0, 65535]"),
    (["generate", "--target", "localhost:1", "--num-samples", "8", "--out", "{tmp}/g"],
     "--model_name is required"),
    (["train", "--posteriorr", "diag"], "unrecognized arguments: --posteriorr"),
    (["train", "--steps-per-execution", "0"], "steps_per_execution=0 is not valid"),
])
def test_arguments_are_checked_before_tensorflow_loads(tmp_path, words, message):
    (tmp_path / "bad.json").write_text(json.dumps({"latent": 3}))
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_text("")
    words = [w.format(tmp=tmp_path) for w in words]
    if words[0] == "train" and "--out" not in words:
        words += ["--out", str(tmp_path / "new-run")]
    proc = subprocess.run([sys.executable, "-c", _NO_TF, *words], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "tensorflow imported: True" not in proc.stderr
    assert not (tmp_path / "new-run").exists() and not (tmp_path / "m").exists()


def test_a_command_that_does_not_use_the_library_leaves_it_importable_as_usual():
    """After the command line took the library's light modules and gave them back, a
    plain ``import tfp_vae`` in the same process still registers the Keras classes."""
    script = """
import sys
from serving.cli import main
try:
    main(["serve", "--help"])
except SystemExit:
    pass
import keras, tfp_vae
assert keras.saving.get_registered_object("tfp_vae>VAE") is tfp_vae.VAE
from tfp_vae import config
assert config.TrainConfig is tfp_vae.config.TrainConfig
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_builtin_names_are_what_the_registries_hold():
    """tfp_vae.names lists, without TensorFlow, exactly the built-in registry entries."""
    import tfp_vae
    from tfp_vae import names

    for kind, builtin in names.BUILTIN.items():
        assert tuple(sorted(getattr(tfp_vae, kind).names())) == builtin, kind
    assert tfp_vae.data.BUILTIN == names.DATASETS and tfp_vae.vae.OBJECTIVES == names.OBJECTIVES
