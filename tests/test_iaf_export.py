"""An iaf model trained with XLA exports, validates and serves like the Gaussian families."""

import numpy as np
import tensorflow as tf

import export
import tfp_vae
from tfp_vae._backend import keras


def test_an_xla_trained_iaf_model_exports_and_its_encode_signature_is_the_linearized_flow(tmp_path):
    (x, _), (x_test, _) = tfp_vae.data.load("digits")
    enc, dec = tfp_vae.networks.build("mlp", 2, (8, 8, 1), hidden=(16,))
    model = tfp_vae.VAE(enc, dec, 2, posterior="iaf", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True)
    model.fit(x[:256], epochs=1, batch_size=64, verbose=0)
    # Validation runs every signature through the TF1 session loader and requires a GPU
    # kernel for every op: no XLA-only op reaches the exported graphs.
    result = export.export_version(model, tmp_path, "vae", num_ll_samples=20, session_check=True)
    assert result.report.ok
    loaded = tf.saved_model.load(result.path)
    xb = tf.constant(x_test[:4])
    out = loaded.signatures["encode"](x=xb)
    loc, scale_tril = model.posterior_family.encoding(model.posterior_params(xb), 2)
    np.testing.assert_allclose(out["loc"].numpy(), model.encode(xb).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["scale_tril"].numpy(), scale_tril.numpy(), rtol=1e-5, atol=1e-6)
    seeds = tf.constant([[0, 0], [0, 1], [0, 2], [0, 3]], tf.int32)
    ll = loaded.signatures["log_likelihood"](x=xb, seed=seeds)
    assert np.all(ll["log_likelihood"].numpy() >= ll["elbo"].numpy())
    graph_ops = {op.type for f in loaded.signatures.values() for op in f.graph.get_operations()}
    assert not any(op.startswith("Xla") for op in graph_ops)
