"""The local server's wire behaviour against TensorFlow Serving's own tests.

Each test names the TF Serving (or TensorFlow) source file and the test or
function it follows; paths are relative to tensorflow_serving/ unless they
start with tensorflow/.  The model is the project's VAE export, so where TF
Serving's tests use half_plus_two the same rule is checked on a signature of
this model.
"""

from __future__ import annotations

import http.client
import json
import math

import grpc
import numpy as np
import pytest

import serving_fixtures as fx
from serving import errors, rest_json, tensors
from serving.client import Client
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = fx.start_one_model_server(tmp_path_factory.mktemp("wire"))
    channel = grpc.insecure_channel(srv.target)
    yield {"server": srv, "rest": ("127.0.0.1", srv.rest_port),
           "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel)}
    channel.close()
    srv.stop(grace=2)


def _http(server, method, target, body=b"", headers=None):
    conn = http.client.HTTPConnection(*server["rest"], timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        for key, value in {"Content-Length": str(len(body)),
                           **(headers or {})}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), \
            response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _error(text: str) -> str:
    return json.loads(text)["error"]


def _info(dtype) -> meta_graph_pb2.TensorInfo:
    return meta_graph_pb2.TensorInfo(dtype=dtype)


def _parse_error(body, inputs) -> str:
    with pytest.raises(errors.ServingError) as info:
        rest_json.request_to_arrays(rest_json.parse_json(body), inputs)
    return info.value.message


# ---------------------------------------------------------------------------
# 1. Predict response encoding
# ---------------------------------------------------------------------------

def test_predict_answers_in_float_val_by_default(server):
    """servables/tensorflow/predict_util.cc PostProcessPredictionResult
    (kAsProtoField) and predict_util_test.cc PredictImplTest.PredictionSuccess;
    model_servers/tensorflow_model_server_test.py _TestPredict reads
    float_val[0]."""
    z = np.array([[0.25, -0.5], [1.0, 2.0]], np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vae"
    request.model_spec.signature_name = "decode"
    request.inputs["z"].CopyFrom(tensors.to_tensor_proto(z))
    response = server["stub"].Predict(request, timeout=30)
    out = response.outputs["mean"]
    assert out.dtype == types_pb2.DT_FLOAT
    assert not out.tensor_content
    assert [d.size for d in out.tensor_shape.dim] == [2, *fx.DATA_SHAPE]
    expected = fx.reference_outputs(fx.shared_versions()[1], "decode",
                                    {"z": z})["mean"]
    np.testing.assert_allclose(
        np.array(out.float_val, np.float32).reshape(expected.shape), expected,
        rtol=1e-6, atol=1e-6)
    assert response.model_spec.signature_name == "decode"
    assert response.model_spec.version.value == 1


def test_as_proto_field_table():
    """tensorflow/core/framework/tensor.cc Tensor::AsProtoField: each dtype's
    field, scalars with a shape of no dims, zero elements with no values;
    AsProtoTensorContent with raw bytes."""
    cases = [
        (np.array([1.5, -2.0], np.float32), "float_val", [1.5, -2.0]),
        (np.array([1.5], np.float64), "double_val", [1.5]),
        (np.array([1, -2], np.int32), "int_val", [1, -2]),
        (np.array([7], np.uint8), "int_val", [7]),
        (np.array([2**40], np.int64), "int64_val", [2**40]),
        (np.array([True, False]), "bool_val", [True, False]),
        (np.array([1 + 2j], np.complex64), "scomplex_val", [1.0, 2.0]),
        (np.array([1.0], np.float16), "half_val", [0x3C00]),
        (np.array([b"a", b"bc"], dtype=object), "string_val", [b"a", b"bc"]),
    ]
    for array, field, values in cases:
        proto = tensors.encode_output(array)
        assert list(getattr(proto, field)) == values, field
        assert not proto.tensor_content
        np.testing.assert_array_equal(tensors.to_numpy(proto), array)
    scalar = tensors.encode_output(np.float32(3.0))
    assert scalar.HasField("tensor_shape") and not scalar.tensor_shape.dim
    assert list(scalar.float_val) == [3.0]
    empty = tensors.encode_output(np.zeros((0, 3), np.float32))
    assert not empty.float_val and [d.size for d in empty.tensor_shape.dim] == [0, 3]
    content = tensors.encode_output(np.array([1.5], np.float32),
                                    tensor_content=True)
    assert content.tensor_content == np.float32(1.5).tobytes() and not content.float_val


# ---------------------------------------------------------------------------
# 5. Tensor parsing
# ---------------------------------------------------------------------------

def _proto(dtype=types_pb2.DT_FLOAT, dims=(2,), **fields):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    for key, value in fields.items():
        if key == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, key).extend(value)
    return proto


@pytest.mark.parametrize("proto,fragment", [
    (_proto(dims=[1] * 255), "rank 255"),
    (_proto(dims=[-1]), "negative size -1"),
    (_proto(dims=[2**62, 2**62]), "more elements than int64"),
    (_proto(dtype=types_pb2.DT_INVALID), "invalid dtype"),
    (_proto(dtype=101), "invalid dtype float_ref"),
    (_proto(dtype=555), "invalid dtype"),
    (_proto(dtype=types_pb2.DT_RESOURCE), "resource"),
    (_proto(dtype=types_pb2.DT_VARIANT), "variant"),
    (_proto(tensor_content=b"\0" * 7), "7 bytes"),
    (_proto(dtype=types_pb2.DT_BOOL, tensor_content=b"\0\2"), "0 or 1"),
    (_proto(dtype=types_pb2.DT_STRING, tensor_content=b"\5a"), "encoded list"),
])
def test_tensor_from_proto_failures(proto, fragment):
    """tensorflow/core/framework/tensor.cc Tensor::FromProto and
    tensor_shape.cc TensorShape::IsValid (rank <= 254, no negative size, no
    int64 overflow)."""
    with pytest.raises(tensors.TensorParseError, match=fragment):
        tensors.to_numpy(proto)


def test_tensor_from_proto_fields_padding_and_truncation():
    """tensor.cc FromProtoField: short lists repeat the last value, empty
    ones give zeros, long ones are cut, a value in another dtype's field is
    ignored; tensor_content is read as little-endian."""
    np.testing.assert_array_equal(
        tensors.to_numpy(_proto(dims=[4], float_val=[1.0, 2.0])), [1, 2, 2, 2])
    np.testing.assert_array_equal(
        tensors.to_numpy(_proto(dims=[2], float_val=[1.0, 2.0, 3.0])), [1, 2])
    np.testing.assert_array_equal(
        tensors.to_numpy(_proto(dims=[3], int_val=[5])), [0, 0, 0])
    np.testing.assert_array_equal(
        tensors.to_numpy(_proto(dtype=types_pb2.DT_STRING, dims=[2],
                                tensor_content=b"\1\2abc")), [b"a", b"bc"])
    np.testing.assert_array_equal(
        tensors.to_numpy(_proto(dtype=types_pb2.DT_INT8, dims=[1],
                                int_val=[300])), np.array([300]).astype(np.int8))


def _field_values(proto, dtype, field, n):
    """The reference decode: the protobuf API's element-by-element list,
    padded / cut to n as FromProtoField does."""
    values = np.array(list(getattr(proto, field)), dtype=dtype)
    if len(values) >= n:
        return values[:n]
    return np.concatenate([values, np.repeat(values[-1:], n - len(values))])


@pytest.mark.parametrize("dtype,field,number,wire", [
    (np.float32, "float_val", 5, "<f4"), (np.float64, "double_val", 6, "<f8")])
def test_large_typed_float_fields_decode_as_the_protobuf_api(
        monkeypatch, dtype, field, number, wire):
    """Large float_val / double_val lists are read from the packed wire
    bytes; every way a writer may put them on the wire (one packed run,
    several runs, element by element, mixed) decodes to the values the
    protobuf API lists, padded or cut to the shape."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=300).astype(dtype)
    values[:3] = [np.inf, -0.0, np.nan]
    enum = types_pb2.DT_FLOAT if dtype == np.float32 else types_pb2.DT_DOUBLE
    header = tensor_pb2.TensorProto(dtype=enum)
    head_bytes = header.SerializeToString()
    packed_tag = bytes([number << 3 | 2])
    fixed_tag = bytes([number << 3 | (5 if dtype == np.float32 else 1)])

    def packed(chunk):
        data = chunk.astype(wire).tobytes()
        return packed_tag + tensors._varint(len(data)) + data

    def unpacked(chunk):
        return b"".join(fixed_tag + v.tobytes() for v in chunk.astype(wire))

    encodings = {
        "one packed run": packed(values),
        "three packed runs": packed(values[:100]) + packed(values[100:101])
        + packed(values[101:]),
        "element by element": unpacked(values),
        "mixed": packed(values[:150]) + unpacked(values[150:200])
        + packed(values[200:]),
    }
    for n in (300, 250, 400):             # exact, cut, padded with the last
        for name, body in encodings.items():
            proto = tensor_pb2.TensorProto()
            proto.ParseFromString(head_bytes + body)
            proto.tensor_shape.dim.add(size=n // 10)
            proto.tensor_shape.dim.add(size=10)
            got = tensors.to_numpy(proto)
            assert got.dtype == dtype and got.shape == (n // 10, 10), name
            np.testing.assert_array_equal(
                got.ravel(), _field_values(proto, dtype, field, n),
                err_msg=f"{name}, {n} elements")
            assert got.flags.writeable, name
    read = []
    real = tensors._packed_values
    monkeypatch.setattr(tensors, "_packed_values",
                        lambda *a: read.append(real(*a)) or read[-1])
    big = rng.normal(size=(256, 32, 32, 1)).astype(dtype)
    np.testing.assert_array_equal(tensors.to_numpy(tensors.encode_output(big)),
                                  big)
    assert len(read) == 1 and read[0] is not None and read[0].size == big.size


def test_encode_output_into_a_used_field_replaces_it():
    """Writing an output (or a request input) in place leaves nothing of
    what the field held before and equals the freshly built proto."""
    response = predict_pb2.PredictResponse()
    stale = response.outputs["mean"]
    stale.dtype = types_pb2.DT_INT32
    stale.int_val.extend([1, 2, 3])
    stale.tensor_content = b"junk"
    stale.tensor_shape.dim.add(size=7)
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3),
                  np.float32(2.0), np.zeros((0, 2), np.float32),
                  np.array([b"a"], dtype=object), np.array([1, 2], np.int64)):
        for content in (False, True):
            tensors.encode_output_into(response.outputs["mean"], array, content)
            assert (response.outputs["mean"]
                    == tensors.encode_output(array, content)), (array, content)
            assert (response.outputs["mean"].SerializeToString()
                    == tensors.encode_output(array, content).SerializeToString())
            tensors.fill_tensor_proto(stale, array)
            assert stale == tensors.to_tensor_proto(array)


@pytest.mark.parametrize("mutate,code,fragment", [
    (lambda r: r.inputs["z"].tensor_shape.dim.add(size=-3),
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: z"),
    (lambda r: setattr(r.inputs["z"], "dtype", types_pb2.DT_VARIANT),
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: z"),
    (lambda r: setattr(r.inputs["z"], "tensor_content", b"\0" * 9),
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: z"),
    (lambda r: (r.inputs["z"].ClearField("tensor_content"),
                r.inputs["z"].tensor_shape.dim[0].__setattr__("size", 1 << 40)),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "tensor too large: z"),
])
def test_malformed_tensor_over_grpc(server, mutate, code, fragment):
    """predict_util.cc RunPredict -> tensorflow/cc/saved_model/util.cc
    GetInputValues: 'tensor parsing error: <alias>' (InvalidArgument).  The
    element limit is the local server's own (TF Serving would try to
    allocate): RESOURCE_EXHAUSTED, answered at once."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vae"
    request.model_spec.signature_name = "decode"
    request.inputs["z"].CopyFrom(tensors.to_tensor_proto(
        np.zeros((2, 2), np.float32)))
    mutate(request)
    with pytest.raises(grpc.RpcError) as info:
        server["stub"].Predict(request, timeout=30)
    assert info.value.code() == code
    assert info.value.details().startswith(fragment), info.value.details()


