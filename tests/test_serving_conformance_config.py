"""The local server against tensorflow_model_server: flags, model config,
version directories and start-up order.

Each test names the TF Serving source (github.com/tensorflow/serving,
tensorflow_serving/...) and, where there is one, the test it follows.  Most
go through gRPC (ModelService) against a running server; flag parsing is
checked through `add_serve_arguments`, as `python -m serving.server` uses it.
"""

import argparse
import os
import socket
import threading

import grpc
import pytest

import serving_fixtures as fx

from google.protobuf import text_format
from serving import config as config_lib
from serving import manager as manager_lib
from serving import server as server_lib
from serving.config import ConfigError
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc)

pytestmark = pytest.mark.timeout(120)

StatusCode = grpc.StatusCode


def _args(argv):
    parser = argparse.ArgumentParser()
    server_lib.add_serve_arguments(parser)
    return parser.parse_args(argv)


def _options(argv):
    return server_lib.ServerOptions.from_args(_args(argv))


# ---------------------------------------------------------------------------
# Flags: model_servers/main.cc (tensorflow::Flag list), server.cc
# Server::BuildAndStart.
# ---------------------------------------------------------------------------

def test_every_main_cc_flag_is_accepted_with_its_default():
    # The flag list test_export_dockerfile checks the Dockerfile against.
    from test_export_dockerfile import MODEL_SERVER_FLAGS

    names = {name for name, *_ in server_lib.TF_SERVING_FLAGS}
    assert names == set(MODEL_SERVER_FLAGS)
    args = _args([])
    # Defaults of server.h Server::Options / main.cc.
    assert (args.port, args.rest_api_port, args.rest_api_timeout_in_ms) == (
        8500, 0, 30000)
    assert args.model_name == "default"
    assert args.file_system_poll_wait_seconds == 1
    assert args.enable_model_warmup is True
    assert args.enable_grpc_healthcheck_service is False
    assert args.saved_model_tags == "serve"
    assert args.load_retry_interval_micros == 60_000_000


@pytest.mark.parametrize("argv", [
    ["--rest_api_timeout_in_ms=5000", "--rest_api_enable_cors_support"],
    ["--rest_api_timeout_in_ms", "5000", "--rest_api_enable_cors_support=true"],
    ["--rest_api_timeout_in_ms=5000", "--rest_api_enable_cors_support=1"],
])
def test_flag_syntaxes(argv):
    # tsl command_line_flags.cc ParseBoolFlag / ParseIntFlag.
    args = _args(argv)
    assert args.rest_api_timeout_in_ms == 5000
    assert args.rest_api_enable_cors_support is True
    assert _args(["--rest_api_enable_cors_support=FALSE"]) \
        .rest_api_enable_cors_support is False


@pytest.mark.parametrize("argv", [
    ["--port=2147483648"],                 # not an int32 (SimpleAtoi)
    ["--load_retry_interval_micros=1e6"],  # no exponents
    ["--enable_batching=yes"],             # ParseBoolFlag: true/false/1/0
])
def test_bad_flag_values_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _args(argv)
    assert info.value.code == 2
    assert "Couldn't interpret value" in capsys.readouterr().err


def test_model_config_file_wins_over_model_name_and_base_path(tmp_path):
    # main.cc: "(If used, --model_name, --model_base_path are ignored.)"
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "a" '
                      'base_path: "/models/a" model_platform: "tensorflow" } }')
    options = _options(["--model_config_file", str(config),
                        "--model_name", "b", "--model_base_path", "/models/b"])
    assert [(m.name, m.model_base_path) for m in options.models] == [
        ("a", "/models/a")]


@pytest.mark.parametrize("argv,message", [
    (["--model_base_path=/m", "--use_alts_credentials",
      "--ssl_config_file=/ssl"],
     "Either use_alts_credentials must be false or ssl_config_file must be "
     "empty."),
    (["--model_base_path=/m", "--tensorflow_session_parallelism=1",
      "--tensorflow_intra_op_parallelism=1",
      "--tensorflow_inter_op_parallelism=1"],
     "Either configure server_options.tensorflow_session_parallelism or "
     "(server_options.tensorflow_intra_op_parallelism, "
     "server_options.tensorflow_inter_op_parallelism) separately. You cannot "
     "configure all."),
    # server_core.cc ValidateModelConfigList: BuildSingleModelConfig keeps
    # the path as given, and it must be absolute.
    (["--model_base_path=models/vae"],
     "Expected model default to have an absolute path or URI; got "
     "base_path()=models/vae"),
])
def test_start_up_checks_of_build_and_start(argv, message):
    with pytest.raises(ConfigError) as info:
        _options(argv)
    assert str(info.value) == message


