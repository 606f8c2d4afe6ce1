"""gRPC front end: PredictionService, ModelService and the health service."""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from tensorflow_serving.apis import model_management_pb2

from serving import config as config_lib
from serving import errors
from serving.core import ServingCore

logger = logging.getLogger(__name__)

# TF Serving accepts messages up to INT32_MAX bytes.
MAX_MESSAGE_BYTES = 2**31 - 1
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


def _handle(core: ServingCore, api: str, fn, request, context):
    model_name = _model_name(request)
    try:
        with core.track(api, model_name):
            return fn(request)
    except errors.ServingError as e:
        message = e.message
        if len(message) > 1024:          # as TF Serving's ToGRPCStatus
            message = message[:1024] + "...TRUNCATED"
        context.abort(e.code, message)
    except Exception as e:  # noqa: BLE001 - a request never kills the server
        logger.exception("%s failed", api)
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


def _model_name(request) -> str:
    spec = getattr(request, "model_spec", None)
    if spec is not None:
        return spec.name
    tasks = getattr(request, "tasks", None)
    return tasks[0].model_spec.name if tasks else ""


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def Predict(self, request, context):
        return _handle(self._core, "Predict", self._core.predict, request,
                       context)

    def GetModelMetadata(self, request, context):
        return _handle(self._core, "GetModelMetadata",
                       self._core.get_model_metadata, request, context)

    def Classify(self, request, context):
        return _handle(self._core, "Classify", self._core.classify, request,
                       context)

    def Regress(self, request, context):
        return _handle(self._core, "Regress", self._core.regress, request,
                       context)

    def MultiInference(self, request, context):
        return _handle(self._core, "MultiInference",
                       self._core.multi_inference, request, context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request, context):
        return _handle(self._core, "GetModelStatus",
                       self._core.get_model_status, request, context)

    def HandleReloadConfigRequest(self, request, context):
        return _handle(self._core, "HandleReloadConfigRequest",
                       lambda r: handle_reload_config_request(
                           self._core.manager, r), request, context)


def handle_reload_config_request(manager, request):
    """ModelServiceImpl::HandleReloadConfigRequest + ServerCore::ReloadConfig.

    Only a model_config_list is accepted (an empty request too is refused);
    the list is validated before anything changes, then applied and newly
    added models loaded before the answer.  A failure is the RPC's status.
    """
    config = request.config
    if config.WhichOneof("config") != "model_config_list":
        raise errors.invalid_argument(
            "ServerModelConfig type not supported by "
            "HandleReloadConfigRequest. Only ModelConfigList is currently "
            "supported")
    for index, mc in enumerate(config.model_config_list.config):
        logger.info("Config entry index : %d path : %s name : %s platform : "
                    "%s", index, mc.base_path, mc.name, mc.model_platform)
    try:
        manager.reload_config_list(config.model_config_list)
    except config_lib.ConfigError as e:
        logger.error("ServerCore::ReloadConfig failed: %s", e)
        raise errors.ServingError(errors.code_from_name(e.code),
                                  str(e)) from e
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = 0
    return response


class GrpcFrontEnd:
    """A grpc.Server with the TF Serving services and the health service."""

    def __init__(self, core: ServingCore, host: str, port: int,
                 max_threads: int, socket_path: str = "",
                 channel_arguments: tuple = (), credentials=None,
                 health_service: bool = True):
        # As TF Serving's BuildAndStart: the message size limits first, so a
        # --grpc_channel_arguments entry can override them.
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # One server per port: a second one must fail to bind.
            ("grpc.so_reuseport", 0),
        ]
        options = [o for o in options
                   if o[0] not in {k for k, _ in channel_arguments}]
        options.extend(channel_arguments)
        self.server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=max_threads, thread_name_prefix="grpc"),
            options=options, maximum_concurrent_rpcs=None)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(core), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(core), self.server)
        self.health = None
        if health_service:
            self.health = health.HealthServicer(experimental_non_blocking=True)
            health_pb2_grpc.add_HealthServicer_to_server(self.health,
                                                         self.server)
        self.port = None
        if port:
            self.port = self._listen(f"{_bracket(host)}:{port}", credentials)
        elif not socket_path:
            # 0 binds a free port (the log says which) when no socket is set.
            self.port = self._listen(f"{_bracket(host)}:0", credentials)
        self.socket_path = socket_path
        if socket_path:
            self._listen(f"unix:{socket_path}", credentials)

    def _listen(self, address: str, credentials) -> int:
        try:
            if credentials is None:
                bound = self.server.add_insecure_port(address)
            else:
                bound = self.server.add_secure_port(address, credentials)
        except RuntimeError as e:
            raise OSError(f"cannot listen for gRPC on {address}: {e}") from e
        if not bound:
            raise OSError(f"cannot listen for gRPC on {address} (address in "
                          f"use?)")
        return bound

    def start(self) -> None:
        self.server.start()
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        if self.health is None:
            return
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", PREDICTION_SERVICE, MODEL_SERVICE,
                        "PredictionService", "ModelService"):
            self.health.set(service, status)

    def begin_stop(self, grace: float) -> threading.Event:
        """Refuses new calls; the event is set once calls in flight finish
        (or `grace` seconds pass)."""
        self.set_serving(False)
        return self.server.stop(grace)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