def test_inputs_with_different_batch_sizes(server):
    """batching/batching_util.h ComputeTensorBatchSize (batching_session_test.cc):
    inputs of one signature must agree on dimension 0."""
    inputs = fx.example_inputs(3)["log_likelihood"]
    with Client(server["server"].target, "vae", timeout=30) as client:
        with pytest.raises(errors.ServingError) as info:
            client.log_likelihood(inputs["x"][:2], inputs["seed"])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "must have equal 0th-dimension size" in info.value.message
    assert "seed: 3" in info.value.message and "x: 2" in info.value.message


# ---------------------------------------------------------------------------
# 7. REST: dispatch (http_server.cc, http_rest_api_handler_test.cc)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method,target", [
    ("GET", "/v1/foo"), ("POST", "/v1/foo"),
    ("GET", "/v1/models/debug/model_name"), ("POST", "/v1/models"),
    ("GET", "/v1/models/foo:predict"), ("GET", "/v1/models/foo/version/50:predict"),
    ("POST", "/v1/models/foo/version/50:regress"),
    ("POST", "/v1/models/foo/versions/HELLO:regress"),
    ("POST", "/v1/models/foo/metadata"),
    ("POST", "/v1/models/foo/label/some_label:regress"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress"),
    ("POST", "/v1/models/foo/versions/some_label:regress"),
    ("POST", "/v1/models/vae:PREDICT"),
    ("PATCH", "/v1/models/vae:predict"), ("PUT", "/v1/models/vae"),
    ("DELETE", "/v1/models/vae"), ("FOO", "/v1/models/vae"),
])
def test_unsupported_api_calls(server, method, target):
    """http_rest_api_handler_test.cc UnsupportedApiCalls;
    http_rest_api_handler.cc ProcessRequest (case-sensitive verb compare)."""
    status, headers, text = _http(server, method, target, b"{}")
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert _error(text) == f"Malformed request: {method} {target}"