def test_grpc_channel_arguments_as_parse_grpc_channel_args():
    # server.cc parseGrpcChannelArgs + BuildAndStart: int32 values as ints.
    parsed = config_lib.parse_grpc_channel_arguments(
        "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,a=b=c")
    assert parsed == [("grpc.max_connection_age_ms", 2000),
                      ("grpc.lb_policy_name", "grpclb"), ("a", "b")]
    assert config_lib.parse_grpc_channel_arguments("") == []
    with pytest.raises(ConfigError, match="'nokey'"):
        config_lib.parse_grpc_channel_arguments("a=1,nokey")


def test_monitoring_config_file_is_read_only_with_rest(tmp_path):
    # server.cc: the MonitoringConfig is parsed when --rest_api_port is set
    # and differs from --port; PrometheusExporter::kPrometheusPath default.
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text(
        'prometheus_config: { enable: true, path: "/monitoring/prometheus/'
        'metrics" }')
    base = ["--model_base_path=/m", f"--monitoring_config_file={monitoring}"]
    assert _options(base).metrics_path is None
    assert _options(base + ["--rest_api_port=8501"]).metrics_path == \
        "/monitoring/prometheus/metrics"
    monitoring.write_text("prometheus_config { enable: false }")
    assert _options(base + ["--rest_api_port=8501"]).metrics_path is None
    monitoring.write_text("prometheus_config { enable: true }")
    assert _options(base + ["--rest_api_port=8501"]).metrics_path == \
        "/monitoring/prometheus/metrics"
    monitoring.write_text("improperly formatted file")
    with pytest.raises(ConfigError, match="Invalid protobuf file"):
        _options(base + ["--rest_api_port=8501"])
    assert _options(["--model_base_path=/m"]).metrics_path is None


def test_bad_model_config_file(tmp_path):
    # tensorflow_model_server_test.py testBadModelConfig.
    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file")
    with pytest.raises(ConfigError) as info:
        _options([f"--model_config_file={config}"])
    assert str(info.value).startswith(f"Invalid protobuf file: '{config}'")


def test_custom_model_config_at_start_up_is_refused(tmp_path):
    # server.cc LoadCustomModelConfig (LOG(FATAL) there).
    config = tmp_path / "models.config"
    config.write_text("custom_model_config { }")
    with pytest.raises(ConfigError,
                       match="ModelServer does not yet support custom model "
                             "config."):
        _options([f"--model_config_file={config}"])


def test_empty_model_server_config_serves_nothing(tmp_path):
    # ServerCore::ReloadConfig: "Taking no action for empty config."
    config = tmp_path / "models.config"
    config.write_text("")
    assert _options([f"--model_config_file={config}"]).models == []


# ---------------------------------------------------------------------------
# Version directories: sources/storage_path/file_system_storage_path_source.cc
# ParseVersionNumber (absl::SimpleAtoi into int64).
# ---------------------------------------------------------------------------

def test_version_names_are_simple_atoi_int64(tmp_path):
    for name in ("1", "007", "+8", "-3", " 9 ", "²", "９９", "0x10", "1e3",
                 "99999999999999999999", "12a", ".export-1"):
        os.mkdir(tmp_path / name)
    (tmp_path / "5").write_text("a file named as a version")
    found = manager_lib.list_versions(str(tmp_path))
    assert sorted(found) == [-3, 1, 5, 7, 8, 9]
    assert found[9] == str(tmp_path / " 9 ")


# ---------------------------------------------------------------------------
# A running server: ModelService over gRPC.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    versions = fx.shared_versions()
    fx.copy_version(versions[2], str(root / "b"), 2)
    # Names SimpleAtoi does not read as int64: not versions, and polling
    # of "a" goes on around them.
    for name in ("²", "９９", "99999999999999999999"):
        fx.copy_version(versions[1], str(root / "a"), 1)
        os.replace(root / "a" / "1", root / "a" / name)
    fx.copy_version(versions[1], str(root / "a"), 1)
    socket_path = str(root / "grpc.sock")
    srv = fx.start_server_in_thread([
        f"--port={fx.free_port()}", "--model_name=a",
        f"--model_base_path={root / 'a'}", f"--grpc_socket_path={socket_path}",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=60000,"
        "grpc.lb_policy_name=grpclb",
        "--file_system_poll_wait_seconds=0.2"])
    channel = grpc.insecure_channel(srv.target)
    yield {"server": srv, "root": root, "socket": socket_path,
           "stub": model_service_pb2_grpc.ModelServiceStub(channel)}
    channel.close()
    srv.stop(grace=2)


