"""One loaded version of a model: its signatures and how to run them.

Signature metadata comes from the SavedModel proto itself (the MetaGraphDef
tagged "serve"), exactly what TF Serving returns from GetModelMetadata.
Signatures run as TF Serving runs them: the MetaGraphDef is loaded into its
own graph and Session (the server's session ConfigProto: thread counts,
--tensorflow_session_config_file), and each signature is one Session
callable feeding its input tensors and fetching its output tensors.  The
callable runs the graph in the request's thread (RunOptions
inter_op_thread_pool = -1), which spares a small model the hand-off to
the inter-op pool; ops still use the intra-op pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Mapping, Optional

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message as pb_message, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow.python.util import deprecation

from export import contract
from serving import errors, tensors

logger = logging.getLogger(__name__)

SERVE_TAG = "serve"
# The SavedModel's initializer, stored as a signature; never served.
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
# Session runs in the calling (request's) thread, not the inter-op pool.
_CALLER_THREAD = tf.compat.v1.RunOptions(inter_op_thread_pool=-1)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


def read_meta_graph(path: str, tags=(SERVE_TAG,)) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef of the SavedModel at `path` whose tag set is `tags`
    (exactly, as TF's loader matches --saved_model_tags)."""
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    saved_model = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            data = f.read()
        try:
            saved_model.ParseFromString(data)
        except pb_message.DecodeError as e:
            raise errors.ServingError(
                grpc.StatusCode.DATA_LOSS,
                f"Can't parse {pb} as binary proto: {e}") from e
    elif os.path.exists(pbtxt):
        with open(pbtxt, encoding="utf-8") as f:
            try:
                text_format.Parse(f.read(), saved_model)
            except text_format.ParseError as e:
                raise errors.ServingError(
                    grpc.StatusCode.DATA_LOSS,
                    f"Can't parse {pbtxt} as text proto: {e}") from e
    else:
        raise errors.not_found(
            f"Could not find SavedModel .pb or .pbtxt at supplied export "
            f"directory path: {path}")
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    tag_sets = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise errors.not_found(
        f"Could not find meta graph def matching supplied tags: "
        f"{{ {' '.join(tags)} }}."
        f" Tag sets in the SavedModel: {tag_sets}")


