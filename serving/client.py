"""Clients for TF Serving's APIs: numpy in, numpy out.

`Client` talks gRPC to ``tensorflow_model_server`` or to the local server
(`serving.server`) unchanged; `RestClient` does the same over the REST API.
Both know the signatures of an exported tfp-vae model::

    with Client("localhost:8500", "vae") as client:
        x, z = client.generate(seed_rows)        # seed_rows: int32 [B, 2]
        loc, scale_tril = client.encode(x)
        ll, elbo = client.log_likelihood(x, seed_rows)

and any other signature through `predict`.  Every call has a deadline (the
client's `timeout` unless the call gives its own).  The gRPC channel is
created once and reused; UNAVAILABLE answers are retried by gRPC itself
(a retry policy in the channel's service config), and failures raise
`ServingError` with the server's status code and message.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import socket
import threading
import urllib.parse
from typing import Mapping, Optional, Sequence

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving import tensors
from serving.errors import (ServingError, code_for_http_status,
                            code_from_number)

DEFAULT_TIMEOUT = 30.0
DEFAULT_SIGNATURE = "serving_default"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
_INT32 = np.iinfo(np.int32)


def retry_service_config(max_attempts: int = 5, initial_backoff: float = 0.1,
                         max_backoff: float = 2.0) -> str:
    """gRPC service config retrying UNAVAILABLE on both TF Serving services."""
    if not 2 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be in [2, 5] (gRPC's limit); got "
                         f"{max_attempts}")
    return json.dumps({"methodConfig": [{
        "name": [{"service": PREDICTION_SERVICE}, {"service": MODEL_SERVICE}],
        "retryPolicy": {
            "maxAttempts": max_attempts,
            "initialBackoff": f"{initial_backoff}s",
            "maxBackoff": f"{max_backoff}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]})


# ---------------------------------------------------------------------------
# Results.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: graph tensor name, dtype, shape."""

    name: str
    dtype: Optional[np.dtype]     # None for DT_INVALID (e.g. the init op)
    shape: Optional[tuple]        # None if the rank is unknown; None sizes


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    inputs: dict
    outputs: dict
    method_name: str


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata's answer: which version, and its signatures."""

    name: str
    version: int
    signatures: dict              # name -> SignatureInfo
    signature_defs: dict          # name -> SignatureDef proto, as served


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus."""

    version: int
    state: str                    # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str               # "OK" or a status code name
    error_message: str


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Outputs of one Predict call and the version that answered it."""

    outputs: dict
    model_name: str
    model_version: Optional[int]
    signature_name: str


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
        request.inputs[alias].CopyFrom(tensors.to_tensor_proto(value))
    if output_filter:
        request.output_filter.extend(output_filter)
    return request


def parse_predict_response(response: predict_pb2.PredictResponse) -> dict:
    """{alias: ndarray}; tensor_content and *_val encodings both decode."""
    return {alias: tensors.to_numpy(proto)
            for alias, proto in response.outputs.items()}


def _float32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _seed_rows(seed) -> np.ndarray:
    array = np.asarray(seed)
    if array.dtype.kind not in "iu":
        raise ValueError(f"seed must hold integers (int32 [B, 2] rows); got "
                         f"dtype {array.dtype}")
    if array.size and (array.min() < _INT32.min or array.max() > _INT32.max):
        raise ValueError(f"seed values must fit in int32; got range "
                         f"[{array.min()}, {array.max()}]")
    return array.astype(np.int32)


def _check_client_arguments(model_name, version, version_label, timeout) -> None:
    """Raises ValueError for arguments no server could answer."""
    if not model_name:
        raise ValueError("model_name must not be empty")
    if timeout is None or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds; "
                         f"got {timeout!r}")
    _set_version(predict_pb2.PredictRequest().model_spec, version, version_label)


class _ModelMethods:
    """The tfp-vae signatures on top of `predict` (SPEC's export table)."""

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray], *,
                output_filter: Optional[Sequence[str]] = None,
                timeout: Optional[float] = None) -> dict:
        return self.call(signature_name, inputs, output_filter=output_filter,
                         timeout=timeout).outputs

    def generate(self, seed, *, timeout: Optional[float] = None) -> tuple:
        """z ~ p(z) and x = the mean of p(x|z), one per int32 seed row [B, 2] -> (x, z)."""
        out = self.predict("generate", {"seed": _seed_rows(seed)},
                           timeout=timeout)
        return out["x"], out["z"]

    def decode(self, z, *, timeout: Optional[float] = None) -> np.ndarray:
        """Mean of p(x|z) for latents z float32 [B, D]."""
        return self.predict("decode", {"z": _float32(z)},
                            timeout=timeout)["mean"]

    def encode(self, x, *, timeout: Optional[float] = None) -> tuple:
        """Posterior q(z|x) parameters -> (loc [B, D], scale_tril [B, D, D])."""
        out = self.predict("encode", {"x": _float32(x)}, timeout=timeout)
        return out["loc"], out["scale_tril"]

    def reconstruct(self, x, *, timeout: Optional[float] = None) -> np.ndarray:
        """Mean of p(x|z) at the posterior mean of z given x."""
        return self.predict("reconstruct", {"x": _float32(x)},
                            timeout=timeout)["mean"]

    def log_likelihood(self, x, seed, *,
                       timeout: Optional[float] = None) -> tuple:
        """Importance-sampled log p(x) and the ELBO, per row -> (ll, elbo)."""
        out = self.predict("log_likelihood",
                           {"x": _float32(x), "seed": _seed_rows(seed)},
                           timeout=timeout)
        return out["log_likelihood"], out["elbo"]


# ---------------------------------------------------------------------------
# gRPC.
# ---------------------------------------------------------------------------

