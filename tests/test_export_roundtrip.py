"""Round trips: export every model variant, reload it, and compare with the live model.

Every export below runs the full validator before it is renamed into place (the
TF1 session-loader part only where ``session_check`` is set, to keep the suite fast);
the tests then check the reloaded SavedModel independently of the validator.
"""

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import export
import tfp_vae
from export import contract, saved_contract

DATA_SHAPE = (8, 8, 1)
LATENT = 3
K = 4

COMBOS = list(
    itertools.product(["normal", "mog", "vamp"], ["diag", "tril"], ["bernoulli", "gaussian"])
)
# The TF1 session-loader run costs about as much as the rest of validation; run it on
# a spread of combinations covering every prior, posterior and likelihood.
SESSION_CHECKED = {
    ("normal", "diag", "bernoulli"),
    ("mog", "tril", "gaussian"),
    ("vamp", "tril", "bernoulli"),
}


def make_vae(
    prior="normal",
    posterior="diag",
    likelihood="bernoulli",
    network="mlp",
    data_shape=DATA_SHAPE,
    latent_dim=LATENT,
):
    hidden = (16,) if network == "mlp" else None
    encoder, decoder = tfp_vae.networks.build(network, latent_dim, data_shape, hidden=hidden)
    return tfp_vae.VAE(
        encoder,
        decoder,
        latent_dim=latent_dim,
        posterior=posterior,
        prior=prior,
        likelihood=likelihood,
    )


def seeds(rows):
    return tf.constant(np.asarray(rows, np.int32))


def data(batch, data_shape=DATA_SHAPE, seed=0):
    return tf.constant(
        np.random.default_rng(seed).uniform(size=(batch, *data_shape)).astype(np.float32)
    )


