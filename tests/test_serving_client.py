"""The clients against scripted servers: retries, limits, encodings."""

import concurrent.futures
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

import serving_fixtures as fx

from serving import retry, tensors
from serving.client import Client, connect
from serving.errors import ServingError
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

pytestmark = pytest.mark.timeout(60)


class _Scripted(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict with scripted failures, then echoes the input."""

    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0
        self.lock = threading.Lock()

    def Predict(self, request, context):
        with self.lock:
            self.calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            context.abort(*failure)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 7
        response.model_spec.signature_name = request.model_spec.signature_name
        z = tensors.to_numpy(request.inputs["z"])
        # Answer in float_val, as the real TF Serving does by default.
        out = response.outputs["mean"]
        out.dtype = request.inputs["z"].dtype
        out.tensor_shape.CopyFrom(request.inputs["z"].tensor_shape)
        out.float_val.extend((z * 2).reshape(-1).tolist())
        return response


@pytest.fixture
def scripted():
    servers = []

    def start(failures):
        servicer = _Scripted(failures)
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


def test_unavailable_is_retried_by_the_client(scripted):
    unavailable = (grpc.StatusCode.UNAVAILABLE, "busy")
    servicer, target = scripted([unavailable, unavailable])
    z = np.array([[1.0, -2.0]], np.float32)
    with Client(target, "m", timeout=10) as client:
        result = client.call("decode", {"z": z})
    assert servicer.calls == 3          # two refusals, retried once each
    np.testing.assert_array_equal(result.outputs["mean"], z * 2)
    assert result.outputs["mean"].dtype == np.float32
    assert result.model_version == 7


def test_retries_are_bounded_and_other_codes_are_not_retried(scripted):
    servicer, target = scripted([(grpc.StatusCode.UNAVAILABLE, "down")] * 10)
    with Client(target, "m", timeout=10, max_attempts=3) as client:
        with pytest.raises(ServingError) as info:
            client.decode(np.zeros((1, 2)))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "down"
    assert servicer.calls == 3

    servicer, target = scripted([(grpc.StatusCode.INVALID_ARGUMENT, "bad z")])
    with Client(target, "m", timeout=10) as client:
        with pytest.raises(ServingError) as info:
            client.decode(np.zeros((1, 2)))
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.INVALID_ARGUMENT, "bad z")
    assert servicer.calls == 1


def test_every_call_has_a_deadline(scripted):
    release = threading.Event()

    class Slow(_Scripted):
        def Predict(self, request, context):
            release.wait(10)
            return predict_pb2.PredictResponse()

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Slow([]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", "m", timeout=0.3) as client:
            with pytest.raises(ServingError) as info:
                client.decode(np.zeros((1, 2)))
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()
        server.stop(0)


def test_the_retry_loop_is_bounded_backs_off_and_keeps_the_deadline():
    down = ServingError(grpc.StatusCode.UNAVAILABLE, "down")
    calls, waits = [], []

    def refuse(timeout):
        calls.append(timeout)
        raise down

    policy = retry.RetryPolicy(max_retries=3, initial_backoff=0.01,
                               max_backoff=0.02)
    assert list(policy.delays()) == [0.01, 0.02, 0.02]
    with pytest.raises(ServingError) as info:
        retry.call_with_retries(refuse, policy,
                                on_retry=lambda e, n, d: waits.append((n, d)))
    assert info.value is down
    assert len(calls) == 4 and calls[0] is None      # attempts = retries + 1
    assert waits == [(2, 0.01), (3, 0.02), (4, 0.02)]

    # No retry would end before the deadline: the first error is the answer.
    calls.clear()
    start = time.monotonic()
    with pytest.raises(ServingError):
        retry.call_with_retries(refuse, retry.RetryPolicy(initial_backoff=5,
                                                          max_backoff=5),
                                deadline=start + 1)
    assert len(calls) == 1 and 0 < calls[0] <= 1
    assert time.monotonic() - start < 1

    # Codes outside the policy are not retried.
    down = ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    calls.clear()
    with pytest.raises(ServingError) as info:
        retry.call_with_retries(refuse, policy)
    assert info.value is down and len(calls) == 1
    with pytest.raises(ValueError, match="max_attempts"):
        Client("127.0.0.1:1", "m", max_attempts=0)


def test_the_channel_has_no_retry_policy_of_its_own(scripted):
    # One retry layer: with retries off in the client, one refusal is one call.
    servicer, target = scripted([(grpc.StatusCode.UNAVAILABLE, "busy")])
    with Client(target, "m", timeout=10, max_attempts=1) as client:
        with pytest.raises(ServingError) as info:
            client.decode(np.zeros((1, 2)))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 1


def test_the_rest_client_imports_no_tensorflow():
    code = ("import sys; from serving.rest_client import RestClient; "
            "assert 'tensorflow' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('tensorflow'))[:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=fx.REPO_ROOT,
                            env=fx.subprocess_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", "m", version=1, version_label="stable")
    with pytest.raises(ValueError, match="timeout"):
        Client("127.0.0.1:1", "m", timeout=0)
    with pytest.raises(ValueError, match="protocol"):
        connect("127.0.0.1:1", "m", protocol="soap")


def test_tensor_codec_round_trip_and_val_fields():
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3),
                  np.array([[1, 2]], np.int32), np.zeros((0, 4), np.float64),
                  np.array([b"a", b"bc"], dtype=object)):
        proto = tensors.to_tensor_proto(array)
        back = tensors.to_numpy(proto)
        assert back.shape == array.shape
        np.testing.assert_array_equal(back, array)
    proto = tensors.to_tensor_proto(np.zeros((2, 2), np.float32))
    assert proto.tensor_content and not proto.float_val
    # A short value list is extended with its last value, as TensorFlow does.
    short = predict_pb2.PredictRequest().inputs["x"]
    short.dtype = proto.dtype
    short.tensor_shape.CopyFrom(proto.tensor_shape)
    short.float_val.extend([1.0, 2.0])
    np.testing.assert_array_equal(tensors.to_numpy(short),
                                  [[1.0, 2.0], [2.0, 2.0]])
    # A long one is cut to the shape (tensor.cc FromProtoField copies
    # min(N, values) and ignores the rest).
    short.float_val.extend([3.0, 4.0, 5.0])
    np.testing.assert_array_equal(tensors.to_numpy(short),
                                  [[1.0, 2.0], [3.0, 4.0]])
    # A huge shape with (almost) no values is refused, not allocated.
    huge = predict_pb2.PredictRequest().inputs["x"]
    huge.dtype = proto.dtype
    huge.tensor_shape.dim.add(size=1 << 40)
    huge.float_val.append(1.0)
    with pytest.raises(tensors.TensorParseError, match="is refused"):
        tensors.to_numpy(huge, tensors.MAX_REQUEST_ELEMENTS)


def test_large_messages_pass_both_ways(tmp_path):
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "vae"), 1)
    srv = fx.start_server_in_thread([
        "--port", "0", "--model_name", "vae", "--model_base_path",
        str(tmp_path / "vae"), "--file_system_poll_wait_seconds", "-1"])
    try:
        srv.manager.poll_once()
        # 100k rows: 0.8 MB in, 6.4 MB out, past gRPC's 4 MB default limit.
        z = np.random.default_rng(0).normal(size=(100_000, 2)).astype(np.float32)
        with Client(srv.target, "vae", timeout=60) as client:
            mean = client.decode(z)
        assert mean.shape == (100_000, *fx.DATA_SHAPE)
        expected = fx.reference_outputs(fx.shared_versions()[1], "decode",
                                        {"z": z[-3:]})["mean"]
        np.testing.assert_allclose(mean[-3:], expected, rtol=1e-6, atol=1e-6)
    finally:
        srv.stop(grace=1)
