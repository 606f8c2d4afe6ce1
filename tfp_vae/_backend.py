"""Imports shared by the package: Keras on the TensorFlow backend, TFP's distributions.

TensorFlow Probability runs on TensorFlow, so the Keras backend must be TensorFlow.
The backend is chosen when Keras is first imported; we only set a default here and
refuse to run on another backend with a message that says how to fix it.
"""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "tfp_vae needs the TensorFlow Keras backend, but Keras is running on "
        f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow before importing keras."
    )

tfd = tfp.distributions
tfb = tfp.bijectors

# Floor and ceiling for standard deviations computed from a log-scale. exp() of an
# unbounded network output underflows to 0 (log-density -> inf) or overflows; a
# softly bounded log-scale keeps every sigma in [MIN_SCALE, MAX_SCALE].
MIN_LOG_SCALE = -9.0
MAX_LOG_SCALE = 5.0


def bounded_scale(log_scale):
    """exp of a log-scale softly clipped into [MIN_LOG_SCALE, MAX_LOG_SCALE].

    Two softplus hinges: within the range the clip is the identity up to
    exp(-distance to the nearer bound), so training behaves like exp(log_scale)
    wherever the scale is reasonable; outside it the scale flattens out instead of
    underflowing to 0 or overflowing.
    """
    lower = MIN_LOG_SCALE + tf.nn.softplus(log_scale - MIN_LOG_SCALE)
    return tf.exp(MAX_LOG_SCALE - tf.nn.softplus(MAX_LOG_SCALE - lower))


def softplus_scale(raw):
    """softplus(raw) + exp(MIN_LOG_SCALE): a scale that grows linearly, not exponentially.

    The parameterization tfp.layers uses for its Normal layers. A network output near 0
    gives sigma ~ 0.69 (not 1), and the gradient d sigma / d raw = sigmoid(raw) never
    exceeds 1, so large outputs do not blow sigma up.
    """
    return tf.nn.softplus(raw) + math.exp(MIN_LOG_SCALE)


__all__ = ["keras", "tf", "tfp", "tfd", "tfb", "bounded_scale", "softplus_scale"]