def test_missing_model_name_and_version_overflow(server):
    """http_rest_api_handler_test.cc UnsupportedApiCalls: 'Missing model name';
    uint64 max is 'Failed to convert version', returned from ParseModelInfo
    before MakeJsonFromStatus, so the body is empty."""
    status, _, text = _http(server, "GET", "/v1/models")
    assert (status, _error(text)) == (400, "Missing model name in request.")
    status, headers, text = _http(
        server, "POST", "/v1/models/foo/versions/18446744073709551615:regress",
        b"{}")
    assert (status, text) == (400, "")
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("target", ["/statuspage", "/index", "/v1", "/",
                                    "/V2/models/vae"])
def test_only_v1_paths_are_api_routes(server, target):
    """http_rest_api_util.h kHTTPRestApiHandlerPathRegex '(?i)/v1/.*'
    (http_rest_api_handler_test.cc kPathRegex); libevent's 404 page."""
    status, _, text = _http(server, "GET", target)
    assert status == 404
    assert "<TITLE>404 Not Found</TITLE>" in text


def test_case_of_route_words_and_metadata(server):
    """http_rest_api_util.cc regexes are (?i); http_rest_api_handler.cc
    compares the sub-resource to 'metadata' exactly, so /METADATA asks for
    the status."""
    status, _, text = _http(server, "GET", "/V1/MODELS/vae/VERSIONS/1")
    assert status == 200 and json.loads(text)["model_version_status"]
    status, _, text = _http(server, "GET", "/v1/models/vae/METADATA")
    assert status == 200 and "model_version_status" in json.loads(text)
    status, _, text = _http(server, "GET", "/v1/models/vae/metadata")
    assert status == 200 and "metadata" in json.loads(text)
    # The model name is matched as sent (ServerCore lookups are exact).
    status, _, text = _http(server, "GET", "/v1/models/VAE")
    assert status == 404


