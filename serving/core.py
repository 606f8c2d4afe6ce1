"""The server's request handling, shared by the gRPC and REST front ends.

Every method takes and returns TF Serving API protos and raises
`ServingError` with TF Serving's status code and message for a bad request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Mapping, Optional

import grpc
import numpy as np
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2,
                                     predict_pb2)

from export import contract
from serving import errors, tensors
from serving.batching import Batcher
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.servable import Servable

logger = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def make_model_spec(target, name: str, version: Optional[int],
                    signature_name: Optional[str] = None) -> None:
    target.Clear()
    target.name = name
    if signature_name is not None:
        target.signature_name = (signature_name
                                 or contract.SERVING_DEFAULT)
    if version is not None:
        target.version.value = version


class ServingCore:
    """Predict, metadata, status and the TF Serving error semantics."""

    def __init__(self, manager: ModelManager, batcher: Optional[Batcher],
                 metrics: Metrics, tensor_content: bool = False,
                 max_request_elements: int = tensors.MAX_REQUEST_ELEMENTS,
                 max_response_elements: int = tensors.MAX_RESPONSE_ELEMENTS):
        """tensor_content: answer Predict in TensorProto.tensor_content
        (TF Serving's --enable_serialization_as_tensor_content) instead of
        the typed *_val fields.  max_request_elements / max_response_elements:
        the most tensor elements one request may declare / one answer may
        hold (RESOURCE_EXHAUSTED beyond)."""
        self.manager = manager
        self.tensor_content = tensor_content
        self.max_request_elements = max_request_elements
        self.max_response_elements = max_response_elements
        self.batcher = batcher
        self.metrics = metrics
        self._inflight = 0
        self._inflight_lock = threading.Condition()

    # -- bookkeeping --------------------------------------------------------
    @contextlib.contextmanager
    def track(self, api: str, model_name: str):
        """Counts a request in flight and its final status."""
        with self._inflight_lock:
            self._inflight += 1
        self.metrics.add("tfp_vae_serving_inflight_requests", 1)
        status = "OK"
        try:
            yield
        except errors.ServingError as e:
            status = e.code.name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self.metrics.add("tfp_vae_serving_inflight_requests", -1)
            self.metrics.add(":tensorflow:serving:request_count", 1,
                             model_name=model_name, api=api, status=status)
            with self._inflight_lock:
                self._inflight -= 1
                self._inflight_lock.notify_all()

    @property
    def inflight(self) -> int:
        with self._inflight_lock:
            return self._inflight

    def wait_idle(self, timeout: float) -> bool:
        with self._inflight_lock:
            return self._inflight_lock.wait_for(lambda: self._inflight == 0,
                                                timeout)

    # -- Predict ------------------------------------------------------------
    def predict(self, request: predict_pb2.PredictRequest,
                batched: bool = True) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        servable = self.manager.resolve(request.model_spec)
        return self.predict_on(servable, request, batched=batched)

    def predict_on(self, servable: Servable,
                   request: predict_pb2.PredictRequest,
                   batched: bool = True) -> predict_pb2.PredictResponse:
        signature_name, outputs = self.run_signature(
            servable, request.model_spec.signature_name, request.inputs,
            list(request.output_filter), batched=batched)
        response = predict_pb2.PredictResponse()
        make_model_spec(response.model_spec, request.model_spec.name,
                        servable.version, signature_name)
        for alias, value in outputs.items():
            tensors.encode_output_into(response.outputs[alias], value,
                                       self.tensor_content)
        return response

    def run_signature(self, servable: Servable, signature_name: str,
                      inputs: Mapping, output_filter: list,
                      batched: bool = True):
        """Validates and runs one signature; returns (name, {alias: array})."""
        signature_name, signature = servable.signature(signature_name)
        arrays = servable.prepare_inputs(signature, inputs,
                                         self.max_request_elements)
        _check_batch_sizes(arrays)
        seen = set()
        for alias in output_filter:
            if alias not in signature.outputs:
                raise errors.invalid_argument(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set "
                    f"{{{','.join(sorted(signature.outputs))}}}.")
            if alias in seen:
                raise errors.invalid_argument(
                    f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        if batched and self.batcher is not None:
            outputs = self.batcher.submit(servable, signature_name, arrays)
        else:
            outputs = servable.run(signature_name, arrays)
        wanted = output_filter or sorted(signature.outputs)
        missing = [a for a in wanted if a not in outputs]
        if missing:
            raise errors.ServingError(
                grpc.StatusCode.INTERNAL,
                f"signature {signature_name} did not return outputs {missing}")
        size = sum(int(np.size(outputs[a])) for a in wanted)
        if size > self.max_response_elements:
            raise errors.ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Response of signature {signature_name} would hold {size} "
                f"elements; this server answers at most "
                f"{self.max_response_elements} (max_response_elements)")
        return signature_name, {a: np.asarray(outputs[a]) for a in wanted}

    def warmup(self, servable: Servable) -> None:
        """Replays a version's warmup records (unbatched) before serving it."""
        servable.warmup(lambda s, req: self.predict_on(s, req, batched=False))

    # -- GetModelMetadata ---------------------------------------------------
    def get_model_metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise errors.invalid_argument(
                "GetModelMetadataRequest must specify at least one "
                "metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.invalid_argument(
                    f"Metadata field {field} is not supported")
        servable = self.manager.resolve(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    # -- GetModelStatus -----------------------------------------------------
    def get_model_status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, error in self.manager.version_states(spec.name, version):
            status = response.model_version_status.add()
            status.version = v
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.SetInParent()      # OK is reported explicitly
            if error is not None:
                status.status.error_code = error.code.value[0]
                status.status.error_message = error.message
        return response

    # -- Classify / Regress / MultiInference --------------------------------
    def _signature_for(self, model_spec, method: str):
        servable = self.manager.resolve(model_spec)
        name = model_spec.signature_name or contract.SERVING_DEFAULT
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise errors.invalid_argument(
                f"No signature was found with the name: {name}")
        _check_inference_signature(signature, method)
        return servable, name

    def classify(self, request):
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        _, name = self._signature_for(request.model_spec, CLASSIFY_METHOD)
        raise _inference_unimplemented("Classify", name)

    def regress(self, request):
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        _, name = self._signature_for(request.model_spec, REGRESS_METHOD)
        raise _inference_unimplemented("Regress", name)

    def multi_inference(self, request):
        first = (request.tasks[0].model_spec if request.tasks
                 else model_pb2.ModelSpec())
        servable = self.manager.resolve(first)
        names = set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise errors.invalid_argument(
                    "Found ModelSpec with an empty model name.")
            if task.model_spec.name != first.name:
                raise errors.invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the "
                    "same model name.")
            name = (task.model_spec.signature_name
                    or contract.SERVING_DEFAULT)
            if name in names:
                raise errors.invalid_argument(
                    f"Duplicate evaluation of signature: {name}")
            names.add(name)
            signature = servable.signature_defs.get(name)
            if signature is None:
                raise errors.invalid_argument(
                    f"Requested signature not found in model graph: {name}")
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise errors.ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}")
            _check_inference_signature(signature, task.method_name)
        raise _inference_unimplemented("MultiInference", ",".join(sorted(names)))


