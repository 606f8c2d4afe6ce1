"""The local server and the generation job on a model the real exporter wrote.

A tiny VAE is fitted for one epoch, exported with `export.export_model`
(which also writes models.config and batching_parameters.txt beside the
versions), and served with exactly those two files.
"""

import argparse
import io
import os

import numpy as np
import pytest

import serving_fixtures as fx

pytestmark = pytest.mark.timeout(150)

DATA_SHAPE = (8, 8, 1)
LATENT = 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    export = pytest.importorskip("export")
    tfp_vae = pytest.importorskip("tfp_vae")
    encoder, decoder = tfp_vae.networks.build("mlp", LATENT, DATA_SHAPE,
                                              hidden=(16,))
    model = tfp_vae.VAE(encoder, decoder, latent_dim=LATENT, posterior="tril",
                        prior="normal", likelihood="bernoulli")
    model.compile(optimizer="adam")
    x = (np.random.default_rng(0).random((64, *DATA_SHAPE)) > 0.5).astype(
        np.float32)
    model.fit(x, epochs=1, batch_size=32, verbose=0)
    base = tmp_path_factory.mktemp("exported")
    version_dir = export.export_model(model, str(base), "vae",
                                      session_check=False)
    return {"version_dir": str(version_dir), "model_dir": str(base / "vae"),
            "x": x[:5]}


def test_real_export_served_with_its_own_config_files(exported, tmp_path):
    from serving import generate as gen
    from serving.client import Client
    from tfp_vae import row_sampling

    model_dir = exported["model_dir"]
    srv = fx.start_server_in_thread([
        "--port", "0",
        "--model_config_file", os.path.join(model_dir, "models.config"),
        "--enable_batching", "--batching_parameters_file",
        os.path.join(model_dir, "batching_parameters.txt"),
        "--file_system_poll_wait_seconds", "0"])
    try:
        x = exported["x"]
        seeds = row_sampling.seed_rows(3, 0, len(x))
        path = exported["version_dir"]
        with Client(srv.target, "vae", timeout=60) as client:
            assert [(s.version, s.state) for s in client.status()] == [
                (1, "AVAILABLE")]
            loaded = srv.manager.available_servables()[0]
            assert loaded.warmup_records > 0
            meta = client.metadata()
            for name in ("serving_default", "decode", "generate", "encode",
                         "reconstruct", "log_likelihood"):
                assert name in meta.signatures
            gx, gz = client.generate(seeds)
            ref = fx.reference_outputs(path, "generate", {"seed": seeds})
            np.testing.assert_allclose(gx, ref["x"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(gz, ref["z"], rtol=1e-5, atol=1e-6)
            assert gx.shape == (len(x), *DATA_SHAPE)
            np.testing.assert_allclose(client.decode(gz), gx, atol=1e-5)
            loc, scale_tril = client.encode(x)
            assert loc.shape == (len(x), LATENT)
            assert scale_tril.shape == (len(x), LATENT, LATENT)
            assert client.reconstruct(x).shape == x.shape
            ll, elbo = client.log_likelihood(x, seeds)
            assert np.all(np.isfinite(ll)) and np.all(ll >= elbo - 1e-3)

        args = argparse.ArgumentParser()
        gen.add_generate_arguments(args)
        argv = ["--num-samples", "40", "--batch-size", "16", "--shard-size",
                "20", "--seed", "3", "--quiet"]
        served = args.parse_args(["--target", srv.target, "--model_name", "vae",
                                  "--out", str(tmp_path / "served"), *argv])
        local = args.parse_args(["--saved-model", model_dir,
                                 "--out", str(tmp_path / "local"), *argv])
        for a in (served, local):
            gen.validate_args(a)
            assert gen.Job(a, stream=io.StringIO()).run() == 0
    finally:
        srv.stop(grace=5)
    served_x = np.concatenate([np.load(p)["x"] for p in sorted(
        (tmp_path / "served").glob("*.npz"))])
    local_x = np.concatenate([np.load(p)["x"] for p in sorted(
        (tmp_path / "local").glob("*.npz"))])
    assert served_x.shape == (40, *DATA_SHAPE)
    np.testing.assert_allclose(served_x, local_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served_x[:5], gx, rtol=1e-5, atol=1e-6)