def _status(stub, name, version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    response = stub.GetModelStatus(request, timeout=30)
    return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(
        s.state)) for s in response.model_version_status]


def _reload(stub, config_text):
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(config_text, request.config)
    return stub.HandleReloadConfigRequest(request, timeout=60)


def _config(root, *entries):
    """model_config_list text; entries are (name, extra text)."""
    return "model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{root / n}" {extra} }}'
        for n, extra in entries) + " }"


TF = 'model_platform: "tensorflow"'


def test_only_int64_version_names_are_served(served):
    # file_system_storage_path_source.cc: "²", "９９" and an int64 overflow
    # are skipped; GetModelStatus (get_model_status_impl.cc) stays OK.
    assert _status(served["stub"], "a") == [(1, "AVAILABLE")]


def test_grpc_over_a_unix_socket(served):
    # tensorflow_model_server_test.py testPredictUDS (--grpc_socket_path).
    with grpc.insecure_channel(f"unix:{served['socket']}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        assert _status(stub, "a") == [(1, "AVAILABLE")]


def test_health_service_only_with_its_flag(served):
    # server.cc: EnableDefaultHealthCheckService(enable_grpc_healthcheck_service).
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served["server"].target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert info.value.code() == StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("make,code,message", [
    # model_service_impl.cc HandleReloadConfigRequest: only ModelConfigList.
    (lambda root: "", StatusCode.INVALID_ARGUMENT,
     "ServerModelConfig type not supported by HandleReloadConfigRequest. "
     "Only ModelConfigList is currently supported"),
    (lambda root: "custom_model_config {}", StatusCode.INVALID_ARGUMENT,
     "ServerModelConfig type not supported by HandleReloadConfigRequest. "
     "Only ModelConfigList is currently supported"),
    # server_core_test.cc DuplicateModelNameInConfig.
    (lambda root: _config(root, ("a", TF), ("a", TF)),
     StatusCode.INVALID_ARGUMENT,
     "Illegal to list model a multiple times in config list"),
    # server_core_test.cc RelativePathFails / MixedAbsoluteRelativeFails.
    (lambda root: _config(root, ("a", TF)) .replace(
        f'"{root / "a"}"', '"relative/a"'), StatusCode.INVALID_ARGUMENT,
     "Expected model a to have an absolute path or URI; got "
     "base_path()=relative/a"),
    # server_core.cc GetPlatform.
    (lambda root: _config(root, ("a", TF), ("b", "")),
     StatusCode.INVALID_ARGUMENT,
     "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
     "ModelServerConfig::model_platform, model name is b"),
    # server_core_test.cc UnknownModelPlatform.
    (lambda root: _config(root, ("a", TF), ("b", 'model_platform: "foo"')),
     StatusCode.INVALID_ARGUMENT,
     "Model b requests unsupported platform foo"),
    # server_core_test.cc IllegalToChangeModelPlatform.
    (lambda root: _config(root, ("a", 'model_platform: "foo"')),
     StatusCode.INVALID_ARGUMENT,
     "Illegal to change a model's platform. For model a platform was "
     "tensorflow and new platform requested is foo"),
    # server_core_test.cc AssignLabelToUnavailableVersion.
    (lambda root: _config(root, ("a", TF + ' version_labels { key: "x" '
                                           'value: 7 }')),
     StatusCode.FAILED_PRECONDITION,
     "Request to assign label to version 7 of model a, which is not "
     "currently available for inference"),
])
def test_refused_reloads_change_nothing(served, make, code, message):
    with pytest.raises(grpc.RpcError) as info:
        _reload(served["stub"], make(served["root"]))
    assert info.value.code() == code
    assert info.value.details() == message
    assert _status(served["stub"], "a") == [(1, "AVAILABLE")]


def test_reloads_add_label_and_remove_models(served):
    stub, root = served["stub"], served["root"]
    # A label on an available version is fine (server_core.cc
    # UpdateModelVersionLabelMap); b is loaded before the answer.
    response = _reload(stub, _config(
        root, ("a", TF + ' version_labels { key: "stable" value: 1 }'),
        ("b", TF)))
    assert response.status.error_code == 0
    assert _status(stub, "b") == [(2, "AVAILABLE")]
    # An empty list unloads every model; their versions stay listed as END
    # (server_core_test.cc ReloadConfigUnloadsModels).
    response = _reload(stub, "model_config_list {}")
    assert response.status.error_code == 0
    fx.wait_for(lambda: _status(stub, "a") == [(1, "END")], 30,
                message="a to be unloaded")
    assert _status(stub, "b", 2) == [(2, "END")]
    # And a model can come back.
    _reload(stub, _config(root, ("a", TF)))
    assert _status(stub, "a") == [(1, "AVAILABLE")]


# ---------------------------------------------------------------------------
# Start-up: server.cc Server::BuildAndStart, server_core.cc ReloadConfig.
# ---------------------------------------------------------------------------

def test_labels_at_start_up_need_the_flag(tmp_path):
    # UpdateModelVersionLabelMap runs before the first versions load.
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "a"), 1)
    config = tmp_path / "models.config"
    config.write_text(_config(tmp_path, (
        "a", TF + ' version_labels { key: "stable" value: 1 }')))
    argv = ["--port=0", f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=0"]
    srv = server_lib.Server.from_args(_args(argv))
    try:
        with pytest.raises(ConfigError) as info:
            srv.start()
        assert info.value.code == "FAILED_PRECONDITION"
        assert str(info.value) == (
            "Request to assign label to version 1 of model a, which is not "
            "currently available for inference")
    finally:
        srv.stop(grace=0)
    srv = fx.start_server_in_thread(
        argv + ["--allow_version_labels_for_unavailable_models"])
    try:
        assert srv.manager.resolve(_spec("a", label="stable")).version == 1
    finally:
        srv.stop(grace=0)


def _spec(name, label=None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    if label:
        spec.version_label = label
    return spec


def test_a_model_that_fails_to_load_stops_the_start(tmp_path, caplog):
    # core/load_servables_fast.cc ConnectSourcesWithFastInitialLoad.
    fx.write_broken_version(str(tmp_path / "a"), 1)
    srv = server_lib.Server.from_args(_args([
        "--port=0", "--model_name=a", f"--model_base_path={tmp_path / 'a'}",
        "--max_num_load_retries=2", "--load_retry_interval_micros=1000",
        "--file_system_poll_wait_seconds=0"]))
    try:
        with pytest.raises(ConfigError) as info:
            srv.start()
    finally:
        srv.stop(grace=0)
    assert info.value.code == "UNKNOWN"
    assert str(info.value).startswith(
        "1 servable(s) did not become available: {{{name: a version: 1} due "
        "to error: DATA_LOSS: ")
    assert str(info.value).endswith("}, }")
    # core/loader_harness.cc Load through util/retrier.cc Retry: 1 + 2 tries.
    assert sum("Loading servable: {name: a version: 1} failed" in r.message
               for r in caplog.records) == 3


def _refused(port) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_ports_answer_only_once_the_models_are_loaded(tmp_path):
    # server.cc BuildAndStart: ServerCore::Create (initial load) comes
    # before the gRPC and HTTP servers are built.
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "a"), 1)
    grpc_port, rest_port = fx.free_port(), fx.free_port()
    srv = server_lib.Server.from_args(_args([
        f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        "--model_name=a", f"--model_base_path={tmp_path / 'a'}",
        "--file_system_poll_wait_seconds=0"]))
    loading, release = threading.Event(), threading.Event()

    def slow_warmup(servable):
        loading.set()
        release.wait(60)
    srv.manager._warmup = slow_warmup
    starter = threading.Thread(target=srv.start)
    starter.start()
    try:
        assert loading.wait(60)
        assert _refused(rest_port) and _refused(grpc_port)
        release.set()
        starter.join(60)
        assert not _refused(rest_port) and not _refused(grpc_port)
    finally:
        release.set()
        starter.join(60)
        srv.stop(grace=0)


