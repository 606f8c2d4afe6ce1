"""PCA is the linear special case of the autoencoder (source 000/001).

An Autoencoder with the "linear" network (Flatten -> linear code -> one Dense layer),
no activation and the MSE loss minimizes sum ||x - W_dec W_enc x - b||^2, whose minima
span the top-k principal subspace (Baldi & Hornik, 1989). Trained with Adam on data
whose top three directions are well separated from the rest, the decoder's column space
must match scikit-learn's PCA subspace: every principal angle below 5 degrees, and the
reconstruction error within 3% of PCA's (the optimum).
"""

import numpy as np
import pytest
import scipy.linalg
from sklearn.decomposition import PCA

import tfp_vae
from tfp_vae._backend import keras

MAX_ANGLE_DEGREES = 5.0
MAX_EXCESS_ERROR = 0.03


def low_rank_data(n=2000, d=20, seed=0):
    """n points in R^d: standard deviations 3, 2, 1.5 along three random directions, 0.3 across the rest."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    sd = np.array([3.0, 2.0, 1.5] + [0.3] * (d - 3))
    return ((rng.normal(size=(n, d)) * sd) @ basis.T + rng.normal(size=d)).astype(np.float32)


def train_linear_autoencoder(x, k, schedule=((1e-2, 30), (1e-3, 10)), batch_size=50, seed=0):
    keras.utils.set_random_seed(seed)
    encoder, decoder = tfp_vae.networks.build("linear", k, x.shape[1:])
    model = tfp_vae.Autoencoder(encoder, decoder, k, loss="mse", seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(schedule[0][0]))
    for learning_rate, epochs in schedule:
        model.optimizer.learning_rate.assign(learning_rate)
        model.fit(x, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def decoder_basis(model):
    """The decoder's column space: rows of its one Dense kernel, as columns [d, k]."""
    (dense,) = [layer for layer in model.decoder.layers if isinstance(layer, keras.layers.Dense)]
    return dense.kernel.numpy().T


def test_the_linear_network_has_no_nonlinearity():
    encoder, decoder = tfp_vae.networks.build("linear", 3, (20,))
    model = tfp_vae.Autoencoder(encoder, decoder, 3, loss="mse")
    x = np.random.default_rng(1).normal(size=(4, 20)).astype(np.float32)
    # Linear in x: f(a x1 + b x2) - bias terms = a f(x1) + b f(x2) - ...
    f = lambda v: model.reconstruct(v).numpy()  # noqa: E731
    zero = f(np.zeros_like(x))
    np.testing.assert_allclose(f(2 * x[:2] - 3 * x[2:]) - zero[:2],
                               2 * (f(x[:2]) - zero[:2]) - 3 * (f(x[2:]) - zero[2:]), atol=1e-4)


def test_linear_autoencoder_learns_the_pca_subspace():
    x = low_rank_data()
    k = 3
    pca = PCA(k).fit(x)
    model = train_linear_autoencoder(x, k)
    angles = np.degrees(scipy.linalg.subspace_angles(decoder_basis(model), pca.components_.T))
    assert np.all(angles < MAX_ANGLE_DEGREES), angles
    pca_error = np.mean(np.sum((pca.inverse_transform(pca.transform(x)) - x) ** 2, axis=1))
    ae_error = np.mean(np.sum((model.reconstruct(x).numpy() - x) ** 2, axis=1))
    # PCA is the optimum: the autoencoder cannot beat it and must come close.
    assert pca_error * (1 - 1e-4) <= ae_error <= pca_error * (1 + MAX_EXCESS_ERROR), (ae_error, pca_error)


def test_an_untrained_linear_autoencoder_is_far_from_the_pca_subspace():
    """The angle check can fail: a random start is far from the principal subspace."""
    x = low_rank_data()
    pca = PCA(3).fit(x)
    encoder, decoder = tfp_vae.networks.build("linear", 3, x.shape[1:])
    model = tfp_vae.Autoencoder(encoder, decoder, 3, loss="mse", seed=0)
    angles = np.degrees(scipy.linalg.subspace_angles(decoder_basis(model), pca.components_.T))
    assert angles.max() > 30, angles
