"""REST front end with TF Serving's routes, JSON formats and HTTP codes.

Routes (case-insensitive, as TF Serving's regular expressions):

* ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with
  ``{"signature_name": ..., "instances": [...]}`` (row format, answered
  ``{"predictions": [...]}``) or ``{"inputs": ...}`` (columnar format,
  answered ``{"outputs": ...}``); ``:classify`` and ``:regress`` answer as
  the gRPC Classify and Regress do;
* ``GET /v1/models/NAME[/versions/N|/labels/L]`` -> GetModelStatus JSON;
* ``GET /v1/models/NAME[/versions/N|/labels/L]/metadata`` -> metadata JSON;
* ``GET /monitoring/prometheus/metrics`` -> the server's counters.

Errors are ``{"error": "<message>"}`` with the HTTP status of the code
(INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404,
RESOURCE_EXHAUSTED 429, UNAVAILABLE 503...).  Floats are written with the
shortest text that reads back to the same float32, as TF Serving does.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import re
import threading
import urllib.parse

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2,
                                     regression_pb2)

from serving import errors, tensors
from serving.config import DEFAULT_SERVING_SIGNATURE
from serving.core import SIGNATURE_DEF_FIELD, ServingCore

logger = logging.getLogger(__name__)

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?", re.IGNORECASE)
METRICS_PATH = "/monitoring/prometheus/metrics"
MAX_BODY_BYTES = 2**31 - 1


# ---------------------------------------------------------------------------
# JSON <-> numpy.
# ---------------------------------------------------------------------------

def _debug_json(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _decode_strings(value):
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict):
        if list(value) != ["b64"] or not isinstance(value["b64"], str):
            raise errors.invalid_argument(
                f"JSON Value: {_debug_json(value)} not formatted correctly for "
                f"base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as e:
            raise errors.invalid_argument("Unable to base64 decode") from e
    if isinstance(value, str):
        return value.encode("utf-8")
    raise errors.invalid_argument(
        f"JSON Value: {_debug_json(value)} Type: {type(value).__name__} is not "
        f"of expected type: string")


def json_to_array(value, dtype_enum: int) -> np.ndarray:
    """A JSON value as an array of the signature's dtype."""
    if dtype_enum == types_pb2.DT_STRING:
        nested = _decode_strings(value)
        try:
            shape = np.array(nested, dtype=object).shape
            flat = np.empty(int(np.prod(shape)), dtype=object)
            flat[:] = np.array(nested, dtype=object).reshape(-1)
        except ValueError as e:
            raise errors.invalid_argument(
                f"JSON Value: {_debug_json(value)} is not a dense list: {e}") from e
        return flat.reshape(shape)
    try:
        array = np.array(value)
    except (ValueError, OverflowError) as e:
        raise errors.invalid_argument(
            f"JSON Value: {_debug_json(value)} is not a dense tensor: {e}") from e
    dtype = tensors.numpy_dtype(dtype_enum)
    kind = array.dtype.kind
    name = tensors.dtype_name(dtype_enum)
    ok = {"f": "iuf", "c": "iufc", "i": "iu", "u": "iu", "b": "b"}
    if array.dtype == object or kind not in ok.get(dtype.kind, ""):
        raise errors.invalid_argument(
            f"JSON Value: {_debug_json(value)} is not of expected type: {name}")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise errors.invalid_argument(
                f"JSON Value: {_debug_json(value)} is out of range for {name}")
    return array.astype(dtype)


def _float_tokens(array: np.ndarray) -> np.ndarray:
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    tokens = array.astype(str)
    if not np.all(np.isfinite(array)):
        tokens = tokens.astype(object)
        tokens[np.isnan(array)] = "NaN"
        tokens[np.isposinf(array)] = "Infinity"
        tokens[np.isneginf(array)] = "-Infinity"
    return tokens


