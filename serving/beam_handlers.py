"""Beam `ModelHandler`s for an exported model: a SavedModel in the worker, or a server.

Imports Apache Beam at module level: only `serving.beam_pipeline` imports this
module, and only once it has checked that Beam is installed.

An element is one output shard and the fixed-grid requests that cover it:
``(shard index, shard start, shard stop, ((start, stop), ...))``
(`serving.plan.grid_requests`).  The handler sends each request as one call,
its rows exactly the grid's (the answers' bytes depend on which rows travel
together, so Beam must not re-batch: ``max_batch_size=1`` element per call),
cuts the answers to the shard and returns the shard's arrays, so the samples
stay in the worker that writes them.  ``inputs_fn(start, stop)`` gives a
request's input tensors (seed rows, and for scoring the examples);
``check_fn(outputs, rows)`` rejects a malformed answer.

* `SavedModelHandler` loads with ``tf.saved_model.load`` and calls a named
  signature (Beam's own TensorFlow handler loads with
  ``tf.keras.models.load_model``, which Keras 3 refuses for a plain SavedModel).
* `ServerHandler` is Beam's `RemoteModelHandler` (retries with exponential
  backoff, client-side throttling) around the project's gRPC `Client` with a
  pinned version; only the transient codes (`serving.errors.TRANSIENT_CODES`)
  are retried.

Each answer is a `PredictionResult(element, {output key: shard array})`.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import (ModelHandler, PredictionResult,
                                           RemoteModelHandler)

from serving.errors import TRANSIENT_CODES, ServingError

_ONE_REQUEST_PER_CALL = {"min_batch_size": 1, "max_batch_size": 1}


# ---------------------------------------------------------------------------
# Inputs of one grid request (module-level, so they pickle by reference).
# ---------------------------------------------------------------------------

def generate_inputs(seed: int, start: int, stop: int) -> dict:
    """``generate``'s inputs for rows [start, stop): seed rows (seed, i)."""
    from tfp_vae.row_sampling import seed_rows

    return {"seed": seed_rows(seed, start, stop)}


_DATA_CACHE: dict = {}


def load_examples(path: str, key: Optional[str]) -> np.ndarray:
    """The examples array of a .npy / .npz file (through Beam's FileSystems),
    float32, cached per process: each worker reads the file once."""
    cached = _DATA_CACHE.get((path, key))
    if cached is not None:
        return cached
    from serving import score

    if "://" in path:
        import io

        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            array = score.read_examples(io.BytesIO(f.read()), path, key)
    else:
        array = score.read_examples(path, path, key)
    _DATA_CACHE.clear()
    _DATA_CACHE[(path, key)] = array
    return array


def score_inputs(seed: int, data: str, key: Optional[str], start: int,
                 stop: int) -> dict:
    """``log_likelihood``'s inputs for examples [start, stop): x and seed rows (seed, i)."""
    from tfp_vae.row_sampling import seed_rows

    x = load_examples(data, key)
    return {"x": np.ascontiguousarray(x[start:stop]),
            "seed": seed_rows(seed, start, stop)}


def answer_shard(element: tuple, call: Callable[[dict], dict],
                 inputs_fn: Callable, check_fn: Callable) -> dict:
    """The shard's {output: array}, from its grid requests called one by one."""
    from serving.plan import assemble_shard

    _, shard_start, shard_stop, requests = element

    def answers():
        for start, stop in requests:
            outputs = call(inputs_fn(start, stop))
            check_fn(outputs, stop - start)
            yield start, stop, outputs

    return assemble_shard(shard_start, shard_stop, answers())


# ---------------------------------------------------------------------------
# Handlers.
# ---------------------------------------------------------------------------

class _LoadedSignature:
    """A loaded SavedModel and one of its signatures (the object keeps the
    variables alive: a signature alone holds them weakly)."""

    def __init__(self, loaded, fn):
        self.loaded = loaded
        self.fn = fn


