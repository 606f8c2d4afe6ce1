"""REST front end: TF Serving's HTTP routes and status codes over the serving core.

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
RESOURCE_EXHAUSTED 429, UNAVAILABLE 503...: `serving.errors.http_status_for`).
The JSON bodies are read and written by `serving.rest_json`; the answers
themselves (and their status codes) come from `serving.core`, shared with gRPC.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
import urllib.parse

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2,
                                     regression_pb2)

from export import contract
from serving import errors, rest_json
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
        doc = rest_json.parse_json(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise errors.invalid_argument(
                f"JSON Value: {rest_json.debug_json(doc)} not formatted correctly. "
                f"'signature_name' key must be a string value.")
        servable = self.core.manager.resolve(spec)
        name = signature_name or contract.SERVING_DEFAULT
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise errors.invalid_argument(
                f'Serving signature name: "{name}" not found in signature def')
        if not signature.inputs:
            raise errors.invalid_argument(
                f"Failed to get input map for signature: "
                f"{signature_name or 'DEFAULT'}")
        arrays, row_format = rest_json.request_to_arrays(doc, signature.inputs)
        _, outputs = self.core.run_signature(servable, name, arrays, [])
        return rest_json.outputs_to_json(outputs, row_format)

    def _classify_or_regress(self, verb: str, spec, body: bytes) -> str:
        doc = rest_json.parse_json(body)
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

    def __init__(self, core: ServingCore, host: str, port: int,
                 cors: bool = False, timeout_ms=None, metrics_path=None):
        self.api = RestApi(core)
        # --rest_api_enable_cors_support, --rest_api_timeout_in_ms and the
        # Prometheus path of --monitoring_config_file (None: no endpoint).
        self.cors = cors
        self.timeout_ms = timeout_ms
        self.metrics_path = metrics_path
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