def _tokens(array: np.ndarray, alias: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f" or array.dtype.name == "bfloat16":
        return _float_tokens(array)
    if kind == "b":
        return np.where(array, "true", "false")
    if kind in "iu":
        return array.astype(str)
    out = np.empty(array.shape, dtype=object)
    for index, item in np.ndenumerate(array):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if alias.endswith("_bytes"):
            out[index] = json.dumps({"b64": base64.b64encode(data).decode()})
        else:
            try:
                out[index] = json.dumps(data.decode("utf-8"))
            except UnicodeDecodeError:
                out[index] = json.dumps(
                    {"b64": base64.b64encode(data).decode()})
    return out


def _nest(tokens: np.ndarray) -> str:
    if tokens.ndim == 0:
        return str(tokens.item())
    if tokens.ndim == 1:
        return "[" + ",".join(map(str, tokens.tolist())) + "]"
    return "[" + ",".join(_nest(t) for t in tokens) + "]"


def outputs_to_json(outputs: dict, row_format: bool) -> str:
    """{"predictions": ...} (rows) or {"outputs": ...} (columns)."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    tokens = {k: _tokens(v, k) for k, v in outputs.items()}
    names = sorted(tokens)
    if not row_format:
        if len(names) == 1:
            body = _nest(tokens[names[0]])
        else:
            body = "{" + ",".join(f"{json.dumps(k)}:{_nest(tokens[k])}"
                                  for k in names) + "}"
        return '{"outputs":' + body + "}"
    batch = None
    for k in names:
        if tokens[k].ndim == 0:
            raise errors.invalid_argument(
                f"Tensor name: {k} has no shape information ")
        if batch is not None and tokens[k].shape[0] != batch:
            raise errors.invalid_argument(
                f"Tensor name: {k} has inconsistent batch size: "
                f"{tokens[k].shape[0]} expecting: {batch}")
        batch = tokens[k].shape[0]
    rows = []
    for i in range(batch):
        if len(names) == 1:
            rows.append(_nest(tokens[names[0]][i]))
        else:
            rows.append("{" + ",".join(f"{json.dumps(k)}:{_nest(tokens[k][i])}"
                                       for k in names) + "}")
    return '{"predictions":[' + ",".join(rows) + "]}"


def _is_b64(value) -> bool:
    return isinstance(value, dict) and list(value) == ["b64"]


def request_to_arrays(doc: dict, input_infos) -> tuple:
    """Predict JSON body -> ({alias: array}, row_format)."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {_debug_json(doc)} Not formatted correctly expecting "
            f"only one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise errors.invalid_argument(
                f"JSON Value: {_debug_json(doc)} Expecting 'instances' to be an "
                f"list/array")
        if not instances:
            raise errors.invalid_argument(
                f"JSON Value: {_debug_json(doc)} No values in 'instances' array")
        objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not objects and len(input_infos) > 1:
            raise errors.invalid_argument(
                "instances is a plain list, but expecting list of objects as "
                "multiple input tensors required as per tensorinfo_map")
        names = sorted(input_infos)
        columns = {k: [] for k in names}
        for i, item in enumerate(instances):
            if objects:
                if not isinstance(item, dict) or _is_b64(item):
                    raise errors.invalid_argument(
                        f"Expecting object but got list at item {i} of input "
                        f"list")
                if sorted(item) != names:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} of 'instances' list. "
                        f"JSON object: {_debug_json(item)} keys must be equal "
                        f"to: {','.join(names)}")
                values = item
            else:
                if isinstance(item, dict) and not _is_b64(item):
                    raise errors.invalid_argument(
                        f"Expecting value/list but got object at item {i} of "
                        f"input list")
                values = {names[0]: item}
            for k in names:
                try:
                    columns[k].append(json_to_array(values[k],
                                                    input_infos[k].dtype))
                except errors.ServingError as e:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} key: {k} of "
                        f"'instances' list. Error: {e}") from e
                first = columns[k][0]
                if columns[k][-1].shape != first.shape:
                    raise errors.invalid_argument(
                        f"Failed to process element: {i} key: {k} of "
                        f"'instances' list. Error: Expecting shape "
                        f"{list(first.shape)} but got: "
                        f"{list(columns[k][-1].shape)}")
        return {k: np.stack(v) for k, v in columns.items()}, True
    if has_inputs:
        value = doc["inputs"]
        if not isinstance(value, dict) or _is_b64(value):
            if len(input_infos) > 1:
                raise errors.invalid_argument(
                    "inputs is a plain value/list, but expecting an object as "
                    "multiple input tensors required as per tensorinfo_map")
            (name, info), = input_infos.items()
            return {name: json_to_array(value, info.dtype)}, False
        arrays = {}
        for name, info in sorted(input_infos.items()):
            if name not in value:
                raise errors.invalid_argument(
                    f"Missing named input: {name} in 'inputs' object.")
            arrays[name] = json_to_array(value[name], info.dtype)
        # Keys the signature does not name are ignored, as in TF Serving.
        return arrays, False
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


# ---------------------------------------------------------------------------
# The HTTP server.
# ---------------------------------------------------------------------------

