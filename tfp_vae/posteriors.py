"""Gaussian posterior families q(z|x).

A posterior family is two pure functions, in the spirit of TFP's distribution layers:
``params_size(latent_dim)`` says how many numbers the encoder head must emit, and
``new(params, latent_dim)`` turns those numbers into a ``tfd`` distribution. The
encoder is an ordinary Keras layer that outputs a tensor; the distribution is built
outside it, so the same code serves training, export and evaluation.

Families:

``diag``
    (mu, log sigma) = e(x);  q = N(mu, diag sigma^2)  (``tfd.MultivariateNormalDiag``).
``tril``
    (mu, log sigma, L') = e(x);  L = L_mask * L' + diag(sigma), with L_mask strictly
    lower triangular;  q = N(mu, L L^T)  (``tfd.MultivariateNormalTriL``). Then
    z = mu + L eps and log|det dz/deps| = sum_i log sigma_i.

Besides ``new``, each family has ``reparameterize(params, latent_dim, eps)``: given
standard-normal noise eps [..., B, D] it returns z [..., B, D] and log q(z|x) [..., B]
from eps alone (no inversion), by the change of variables

    log q(z|x) = sum_i log N(eps_i; 0, 1) - log|det dz/deps|.

The serving ``log_likelihood`` draws eps per seed row (``row_sampling``) and uses it.
"""

import math

from tfp_vae._backend import bounded_scale, tf, tfd
from tfp_vae.row_sampling import affine


def standard_normal_log_prob(eps):
    """sum_i log N(eps_i; 0, 1) over the last axis."""
    dim = eps.shape[-1]
    return -0.5 * tf.reduce_sum(tf.square(eps), axis=-1) - 0.5 * dim * math.log(2 * math.pi)


class DiagonalGaussian:
    """Factorized Gaussian posterior N(mu, diag sigma^2)."""

    name = "diag"

    @staticmethod
    def params_size(latent_dim):
        return 2 * latent_dim

    @staticmethod
    def initialize_head(head, latent_dim):
        """Adjusts the freshly built Dense head that emits the parameters (nothing to do)."""

    @staticmethod
    def new(params, latent_dim):
        loc, log_scale = tf.split(params, [latent_dim, latent_dim], axis=-1)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=bounded_scale(log_scale))

    @staticmethod
    def reparameterize(params, latent_dim, eps):
        """(z = mu + sigma * eps, log q(z|x)) for noise eps [..., B, D]."""
        loc, log_scale = tf.split(params, [latent_dim, latent_dim], axis=-1)
        scale = bounded_scale(log_scale)
        log_det = tf.reduce_sum(tf.math.log(scale), axis=-1)
        return affine(loc, scale, eps), standard_normal_log_prob(eps) - log_det


class FullCovarianceGaussian:
    """Full-covariance Gaussian posterior built as in the source's Algorithm 2."""

    name = "tril"

    @staticmethod
    def params_size(latent_dim):
        return 2 * latent_dim + latent_dim * latent_dim

    @staticmethod
    def initialize_head(head, latent_dim):
        """Zeroes the head weights that emit L', so q starts out diagonal.

        With the Dense layer's random initial weights, L' starts at |L'| ~ 0.2 and adds
        correlated noise to z from the first step; on held-out mnist5k that cost
        ~8 nats of log-likelihood at equal budget (bench/bench_quality.py).
        """
        n = 2 * latent_dim
        kernel = head.kernel
        kernel.assign(tf.concat([kernel[:, :n], tf.zeros_like(kernel[:, n:])], axis=1))

    @staticmethod
    def scale_tril(log_scale, l_prime):
        """L = L_mask * L' + diag(sigma), L_mask ones strictly below the diagonal."""
        latent_dim = log_scale.shape[-1]
        mask = tf.constant(
            [[1.0 if j < i else 0.0 for j in range(latent_dim)] for i in range(latent_dim)],
            dtype=l_prime.dtype,
        )
        return mask * l_prime + tf.linalg.diag(bounded_scale(log_scale))

    @classmethod
    def _loc_and_scale_tril(cls, params, latent_dim):
        d = latent_dim
        loc, log_scale, flat = tf.split(params, [d, d, d * d], axis=-1)
        l_prime = tf.reshape(flat, tf.concat([tf.shape(flat)[:-1], [d, d]], axis=0))
        return loc, cls.scale_tril(log_scale, l_prime)

    @classmethod
    def new(cls, params, latent_dim):
        loc, scale_tril = cls._loc_and_scale_tril(params, latent_dim)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    @classmethod
    def reparameterize(cls, params, latent_dim, eps):
        """(z = mu + L eps, log q(z|x)) for noise eps [..., B, D]; log|det L| = sum log sigma_i."""
        loc, scale_tril = cls._loc_and_scale_tril(params, latent_dim)
        log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(scale_tril)), axis=-1)
        return affine(loc, scale_tril, eps), standard_normal_log_prob(eps) - log_det


_FAMILIES = {family.name: family for family in (DiagonalGaussian, FullCovarianceGaussian)}


def get(name):
    """Returns the posterior family registered under ``name`` ("diag" or "tril")."""
    if isinstance(name, str) and name in _FAMILIES:
        return _FAMILIES[name]
    raise ValueError(f"Unknown posterior {name!r}; expected one of {sorted(_FAMILIES)}.")


def names():
    return sorted(_FAMILIES)
