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

import argparse
import os
import re
from typing import Optional

import numpy as np

from export import contract
from serving.errors import EXIT_USAGE, JobError, ServingError

SIGNATURE = contract.GENERATE
_SEED, = contract.signature(SIGNATURE).input_keys

INT32_MAX = 2**31 - 1
INT32_MIN = -2**31


def add_source_arguments(parser: argparse.ArgumentParser, saved_model_help: str) -> None:
    """The "model (one of)" flags the batch jobs share: a server or a SavedModel."""
    source = parser.add_argument_group("model (one of)")
    source.add_argument("--target", help="HOST:PORT of a TF Serving gRPC API.")
    source.add_argument("--model_name", help="Model to ask (with --target).")
    source.add_argument("--model_version", type=int,
                        help="Version to ask (with --target); default: the "
                             "latest, pinned for the whole job.")
    source.add_argument("--saved-model", dest="saved_model", help=saved_model_help)


def check_source_args(args: argparse.Namespace, usage) -> None:
    """Calls usage(message) for the first bad source flag of a batch job."""
    if bool(args.target) == bool(args.saved_model):
        usage("give exactly one of --target HOST:PORT (with --model_name) or "
              "--saved-model DIR; got " + ("both" if args.target else "neither"))
    if args.target:
        if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}", args.target):
            usage(f"--target must be HOST:PORT; got {args.target!r}")
        if not args.model_name:
            usage("--model_name is required with --target")
        if args.model_version is not None and args.model_version < 0:
            usage(f"--model_version must be >= 0; got {args.model_version}")
    elif args.model_name or args.model_version is not None:
        usage("--model_name/--model_version go with --target, not with "
              "--saved-model")


def check_request_args(args: argparse.Namespace, usage) -> None:
    """Calls usage(message) for a bad --seed, --timeout or --max-retries."""
    if not INT32_MIN <= args.seed <= INT32_MAX:
        usage(f"--seed must fit in int32 [{INT32_MIN}, {INT32_MAX}]; got "
              f"{args.seed}")
    if not args.timeout > 0:
        usage(f"--timeout must be a positive number of seconds; got "
              f"{args.timeout}")
    if args.max_retries < 0:
        usage(f"--max-retries must be >= 0; got {args.max_retries}")


def check_runner_args(args: argparse.Namespace, usage) -> None:
    """Options after '--' are Beam's: refused with --runner local."""
    pipeline_args = getattr(args, "pipeline_args", None) or []
    if getattr(args, "runner", "local") == "local" and pipeline_args:
        usage(f"options after '--' ({' '.join(pipeline_args)}) are Beam "
              f"pipeline options; they need --runner beam")


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


def connect_once(target: str, model_name: str, version: Optional[int], timeout: float):
    """A gRPC client with its own retries off: the caller's loop (the job's, Beam's) retries."""
    from serving.client import Client

    return Client(target, model_name, version=version, timeout=timeout, max_attempts=1)


def server_signature(target: str, model_name: str, version: Optional[int], timeout: float,
                     signature: str, call_with_retries) -> tuple:
    """(the version the server resolved, its ``signature`` info, a description of it);
    JobError if the model has no such signature."""
    probe = connect_once(target, model_name, version, timeout)
    try:
        meta = call_with_retries(probe.metadata)
    finally:
        probe.close()
    where = f"model {model_name!r} version {meta.version} at {target}"
    info = meta.signatures.get(signature)
    if info is None:
        raise JobError(f"{where} has no '{signature}' signature; it has "
                       f"{sorted(meta.signatures)}")
    return meta.version, info, where


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

    def prepare(self, call_with_retries) -> dict:
        """Resolves (and pins) the version; returns the model identity."""
        self.version, info, where = server_signature(
            self.target, self.model_name, self.version, self.timeout, SIGNATURE,
            call_with_retries)
        self.outputs = check_generate_signature(info, where)
        self._client = connect_once(self.target, self.model_name, self.version,
                                    self.timeout)
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