@pytest.mark.parametrize("prior,posterior,likelihood", COMBOS)
def test_round_trip_every_prior_posterior_likelihood(tmp_path, prior, posterior, likelihood):
    model = make_vae(prior, posterior, likelihood)
    result = export.export_version(
        model,
        tmp_path,
        "vae",
        num_ll_samples=K,
        session_check=(prior, posterior, likelihood) in SESSION_CHECKED,
    )
    assert result.report.ok
    assert result.path == os.path.join(str(tmp_path), "vae", "1")
    assert os.path.isfile(os.path.join(result.path, "saved_model.pb"))

    loaded = tf.saved_model.load(result.path)
    assert set(loaded.signatures) == set(contract.expected_signatures(contract.VAE, False))

    z = tf.constant(np.random.default_rng(1).standard_normal((3, LATENT)).astype(np.float32))
    np.testing.assert_allclose(
        loaded.signatures["decode"](z=z)["mean"], model.decode_mean(z), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(
        loaded.signatures["serving_default"](z=z)["mean"], loaded.signatures["decode"](z=z)["mean"]
    )

    rows = seeds([[3, 0], [3, 1], [4, 0]])
    gen = loaded.signatures["generate"](seed=rows)
    live = model.generate(rows)
    np.testing.assert_allclose(gen["z"], live["z"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gen["x"], live["x"], rtol=1e-5, atol=1e-6)

    x = data(3)
    enc = loaded.signatures["encode"](x=x)
    q = model.posterior(x)
    np.testing.assert_allclose(enc["loc"], q.mean(), rtol=1e-5, atol=1e-6)
    tril = enc["scale_tril"].numpy()
    # scale_tril is the Cholesky-type factor of the posterior covariance.
    np.testing.assert_allclose(
        tril @ np.swapaxes(tril, -1, -2), q.covariance(), rtol=1e-4, atol=1e-6
    )
    assert np.all(np.triu(tril, 1) == 0)
    assert np.all(np.diagonal(tril, axis1=-2, axis2=-1) > 0)
    if posterior == "diag":
        assert np.all(
            tril == np.apply_along_axis(np.diag, -1, np.diagonal(tril, axis1=-2, axis2=-1))
        )

    np.testing.assert_allclose(
        loaded.signatures["reconstruct"](x=x)["mean"], model.reconstruct(x), rtol=1e-5, atol=1e-6
    )

    ll = loaded.signatures["log_likelihood"](x=x, seed=rows)
    live_ll, live_elbo = model.log_likelihood_from_seeds(x, rows, K)
    np.testing.assert_allclose(ll["log_likelihood"], live_ll, rtol=1e-5)
    np.testing.assert_allclose(ll["elbo"], live_elbo, rtol=1e-5)
    # log of a mean of weights >= mean of their logs (Jensen), with equality only if all
    # k weights are equal.
    assert np.all(ll["log_likelihood"].numpy() >= ll["elbo"].numpy())


@pytest.mark.parametrize("prior", ["normal", "mog", "vamp"])
def test_decoder_only_export_has_no_encoder(tmp_path, prior):
    model = make_vae(prior, "tril")
    result = export.export_version(
        model, tmp_path, "dec", decoder_only=True, session_check=prior == "vamp"
    )
    assert result.report.ok
    loaded = tf.saved_model.load(result.path)
    assert set(loaded.signatures) == {"serving_default", "decode", "generate"}

    meta_graph = saved_contract.read_meta_graph(result.path)
    saved = set(saved_contract.saved_variable_names(meta_graph))
    encoder = {v.path for v in model.encoder.variables + model.posterior_head.variables}
    decoder = {v.path for v in model.decoder.variables}
    assert decoder <= saved
    assert not saved & encoder
    if prior == "vamp":
        assert model.prior_layer.pseudo_logits.path not in saved

    # The decoder-only generate (a frozen VampPrior for "vamp") samples what the full
    # model samples, seed row for seed row.
    rows = seeds([[9, 0], [9, 1], [9, 2], [10, 5]])
    gen = loaded.signatures["generate"](seed=rows)
    live = model.generate(rows)
    np.testing.assert_allclose(gen["z"], live["z"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gen["x"], live["x"], rtol=1e-5, atol=1e-6)


def test_generate_samples_the_prior(tmp_path):
    """z from 4000 seed rows has the moments of the N(0, I) prior."""
    model = make_vae("normal", "diag")
    path = export.export_model(model, tmp_path, "vae", validate=False)
    loaded = tf.saved_model.load(path)
    n = 4000
    rows = seeds(np.stack([np.full(n, 123), np.arange(n)], 1))
    z = loaded.signatures["generate"](seed=rows)["z"].numpy()
    assert z.shape == (n, LATENT)
    # Standard errors: mean 1/sqrt(n) ~ 0.016, variance sqrt(2/n) ~ 0.022.
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.07)
    np.testing.assert_allclose(z.var(0), 1.0, atol=0.1)
    np.testing.assert_allclose(np.corrcoef(z.T)[np.triu_indices(LATENT, 1)], 0.0, atol=0.07)


def test_conv_network_round_trip(tmp_path):
    model = make_vae(
        "mog", "diag", "bernoulli", network="conv", data_shape=(32, 32, 1), latent_dim=2
    )
    result = export.export_version(model, tmp_path, "conv", num_ll_samples=2)
    assert result.report.ok
    assert any(r.check == "session" and r.ok for r in result.report.results)
    loaded = tf.saved_model.load(result.path)
    gen = loaded.signatures["generate"](seed=seeds([[0, 0], [0, 1]]))
    assert gen["x"].shape == (2, 32, 32, 1)
    assert gen["z"].shape == (2, 2)
    x = data(2, (32, 32, 1))
    np.testing.assert_allclose(
        loaded.signatures["reconstruct"](x=x)["mean"], model.reconstruct(x), rtol=1e-4, atol=1e-5
    )
    assert "Conv2DBackpropInput" in result.report.ops["decode"]


def test_autoencoder_exports_decode_encode_reconstruct(tmp_path):
    encoder, decoder = tfp_vae.networks.build("mlp", 2, DATA_SHAPE, hidden=(16,))
    model = tfp_vae.Autoencoder(encoder, decoder, latent_dim=2)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    result = export.export_run_version(run, tmp_path / "models", "ae", session_check=False)
    assert result.report.ok and result.report.kind == contract.AUTOENCODER
    loaded = tf.saved_model.load(result.path)
    assert set(loaded.signatures) == {"serving_default", "decode", "encode", "reconstruct"}
    x = data(4)
    code = loaded.signatures["encode"](x=x)["code"]
    np.testing.assert_allclose(code, model.encode(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        loaded.signatures["decode"](z=code)["mean"],
        loaded.signatures["reconstruct"](x=x)["mean"],
        rtol=1e-5,
        atol=1e-6,
    )

    decoder_only = export.export_version(
        model, tmp_path / "models", "ae", decoder_only=True, session_check=False
    )
    assert decoder_only.version == 2
    meta_graph = saved_contract.read_meta_graph(decoder_only.path)
    assert set(saved_contract.contract_signatures(meta_graph)) == {"serving_default", "decode"}
    saved = set(saved_contract.saved_variable_names(meta_graph))
    encoder_paths = set(export.endpoints.encoder_variable_paths(model))
    assert {v.path for v in model.code_layer.variables} <= encoder_paths
    assert not saved & encoder_paths
    assert {v.path for v in model.decoder.variables} <= saved


def test_round_trip_through_a_run_directory(tmp_path):
    model = make_vae("vamp", "diag", "gaussian")
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text('{"network": "mlp", "latent_dim": 3}')
    path = export.export_run(run, tmp_path / "models", "vae", num_ll_samples=K, session_check=False)
    manifest = saved_contract.read_manifest(path)
    assert manifest["run_config"] == {"network": "mlp", "latent_dim": 3}
    assert manifest["num_ll_samples"] == K and manifest["latent_dim"] == LATENT
    loaded = tf.saved_model.load(path)
    z = tf.constant(np.zeros((1, LATENT), np.float32))
    np.testing.assert_allclose(
        loaded.signatures["decode"](z=z)["mean"], model.decode_mean(z), rtol=1e-5, atol=1e-6
    )
