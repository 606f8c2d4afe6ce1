"""Observation models p(x|z).

The decoder network outputs one unconstrained number per data element; a likelihood
layer turns that tensor into a ``tfd.Independent`` distribution over the whole data
shape, so ``log_prob`` sums over pixels and returns one number per example.

``Bernoulli``
    logits = f(z); log p(x|z) = sum x log p + (1 - x) log(1 - p), i.e. minus the binary
    cross-entropy. Works for grey levels in [0, 1] as well as binary data.
``Gaussian``
    N(x | m(f(z)), c I). With a fixed variance c, -log p(x|z) = ||x - m||^2 / (2c) + const.
    ``learn_scale="global"`` learns one scale, ``"pixel"`` one per data element.
    ``mean_activation`` ("sigmoid" for data in [0, 1], "linear" otherwise) maps f(z) to m.

``inverse_mean(m)`` is the decoder output whose mean is m: with it,
``networks.initialize_output_bias`` starts a decoder at the data's mean.
"""

import math

import numpy as np

from tfp_vae._backend import bounded_scale, keras, tf, tfd


class Likelihood(keras.layers.Layer):
    """Base class: builds p(x|z) from the decoder output."""

    def build(self, input_shape):
        """``input_shape`` is the data shape (batch dimension first)."""
        self.event_ndims = len(input_shape) - 1
        self.built = True

    def call(self, inputs=None):
        raise TypeError(
            f"{type(self).__name__} is not called on tensors; use .distribution() instead."
        )

    def distribution(self, outputs):
        """p(x|z) with batch shape outputs.shape[:-event_ndims] and the data as event."""
        raise NotImplementedError

    def mean(self, outputs):
        """E[x|z], computed directly from the decoder output."""
        raise NotImplementedError

    def inverse_mean(self, mean):
        """The decoder output f with ``self.mean(f) == mean``, as a float32 NumPy array."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define inverse_mean, so a decoder cannot be started "
            "at the data's mean with it; use output_bias 'zeros' or define inverse_mean."
        )


# A mean of exactly 0 or 1 (MNIST's border pixels) has no finite logit; it is clipped to
# [MEAN_CLIP, 1 - MEAN_CLIP], a logit of about -6.9 or +6.9.
MEAN_CLIP = 1e-3


def _logit(mean):
    p = np.clip(np.asarray(mean, np.float64), MEAN_CLIP, 1 - MEAN_CLIP)
    return np.log(p / (1 - p)).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfp_vae")
class Bernoulli(Likelihood):
    """Independent Bernoulli over every data element; the decoder outputs logits."""

    def distribution(self, outputs):
        return tfd.Independent(
            tfd.Bernoulli(logits=outputs, dtype=outputs.dtype),
            reinterpreted_batch_ndims=self.event_ndims,
        )

    def mean(self, outputs):
        return tf.sigmoid(outputs)

    def inverse_mean(self, mean):
        """The logit of ``mean``, clipped to [MEAN_CLIP, 1 - MEAN_CLIP] first."""
        return _logit(mean)


_SCALES = ("fixed", "global", "pixel")
_MEAN_ACTIVATIONS = {"sigmoid": tf.sigmoid, "linear": tf.identity}


@keras.saving.register_keras_serializable(package="tfp_vae")
class Gaussian(Likelihood):
    """Independent Normal N(m(f(z)), c I) with fixed c, or a learned scale."""

    def __init__(self, variance=0.01, learn_scale="fixed", mean_activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        if learn_scale not in _SCALES:
            raise ValueError(f"learn_scale must be one of {list(_SCALES)}, got {learn_scale!r}.")
        if mean_activation not in _MEAN_ACTIVATIONS:
            raise ValueError(
                f"mean_activation must be one of {sorted(_MEAN_ACTIVATIONS)}, "
                f"got {mean_activation!r}."
            )
        variance = float(variance)
        if not (variance > 0 and math.isfinite(variance)):
            raise ValueError(f"variance must be a positive finite number, got {variance!r}.")
        self.variance = variance
        self.learn_scale = learn_scale
        self.mean_activation = mean_activation

    def build(self, input_shape):
        shape = {"fixed": None, "global": (), "pixel": tuple(input_shape[1:])}[self.learn_scale]
        if shape is not None:
            # Learned scales start at sqrt(variance).
            self.log_scale = self.add_weight(
                shape=shape,
                initializer=keras.initializers.Constant(0.5 * math.log(self.variance)),
                name="log_scale",
            )
        super().build(input_shape)

    def scale(self):
        if self.learn_scale == "fixed":
            return tf.constant(math.sqrt(self.variance))
        return bounded_scale(self.log_scale)

    def mean(self, outputs):
        return _MEAN_ACTIVATIONS[self.mean_activation](outputs)

    def inverse_mean(self, mean):
        """The logit of ``mean`` (clipped as Bernoulli's) for the sigmoid mean, else ``mean``."""
        if self.mean_activation == "sigmoid":
            return _logit(mean)
        return np.asarray(mean, np.float32)

    def distribution(self, outputs):
        loc = self.mean(outputs)
        scale = tf.broadcast_to(tf.cast(self.scale(), loc.dtype), tf.shape(loc))
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=self.event_ndims
        )

    def get_config(self):
        return {
            **super().get_config(),
            "variance": self.variance,
            "learn_scale": self.learn_scale,
            "mean_activation": self.mean_activation,
        }


_LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}


def get(identifier, **kwargs):
    """A likelihood from a name ("bernoulli", "gaussian") or a Likelihood instance."""
    if isinstance(identifier, Likelihood):
        return identifier
    if isinstance(identifier, str) and identifier in _LIKELIHOODS:
        return _LIKELIHOODS[identifier](**kwargs)
    raise ValueError(
        f"Unknown likelihood {identifier!r}; expected one of {sorted(_LIKELIHOODS)} "
        "or a tfp_vae.likelihoods.Likelihood instance."
    )


def names():
    return sorted(_LIKELIHOODS)
