"""The gRPC client for TF Serving's APIs: numpy in, numpy out.

`Client` talks gRPC to ``tensorflow_model_server`` or to the local server
(`serving.server`) unchanged, and knows the signatures of an exported
tfp-vae model (`serving.model_methods`)::

    with Client("localhost:8500", "vae") as client:
        x, z = client.generate(seed_rows)        # seed_rows: int32 [B, 2]
        loc, scale_tril = client.encode(x)
        ll, elbo = client.log_likelihood(x, seed_rows)

and any other signature through `predict`. Every call has a deadline (the
client's `timeout` unless the call gives its own). The gRPC channel is
created once and reused; UNAVAILABLE answers are retried within the call's
deadline by `serving.retry` (the channel itself has no retry policy), and
failures raise `ServingError` with the server's status code and message.
The REST client with the same methods is `serving.rest_client.RestClient`.
"""

from __future__ import annotations

import time
from typing import Mapping, Optional, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving import retry, tensors
from serving.errors import ServingError, code_from_number
from serving.model_methods import ModelMethods, check_client_arguments
from serving.results import (ModelMetadata, Prediction, SignatureInfo,
                             TensorSpec, VersionStatus)

DEFAULT_TIMEOUT = 30.0


def retry_policy(max_attempts: int) -> retry.RetryPolicy:
    """The clients' policy: UNAVAILABLE, up to ``max_attempts`` attempts in all."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1; got {max_attempts}")
    return retry.RetryPolicy(max_retries=max_attempts - 1)


# ---------------------------------------------------------------------------
# Protos <-> results.
# ---------------------------------------------------------------------------

def _tensor_spec(info) -> TensorSpec:
    try:
        dtype = tensors.numpy_dtype(info.dtype) if info.dtype else None
    except (TypeError, ValueError):
        dtype = None
    return TensorSpec(info.name, dtype, tensors.shape_of(info.tensor_shape))


def signature_info(signature_def) -> SignatureInfo:
    return SignatureInfo(
        inputs={k: _tensor_spec(v) for k, v in signature_def.inputs.items()},
        outputs={k: _tensor_spec(v) for k, v in signature_def.outputs.items()},
        method_name=signature_def.method_name)


def _metadata_from_map(name: str, version: int, signature_map) -> ModelMetadata:
    defs = dict(signature_map.signature_def)
    return ModelMetadata(name=name, version=version,
                         signatures={k: signature_info(v) for k, v in defs.items()},
                         signature_defs=defs)


def _status_list(response) -> list:
    return [VersionStatus(
        version=int(s.version),
        state=get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
        error_code=code_from_number(s.status.error_code).name,
        error_message=s.status.error_message)
        for s in response.model_version_status]


# ---------------------------------------------------------------------------
# Requests.
# ---------------------------------------------------------------------------

def _set_version(model_spec, version: Optional[int],
                 version_label: Optional[str]) -> None:
    if version is not None and version_label is not None:
        raise ValueError(f"give a version ({version}) or a version label "
                         f"({version_label!r}), not both")
    if version is not None:
        model_spec.version.value = int(version)
    elif version_label is not None:
        model_spec.version_label = version_label


def make_predict_request(model_name: str, signature_name: str,
                         inputs: Mapping[str, np.ndarray], *,
                         version: Optional[int] = None,
                         version_label: Optional[str] = None,
                         output_filter: Optional[Sequence[str]] = None
                         ) -> predict_pb2.PredictRequest:
    """A PredictRequest with inputs in tensor_content."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    _set_version(request.model_spec, version, version_label)
    for alias, value in inputs.items():
        tensors.fill_tensor_proto(request.inputs[alias], value)
    if output_filter:
        request.output_filter.extend(output_filter)
    return request


def parse_predict_response(response: predict_pb2.PredictResponse) -> dict:
    """{alias: ndarray}; tensor_content and *_val encodings both decode."""
    return {alias: tensors.to_numpy(proto)
            for alias, proto in response.outputs.items()}


# ---------------------------------------------------------------------------
# The client.
# ---------------------------------------------------------------------------

