"""The peer: a VAE written with TensorFlow Probability's own Keras layers (tfp.layers).

``tfp.layers`` is built on Keras 2 (``tf_keras``), so the peer is a tf_keras model, kept
apart from the project's Keras 3 models. The network matches the quality benchmark's
MLP: Flatten -> Dense(512, relu) -> Dense(256, relu) -> Dense(params) -> a
distribution layer (``tfpl.IndependentNormal`` or ``tfpl.MultivariateNormalTriL``);
decoder Dense(256, relu) -> Dense(512, relu) -> Dense(prod S) ->
``tfpl.IndependentBernoulli`` (which reshapes the logits to S). The loss is -log p(x|z) per example plus the KL term.

KL counted once: ``tfpl.KLDivergenceRegularizer`` on the encoder's distribution layer
(exact KL against N(0, I)). tf_keras adds an activity regularizer's value divided by
the batch size... once per call of the layer; in the usual tfp.layers VAE (the
encoder's output fed to the decoder inside one functional model) it is counted twice
(tensorflow/probability#1215). ``kl_multiplicity`` measures how many times the
model's training loss holds the KL on a fixed batch, and ``build`` sets the
regularizer's weight to 1 / multiplicity so that it is counted once.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfd, tfpl = tfp.distributions, tfp.layers

ENCODER_LAYERS = {
    "IndependentNormal": tfpl.IndependentNormal,
    "MultivariateNormalTriL": tfpl.MultivariateNormalTriL,
}

# N(0, I) in the form tfd.kl_divergence pairs with each encoder's distribution.
PRIORS = {
    "IndependentNormal": lambda d: tfd.Independent(tfd.Normal(tf.zeros(d), 1.0), reinterpreted_batch_ndims=1),
    "MultivariateNormalTriL": lambda d: tfd.MultivariateNormalDiag(loc=tf.zeros(d)),
}


def build(kind, data_shape, latent_dim=16, hidden=(512, 256), kl_weight=1.0):
    """(vae, encoder, decoder, prior) as tf_keras models; the VAE is compiled by the caller."""
    if kind not in ENCODER_LAYERS:
        raise ValueError(f"kind must be one of {sorted(ENCODER_LAYERS)}, got {kind!r}.")
    layer = ENCODER_LAYERS[kind]
    prior = PRIORS[kind](latent_dim)
    regularizer = tfpl.KLDivergenceRegularizer(prior, use_exact_kl=True, weight=kl_weight)
    encoder = tf_keras.Sequential(
        [tf_keras.layers.InputLayer(input_shape=data_shape), tf_keras.layers.Flatten()]
        + [tf_keras.layers.Dense(h, activation="relu") for h in hidden]
        + [tf_keras.layers.Dense(layer.params_size(latent_dim)),
           layer(latent_dim, activity_regularizer=regularizer)],
        name="peer_encoder",
    )
    decoder = tf_keras.Sequential(
        [tf_keras.layers.InputLayer(input_shape=(latent_dim,))]
        + [tf_keras.layers.Dense(h, activation="relu") for h in reversed(hidden)]
        + [tf_keras.layers.Dense(int(np.prod(data_shape))),
           tfpl.IndependentBernoulli(data_shape, tfd.Bernoulli.logits)],
        name="peer_decoder",
    )
    vae = tf_keras.Model(inputs=encoder.inputs, outputs=decoder(encoder.outputs[0]), name="peer_vae")
    return vae, encoder, decoder, prior


def negative_log_likelihood(x, rv_x):
    return -rv_x.log_prob(x)


def kl_multiplicity(vae, encoder, prior, x):
    """How many times the VAE's regularization losses hold the KL on batch x (weight 1)."""
    q = encoder(x, training=False)
    kl = float(tf.reduce_mean(tfd.kl_divergence(q, prior)))
    vae(x, training=True)
    held = float(tf.add_n(vae.losses)) if vae.losses else 0.0
    return held / kl


def build_counting_kl_once(kind, data_shape, x_probe, **kwargs):
    """``build`` with the regularizer's weight set so the training loss holds the KL once."""
    vae, encoder, _, prior = build(kind, data_shape, **kwargs)
    count = kl_multiplicity(vae, encoder, prior, x_probe)
    weight = 1.0 / round(count)
    vae, encoder, decoder, prior = build(kind, data_shape, kl_weight=weight, **kwargs)
    check = kl_multiplicity(vae, encoder, prior, x_probe) / weight
    if not math.isclose(count, round(count), rel_tol=1e-3) or not math.isclose(check * weight, 1.0, rel_tol=1e-3):
        raise RuntimeError(f"The peer's KL is held {count:.3f} times; cannot count it once.")
    return vae, encoder, decoder, prior, round(count)
