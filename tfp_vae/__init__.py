"""tfp_vae: variational autoencoders whose encoders output TensorFlow Probability distributions.

The library: posteriors, priors, likelihoods, networks, the ``VAE`` and
``Autoencoder`` models, datasets, training runs. It knows nothing of export or
serving (``export`` and ``serving`` build on it).

Words used the same way across tfp_vae, export and serving:

seed row
    int32 [2], (seed, index): the only source of one example's randomness in
    ``generate``/``log_likelihood`` (``row_sampling``); ``seed_rows(seed, start, stop)``.
num_samples
    how many draws a call makes: for ``log_likelihood``/``evaluate`` the importance
    samples k per example; for ``sample``/``generate`` jobs the number of outputs.
run directory
    what ``tfp-vae train`` writes: model.keras, config.json, metrics.json, history.csv.
base path / model base path
    BASE, the directory of model directories (``tfp-vae export --base-path``) / BASE/NAME,
    one model's directory of integer versions (TF Serving's ``--model_base_path``).
kind
    "vae" or "autoencoder": which rows of the signature table (``export.contract``) apply.
"""

from tfp_vae import _backend  # noqa: F401  (selects the TensorFlow Keras backend first)
from tfp_vae import likelihoods, networks, posteriors, priors
from tfp_vae.vae import VAE, KLWarmup
from tfp_vae.autoencoders import Autoencoder
from tfp_vae import data

__version__ = "0.1.0"

__all__ = ["VAE", "Autoencoder", "KLWarmup", "data", "likelihoods", "networks", "posteriors", "priors"]