class RestApi:
    """Turns (method, path, body) into (HTTP status, JSON text)."""

    def __init__(self, core: ServingCore):
        self.core = core

    def handle(self, method: str, path: str, body: bytes) -> tuple:
        path = urllib.parse.urlsplit(path).path
        try:
            if method == "GET" and path == METRICS_PATH:
                return 200, self.core.metrics.prometheus_text(), "text/plain"
            text = self._dispatch(method, path, body)
            return 200, text, "application/json"
        except errors.ServingError as e:
            return (e.http_status, json.dumps({"error": e.message}),
                    "application/json")
        except Exception as e:  # noqa: BLE001 - a request never kills the server
            logger.exception("REST %s %s failed", method, path)
            return 500, json.dumps({"error": f"{type(e).__name__}: {e}"}), \
                "application/json"

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        malformed = errors.invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT_PATH.fullmatch(path)
            if not m:
                raise malformed
            spec = _model_spec(*m.group(1, 2, 3))
            verb = m.group(4).lower()
            with self.core.track(verb.capitalize() + "(REST)", spec.name):
                if verb == "predict":
                    return self._predict(spec, body)
                return self._classify_or_regress(verb, spec, body)
        if method == "GET":
            m = _STATUS_PATH.fullmatch(path)
            if not m:
                raise malformed
            name = m.group(1) or ""
            if not name:
                raise errors.invalid_argument("Missing model name in request.")
            spec = _model_spec(name, m.group(2), m.group(3))
            if m.group(4):
                return self._metadata(spec)
            return self._status(spec)
        raise malformed

    def _predict(self, spec, body: bytes) -> str:
        doc = _parse_json(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise errors.invalid_argument(
                f"JSON Value: {_debug_json(doc)} not formatted correctly. "
                f"'signature_name' key must be a string value.")
        servable = self.core.manager.resolve(spec)
        name = signature_name or DEFAULT_SERVING_SIGNATURE
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise errors.invalid_argument(
                f'Serving signature name: "{name}" not found in signature def')
        if not signature.inputs:
            raise errors.invalid_argument(
                f"Failed to get input map for signature: "
                f"{signature_name or 'DEFAULT'}")
        arrays, row_format = request_to_arrays(doc, signature.inputs)
        _, outputs = self.core.run_signature(servable, name, arrays, [])
        return outputs_to_json(outputs, row_format)

    def _classify_or_regress(self, verb: str, spec, body: bytes) -> str:
        doc = _parse_json(body)
        if isinstance(doc.get("signature_name", ""), str):
            spec.signature_name = doc.get("signature_name", "")
        if verb == "classify":
            request = classification_pb2.ClassificationRequest(model_spec=spec)
            self.core.classify(request)
        else:
            request = regression_pb2.RegressionRequest(model_spec=spec)
            self.core.regress(request)
        raise errors.ServingError(grpc.StatusCode.INTERNAL, "unreachable")

    def _status(self, spec) -> str:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        response = self.core.get_model_status(request)
        return json.dumps(json_format.MessageToDict(
            response, always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True), indent=1)

    def _metadata(self, spec) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD])
        response = self.core.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        opts = dict(always_print_fields_with_no_presence=True,
                    preserving_proto_field_name=True)
        return json.dumps({
            "model_spec": json_format.MessageToDict(response.model_spec, **opts),
            "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                signature_map, **opts)},
        }, indent=1)


def _model_spec(name: str, version, label) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None and label is not None:
        raise errors.invalid_argument(
            f"Both model version ({version}) and model version label "
            f"({label}) cannot be supplied.")
    if version is not None:
        try:
            spec.version.value = int(version)
        except (ValueError, OverflowError) as e:
            raise errors.invalid_argument(
                f"Failed to convert version: {version} to numeric.") from e
    if label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def _parse_json(body: bytes):
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.invalid_argument(f"JSON Parse error: {e}") from e
    if not isinstance(doc, dict):
        raise errors.invalid_argument(f"JSON Value: {_debug_json(doc)} Is not "
                                      f"object")
    return doc


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tfp-vae-serving"
    timeout = 30          # idle keep-alive connections are closed after this

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        front = self.server.front_end
        if not front.enter():
            self._reply(503, json.dumps({"error": "Server is shutting down"}),
                        "application/json", close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > MAX_BODY_BYTES:
                self._reply(400, json.dumps(
                    {"error": f"Content-Length {length} is out of range"}),
                    "application/json", close=True)
                return
            body = self.rfile.read(length) if length else b""
            status, text, content_type = front.api.handle(method, self.path,
                                                          body)
            self._reply(status, text, content_type)
        finally:
            front.leave()

    def _reply(self, status: int, text: str, content_type: str,
               close: bool = False) -> None:
        data = text.encode("utf-8")
        self.send_response(status, errors.http_reason(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        logger.debug("REST %s - %s", self.address_string(), format % args)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class RestFrontEnd:
    """ThreadingHTTPServer on the REST port, drained on stop."""

    def __init__(self, core: ServingCore, host: str, port: int):
        self.api = RestApi(core)
        try:
            self.httpd = _HttpServer((host, port), _Handler)
        except OSError as e:
            raise OSError(f"cannot listen for HTTP/REST on {host}:{port}: "
                          f"{e.strerror}") from e
        self.httpd.front_end = self
        self.port = self.httpd.server_address[1]
        self._cond = threading.Condition()
        self._inflight = 0
        self._draining = False
        self._thread = None

    def enter(self) -> bool:
        with self._cond:
            if self._draining:
                return False
            self._inflight += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="rest", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Stops accepting, waits (up to `grace`) for requests in flight."""
        self.httpd.shutdown()
        with self._cond:
            self._draining = True
            self._cond.wait_for(lambda: self._inflight == 0, grace)
        self.httpd.server_close()
