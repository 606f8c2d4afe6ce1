"""Seeded fuzz of the local server: no malformed request makes it fail.

A client mistake is answered with a client-error status (INVALID_ARGUMENT,
NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED... over gRPC; 4xx over
REST), never INTERNAL/UNKNOWN or HTTP 500; the server stays up, and a valid
request answers exactly as before the fuzz.  The seeds are fixed, so a
failure reproduces; each half is bounded in time.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time

import grpc
import numpy as np
import pytest

import serving_fixtures as fx
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

pytestmark = pytest.mark.timeout(180)

GRPC_CASES = 400
REST_CASES = 400
TIME_BUDGET = 40.0          # seconds per half; the cases usually take far less
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                 grpc.StatusCode.DATA_LOSS}
SIGNATURES = ["", "decode", "generate", "encode", "reconstruct",
              "log_likelihood", "serving_default", "nope", "\u00e9", "x" * 300]
KEYS = ["z", "x", "seed", "", "zz", "\u00e9"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = fx.start_one_model_server(tmp_path_factory.mktemp("fuzz"))
    channel = grpc.insecure_channel(srv.target)
    yield {"server": srv, "channel": channel,
           "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "rest": ("127.0.0.1", srv.rest_port)}
    channel.close()
    srv.stop(grace=2)


def _valid_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vae"
    request.model_spec.signature_name = "log_likelihood"
    inputs = fx.example_inputs(3, seed=4)["log_likelihood"]
    for alias, value in inputs.items():
        tensor = request.inputs[alias]
        tensor.dtype = (types_pb2.DT_FLOAT if value.dtype == np.float32
                        else types_pb2.DT_INT32)
        for size in value.shape:
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = value.tobytes()
    return request


# ---------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------

def _random_tensor(rng: random.Random) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto()
    tensor.dtype = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 19, 20, 21,
                               23, 101, 120, 200, 9999, -1 & 0x7FFFFFFF])
    rank = rng.choice([0, 1, 2, 3, 4, 255, 300])
    for _ in range(rank if rank < 10 else rank):
        tensor.tensor_shape.dim.add(size=rng.choice(
            [0, 1, 2, 3, 4, 16, -1, -7, 1 << 20, 1 << 31, 1 << 40, 2**62,
             2**63 - 1]))
        if rank >= 10 and rng.random() < 0.5:
            break
    if rng.random() < 0.2:
        tensor.tensor_shape.unknown_rank = True
    choice = rng.random()
    if choice < 0.3:
        tensor.tensor_content = rng.randbytes(rng.choice([0, 1, 3, 7, 8, 16, 64]))
    elif choice < 0.5:
        tensor.float_val.extend(rng.uniform(-1e38, 1e38)
                                for _ in range(rng.randint(0, 40)))
    elif choice < 0.6:
        tensor.int_val.extend(rng.randint(-2**31, 2**31 - 1)
                              for _ in range(rng.randint(0, 40)))
    elif choice < 0.7:
        tensor.string_val.extend(rng.randbytes(rng.randint(0, 9))
                                 for _ in range(rng.randint(0, 5)))
    elif choice < 0.8:
        tensor.half_val.extend(rng.randint(0, 65535) for _ in range(5))
        tensor.scomplex_val.extend([1.0, 2.0, 3.0])
        tensor.bool_val.extend([True, False])
        tensor.int64_val.extend([2**62, -1])
    elif choice < 0.9:
        tensor.resource_handle_val.add(device="cpu", name="r")
        tensor.variant_val.add(type_name="nope")
    return tensor


def _mutated_valid(rng: random.Random) -> predict_pb2.PredictRequest:
    """A valid request with one thing wrong."""
    request = _valid_request()
    alias = rng.choice(["x", "seed"])
    tensor = request.inputs[alias]
    kind = rng.randrange(9)
    if kind == 0:
        tensor.tensor_content = tensor.tensor_content[:-rng.randint(1, 8)]
    elif kind == 1:
        tensor.tensor_shape.dim[0].size = rng.choice([0, 2, 4, 1000, 1 << 30])
    elif kind == 2:
        tensor.dtype = rng.choice([types_pb2.DT_DOUBLE, types_pb2.DT_INT64,
                                   types_pb2.DT_STRING, types_pb2.DT_BOOL,
                                   types_pb2.DT_HALF])
    elif kind == 3:
        tensor.tensor_shape.dim.add(size=1)
    elif kind == 4:
        del tensor.tensor_shape.dim[:]
    elif kind == 5:
        tensor.ClearField("tensor_content")       # all zeros, as TF fills
    elif kind == 6:
        request.output_filter.extend(rng.sample(["elbo", "log_likelihood",
                                                 "nope", "elbo"], 2))
    elif kind == 7:
        # log_likelihood with 2 images and 3 seed rows
        x = request.inputs["x"]
        x.tensor_shape.dim[0].size = 2
        x.tensor_content = x.tensor_content[:len(x.tensor_content) * 2 // 3]
    else:
        request.model_spec.version.value = rng.choice([0, -1, 2**63 - 1])
    return request


def _random_request(rng: random.Random) -> predict_pb2.PredictRequest:
    if rng.random() < 0.5:
        return _mutated_valid(rng)
    request = predict_pb2.PredictRequest()
    if rng.random() < 0.95:
        request.model_spec.name = rng.choice(["vae", "vae", "", "other"])
        request.model_spec.signature_name = rng.choice(SIGNATURES)
        if rng.random() < 0.2:
            request.model_spec.version_label = rng.choice(["", "stable", "x"])
    for _ in range(rng.randint(0, 3)):
        request.inputs[rng.choice(KEYS)].CopyFrom(_random_tensor(rng))
    if rng.random() < 0.2:
        request.output_filter.append(rng.choice(["mean", "x", "z", "q", ""]))
    return request


def test_grpc_fuzz(server):
    stub = server["stub"]
    rng = random.Random(20261123)
    valid = _valid_request()
    before = stub.Predict(valid, timeout=30)
    start, codes = time.monotonic(), {}
    for case in range(GRPC_CASES):
        if time.monotonic() - start > TIME_BUDGET:
            break
        request = _random_request(rng)
        try:
            stub.Predict(request, timeout=30)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as e:
            assert e.code() not in SERVER_FAULTS, (case, e.code(), e.details(),
                                                   request)
            assert e.details(), (case, e.code())
            codes[e.code().name] = codes.get(e.code().name, 0) + 1
        if case % 50 == 0:
            # Metadata and status with random specs never fault either.
            for call, message in (
                    (stub.GetModelMetadata,
                     get_model_metadata_pb2.GetModelMetadataRequest(
                         model_spec=request.model_spec,
                         metadata_field=[rng.choice(["signature_def", "x"])])),
                    (stub.GetModelMetadata,
                     get_model_metadata_pb2.GetModelMetadataRequest())):
                try:
                    call(message, timeout=30)
                except grpc.RpcError as e:
                    assert e.code() not in SERVER_FAULTS, e.details()
    assert case >= 200, f"only {case} cases within {TIME_BUDGET} s"
    # Mostly refusals, of several kinds.
    assert codes.get("INVALID_ARGUMENT", 0) > GRPC_CASES // 4, codes
    assert len(codes) >= 3, codes
    after = stub.Predict(valid, timeout=30)
    assert after == before
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "vae"
    from tensorflow_serving.apis import model_service_pb2_grpc
    model_stub = model_service_pb2_grpc.ModelServiceStub(server["channel"])
    assert model_stub.GetModelStatus(status, timeout=30).model_version_status


# ---------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------

def _valid_body() -> dict:
    inputs = fx.example_inputs(2, seed=6)["log_likelihood"]
    return {"signature_name": "log_likelihood",
            "instances": [{"x": inputs["x"][i].tolist(),
                           "seed": inputs["seed"][i].tolist()}
                          for i in range(2)]}


def _mutate_json(rng: random.Random, value, depth=0):
    if depth > 6:
        return value
    r = rng.random()
    if r < 0.08:
        return rng.choice([None, True, False, "s", 1.5, -7, 2**70, [], {},
                           {"b64": "!!"}, {"b64": "aGk="}, [[1], 2], "NaN"])
    if isinstance(value, list) and value:
        if r < 0.15:
            return value[:-1]
        if r < 0.2:
            return value + [value[0]]
        i = rng.randrange(len(value))
        return value[:i] + [_mutate_json(rng, value[i], depth + 1)] + value[i + 1:]
    if isinstance(value, dict) and value:
        if r < 0.15:
            key = rng.choice(list(value))
            return {k: v for k, v in value.items() if k != key}
        if r < 0.2:
            return dict(value, extra=1)
        key = rng.choice(list(value))
        return dict(value, **{key: _mutate_json(rng, value[key], depth + 1)})
    return value


def _random_body(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.5:
        return json.dumps(_mutate_json(rng, _valid_body())).encode()
    if r < 0.6:
        text = json.dumps(_valid_body())
        return text[:rng.randrange(len(text))].encode()
    if r < 0.7:
        return rng.randbytes(rng.randint(0, 64))
    if r < 0.75:
        depth = rng.choice([100, 5000, 200000])
        key = rng.choice(["nested", "signature_name", "instances", "inputs"])
        return (f'{{"{key}": ' + "[" * depth + "]" * depth + "}").encode()
    if r < 0.85:
        return json.dumps({"inputs": _mutate_json(
            rng, {"x": [[[0.0] * 4] * 4], "seed": [[1, 2]]})}).encode()
    return rng.choice([b"", b" ", b"{}", b"[]", b"null", b'{"instances": 1}',
                       b'{"instances": [1]} trailing', b"{\"a\":NaN}",
                       b'{"instances": [{"x": 1, "seed": 2, "q": 3}]}',
                       b'{"signature_name": "generate", "instances": '
                       b'[[1, 2], [3, 4, 5]]}'])


def _random_target(rng: random.Random) -> str:
    return rng.choice([
        "/v1/models/vae:predict", "/v1/models/vae:predict",
        "/v1/models/vae/versions/1:predict", "/v1/models/vae/labels/x:predict",
        "/v1/models/vae:PREDICT", "/V1/MODELS/vae:predict",
        "/v1/models/vae/versions/99999999999999999999:predict",
        "/v1/models/vae:classify", "/v1/models/vae:regress",
        "/v1/models/vae", "/v1/models/vae/metadata", "/v1/models/vae/METADATA",
        "/v1/models/%ff%fe:predict", "/v1/models/a%2Fb", "/v1/models",
        "/v1/", "/v1", "/", "/index", "/v1/models/vae:predict?x=1",
        "/monitoring/prometheus/metrics", "/v1/models/vae?x=1",
        "/v1/models/" + "a" * 2000 + ":predict",
    ])


def _request(address, method: str, target: str, body: bytes,
             headers: dict) -> int:
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_rest_fuzz(server):
    address = server["rest"]
    rng = random.Random(11232026)
    valid = json.dumps(_valid_body()).encode()

    def predict_valid():
        conn = http.client.HTTPConnection(*address, timeout=30)
        conn.request("POST", "/v1/models/vae:predict", valid)
        response = conn.getresponse()
        text = response.read()
        conn.close()
        assert response.status == 200, text
        return text

    before = predict_valid()
    start, statuses = time.monotonic(), {}
    for case in range(REST_CASES):
        if time.monotonic() - start > TIME_BUDGET:
            break
        method = rng.choice(["POST"] * 6 + ["GET", "PUT", "PATCH", "DELETE",
                                            "HEAD", "OPTIONS", "FOO", "TRACE"])
        body = _random_body(rng)
        headers = {"Content-Length": str(len(body))}
        if rng.random() < 0.05:
            headers["Content-Length"] = rng.choice(["abc", "-5", "1e3", " "])
            body = b""
        if rng.random() < 0.05:
            headers["Content-Encoding"] = "gzip"
        if method == "OPTIONS" and rng.random() < 0.5:
            headers["Origin"] = "https://example.test"
        status = _request(address, method, _random_target(rng), body, headers)
        assert status != 500 and status < 500 or status in (501,), (
            case, method, status, body[:200])
        statuses[status] = statuses.get(status, 0) + 1
    assert case >= 200, f"only {case} cases within {TIME_BUDGET} s"
    assert statuses.get(400, 0) > REST_CASES // 4, statuses
    # A raw request line the HTTP layer cannot parse, then the server is fine.
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        sock.recv(4096)
    assert predict_valid() == before