def test_saved_model_tags_choose_the_meta_graph(tmp_path):
    # server.cc: --saved_model_tags split on ","; the TF loader wants a
    # MetaGraphDef with exactly that tag set.
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "a"), 1)
    srv = server_lib.Server.from_args(_args([
        "--port=0", "--model_name=a", f"--model_base_path={tmp_path / 'a'}",
        "--saved_model_tags=serve,gpu", "--max_num_load_retries=0",
        "--file_system_poll_wait_seconds=0"]))
    try:
        with pytest.raises(ConfigError) as info:
            srv.start()
    finally:
        srv.stop(grace=0)
    assert "NOT_FOUND: Could not find meta graph def matching supplied tags: " \
           "{ serve gpu }." in str(info.value)


def test_a_busy_rest_port_leaves_grpc_serving(tmp_path):
    # server.cc BuildAndStart: "Failed to start HTTP Server at ..." is only
    # logged; the gRPC server goes on.
    fx.copy_version(fx.shared_versions()[1], str(tmp_path / "a"), 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        srv = fx.start_server_in_thread([
            "--port=0", f"--rest_api_port={busy.getsockname()[1]}",
            "--model_name=a", f"--model_base_path={tmp_path / 'a'}",
            "--file_system_poll_wait_seconds=0"])
        try:
            assert srv.rest_port is None
            with grpc.insecure_channel(srv.target) as channel:
                stub = model_service_pb2_grpc.ModelServiceStub(channel)
                assert _status(stub, "a") == [(1, "AVAILABLE")]
        finally:
            srv.stop(grace=0)


# ---------------------------------------------------------------------------
# The Session of each loaded version: server.cc BuildAndStart fills
# session_bundle_config.session_config; predict_util.cc runs each signature
# as one Session::Run.
# ---------------------------------------------------------------------------

def _session_config(tmp_path, *flags):
    return _options(["--model_name=a", f"--model_base_path={tmp_path}",
                     *flags]).session_config


def test_session_config_is_built_as_build_and_start_builds_it(tmp_path):
    # server.cc: the --tensorflow_session_config_file text proto first, then
    # the GPU memory fraction, then intra/inter-op threads if either is set,
    # else --tensorflow_session_parallelism for both, so a thread count in
    # the file is overwritten even by the flags' default 0.
    path = tmp_path / "session.pbtxt"
    path.write_text("intra_op_parallelism_threads: 7 "
                    "allow_soft_placement: true "
                    "gpu_options { allow_growth: true }")
    config = _session_config(tmp_path, f"--tensorflow_session_config_file={path}")
    assert config.allow_soft_placement and config.gpu_options.allow_growth
    assert (config.intra_op_parallelism_threads,
            config.inter_op_parallelism_threads) == (0, 0)
    config = _session_config(tmp_path, "--tensorflow_session_parallelism=3",
                             "--per_process_gpu_memory_fraction=0.25")
    assert (config.intra_op_parallelism_threads,
            config.inter_op_parallelism_threads) == (3, 3)
    assert config.gpu_options.per_process_gpu_memory_fraction == 0.25
    config = _session_config(tmp_path, "--tensorflow_session_parallelism=3",
                             "--tensorflow_intra_op_parallelism=2")
    assert (config.intra_op_parallelism_threads,
            config.inter_op_parallelism_threads) == (2, 0)


def test_a_bad_session_config_file_stops_the_start(tmp_path):
    # server.cc: ParseProtoTextFile's error is BuildAndStart's.
    path = tmp_path / "session.pbtxt"
    path.write_text("no_such_field: 1")
    with pytest.raises(ConfigError, match="Invalid protobuf file") as info:
        _session_config(tmp_path, f"--tensorflow_session_config_file={path}")
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="--tensorflow_session_config_file"):
        _session_config(tmp_path, f"--tensorflow_session_config_file={path}.x")


def test_versions_run_in_sessions_with_the_server_config(tmp_path):
    import numpy as np
    import tensorflow as tf

    from serving.client import Client

    source = fx.shared_versions()[1]
    fx.copy_version(source, str(tmp_path / "a"), 1)
    srv = fx.start_server_in_thread([
        "--port=0", "--model_name=a", f"--model_base_path={tmp_path / 'a'}",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
        "--file_system_poll_wait_seconds=0"])
    try:
        spec = get_model_status_pb2.GetModelStatusRequest().model_spec
        spec.name = "a"
        servable = srv.manager.resolve(spec)
        assert servable.session_config.intra_op_parallelism_threads == 1
        assert servable.session_config.inter_op_parallelism_threads == 1
        z = np.random.default_rng(0).normal(
            size=(5, fx.LATENT_DIM)).astype(np.float32)
        with Client(f"127.0.0.1:{srv.port}", "a", timeout=30) as client:
            served = client.decode(z)
        reference = fx.load_reference(source).signatures["decode"](
            z=tf.constant(z))["mean"].numpy()
        # The same graph and kernels as the in-process function: only the
        # executor differs.
        np.testing.assert_allclose(served, reference, rtol=1e-6, atol=1e-7)
    finally:
        srv.stop(grace=0)
