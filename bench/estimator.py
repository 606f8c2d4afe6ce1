"""One importance-sampled log p(x) estimator for every model the benchmarks compare.

    log p(x) ~= log (1/k) sum_l p(x|z_l) p(z_l) / q(z_l|x),   z_l ~ q(z|x),

written here once, against plain ``tfd`` distributions, so that the project's models
and the tfp.layers peer are scored by the same code (not each by its own method). A
model is described by three callables:

  posterior(x)               -> q(z|x), a tfd distribution with batch [b], event [D]
  log_likelihood(z, x)       -> log p(x|z), [k, b] for z [k, b, D] and x [b, *S]
  prior                      -> p(z), event [D]

z is drawn with ``q.sample`` and weighted with ``q.log_prob`` (for a flow, log_prob
inverts it), in chunks of at most ``max_rows`` decoder evaluations combined by a
running log-sum-exp; chunk c of batch b uses the stateless seed (seed, 1000003 b + c).
"""

import math

import numpy as np
import tensorflow as tf


def importance_log_likelihood(posterior, log_likelihood, prior, x, num_samples=1000, seed=0,
                              batch_size=100, max_rows=10000):
    """Importance-sampled log p(x) per example, NumPy [N]."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")

    @tf.function(reduce_retracing=True)
    def chunk(xb, n, chunk_seed):
        q = posterior(xb)
        z = q.sample(n, seed=chunk_seed)
        log_w = log_likelihood(z, xb) + prior.log_prob(z) - q.log_prob(z)
        return tf.reduce_logsumexp(log_w, axis=0)

    x = np.asarray(x, np.float32)
    out = []
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb = tf.constant(x[start : start + batch_size])
        size = max(1, min(num_samples, max_rows // int(xb.shape[0])))
        parts = []
        for c, s in enumerate(range(0, num_samples, size)):
            n = min(size, num_samples - s)
            parts.append(chunk(xb, tf.constant(n), tf.constant([seed, b * 1_000_003 + c], tf.int32)))
        out.append(tf.reduce_logsumexp(tf.stack(parts), axis=0) - math.log(num_samples))
    return tf.concat(out, axis=0).numpy()


def for_tfp_vae(model):
    """(posterior, log_likelihood, prior) of a tfp_vae.VAE."""
    return model.posterior, lambda z, x: model.decode(z).log_prob(x), model.prior()


def for_peer(encoder, decoder, prior):
    """(posterior, log_likelihood, prior) of the tfp.layers peer (tf_keras models)."""

    def posterior(x):
        return encoder(x, training=False).tensor_distribution

    def log_likelihood(z, x):
        lead = tf.shape(z)[:-1]
        flat = tf.reshape(z, [-1, z.shape[-1]])
        px = decoder(flat, training=False).tensor_distribution
        tiled = tf.reshape(tf.broadcast_to(x, tf.concat([lead, tf.shape(x)[1:]], 0)),
                           tf.concat([[-1], tf.shape(x)[1:]], 0))
        return tf.reshape(px.log_prob(tiled), lead)

    return posterior, log_likelihood, prior


def elbo(posterior, log_likelihood, prior, x, num_samples=10, seed=0, batch_size=100):
    """Per-example ELBO, E_q[log p(x|z) + log p(z) - log q(z|x)], from ``num_samples`` draws, NumPy [N]."""

    @tf.function(reduce_retracing=True)
    def mean_log_weight(xb, chunk_seed):
        q = posterior(xb)
        z = q.sample(num_samples, seed=chunk_seed)
        return tf.reduce_mean(log_likelihood(z, xb) + prior.log_prob(z) - q.log_prob(z), axis=0)

    x = np.asarray(x, np.float32)
    return np.concatenate([
        mean_log_weight(tf.constant(x[s : s + batch_size]), tf.constant([seed, 7_000_003 + b], tf.int32)).numpy()
        for b, s in enumerate(range(0, len(x), batch_size))
    ])
