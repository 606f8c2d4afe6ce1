"""REST front end: TF Serving's HTTP routes and status codes over the serving core.

As ``model_servers/http_server.cc`` and ``http_rest_api_handler.cc`` dispatch:

* the Prometheus path (``metrics_path``, any method) answers the counters;
  with a query string appended it is 400 ``Unexpected path: ...``;
* only targets matching ``(?i)/v1/.*`` (path and query) reach the API;
  anything else is libevent's 404 HTML page;
* ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with
  ``{"signature_name": ..., "instances": [...]}`` (row format, answered
  ``{"predictions": [...]}``) or ``{"inputs": ...}`` (columnar format,
  answered ``{"outputs": ...}``); ``:classify`` and ``:regress`` answer as
  the gRPC Classify and Regress do.  The words ``models``, ``versions`` and
  ``labels`` match in any case, the verb only in lower case;
* ``GET /v1/models/NAME[/versions/N|/labels/L]`` -> GetModelStatus JSON;
  ``.../metadata`` (exactly) -> metadata JSON;
* ``OPTIONS`` on any /v1 path is a CORS preflight: 200 with an Origin
  header naming http(s)://, else 400 with an empty body;
* every other method or path is INVALID_ARGUMENT ``Malformed request: <METHOD>
  <path>``; a version that does not fit int64 is 400 with an empty body.

With ``cors`` every /v1 answer carries TF Serving's three
Access-Control-Allow-* headers.  Errors are ``{"error": "<message>"}`` with
the HTTP status of the code (`serving.errors.http_status_for`).  Bodies are
read and written by `serving.rest_json`; the answers themselves (and their
status codes) come from `serving.core`, shared with gRPC.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import logging
import re
import threading
import urllib.parse
import zlib
from typing import NamedTuple, Optional

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2,
                                     regression_pb2)

from export import contract
from serving import errors, rest_json
from serving.core import SIGNATURE_DEF_FIELD, ServingCore

logger = logging.getLogger(__name__)

# http_rest_api_util.h kHTTPRestApiHandlerPathRegex, http_rest_api_util.cc.
_V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)", re.IGNORECASE | re.ASCII | re.DOTALL)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?", re.IGNORECASE | re.ASCII | re.DOTALL)
_ORIGIN = re.compile(r"https?://")
METRICS_PATH = "/monitoring/prometheus/metrics"   # PrometheusExporter::kPrometheusPath
MAX_BODY_BYTES = 2**31 - 1
MAX_GUNZIP_BYTES = 100 << 20      # net_http/compression/gzip_zlib.h
CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "POST, GET"),
                ("Access-Control-Allow-Headers", "Content-Type"))
JSON = "application/json"


def libevent_error_page(status: int, reason: str) -> str:
    """libevent http.c evhttp_send_error's body (ERR_FORMAT)."""
    return (f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n"
            f"<H1>{reason}</H1>\n</BODY></HTML>\n")


class Reply(NamedTuple):
    status: int
    text: str
    content_type: Optional[str]
    headers: tuple = ()


class _ModelInfoError(Exception):
    """ParseModelInfo failed: TF Serving answers 400 with an empty body."""


class RestApi:
    """Turns (method, target, body, headers) into a `Reply`."""

    def __init__(self, core: ServingCore, cors: bool = False,
                 timeout_ms: Optional[int] = None,
                 metrics_path: Optional[str] = None):
        self.core = core
        self.cors = cors
        self.timeout_ms = timeout_ms
        self.metrics_path = metrics_path
        self._runner = None
        if timeout_ms is not None and timeout_ms > 0:
            self._runner = concurrent.futures.ThreadPoolExecutor(
                thread_name_prefix="rest-run")

    def handle(self, method: str, target: str, body: bytes,
               headers=None) -> Reply:
        headers = headers or {}
        path = target.split("?", 1)[0].split("#", 1)[0]
        if self.metrics_path is not None and path == self.metrics_path:
            if target != self.metrics_path:
                return Reply(400, f"Unexpected path: {target}. Should be "
                                  f"{self.metrics_path}", "text/plain")
            return Reply(200, self.core.metrics.prometheus_text(), "text/plain")
        if not _V1_PATH.fullmatch(target):
            return Reply(404, libevent_error_page(404, "Not Found"),
                         "text/html")
        extra = CORS_HEADERS if self.cors else ()
        if method == "OPTIONS":
            origin = headers.get("Origin") or ""
            return Reply(200 if _ORIGIN.search(origin) else 400, "", None,
                         extra)
        try:
            return Reply(200, self._dispatch(method, target, body), JSON, extra)
        except _ModelInfoError:
            return Reply(400, "", JSON, extra)
        except errors.ServingError as e:
            return Reply(e.http_status, rest_json.error_json(e.message), JSON,
                         extra)
        except Exception as e:  # noqa: BLE001 - a request never kills the server
            logger.exception("REST %s %s failed", method, target)
            return Reply(500, rest_json.error_json(f"{type(e).__name__}: {e}"),
                         JSON, extra)

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        malformed = errors.invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT_PATH.fullmatch(path)
            # The regex ignores case; the verb is then compared exactly.
            if not m or m.group(4) not in ("classify", "regress", "predict"):
                raise malformed
            spec = _model_spec(*m.group(1, 2, 3))
            verb = m.group(4)
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
            if m.group(4) == "metadata":      # "/METADATA" asks for status
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
        _, outputs = self._run(servable, name, arrays)
        return rest_json.outputs_to_json(outputs, row_format)

    def _run(self, servable, name: str, arrays: dict):
        """run_signature, bounded by --rest_api_timeout_in_ms when > 0."""
        if self._runner is None:
            return self.core.run_signature(servable, name, arrays, [])
        future = self._runner.submit(self.core.run_signature, servable, name,
                                     arrays, [])
        try:
            return future.result(timeout=self.timeout_ms / 1000.0)
        except concurrent.futures.TimeoutError as e:
            raise errors.ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "Timed out waiting for notification") from e

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


