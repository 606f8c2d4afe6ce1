"""gRPC front end: PredictionService, ModelService and the health service."""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

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
                       self._core.reload_config, request, context)


class GrpcFrontEnd:
    """A grpc.Server with the TF Serving services and the health service."""

    def __init__(self, core: ServingCore, host: str, port: int,
                 max_threads: int):
        self.server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=max_threads, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # One server per port: a second one must fail to bind.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=None)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(core), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(core), self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"{_bracket(host)}:{port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"cannot listen for gRPC on {address}: {e}") from e
        if not self.port:
            raise OSError(f"cannot listen for gRPC on {address} (address in "
                          f"use?)")

    def start(self) -> None:
        self.server.start()
        self.set_serving(True)

    def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
            self.health.set(service, status)

    def begin_stop(self, grace: float) -> threading.Event:
        """Refuses new calls; the event is set once calls in flight finish
        (or `grace` seconds pass)."""
        self.set_serving(False)
        return self.server.stop(grace)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
