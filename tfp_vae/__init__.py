"""tfp_vae: variational autoencoders whose encoders output TensorFlow Probability distributions."""

from tfp_vae import _backend  # noqa: F401  (selects the TensorFlow Keras backend first)
from tfp_vae import likelihoods, networks, posteriors, priors
from tfp_vae.vae import VAE, KLWarmup
from tfp_vae.autoencoders import Autoencoder
from tfp_vae import data

__version__ = "0.1.0"

__all__ = ["VAE", "Autoencoder", "KLWarmup", "data", "likelihoods", "networks", "posteriors", "priors"]
