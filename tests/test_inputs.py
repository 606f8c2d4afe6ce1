"""Every public method of VAE and Autoencoder takes NumPy arrays and tensors alike.

Keras methods (fit, predict, evaluate) take arrays of any float dtype; the models'
own methods must too. Each case calls one method three ways -- a float64 NumPy array,
a float32 NumPy array, a float32 tensor -- and requires the same output.
"""

import numpy as np
import pytest

import tfp_vae
from tfp_vae._backend import tf, tfd

SHAPE = (4, 4, 1)
LATENT = 2
RNG = np.random.default_rng(7)
X = RNG.random((5, *SHAPE))
Z = RNG.normal(size=(5, LATENT))
SEEDS = np.stack([np.zeros(5), np.arange(5)], 1).astype(np.int32)


def _networks():
    return tfp_vae.networks.build("mlp", LATENT, SHAPE, hidden=(8,))


@pytest.fixture(scope="module")
def vae():
    return tfp_vae.VAE(*_networks(), LATENT, posterior="tril", seed=0)


@pytest.fixture(scope="module")
def autoencoder():
    return tfp_vae.Autoencoder(*_networks(), LATENT, sparsity="l1", noise="mask", seed=0)


def _value(out):
    """Something comparable from whatever a method returns."""
    if isinstance(out, tfd.Distribution):
        return out.mean().numpy()
    if isinstance(out, dict):
        return {k: _value(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return [_value(v) for v in out]
    return np.asarray(out)


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list):
        for u, v in zip(a, b):
            _assert_same(u, v)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


VAE_CALLS = {
    "posterior_params": lambda m, x, z: m.posterior_params(x),
    "posterior": lambda m, x, z: m.posterior(x),
    "decoder_outputs": lambda m, x, z: m.decoder_outputs(z),
    "decoder_outputs of [k, B, D]": lambda m, x, z: m.decoder_outputs(z[None]),
    "decode": lambda m, x, z: m.decode(z),
    "decode.log_prob": lambda m, x, z: m.decode(z).log_prob(x),
    "decode_mean": lambda m, x, z: m.decode_mean(z),
    "encode": lambda m, x, z: m.encode(x),
    "reconstruct": lambda m, x, z: m.reconstruct(x),
    "call": lambda m, x, z: m(x),
    "elbo": lambda m, x, z: m.elbo(x, seed=3),
    "log_likelihood": lambda m, x, z: m.log_likelihood(x, num_samples=20, seed=3),
    "log_likelihood_from_seeds": lambda m, x, z: m.log_likelihood_from_seeds(x, SEEDS, 20),
    "predict": lambda m, x, z: m.predict(x, verbose=0),
}

AE_CALLS = {
    "encode": lambda m, x, z: m.encode(x),
    "decoder_outputs": lambda m, x, z: m.decoder_outputs(z),
    "decode_mean": lambda m, x, z: m.decode_mean(z),
    "reconstruct": lambda m, x, z: m.reconstruct(x),
    "call": lambda m, x, z: m(x),
    "corrupt": lambda m, x, z: m.corrupt(x, np.array([1, 2], np.int32)),
    "reconstruction_loss": lambda m, x, z: m.reconstruction_loss(x, m.decoder_outputs(m.encode(x))),
    "penalty": lambda m, x, z: m.penalty(z),
    "predict": lambda m, x, z: m.predict(x, verbose=0),
}


def _three_ways(model, call):
    outs = [
        _value(call(model, X, Z)),  # float64 arrays, as NumPy makes them by default
        _value(call(model, X.astype(np.float32), Z.astype(np.float32))),
        _value(call(model, tf.constant(X, tf.float32), tf.constant(Z, tf.float32))),
    ]
    _assert_same(outs[0], outs[2])
    _assert_same(outs[1], outs[2])
    return outs[2]


@pytest.mark.parametrize("name", VAE_CALLS)
def test_vae_methods_take_arrays_and_tensors(vae, name):
    out = _three_ways(vae, VAE_CALLS[name])
    assert np.all(np.isfinite(np.asarray(out if not isinstance(out, dict) else list(out.values()))))


@pytest.mark.parametrize("name", AE_CALLS)
def test_autoencoder_methods_take_arrays_and_tensors(autoencoder, name):
    out = _three_ways(autoencoder, AE_CALLS[name])
    assert np.all(np.isfinite(out))


def test_vae_decode_of_zeros_is_the_decoder_at_the_origin(vae):
    """The case from the issue: decode(np.zeros((5, 2))) once raised AttributeError."""
    px = vae.decode(np.zeros((5, LATENT), np.float32))
    logits = vae.decoder(tf.zeros([1, LATENT])).numpy()
    assert px.batch_shape == [5] and px.event_shape == list(SHAPE)
    np.testing.assert_allclose(px.mean().numpy(), np.repeat(1 / (1 + np.exp(-logits)), 5, 0),
                               rtol=1e-6)


def test_vae_sample_and_generate_take_python_and_numpy_seeds(vae):
    a = vae.sample(3, seed=np.int64(2)).numpy()
    np.testing.assert_array_equal(a, vae.sample(3, seed=2).numpy())
    b = vae.generate(SEEDS[:3])["x"].numpy()
    np.testing.assert_array_equal(b, vae.generate(tf.constant(SEEDS[:3]))["x"].numpy())