class Servable:
    """A loaded model version.

    Attributes:
      name, version, path: identity and location.
      signature_defs: every SignatureDef of the "serve" MetaGraphDef.
      session_config: the ConfigProto of its Session (None: TF's defaults).
    """

    def __init__(self, name: str, version: int, path: str,
                 tags=(SERVE_TAG,), session_config=None):
        self.name = name
        self.version = int(version)
        self.path = path
        meta_graph = read_meta_graph(path, tags)
        self.signature_defs = dict(meta_graph.signature_def)
        self.session_config = session_config
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph,
                                             config=session_config)
        try:
            # The TF1 loader is TF Serving's (LoadSavedModel into a Session);
            # its "use tf.saved_model.load" notice does not apply here.
            with self._graph.as_default(), deprecation.silence():
                tf.compat.v1.saved_model.loader.load(
                    self._session, list(tags), path)
        except Exception as e:  # noqa: BLE001 - reported as a load failure
            self._session.close()
            raise errors.from_exception(e) from e
        self._callables = {}
        self._callables_lock = threading.Lock()
        self._specs = {}
        self.warmup_records = 0
        self.batching_released = False     # set once the version is unloaded

    # -- lookup -------------------------------------------------------------
    def signature(self, name: str):
        """The SignatureDef for `name` ("" means serving_default).

        Raises FAILED_PRECONDITION, as TF Serving's Predict does, if the
        model has no such signature.
        """
        name = name or contract.SERVING_DEFAULT
        sig = self.signature_defs.get(name)
        if sig is None or name == INIT_OP_SIGNATURE_KEY:
            raise errors.failed_precondition(
                f'Serving signature key "{name}" not found.')
        return name, sig

    # -- requests -----------------------------------------------------------
    def prepare_inputs(self, signature_def, request_inputs: Mapping,
                       max_elements: Optional[int] = None) -> dict:
        """Checks and decodes the inputs of a Predict request.

        `request_inputs` maps aliases to TensorProtos or numpy arrays.  The
        checks and their messages follow TF Serving's predict_util.cc and
        TensorFlow's saved_model/util.cc; dtype and shape are checked against
        the signature's TensorInfo before anything runs.  TensorProtos
        declaring more than `max_elements` elements in all are refused
        (RESOURCE_EXHAUSTED) before they are built.
        """
        sig_keys, specs = self._input_specs(signature_def)
        req_keys = sorted(request_inputs.keys())
        if len(req_keys) != len(sig_keys):
            extra = sorted(set(req_keys) - set(sig_keys))
            missing = sorted(set(sig_keys) - set(req_keys))
            raise errors.invalid_argument(
                f"input size does not match signature: {len(req_keys)}!="
                f"{len(sig_keys)} len({{{','.join(req_keys)}}}) != "
                f"len({{{','.join(sig_keys)}}}). Sent extra: "
                f"{{{','.join(extra)}}}. Missing but required: "
                f"{{{','.join(missing)}}}.")
        arrays = {}
        for index, (alias, feed_name, dtype_enum, expected) in enumerate(specs):
            if alias not in request_inputs:
                raise errors.invalid_argument(
                    f"Signature input alias: {alias}(feed name: {feed_name}) "
                    f"not found in request and no default value provided. "
                    f"Inputs expected to be in the request "
                    f"{{{','.join(req_keys)}}}, or default input alias set: ")
            value = request_inputs[alias]
            if isinstance(value, np.ndarray):
                array = value
            else:
                try:
                    array = tensors.to_numpy(value, max_elements)
                except tensors.TensorTooLarge as e:
                    raise errors.ServingError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"tensor too large: {alias} ({e})") from e
                except tensors.TensorParseError as e:
                    raise errors.invalid_argument(
                        f"tensor parsing error: {alias} ({e})") from e
            got = tensors.dtype_enum_of(array)
            if got != dtype_enum:
                raise errors.invalid_argument(
                    f"Expects arg[{index}] to be {tensors.dtype_name(dtype_enum)}"
                    f" but {tensors.dtype_name(got)} is provided (input "
                    f"'{alias}')")
            if expected is not None and not _shape_compatible(array.shape,
                                                              expected):
                raise errors.invalid_argument(
                    f"input '{alias}' has shape {list(array.shape)}, which "
                    f"is not compatible with the signature's shape "
                    f"{[-1 if d is None else d for d in expected]}")
            arrays[alias] = array
            if max_elements is not None:
                max_elements -= array.size
        return arrays

    def _input_specs(self, signature_def) -> tuple:
        """(sorted input aliases, [(alias, feed name, dtype enum, shape)]) of
        a SignatureDef, worked out once per SignatureDef object."""
        cached = self._specs.get(id(signature_def))
        # The entry holds the SignatureDef itself, so its id is not reused.
        if cached is None or cached[0] is not signature_def:
            sig_inputs = signature_def.inputs
            keys = sorted(sig_inputs.keys())
            specs = [(alias, sig_inputs[alias].name, sig_inputs[alias].dtype,
                      tensors.shape_of(sig_inputs[alias].tensor_shape))
                     for alias in keys]
            cached = (signature_def, keys, specs)
            if len(self._specs) < 1000:
                self._specs[id(signature_def)] = cached
        return cached[1], cached[2]

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict:
        """Runs a signature on decoded inputs; returns every output."""
        try:
            in_aliases, out_aliases, call = self._callable(signature_name)
            values = call(*[inputs[a] for a in in_aliases],
                          options=_CALLER_THREAD)
            return dict(zip(out_aliases, values))
        except Exception as e:  # noqa: BLE001 - becomes the request's status
            raise errors.from_exception(e) from e

    def _callable(self, signature_name: str) -> tuple:
        """(input aliases, output aliases, Session callable) of a signature,
        built on its first request (sorted aliases, as TF Serving orders
        them)."""
        entry = self._callables.get(signature_name)
        if entry is not None:
            return entry
        with self._callables_lock:
            entry = self._callables.get(signature_name)
            if entry is None:
                sig = self.signature_defs[signature_name]
                ins, outs = sorted(sig.inputs), sorted(sig.outputs)
                tensor = self._graph.get_tensor_by_name
                call = self._session.make_callable(
                    [tensor(sig.outputs[a].name) for a in outs],
                    [tensor(sig.inputs[a].name) for a in ins],
                    accept_options=True)
                entry = (ins, outs, call)
                self._callables[signature_name] = entry
        return entry

    # -- warmup -------------------------------------------------------------
    def warmup(self, predict) -> int:
        """Replays assets.extra/tf_serving_warmup_requests, if present.

        `predict(servable, PredictRequest)` runs one request.  Any failing
        record fails the load, as in TF Serving.  Returns the record count.
        """
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            logger.info("No warmup data file found at %s", path)
            return 0
        start = time.monotonic()
        count = 0
        for record in tf.data.TFRecordDataset(path):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise errors.invalid_argument(
                    f"Number of warmup records exceeds the maximum "
                    f"({MAX_WARMUP_RECORDS}) at {path}")
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record.numpy())
            except pb_message.DecodeError as e:
                raise errors.invalid_argument(
                    f"Failed to parse warmup record {count} in {path} as a "
                    f"PredictionLog: {e}") from e
            kind = log.WhichOneof("log_type")
            if kind != "predict_log":
                raise errors.ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported log_type for warmup: {kind}; the local "
                    f"server replays predict_log records")
            predict(self, log.predict_log.request)
        self.warmup_records = count
        logger.info("Finished reading warmup data for model at %s. Number of "
                    "warmup records read: %d. Elapsed time (microseconds): %d.",
                    path, count, int((time.monotonic() - start) * 1e6))
        return count


def _shape_compatible(shape, expected) -> bool:
    if len(shape) != len(expected):
        return False
    return all(e is None or e == s for s, e in zip(shape, expected))


def version_fingerprint(path: str) -> Optional[tuple]:
    """Changes when a version directory's model files change."""
    parts = []
    for rel in ("saved_model.pb", "saved_model.pbtxt",
                os.path.join("variables", "variables.index")):
        try:
            st = os.stat(os.path.join(path, rel))
        except OSError:
            continue
        parts.append((rel, st.st_mtime_ns, st.st_size))
    try:
        parts.append(("dir", os.stat(path).st_mtime_ns))
    except OSError:
        return None
    return tuple(parts)
