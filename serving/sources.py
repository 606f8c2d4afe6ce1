"""Where the batch job's samples come from: a model server, or a SavedModel in process.

Both sources answer the same two calls:

* ``prepare(call_with_retries)`` checks the model's ``generate`` signature
  (`export.contract`: one input ``seed`` int32 [B, 2]), sets ``outputs``
  ({key: TensorSpec}) and returns the model's identity for the manifest;
* ``generate(rows)`` -> {output key: array} for int32 seed rows [B, 2],
  raising `ServingError` on failure.

A source does not retry: the job retries ``generate`` (and ``prepare`` passes
its calls through the job's ``call_with_retries``), so one refusal goes
through one retry loop (`serving.retry`).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from export import contract
from serving.errors import EXIT_USAGE, JobError, ServingError

SIGNATURE = contract.GENERATE
_SEED, = contract.signature(SIGNATURE).input_keys


def check_generate_signature(info, where: str) -> dict:
    """{output: TensorSpec} of a usable `generate` signature, else JobError."""
    inputs = info.inputs
    seed = inputs.get(_SEED)
    if (set(inputs) != {_SEED} or seed.dtype != np.int32
            or (seed.shape is not None and (len(seed.shape) != 2
                                            or seed.shape[1] not in (None, 2)))):
        described = {k: (str(v.dtype), v.shape) for k, v in inputs.items()}
        raise JobError(f"{where}: the '{SIGNATURE}' signature must take one "
                       f"input '{_SEED}' int32 [B, 2]; it takes {described}")
    if not info.outputs:
        raise JobError(f"{where}: the '{SIGNATURE}' signature has no outputs")
    return dict(info.outputs)


class ServerSource:
    """Samples from a model server over gRPC, one pinned version."""

    def __init__(self, target: str, model_name: str,
                 version: Optional[int], timeout: float):
        self.target = target
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self._client = None
        self.outputs = None

    def _connect(self):
        from serving.client import Client

        # Retries off: the job's loop retries, not the client's as well.
        return Client(self.target, self.model_name, version=self.version,
                      timeout=self.timeout, max_attempts=1)

    def prepare(self, call_with_retries) -> dict:
        """Resolves (and pins) the version; returns the model identity."""
        probe = self._connect()
        try:
            meta = call_with_retries(probe.metadata)
        finally:
            probe.close()
        where = f"model {self.model_name!r} version {meta.version} at {self.target}"
        info = meta.signatures.get(SIGNATURE)
        if info is None:
            raise JobError(f"{where} has no '{SIGNATURE}' signature; it has "
                           f"{sorted(meta.signatures)}")
        self.outputs = check_generate_signature(info, where)
        self.version = meta.version
        self._client = self._connect()
        return {"model_name": self.model_name, "model_version": self.version}

    def generate(self, rows: np.ndarray) -> dict:
        return self._client.predict(SIGNATURE, {_SEED: rows})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class InProcessSource:
    """Samples from a SavedModel loaded into this process."""

    def __init__(self, path: str):
        self.path = resolve_saved_model(path)
        self.outputs = None
        self._fn = None

    def prepare(self, call_with_retries) -> dict:
        import tensorflow as tf

        from serving.client import signature_info
        from serving.servable import read_meta_graph

        try:
            meta_graph = read_meta_graph(self.path)
        except ServingError as e:
            raise JobError(f"--saved-model {self.path!r}: {e.message}") from e
        signature = meta_graph.signature_def.get(SIGNATURE)
        if signature is None:
            raise JobError(f"--saved-model {self.path!r} has no '{SIGNATURE}' "
                           f"signature; it has "
                           f"{sorted(meta_graph.signature_def)}")
        self.outputs = check_generate_signature(signature_info(signature),
                                                f"--saved-model {self.path!r}")
        try:
            loaded = tf.saved_model.load(self.path)
        except Exception as e:  # noqa: BLE001 - reported with the path
            raise JobError(f"cannot load --saved-model {self.path!r}: {e}") from e
        self._loaded = loaded
        self._fn = loaded.signatures[SIGNATURE]
        # One row through the model: it works, and later timings are warm.
        from tfp_vae.row_sampling import seed_rows

        try:
            self.generate(seed_rows(0, 0, 1))
        except ServingError as e:
            raise JobError(f"--saved-model {self.path!r} fails on one seed "
                           f"row: {e.code.name}: {e.message}") from e
        return {"saved_model": self.path}

    def generate(self, rows: np.ndarray) -> dict:
        import tensorflow as tf

        from serving import errors

        try:
            out = self._fn(**{_SEED: tf.constant(rows)})
        except Exception as e:  # noqa: BLE001 - classified by its code
            raise errors.from_exception(e) from e
        return {k: v.numpy() for k, v in out.items()}

    def close(self) -> None:
        self._fn = None


def resolve_saved_model(path: str) -> str:
    """A SavedModel version directory, or the highest version under a model base path."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(
            os.path.join(path, "saved_model.pbtxt")):
        return path
    versions = []
    if os.path.isdir(path):
        versions = [int(n) for n in os.listdir(path) if n.isdigit()
                    and os.path.isdir(os.path.join(path, n))]
    if not versions:
        raise JobError(f"--saved-model {path!r}: no saved_model.pb there and "
                       f"no integer version directories; expected a SavedModel "
                       f"directory (BASE/NAME/VERSION) or a model base path",
                       EXIT_USAGE)
    return os.path.join(path, str(max(versions)))