def test_query_string_is_part_of_the_name(server):
    """evhttp_request.cc uri_path() keeps the query; '[^/:]' captures it."""
    status, _, text = _http(server, "GET", "/v1/models/vae?x=1")
    assert status == 404
    assert _error(text) == "Could not find any versions of model vae?x=1"


def test_options_preflight(server):
    """http_server.cc RestApiRequestDispatcher::ProcessRequest: OPTIONS is
    200 with an http(s) Origin, otherwise 400 with an empty body; no CORS
    headers unless --rest_api_enable_cors_support."""
    status, headers, text = _http(server, "OPTIONS", "/v1/models/vae:predict",
                                  headers={"Origin": "https://a.test"})
    assert (status, text) == (200, "")
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, text = _http(server, "OPTIONS", "/v1/models/vae:predict")
    assert (status, text) == (400, "")


def test_cors_headers_on_every_v1_answer(server):
    """http_rest_api_util.cc AddCORSHeaders, applied by http_server.cc to
    every /v1 answer (errors and OPTIONS too), never to a 404."""
    from serving.rest import RestApi

    api = RestApi(server["server"].core, cors=True)
    expected = {"Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type"}
    for method, target in [("GET", "/v1/models/vae"),
                           ("GET", "/v1/models/nope"),
                           ("OPTIONS", "/v1/models/vae")]:
        reply = api.handle(method, target, b"", {"Origin": "http://a.test"})
        assert dict(reply.headers) == expected, (method, target)
    assert api.handle("GET", "/index", b"").headers == ()