class Client(_ModelMethods):
    """gRPC client for one model on a TF Serving (or local) server.

    Args:
      target: "host:port" of the gRPC API.
      model_name: the model to ask.
      version / version_label: pin a version (number or label); latest if
        neither is given.
      timeout: deadline of each call in seconds, unless the call gives one.
      max_attempts: attempts per call when the server answers UNAVAILABLE
        (gRPC's retry policy; 2 to 5).
    """

    def __init__(self, target: str, model_name: str, version: Optional[int] = None,
                 version_label: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT, *, max_attempts: int = 5,
                 channel_options: Sequence = ()):
        _check_client_arguments(model_name, version, version_label, timeout)
        self.target = target
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(max_attempts)),
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
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code(), e.details() or "") from None

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
        """Starts a Predict call; `.result()` gives the outputs dict."""
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


# ---------------------------------------------------------------------------
# REST.
# ---------------------------------------------------------------------------

def _jsonable(array: np.ndarray):
    """A numpy array as JSON values; bytes become {"b64": ...} objects."""
    if array.dtype.kind not in "SO":
        return array.tolist()
    if array.ndim:
        return [_jsonable(a) for a in array]
    item = array.item()
    if isinstance(item, str):
        return item
    return {"b64": base64.b64encode(bytes(item)).decode("ascii")}


class RestClient(_ModelMethods):
    """The same calls over TF Serving's REST API ("host:port" of REST).

    Predict uses the columnar JSON format; outputs are cast to the dtypes
    the model's metadata declares.  REST has no output_filter, so filtering
    happens here.
    """

    def __init__(self, target: str, model_name: str, version: Optional[int] = None,
                 version_label: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT):
        _check_client_arguments(model_name, version, version_label, timeout)
        parsed = urllib.parse.urlsplit(target if "//" in target
                                       else f"http://{target}")
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"target must be host:port or http://host:port; "
                             f"got {target!r}")
        self.target = target
        self.host, self.port = parsed.hostname, parsed.port
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout = timeout
        self._local = threading.local()
        self._signatures = {}
        self._signatures_lock = threading.Lock()

    def _model_path(self) -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        elif self.version_label is not None:
            path += f"/labels/{urllib.parse.quote(self.version_label, safe='')}"
        return path

    def _request(self, method: str, path: str, body: Optional[dict],
                 timeout: Optional[float]):
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data else {}
        timeout = timeout or self.timeout
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port,
                                                  timeout=timeout)
                self._local.conn = conn
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                text = response.read()
                status = response.status
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"connection to {self.target} lost: {e}")
            except socket.timeout:
                conn.close()
                self._local.conn = None
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"no answer from {self.target} within "
                                   f"{timeout}s") from None
            except OSError as e:
                conn.close()
                self._local.conn = None
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   f"cannot reach {self.target}: {e}") from None
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            doc = {"error": text.decode("utf-8", "replace")}
        if status != 200:
            message = doc.get("error", "") if isinstance(doc, dict) else str(doc)
            raise ServingError(code_for_http_status(status), message)
        return doc

    def _signature(self, name: str) -> SignatureInfo:
        with self._signatures_lock:
            if not self._signatures:
                self._signatures = dict(self.metadata().signatures)
            info = self._signatures.get(name)
        if info is None:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{name}" not found.')
        return info

    def call(self, signature_name: str, inputs: Mapping[str, np.ndarray], *,
             output_filter: Optional[Sequence[str]] = None,
             timeout: Optional[float] = None) -> Prediction:
        info = self._signature(signature_name or DEFAULT_SIGNATURE)
        body = {"signature_name": signature_name,
                "inputs": {k: _jsonable(np.asarray(v)) for k, v in inputs.items()}}
        doc = self._request("POST", self._model_path() + ":predict", body,
                            timeout)
        raw = doc.get("outputs")
        names = sorted(info.outputs)
        if len(names) == 1:
            raw = {names[0]: raw}
        outputs = {}
        for k in names:
            if k not in raw:
                raise ServingError(grpc.StatusCode.INTERNAL,
                                   f"REST answer lacks output {k!r}")
            dtype = info.outputs[k].dtype
            outputs[k] = np.asarray(raw[k], dtype=dtype if dtype is not None
                                    and dtype.kind != "O" else None)
        if output_filter:
            unknown = [k for k in output_filter if k not in outputs]
            if unknown:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {unknown[0]}")
            outputs = {k: outputs[k] for k in output_filter}
        return Prediction(outputs=outputs, model_name=self.model_name,
                          model_version=self.version,
                          signature_name=signature_name or DEFAULT_SIGNATURE)

    def metadata(self, *, timeout: Optional[float] = None) -> ModelMetadata:
        doc = self._request("GET", self._model_path() + "/metadata", None,
                            timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(doc["metadata"]["signature_def"], signature_map,
                              ignore_unknown_fields=True)
        spec = doc.get("model_spec", {})
        return _metadata_from_map(spec.get("name", self.model_name),
                                  int(spec.get("version", 0)), signature_map)

    def status(self, *, timeout: Optional[float] = None) -> list:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        doc = self._request("GET", path, None, timeout)
        response = get_model_status_pb2.GetModelStatusResponse()
        json_format.ParseDict(doc, response, ignore_unknown_fields=True)
        return _status_list(response)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(target: str, model_name: str, *, protocol: str = "grpc",
            **kwargs):
    """A Client (protocol="grpc") or RestClient (protocol="rest")."""
    if protocol == "grpc":
        return Client(target, model_name, **kwargs)
    if protocol == "rest":
        return RestClient(target, model_name, **kwargs)
    raise ValueError(f"protocol must be 'grpc' or 'rest'; got {protocol!r}")