def _decode_arg(text: str) -> str:
    """curl_easy_unescape: %XX decoded, '+' kept; bytes that are not UTF-8
    cannot name a model, so they are replaced (the lookup then fails)."""
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "replace")


def _model_spec(name: str, version, label) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=_decode_arg(name))
    if version is not None and label is not None:
        raise errors.invalid_argument(
            f"Both model version ({version}) and model version label "
            f"({label}) cannot be supplied.")
    if version is not None:
        number = int(version)
        if number > 2**63 - 1:
            # "Failed to convert version: <v> to numeric." -- returned before
            # MakeJsonFromStatus, so the body is empty.
            raise _ModelInfoError(version)
        spec.version.value = number
    if label is not None:
        spec.version_label = _decode_arg(label)
    return spec


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tfp-vae-serving"
    timeout = 30          # idle keep-alive connections are closed after this

    def __getattr__(self, name: str):
        # Every method reaches the API (PATCH, PUT, unknown verbs: "Malformed
        # request"), except those libevent refuses itself.
        if name.startswith("do_"):
            method = name[3:]
            if method in ("TRACE", "CONNECT"):
                return lambda: self._error_page(501, "Not Implemented")
            return lambda: self._serve(method)
        raise AttributeError(name)

    def _error_page(self, status: int, reason: str) -> None:
        self._reply(Reply(status, libevent_error_page(status, reason),
                          "text/html"), close=True)

    def _read_body(self) -> Optional[bytes]:
        """The request body, or None after answering a malformed framing."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw.strip(), 10)
            if length < 0 or not raw.strip().isdigit():
                raise ValueError(raw)
        except ValueError:
            # libevent evhttp_get_body_length: not a number -> 400.
            self._error_page(400, "Bad Request")
            return None
        if length > MAX_BODY_BYTES:
            self._error_page(413, "Payload Too Large")
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> Optional[bytes]:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._error_page(400, "Bad Request")
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                self._error_page(400, "Bad Request")
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _serve(self, method: str) -> None:
        front = self.server.front_end
        if not front.enter():
            self._reply(Reply(503, rest_json.error_json("Server is shutting down"),
                              JSON), close=True)
            return
        try:
            body = self._read_body()
            if body is None:
                return
            if "gzip" in (self.headers.get("Content-Encoding") or ""):
                body = _gunzip(body)
            reply = front.api.handle(method, self.path, body, self.headers)
            self._reply(reply, head=method == "HEAD")
        finally:
            front.leave()

    def _reply(self, reply: Reply, close: bool = False,
               head: bool = False) -> None:
        data = reply.text.encode("utf-8")
        self.send_response(reply.status, errors.http_reason(reply.status))
        if reply.content_type is not None:
            self.send_header("Content-Type", reply.content_type)
        for key, value in reply.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        logger.debug("REST %s - %s", self.address_string(), format % args)


def _gunzip(body: bytes) -> bytes:
    """auto_uncompress_input: gunzip up to 100 MB; a failure is an empty
    body, as TF Serving's net_http server treats it."""
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, MAX_GUNZIP_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            return b""
        return out
    except zlib.error:
        return b""


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class RestFrontEnd:
    """ThreadingHTTPServer on the REST port, drained on stop."""

    def __init__(self, core: ServingCore, host: str, port: int,
                 cors: bool = False, timeout_ms: Optional[int] = None,
                 metrics_path: Optional[str] = None):
        """cors: --rest_api_enable_cors_support.  timeout_ms:
        --rest_api_timeout_in_ms, bounding predict when > 0.  metrics_path:
        the Prometheus path of --monitoring_config_file; None serves none."""
        self.api = RestApi(core, cors=cors, timeout_ms=timeout_ms,
                           metrics_path=metrics_path)
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
        if self.api._runner is not None:
            self.api._runner.shutdown(wait=False)