def test_prometheus_path(server):
    """http_server.cc: the Prometheus handler matches the configured path
    exactly; with a query string it answers 400 'Unexpected path'."""
    from serving.rest import RestApi

    api = RestApi(server["server"].core, metrics_path="/monitoring/prometheus/metrics")
    reply = api.handle("GET", "/monitoring/prometheus/metrics", b"")
    assert reply.status == 200 and reply.content_type == "text/plain"
    reply = api.handle("POST", "/monitoring/prometheus/metrics?a=1", b"")
    assert (reply.status, reply.text) == (
        400, "Unexpected path: /monitoring/prometheus/metrics?a=1. Should be "
             "/monitoring/prometheus/metrics")
    assert RestApi(server["server"].core).handle(
        "GET", "/monitoring/prometheus/metrics", b"").status == 404


def test_non_numeric_content_length_is_400(server):
    """libevent http.c evhttp_get_body_length: a Content-Length that is not a
    number fails the request with 400 (the connection is not just dropped)."""
    status, _, text = _http(server, "POST", "/v1/models/vae:predict", b"",
                            headers={"Content-Length": "abc"})
    assert status == 400 and "Bad Request" in text


def test_predict_request_errors(server):
    """http_rest_api_handler_test.cc PredictRequestErrors."""
    target = "/v1/models/vae:predict"
    status, _, text = _http(server, "POST", target, b"")
    assert (status, _error(text)) == (400, "JSON Parse error: The document is empty")
    status, _, text = _http(server, "POST", target, b"instances = [1, 2]")
    assert status == 400
    assert _error(text) == "JSON Parse error: Invalid value. at offset: 0"
    status, _, text = _http(server, "POST", target, {"instances": [["x", "y"]]})
    assert status == 400 and "not of expected type: float" in _error(text)
    status, _, text = _http(server, "POST",
                            "/v1/models/vae/labels/Version_Nonexistent:predict",
                            {"instances": [[1.0, 2.0]]})
    assert status == 400
    assert "Unrecognized servable version label" in _error(text)
    status, _, text = _http(server, "POST", target, {"signature_name": 100})
    assert status == 400
    assert "'signature_name' key must be a string value." in _error(text)


def test_signature_not_found_is_invalid_argument_over_rest(server):
    """http_rest_api_handler.cc GetInfoMap: InvalidArgument (gRPC Predict
    gives FailedPrecondition)."""
    status, _, text = _http(server, "POST", "/v1/models/vae:predict",
                            {"signature_name": "nope", "instances": [[0, 0]]})
    assert status == 400
    assert _error(text) == 'Serving signature name: "nope" not found in signature def'


def test_predict_rows_and_columns_pretty_printed(server):
    """http_rest_api_handler_test.cc Predict: row answers 'predictions',
    columnar 'outputs', headers Content-Type application/json; the body as
    rapidjson's PrettyWriter writes it (g3doc/api_rest.md)."""
    z = [[0.5, -1.0]]
    status, headers, text = _http(server, "POST", "/v1/models/vae:predict",
                                  {"signature_name": "generate",
                                   "instances": [[1, 2], [1, 3]]})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert text.startswith('{\n    "predictions": [{\n            "')
    rows = json.loads(text)["predictions"]
    assert sorted(rows[0]) == ["x", "z"] and len(rows) == 2
    status, _, text = _http(server, "POST", "/v1/models/vae:predict",
                            {"signature_name": "decode", "inputs": z})
    assert status == 200 and text.startswith('{\n    "outputs": [[[')
    expected = fx.reference_outputs(fx.shared_versions()[1], "decode",
                                    {"z": np.array(z, np.float32)})["mean"]
    np.testing.assert_array_equal(np.array(json.loads(text)["outputs"],
                                           np.float32), expected)


# ---------------------------------------------------------------------------
# 7.3-7.5 JSON (util/json_tensor_test.cc)
# ---------------------------------------------------------------------------

def test_single_unnamed_tensor():
    """json_tensor_test.cc SingleUnnamedTensor."""
    arrays, row = rest_json.request_to_arrays(
        rest_json.parse_json(b'{"instances": [[1,2],[3,4],[5,6]]}'),
        {"x": _info(types_pb2.DT_INT32)})
    assert row and arrays["x"].shape == (3, 2)
    assert arrays["x"].dtype == np.int32
    np.testing.assert_array_equal(arrays["x"].ravel(), [1, 2, 3, 4, 5, 6])


