"""Starting and stopping the local server as a process: flags and SIGTERM."""

import argparse
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest

import serving_fixtures as fx

from serving import server as server_lib
from serving.client import Client
from serving.config import ConfigError
from serving.errors import ServingError

pytestmark = pytest.mark.timeout(150)


def _options(argv):
    parser = argparse.ArgumentParser()
    server_lib.add_serve_arguments(parser)
    return server_lib.ServerOptions.from_args(parser.parse_args(argv))


@pytest.mark.parametrize("argv,fragment", [
    (["--port", "8500"], "Both server_options.model_base_path and "
                         "server_options.model_config_file are empty!"),
    (["--model_base_path", "/m", "--port", "70000"], "--port must be in "
                                                     "[0, 65535]; got 70000"),
    (["--model_base_path", "/m", "--batching_parameters_file", "/b"],
     "is set without setting server_options.enable_batching to true."),
    (["--model_config_file", "/does/not/exist"], "cannot read "
                                                 "--model_config_file"),
])
def test_bad_flags_are_named(argv, fragment):
    with pytest.raises(ConfigError) as info:
        _options(argv)
    assert fragment in str(info.value)


def test_bad_flags_exit_with_usage_status():
    result = subprocess.run(
        [sys.executable, "-m", "serving.server", "--model_base_path", "/m",
         "--rest_api_port", "-1"], cwd=fx.REPO_ROOT, env=fx.subprocess_env(),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--rest_api_port must be in [0, 65535]; got -1" in result.stderr


def test_model_config_file_is_read(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("""
model_config_list {
  config { name: "a" base_path: "/models/a" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 2 } } }
  config { name: "b" base_path: "/models/b" model_platform: "tensorflow"
           model_version_policy { all {} }
           version_labels { key: "stable" value: 3 } }
}""")
    models = {m.name: m for m in _options(["--model_config_file",
                                           str(config)]).models}
    assert models["a"].policy.select([1, 2, 3]) == {2, 3}
    assert models["b"].policy.select([1, 2, 3]) == {1, 2, 3}
    assert models["b"].label_map == {"stable": 3}
    config.write_text('model_config_list { config { name: "a" '
                      'base_path: "/m" model_platform: "onnx" } }')
    with pytest.raises(ConfigError,
                       match="Model a requests unsupported platform onnx"):
        _options(["--model_config_file", str(config)])


def test_busy_port_is_reported(tmp_path):
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "vae"), 1)
    argv = ["--port", "0", "--model_name", "vae", "--model_base_path",
            str(tmp_path / "vae"), "--file_system_poll_wait_seconds", "-1"]
    first = fx.start_server_in_thread(argv)
    try:
        argv[1] = str(first.port)
        with pytest.raises(OSError, match=f"{first.port}"):
            fx.start_server_in_thread(argv)
    finally:
        first.stop(grace=1)


def _inflight(rest_port) -> float:
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    m = re.search(r"^tfp_vae_serving_inflight_requests (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_sigterm_drains_the_request_in_flight(tmp_path):
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "vae"), 1)
    params = tmp_path / "batching.txt"
    # A lone request waits 4 s in the batch queue: long enough to be in
    # flight when SIGTERM arrives.
    params.write_text("max_batch_size { value: 64 } "
                      "batch_timeout_micros { value: 4000000 } "
                      "num_batch_threads { value: 1 }")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")
    proc = fx.ServerProcess([
        "--port", "0", "--rest_api_port", str(fx.free_port()),
        "--monitoring_config_file", str(monitoring),
        "--model_name", "vae", "--model_base_path", str(tmp_path / "vae"),
        "--enable_batching", "--batching_parameters_file", str(params)],
        str(tmp_path / "server.log"))
    try:
        z = fx.example_inputs(3)["decode"]["z"]
        client = Client(proc.target, "vae", timeout=30)
        future = client.predict_future("decode", {"z": z})
        fx.wait_for(lambda: _inflight(proc.rest_port) == 1, 20,
                    message="the request to reach the server")
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # While draining, new calls are refused.
        with Client(proc.target, "vae", timeout=5, max_attempts=2) as late:
            with pytest.raises(ServingError) as info:
                late.decode(z)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert proc.proc.poll() is None          # still draining
        mean = future.result(timeout=30)["mean"]
        expected = fx.reference_outputs(fx.shared_versions()[1], "decode",
                                        {"z": z})["mean"]
        np.testing.assert_allclose(mean, expected, rtol=1e-6, atol=1e-6)
        assert proc.proc.wait(30) == 0
        log = proc.log_text()
        assert "Received SIGTERM" in log
        assert "draining 1 request(s) in flight" in log
        assert "Server stopped" in log
        client.close()
    finally:
        proc.kill()


def test_model_config_changes_are_applied(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.apis import (model_management_pb2,
                                         model_service_pb2_grpc)

    versions = fx.shared_versions()
    fx.copy_version(versions[1], str(tmp_path / "a"), 1)
    fx.copy_version(versions[2], str(tmp_path / "b"), 2)
    config = tmp_path / "models.config"

    def config_text(names):
        return "model_config_list { " + " ".join(
            f'config {{ name: "{n}" base_path: "{tmp_path / n}" '
            f'model_platform: "tensorflow" }}'
            for n in names) + " }"

    config.write_text(config_text(["a"]))
    srv = fx.start_server_in_thread([
        "--port", "0", "--model_config_file", str(config),
        "--model_config_file_poll_wait_seconds", "0.2",
        "--file_system_poll_wait_seconds", "0.2"])
    z = fx.example_inputs(2)["decode"]["z"]
    try:
        with Client(srv.target, "b", timeout=10) as b:
            with pytest.raises(ServingError) as info:
                b.status()
            assert info.value.code == grpc.StatusCode.NOT_FOUND
            # The config file changes: model b appears.
            config.write_text(config_text(["a", "b"]))
            fx.wait_for(lambda: _available(b), 30, message="model b")
            assert b.call("decode", {"z": z}).model_version == 2
        # ModelService.HandleReloadConfigRequest: only b remains.
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(config_text(["b"]), request.config)
        with grpc.insecure_channel(srv.target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            response = stub.HandleReloadConfigRequest(request, timeout=30)
        assert response.status.error_code == 0
        with Client(srv.target, "a", timeout=10) as a:
            with pytest.raises(ServingError) as info:
                a.decode(z)
        assert info.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        srv.stop(grace=1)


def _available(client) -> bool:
    try:
        return any(s.state == "AVAILABLE" for s in client.status())
    except ServingError:
        return False