def _check_batch_sizes(arrays: Mapping[str, np.ndarray]) -> None:
    """Every input of a signature is batched on dimension 0 (SPEC.md), so
    their 0th dimensions must agree.  TF Serving reports this only through
    its batching session (batching/batching_util.h ComputeTensorBatchSize);
    without batching the graph would fail model-dependently, so the local
    server answers with the batching session's INVALID_ARGUMENT always."""
    if len(arrays) < 2:
        return
    sizes = {alias: (int(a.shape[0]) if a.ndim else None)
             for alias, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        if None in sizes.values():
            raise errors.invalid_argument(
                "Batching Run() input tensors must have at least one "
                "dimension")
        described = ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items()))
        raise errors.invalid_argument(
            f"Batching Run() input tensors must have equal 0th-dimension "
            f"size ({described})")


def _check_inference_signature(signature, method: str) -> None:
    """TF Serving's PreProcessClassification / PreProcessRegression checks."""
    kind = "classification" if method == CLASSIFY_METHOD else "regression"
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if method == CLASSIFY_METHOD:
        if len(signature.outputs) not in (1, 2):
            raise errors.invalid_argument(
                f"Expected one or two output Tensors, found "
                f"{len(signature.outputs)}")
    elif len(signature.outputs) != 1:
        raise errors.invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise errors.invalid_argument(
            f"No {kind} inputs found in SignatureDef: {signature}")
    if method == CLASSIFY_METHOD:
        if "classes" not in signature.outputs and "scores" not in signature.outputs:
            raise errors.invalid_argument(
                f'Expected classification signature outputs to contain at '
                f'least one of "classes" or "scores". Signature was: '
                f'{signature}')
    elif "outputs" not in signature.outputs:
        raise errors.invalid_argument(
            f"No regression outputs found in SignatureDef: {signature}")


def _inference_unimplemented(api: str, signature: str) -> errors.ServingError:
    return errors.ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{api} on tf.Example inputs (signature {signature}) is not served by "
        f"the local server; use Predict")
