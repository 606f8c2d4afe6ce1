"""The signatures of an exported tfp-vae model as client methods, on top of Predict.

`ModelMethods` is mixed into both clients (`serving.client.Client` over gRPC,
`serving.rest_client.RestClient` over REST); each supplies ``call`` (one Predict).
Signature names and tensor keys come from the export's table,
`export.contract`, so a signature renamed there is renamed here::

    x, z = client.generate(seed_rows)        # seed_rows: int32 [B, 2]
    mean = client.decode(z)
    loc, scale_tril = client.encode(x)
    mean = client.reconstruct(x)
    ll, elbo = client.log_likelihood(x, seed_rows)

TensorFlow-free (``from export import contract`` loads no TensorFlow).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from export import contract

_INT32 = np.iinfo(np.int32)

_GENERATE = contract.signature(contract.GENERATE)
_DECODE = contract.signature(contract.DECODE)
_ENCODE = contract.signature(contract.ENCODE)
_RECONSTRUCT = contract.signature(contract.RECONSTRUCT)
_LOG_LIKELIHOOD = contract.signature(contract.LOG_LIKELIHOOD)


def float32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def as_seed_rows(seed) -> np.ndarray:
    """``seed`` as int32 [B, 2] rows; ValueError if it is not integers that fit."""
    array = np.asarray(seed)
    if array.dtype.kind not in "iu":
        raise ValueError(f"seed must hold integers (int32 [B, 2] rows); got "
                         f"dtype {array.dtype}")
    if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
        raise ValueError(f"seed values must fit in int32; got range "
                         f"[{array.min()}, {array.max()}]")
    return array.astype(np.int32)


def check_client_arguments(model_name, version, version_label, timeout) -> None:
    """Raises ValueError for client arguments no server could answer."""
    if not model_name:
        raise ValueError("model_name must not be empty")
    if timeout is None or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds; "
                         f"got {timeout!r}")
    if version is not None and version_label is not None:
        raise ValueError(f"give a version ({version}) or a version label "
                         f"({version_label!r}), not both")


def _inputs(signature, *values) -> dict:
    return dict(zip(signature.input_keys, values))


class ModelMethods:
    """The tfp-vae signatures (`export.contract.SIGNATURES`) on top of ``call``."""

    def call(self, signature_name: str, inputs: Mapping[str, np.ndarray], *,
             output_filter: Optional[Sequence[str]] = None,
             timeout: Optional[float] = None):
        raise NotImplementedError

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray], *,
                output_filter: Optional[Sequence[str]] = None,
                timeout: Optional[float] = None) -> dict:
        """Predict on any signature -> {output key: array}."""
        return self.call(signature_name, inputs, output_filter=output_filter,
                         timeout=timeout).outputs

    def _outputs(self, signature, inputs: dict, timeout) -> tuple:
        out = self.predict(signature.name, inputs, timeout=timeout)
        return tuple(out[key] for key in signature.output_keys)

    def generate(self, seed, *, timeout: Optional[float] = None) -> tuple:
        """z ~ p(z) and x = the mean of p(x|z), one per int32 seed row [B, 2] -> (x, z)."""
        return self._outputs(_GENERATE, _inputs(_GENERATE, as_seed_rows(seed)), timeout)

    def decode(self, z, *, timeout: Optional[float] = None) -> np.ndarray:
        """Mean of p(x|z) for latents z float32 [B, D]."""
        return self._outputs(_DECODE, _inputs(_DECODE, float32(z)), timeout)[0]

    def encode(self, x, *, timeout: Optional[float] = None) -> tuple:
        """Posterior q(z|x) parameters -> (loc [B, D], scale_tril [B, D, D])."""
        return self._outputs(_ENCODE, _inputs(_ENCODE, float32(x)), timeout)

    def reconstruct(self, x, *, timeout: Optional[float] = None) -> np.ndarray:
        """Mean of p(x|z) at the posterior mean of z given x."""
        return self._outputs(_RECONSTRUCT, _inputs(_RECONSTRUCT, float32(x)), timeout)[0]

    def log_likelihood(self, x, seed, *, timeout: Optional[float] = None) -> tuple:
        """Importance-sampled log p(x) and the ELBO, per row -> (ll, elbo)."""
        return self._outputs(
            _LOG_LIKELIHOOD, _inputs(_LOG_LIKELIHOOD, float32(x), as_seed_rows(seed)), timeout)
