"""Serving for tfp-vae models: TF Serving clients, a local server, batch jobs.

* `serving.client`: `Client`, the gRPC client for a TF Serving (or local)
  server, numpy in and numpy out; `serving.rest_client`: `RestClient`, the
  same over REST, importable without TensorFlow.
* `serving.server`: the local server speaking TF Serving's protocol
  (`python -m serving.server --help`).
* `serving.generate`: the resumable batch generation job;
  `serving.score`: per-example log-likelihood and ELBO of a dataset; both
  also as Apache Beam pipelines (`serving.beam_pipeline`, ``--runner beam``).

Submodules load lazily: ``import serving`` does not import TensorFlow.
"""

import importlib

_EXPORTS = {
    "Client": "serving.client",
    "RestClient": "serving.rest_client",
    "ModelMetadata": "serving.results",
    "VersionStatus": "serving.results",
    "ServingError": "serving.errors",
    "Server": "serving.server",
    "add_serve_arguments": "serving.server",
    "run_serve": "serving.server",
    "add_generate_arguments": "serving.generate",
    "run_generate": "serving.generate",
    "add_score_arguments": "serving.score",
    "run_score": "serving.score",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'serving' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