class SavedModelHandler(ModelHandler):
    """Calls signature ``signature`` of the SavedModel at ``path`` in the worker."""

    def __init__(self, path: str, signature: str, inputs_fn: Callable,
                 check_fn: Callable):
        super().__init__(**_ONE_REQUEST_PER_CALL)
        self._path = path
        self._signature = signature
        self._inputs_fn = inputs_fn
        self._check_fn = check_fn

    def load_model(self) -> _LoadedSignature:
        import tensorflow as tf

        loaded = tf.saved_model.load(self._path)
        if self._signature not in loaded.signatures:
            raise ValueError(f"the SavedModel {self._path!r} has no "
                             f"'{self._signature}' signature; it has "
                             f"{sorted(loaded.signatures)}")
        return _LoadedSignature(loaded, loaded.signatures[self._signature])

    def run_inference(self, batch: Sequence, model: _LoadedSignature,
                      inference_args: Optional[dict] = None) -> list:
        import tensorflow as tf

        from serving import errors

        def call(inputs):
            try:
                out = model.fn(**{k: tf.constant(v) for k, v in inputs.items()})
            except Exception as e:  # noqa: BLE001 - classified by its code
                raise errors.from_exception(e) from e
            return {k: v.numpy() for k, v in out.items()}

        return [PredictionResult(element, answer_shard(
                    element, call, self._inputs_fn, self._check_fn))
                for element in batch]

    def batch_elements_kwargs(self) -> dict:
        return dict(_ONE_REQUEST_PER_CALL)

    def get_metrics_namespace(self) -> str:
        return "tfp_vae"


def is_transient(error: Exception) -> bool:
    """Beam's retry filter: only the codes the local job retries too."""
    return isinstance(error, ServingError) and error.code in TRANSIENT_CODES


class ServerHandler(RemoteModelHandler):
    """Calls ``signature`` of model ``model_name`` version ``version`` at ``target``."""

    def __init__(self, target: str, model_name: str, version: int,
                 timeout: float, signature: str, inputs_fn: Callable,
                 check_fn: Callable, max_retries: int):
        super().__init__(namespace="tfp_vae", num_retries=max_retries,
                         throttle_delay_secs=1, retry_filter=is_transient)
        self._target = target
        self._model_name = model_name
        self._version = version
        self._timeout = timeout
        self._signature = signature
        self._inputs_fn = inputs_fn
        self._check_fn = check_fn

    def create_client(self):
        from serving.sources import connect_once

        # Beam's loop (run_inference) retries, not the client.
        return connect_once(self._target, self._model_name, self._version, self._timeout)

    def request(self, batch: Sequence, model, inference_args=None) -> list:
        """A transient error on any request of the shard retries the shard's
        requests (Beam's retry wraps this call); the answers are the same."""
        def call(inputs):
            return model.predict(self._signature, inputs)

        return [PredictionResult(element, answer_shard(
                    element, call, self._inputs_fn, self._check_fn))
                for element in batch]

    def batch_elements_kwargs(self) -> dict:
        return dict(_ONE_REQUEST_PER_CALL)


# ---------------------------------------------------------------------------
# Files, through Beam's FileSystems (local paths, gs://, s3://, hdfs://).
# ---------------------------------------------------------------------------

def join(directory: str, name: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(directory, name)


def write_file_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` under a temporary name beside ``path``, then renames it.

    The temporary is named as `tfp_vae.files.temporary_path` names them
    (``.<name>.tmp-<pid>-<hex>``), so a local rerun clears leftovers of a dead
    worker.  Renaming over an existing file replaces it: a retried bundle
    writes the same bytes under the same name again.
    """
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    directory, name = FileSystems.split(path)
    temp = FileSystems.join(
        directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(data)
        # Local: os.rename, atomic and replacing; object stores: copy + delete.
        FileSystems.rename([temp], [path])
    except BaseException:
        try:
            FileSystems.delete([temp])
        except Exception:  # noqa: BLE001 - the original error matters
            pass
        raise


def read_file(path: str) -> Optional[bytes]:
    """The bytes at ``path``, None if there is no such file."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read()