def test_deeply_nested():
    """json_tensor_test.cc DeeplyNestedWellFormed / DeeplyNestedMalformed:
    500 000 levels parse (rapidjson kParseIterativeFlag), and a deep value
    as signature_name is the string-type error, not a crash."""
    deep = b"[" * 500000 + b"]" * 500000
    doc = rest_json.parse_json(b'{"nested": ' + deep + b', "instances": [1]}')
    assert doc["instances"] == [1]
    doc = rest_json.parse_json(b'{"signature_name": ' + deep + b"}")
    assert isinstance(doc["signature_name"], list)
    assert len(rest_json.debug_json(doc)) <= rest_json.DEBUG_STRING_BYTES


def test_trailing_bytes_nan_and_parse_errors():
    """json_tensor.cc ParseJson (kParseStopWhenDoneFlag, kParseNanAndInfFlag)
    and rapidjson error/en.h messages with byte offsets."""
    assert rest_json.parse_json(b'{"a": 1} X') == {"a": 1}
    doc = rest_json.parse_json(b'{"a": [NaN, Infinity, -Infinity]}')
    assert math.isnan(doc["a"][0]) and doc["a"][1:] == [math.inf, -math.inf]
    for body, message in [
            (b'{"a": [1, 2}', "Missing a comma or ']' after an array element. "
                              "at offset: 11"),
            (b'{"a" 1}', "Missing a colon after a name of object member. at "
                         "offset: 5"),
            (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object "
                                 "member. at offset: 8"),
            (b"{1: 2}", "Missing a name for object member. at offset: 1")]:
        with pytest.raises(errors.ServingError) as info:
            rest_json.parse_json(body)
        assert info.value.message == "JSON Parse error: " + message
    with pytest.raises(errors.ServingError, match="Is not object"):
        rest_json.parse_json(b"[1]")


def test_mixed_input_and_float_limits():
    """json_tensor_test.cc MixedInputForFloatTensor,
    FloatTensorWithPrecisionLoss, FloatTensorThatExceedsMaxReturnsInf,
    FloatTensorThatExceedsMinReturnsZero."""
    f = {"x": _info(types_pb2.DT_FLOAT)}
    arrays, _ = rest_json.request_to_arrays(rest_json.parse_json(
        b'{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0, 1435774380, '
        b'1435774380.0, 1.797693134862315708e+308, -1.797693134862315708e+308, '
        b'2.225073858507201e-308, -2.225073858507201e-308]}'), f)
    x = arrays["x"]
    np.testing.assert_array_equal(
        x[:9], np.array([1, 2, 3, 4, 5.003, 0.007, 0, 1435774380, 1435774380],
                        np.float32))
    assert x[9] == np.inf and x[10] == -np.inf
    assert x[11] == 0 and x[12] == 0 and math.copysign(1, x[12]) == -1


def test_base64_strings():
    """json_tensor_test.cc SingleUnnamedTensorBase64Scalars / Lists and
    SingleNamedTensorBase64."""
    s = {"s": _info(types_pb2.DT_STRING)}
    arrays, _ = rest_json.request_to_arrays(rest_json.parse_json(
        b'{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}'), s)
    assert arrays["s"].tolist() == [b"hello", b"world"]
    arrays, _ = rest_json.request_to_arrays(rest_json.parse_json(
        b'{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}'), s)
    assert arrays["s"].shape == (2, 1)
    arrays, _ = rest_json.request_to_arrays(rest_json.parse_json(
        b'{"instances": [{"s": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}'), s)
    assert arrays["s"].shape == (1, 2, 1)


def test_columnar_format():
    """json_tensor_test.cc SingleUnnamedTensorColumnarFormat: named and bare
    forms, extra keys ignored."""
    i = {"int_tensor": _info(types_pb2.DT_INT32)}
    for body in (b'{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "x": 1}}',
                 b'{"inputs": [[[1,2],[3,4],[5,6]]]}'):
        arrays, row = rest_json.request_to_arrays(rest_json.parse_json(body), i)
        assert not row and arrays["int_tensor"].shape == (1, 3, 2)


