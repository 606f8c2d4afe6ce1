"""The names a configuration may use, without TensorFlow.

``tfp-vae`` checks its arguments and a ``--config`` file before TensorFlow is loaded
(importing it takes seconds), so the choices a ``TrainConfig`` accepts are listed
here, in plain Python. Each registry (``posteriors``, ``priors``, ``likelihoods``,
``networks``) holds exactly its built-in names (a test checks it), and
``registered(kind)`` also sees names registered later, once the registry is loaded.
"""

import sys

DATASETS = ("mnist5k", "digits", "mnist", "fashion_mnist")
BINARIZE = (None, "static", "dynamic")
MODELS = ("vae", "ae")
OBJECTIVES = ("elbo", "iwae")
KL_METHODS = ("auto", "analytic", "sampled", "path")  # tfp_vae.vae.VAE(kl=...)
AE_LOSSES = ("bce", "mse")
SPARSITY = (None, "l1", "kl")
NOISE = (None, "gaussian", "mask")
GAUSSIAN_SCALES = ("fixed", "global", "pixel")
STRATEGIES = ("none", "mirrored", "multi_worker")  # tfp_vae.distribute
OUTPUT_BIAS = ("zeros", "data-mean")  # how a VAE's decoder output bias starts

# The built-in entries of each registry, sorted as the registry's names() lists them.
BUILTIN = {
    "networks": ("conv", "linear", "mlp"),
    "posteriors": ("diag", "iaf", "tril", "tril_source"),
    "priors": ("mog", "normal", "vamp"),
    "likelihoods": ("bernoulli", "gaussian"),
}


def registered(kind):
    """Names of registry ``kind``: the live registry's if it is loaded, else the built-ins."""
    module = sys.modules.get(f"tfp_vae.{kind}")
    names = getattr(module, "names", None)
    return tuple(names()) if names is not None else BUILTIN[kind]
