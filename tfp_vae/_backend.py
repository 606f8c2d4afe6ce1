"""Imports shared by the package: Keras on the TensorFlow backend, TFP's distributions.

TensorFlow Probability runs on TensorFlow, so the Keras backend must be TensorFlow.
The backend is chosen when Keras is first imported; we only set a default here and
refuse to run on another backend with a message that says how to fix it.
"""

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
    """exp of a log-scale squashed smoothly into [MIN_LOG_SCALE, MAX_LOG_SCALE].

    Identity-like in the middle of the range (gradient 1 at 0), so training dynamics
    are those of exp(log_scale) wherever the scale is reasonable.
    """
    half = 0.5 * (MAX_LOG_SCALE - MIN_LOG_SCALE)
    mid = 0.5 * (MAX_LOG_SCALE + MIN_LOG_SCALE)
    return tf.exp(mid + half * tf.tanh((log_scale - mid) / half))


__all__ = ["keras", "tf", "tfp", "tfd", "tfb", "bounded_scale"]