@pytest.mark.parametrize("body,fragment", [
    (b'{"instances": [1], "inputs": [1]}', "Not formatted correctly"),
    (b'{"instances": [[1,2],[3,4],[5,6,7]]}',
     "Failed to process element: 2 of 'instances' list. Error: "
     "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
    (b'{"instances": [[1,2],[3,4],[[5,6]]]}', "Expecting shape [2] but got: [1,2]"),
    (b'{"instances": [1, [1]]}', "Expecting shape"),
    (b'{"instances": [[1,2],["a","b"]]}', 'JSON Value: "a" Type: String is '
                                          'not of expected type: int32'),
    (b'{"instances": [[1, true]]}', "Type: True is not of expected type: int32"),
    (b'{"instances": [3000000000]}', "Type: Number is not of expected type: int32"),
    (b'{"instances": [1.5]}', "is not of expected type: int32"),
])
def test_single_unnamed_tensor_errors(body, fragment):
    """json_tensor_test.cc SingleUnnamedTensorErrors (rapidjson IsInt for
    int32)."""
    message = _parse_error(body, {"x": _info(types_pb2.DT_INT32)})
    assert fragment in message, message


@pytest.mark.parametrize("body,fragment", [
    (b'{"instances": [{"a": [1], "b": 1}, {"a": [[1]], "b": 1}]}',
     "Expecting shape"),
    (b'{"instances": [{"a": [1], "b": 1}, {"a": [1, 2], "b": 1}]}',
     "Expecting tensor size"),
    (b'{"instances": [{"a": [1], "b": 1}, [1]]}',
     "Expecting object but got list at item 1 of input list"),
    (b'{"instances": [{"a": [1], "b": 1, "c": 2}]}',
     "Failed to process element: 0 key: c of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON object: does not have named input: c"),
    (b'{"instances": [{"a": [1]}]}', "keys must be equal to: a,b"),
])
def test_multiple_named_tensor_errors(body, fragment):
    """json_tensor_test.cc MultipleNamedTensorErrors."""
    message = _parse_error(body, {"a": _info(types_pb2.DT_INT32),
                                  "b": _info(types_pb2.DT_INT32)})
    assert fragment in message, message
    message = _parse_error(b'{"instances": [[1], {"a": 1}]}',
                           {"a": _info(types_pb2.DT_INT32)})
    assert "Expecting value/list but got object at item 1" in message


def test_float_output_formatting():
    """json_tensor_test.cc FromJsonSingleFloatTensorSixDigitPrecision and
    FromJsonSingleFloatTensorNonFinite (json_tensor.cc WriteDecimal)."""
    text = rest_json.outputs_to_json({"y": np.array(
        [9000000, 999999, 0.5, 0.00003, 555557.5, 0.0003], np.float32)}, False)
    assert text == ('{\n    "outputs": [9e+06, 999999.0, 0.5, 3e-05, '
                    '555557.5, 0.0003\n    ]\n}')
    text = rest_json.outputs_to_json({"y": np.array(
        [np.nan, np.inf, 3.0, -np.inf], np.float32)}, True)
    assert text == '{\n    "predictions": [NaN, Infinity, 3.0, -Infinity\n    ]\n}'
    # Values 6 digits do not carry are written with max_digits10.
    text = rest_json.outputs_to_json({"y": np.array([0.1, 1 / 3], np.float32)},
                                     False)
    assert "0.1, 0.333333343" in text


def test_output_errors_and_zero_batch():
    """json_tensor_test.cc FromJsonSingleTensorErrors (no shape information,
    unsupported type), FromJsonMultipleNamedTensorsErrors (inconsistent batch
    size), FromJsonSingleZeroBatchTensor."""
    with pytest.raises(errors.ServingError, match="has no shape information"):
        rest_json.outputs_to_json({"y": np.float32(1)}, True)
    with pytest.raises(errors.ServingError, match="tensor type: complex64"):
        rest_json.outputs_to_json({"y": np.zeros(2, np.complex64)}, True)
    with pytest.raises(errors.ServingError,
                       match="has inconsistent batch size: 1 expecting: 2"):
        rest_json.outputs_to_json({"a": np.zeros(2), "b": np.zeros(1)}, True)
    assert rest_json.outputs_to_json({"y": np.zeros((0, 2))}, True) == \
        '{\n    "predictions": []\n}'


def test_error_body():
    """json_tensor_test.cc MakeJsonFromTensors.StatusError: one 'error' key,
    quotes escaped, as PrettyWriter writes it."""
    assert rest_json.error_json('Bad key: "key"') == \
        '{\n    "error": "Bad key: \\"key\\""\n}'