class Client(ModelMethods):
    """gRPC client for one model on a TF Serving (or local) server.

    Args:
      target: "host:port" of the gRPC API.
      model_name: the model to ask.
      version / version_label: pin a version (number or label); latest if
        neither is given.
      timeout: deadline of each call in seconds, unless the call gives one.
      max_attempts: attempts per call when the server answers UNAVAILABLE,
        all within the call's deadline (`serving.retry`); 1 turns retries off.
    """

    def __init__(self, target: str, model_name: str, version: Optional[int] = None,
                 version_label: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT, *, max_attempts: int = 5,
                 channel_options: Sequence = ()):
        check_client_arguments(model_name, version, version_label, timeout)
        self.retry_policy = retry_policy(max_attempts)
        self.target = target
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # Reconnect soon after a server restart.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            *channel_options,
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(
            self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _spec(self, model_spec) -> None:
        model_spec.name = self.model_name
        _set_version(model_spec, self.version, self.version_label)

    def _invoke(self, method, request, timeout: Optional[float]):
        def attempt(seconds_left):
            try:
                return method(request, timeout=max(seconds_left, 0.0))
            except grpc.RpcError as e:
                raise ServingError(e.code(), e.details() or "") from None

        deadline = time.monotonic() + (timeout or self.timeout)
        return retry.call_with_retries(attempt, self.retry_policy,
                                       deadline=deadline)

    def call(self, signature_name: str, inputs: Mapping[str, np.ndarray], *,
             output_filter: Optional[Sequence[str]] = None,
             timeout: Optional[float] = None) -> Prediction:
        """Predict on any signature; returns outputs and the answering version."""
        request = make_predict_request(
            self.model_name, signature_name, inputs, version=self.version,
            version_label=self.version_label, output_filter=output_filter)
        response = self._invoke(self._predictions.Predict, request, timeout)
        spec = response.model_spec
        return Prediction(
            outputs=parse_predict_response(response),
            model_name=spec.name or self.model_name,
            model_version=spec.version.value if spec.HasField("version") else None,
            signature_name=spec.signature_name or signature_name)

    def predict_future(self, signature_name: str,
                       inputs: Mapping[str, np.ndarray], *,
                       output_filter: Optional[Sequence[str]] = None,
                       timeout: Optional[float] = None) -> "PredictFuture":
        """Starts a Predict call; `.result()` gives the outputs dict (no retries)."""
        request = make_predict_request(
            self.model_name, signature_name, inputs, version=self.version,
            version_label=self.version_label, output_filter=output_filter)
        return PredictFuture(self._predictions.Predict.future(
            request, timeout=timeout or self.timeout))

    def metadata(self, *, timeout: Optional[float] = None) -> ModelMetadata:
        """Signatures of the version this client asks for."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._invoke(self._predictions.GetModelMetadata, request,
                                timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signature_map):
            raise ServingError(grpc.StatusCode.INTERNAL,
                               "metadata['signature_def'] is not a "
                               "SignatureDefMap")
        return _metadata_from_map(response.model_spec.name,
                                  int(response.model_spec.version.value),
                                  signature_map)

    def status(self, *, timeout: Optional[float] = None) -> list:
        """Version states of the model (all versions unless pinned by number)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        return _status_list(self._invoke(self._models.GetModelStatus, request,
                                         timeout))

    def health(self, service: str = "", *,
               timeout: Optional[float] = None) -> str:
        """The standard gRPC health status: "SERVING", "NOT_SERVING"..."""
        response = self._invoke(self._health.Check,
                                health_pb2.HealthCheckRequest(service=service),
                                timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PredictFuture:
    """A Predict call in flight."""

    def __init__(self, future):
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        return self._future.cancel()

    def result(self, timeout: Optional[float] = None) -> dict:
        try:
            response = self._future.result(timeout=timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code(), e.details() or "") from None
        return parse_predict_response(response)




def connect(target: str, model_name: str, *, protocol: str = "grpc",
            **kwargs):
    """A Client (protocol="grpc") or RestClient (protocol="rest")."""
    if protocol == "grpc":
        return Client(target, model_name, **kwargs)
    if protocol == "rest":
        from serving.rest_client import RestClient

        return RestClient(target, model_name, **kwargs)
    raise ValueError(f"protocol must be 'grpc' or 'rest'; got {protocol!r}")
