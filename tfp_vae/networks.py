"""Encoder and decoder networks.

Encoders map x to a feature vector (the model adds the head that emits posterior
parameters or the code); decoders map z to one unconstrained number per data element
(logits or an unsquashed mean; the likelihood decides how to read them).

``mlp``   Flatten -> Dense(h, relu) for each hidden size; the decoder mirrors it.
``linear`` Flatten; the decoder is one Dense layer and a Reshape. With the models' linear
          code layer and an MSE loss this is the autoencoder whose optimum spans the
          principal subspace: PCA as the linear special case (tests/test_pca.py).
``conv``  The source's 32x32 network: Conv2D 32/64/128, 3x3, stride 2, ReLU, same
          padding -> Flatten; decoder Dense(H/8 * W/8 * 128) -> Reshape ->
          Conv2DTranspose 128/64/32 stride 2 -> Conv2D(channels). Needs H and W
          divisible by 8 (pad 28x28 digits to 32x32).
"""

import math

from tfp_vae._backend import keras

CONV_FILTERS = (32, 64, 128)


def _check_shape(data_shape):
    data_shape = tuple(data_shape)
    if not data_shape or any((not isinstance(s, int)) or s <= 0 for s in data_shape):
        raise ValueError(f"data_shape must be positive integers, got {data_shape!r}.")
    return data_shape


def _check_hidden(hidden):
    hidden = tuple(hidden)
    if any((not isinstance(h, int)) or h <= 0 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}.")
    return hidden


def mlp_encoder(data_shape, hidden=(512, 256), name="encoder"):
    data_shape, hidden = _check_shape(data_shape), _check_hidden(hidden)
    layers = [keras.Input(shape=data_shape), keras.layers.Flatten()]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    return keras.Sequential(layers, name=name)


def mlp_decoder(latent_dim, data_shape, hidden=(256, 512), name="decoder"):
    data_shape, hidden = _check_shape(data_shape), _check_hidden(hidden)
    layers = [keras.Input(shape=(latent_dim,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers += [keras.layers.Dense(math.prod(data_shape)), keras.layers.Reshape(data_shape)]
    return keras.Sequential(layers, name=name)


def _check_conv_shape(data_shape):
    data_shape = _check_shape(data_shape)
    factor = 2 ** len(CONV_FILTERS)
    if len(data_shape) != 3 or data_shape[0] % factor or data_shape[1] % factor:
        raise ValueError(
            f"The conv network needs images of shape (H, W, C) with H and W divisible by "
            f"{factor}, got {data_shape!r}. Pad 28x28 digits to 32x32 (pad=True), or use "
            "the mlp network."
        )
    return data_shape


def conv_encoder(data_shape=(32, 32, 1), name="encoder"):
    data_shape = _check_conv_shape(data_shape)
    layers = [keras.Input(shape=data_shape)]
    layers += [
        keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")
        for f in CONV_FILTERS
    ]
    layers.append(keras.layers.Flatten())
    return keras.Sequential(layers, name=name)


def conv_decoder(latent_dim, data_shape=(32, 32, 1), name="decoder"):
    h, w, c = _check_conv_shape(data_shape)
    factor = 2 ** len(CONV_FILTERS)
    top = CONV_FILTERS[-1]
    layers = [
        keras.Input(shape=(latent_dim,)),
        keras.layers.Dense((h // factor) * (w // factor) * top, activation="relu"),
        keras.layers.Reshape((h // factor, w // factor, top)),
    ]
    layers += [
        keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu")
        for f in reversed(CONV_FILTERS)
    ]
    layers.append(keras.layers.Conv2D(c, 3, padding="same"))
    return keras.Sequential(layers, name=name)


def linear_encoder(data_shape, name="encoder"):
    data_shape = _check_shape(data_shape)
    return keras.Sequential([keras.Input(shape=data_shape), keras.layers.Flatten()], name=name)


def linear_decoder(latent_dim, data_shape, name="decoder"):
    return mlp_decoder(latent_dim, data_shape, hidden=(), name=name)


_NETWORKS = {
    "mlp": (mlp_encoder, mlp_decoder),
    "conv": (conv_encoder, conv_decoder),
    "linear": (linear_encoder, linear_decoder),
}


def build(name, latent_dim, data_shape, hidden=None):
    """(encoder, decoder) for network ``name`` ("mlp" or "conv")."""
    if name not in _NETWORKS:
        raise ValueError(f"Unknown network {name!r}; expected one of {sorted(_NETWORKS)}.")
    if not isinstance(latent_dim, int) or latent_dim <= 0:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}.")
    make_encoder, make_decoder = _NETWORKS[name]
    if name == "mlp":
        hidden = tuple(hidden) if hidden else (512, 256)
        return (
            make_encoder(data_shape, hidden),
            make_decoder(latent_dim, data_shape, tuple(reversed(hidden))),
        )
    return make_encoder(data_shape), make_decoder(latent_dim, data_shape)


def names():
    return sorted(_NETWORKS)
