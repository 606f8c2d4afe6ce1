"""The REST client for TF Serving's HTTP API: numpy in, numpy out, no TensorFlow.

`RestClient` has the same methods as the gRPC `serving.client.Client`
(`serving.model_methods`) over ``/v1/models/...``. Predict sends the columnar
JSON format (``{"inputs": ...}``) and casts the outputs to the dtypes the
model's metadata declares; REST has no output_filter, so filtering happens
here. Metadata and status are read from their JSON by hand, so this module
imports neither TensorFlow nor the TF Serving protos (which import it)::

    python -c "import sys; from serving.rest_client import RestClient; \\
               assert 'tensorflow' not in sys.modules"

UNAVAILABLE answers (HTTP 503, or no connection) are retried within the
call's deadline by `serving.retry`, as the gRPC client does.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
import urllib.parse
from typing import Mapping, Optional, Sequence

import grpc
import numpy as np

from export import contract
from serving import retry
from serving.errors import (ServingError, code_for_http_status,
                            code_from_name, code_from_number)
from serving.model_methods import ModelMethods, check_client_arguments
from serving.results import (ModelMetadata, Prediction, SignatureInfo,
                             TensorSpec, VersionStatus)

DEFAULT_TIMEOUT = 30.0

# TensorFlow's DataType names (types.proto) as numpy dtypes; DT_STRING is object.
_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_HALF": np.float16,
    "DT_INT8": np.int8, "DT_INT16": np.int16, "DT_INT32": np.int32,
    "DT_INT64": np.int64, "DT_UINT8": np.uint8, "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32, "DT_UINT64": np.uint64, "DT_BOOL": np.bool_,
    "DT_COMPLEX64": np.complex64, "DT_COMPLEX128": np.complex128,
    "DT_STRING": object,
}


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


# ---------------------------------------------------------------------------
# JSON -> results (the JSON form of the protos, as TF Serving prints them).
# ---------------------------------------------------------------------------

def _tensor_spec(doc: dict) -> TensorSpec:
    dtype = _NUMPY_DTYPES.get(doc.get("dtype", "DT_INVALID"))
    shape_doc = doc.get("tensor_shape", {})
    if shape_doc.get("unknown_rank", False):
        shape = None
    else:
        sizes = (int(d.get("size", 0)) for d in shape_doc.get("dim", []))
        shape = tuple(None if s < 0 else s for s in sizes)
    return TensorSpec(doc.get("name", ""),
                      None if dtype is None else np.dtype(dtype), shape)


def signature_info(doc: dict) -> SignatureInfo:
    """A SignatureDef's JSON object as SignatureInfo."""
    return SignatureInfo(
        inputs={k: _tensor_spec(v) for k, v in doc.get("inputs", {}).items()},
        outputs={k: _tensor_spec(v) for k, v in doc.get("outputs", {}).items()},
        method_name=doc.get("method_name", ""))


def _code_name(value) -> str:
    if isinstance(value, int):
        return code_from_number(value).name
    return code_from_name(str(value)).name


def _status_list(doc: dict) -> list:
    statuses = []
    for entry in doc.get("model_version_status", []):
        status = entry.get("status", {})
        statuses.append(VersionStatus(
            version=int(entry.get("version", 0)),
            state=str(entry.get("state", "UNKNOWN")),
            error_code=_code_name(status.get("error_code", "OK")),
            error_message=status.get("error_message", "")))
    return statuses


# ---------------------------------------------------------------------------
# The client.
# ---------------------------------------------------------------------------

class RestClient(ModelMethods):
    """One model over TF Serving's REST API ("host:port" of REST).

    Arguments as `serving.client.Client`'s: ``version`` / ``version_label`` pin
    a version, ``timeout`` is each call's deadline, ``max_attempts`` the
    attempts per call on UNAVAILABLE (1 turns retries off).
    """

    def __init__(self, target: str, model_name: str, version: Optional[int] = None,
                 version_label: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT, *, max_attempts: int = 5):
        check_client_arguments(model_name, version, version_label, timeout)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {max_attempts}")
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
        self.retry_policy = retry.RetryPolicy(max_retries=max_attempts - 1)
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
        deadline = time.monotonic() + (timeout or self.timeout)
        return retry.call_with_retries(
            lambda seconds_left: self._request_once(method, path, data,
                                                    max(seconds_left, 1e-3)),
            self.retry_policy, deadline=deadline)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self, conn) -> None:
        conn.close()
        self._local.conn = None

    def _request_once(self, method: str, path: str, data: Optional[bytes],
                      timeout: float):
        headers = {"Content-Type": "application/json"} if data else {}
        # A kept-alive connection the server has closed fails at once; it is
        # reopened once (HTTP/1.1 connection reuse, not a retry of an answer).
        for reopened in (False, True):
            conn = self._connection(timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                text = response.read()
                status = response.status
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                self._drop_connection(conn)
                if reopened:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"connection to {self.target} lost: {e}")
            except socket.timeout:
                self._drop_connection(conn)
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"no answer from {self.target} within "
                                   f"{timeout:.3g}s") from None
            except OSError as e:
                self._drop_connection(conn)
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
        """Predict on any signature; outputs cast to the metadata's dtypes."""
        info = self._signature(signature_name or contract.SERVING_DEFAULT)
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
                          signature_name=signature_name or contract.SERVING_DEFAULT)

    def metadata(self, *, timeout: Optional[float] = None) -> ModelMetadata:
        """Signatures of the version this client asks for (``signature_defs`` as JSON)."""
        doc = self._request("GET", self._model_path() + "/metadata", None,
                            timeout)
        defs = doc["metadata"]["signature_def"].get("signature_def", {})
        spec = doc.get("model_spec", {})
        return ModelMetadata(
            name=spec.get("name", self.model_name),
            version=int(spec.get("version", 0)),
            signatures={k: signature_info(v) for k, v in defs.items()},
            signature_defs=defs)

    def status(self, *, timeout: Optional[float] = None) -> list:
        """Version states of the model (all versions unless pinned by number)."""
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        return _status_list(self._request("GET", path, None, timeout))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop_connection(conn)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
