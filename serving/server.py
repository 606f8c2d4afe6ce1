"""The local model server: TF Serving's protocol, flags and directory layout.

    python -m serving.server --port 8500 --rest_api_port 8501 \\
        --model_name vae --model_base_path /models/vae

serves every SavedModel under ``BASE/<integer version>/`` through the gRPC
PredictionService / ModelService (and, with --enable_grpc_healthcheck_service,
the standard health service) and, if ``--rest_api_port`` is set, TF Serving's
REST API.  Every flag of tensorflow_model_server is accepted
(docs/serving-flags.md says which have no effect here).  It listens on
127.0.0.1 unless ``--host`` says otherwise.  SIGTERM (or SIGINT) stops
accepting requests, lets the ones in flight finish, then exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from typing import Optional

from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving.config import BatchingParameters, ConfigError

logger = logging.getLogger("serving.server")


NO_EFFECT = "Accepted for compatibility; no effect in the local server"


def _bool_flag(text: str) -> bool:
    """tsl ParseBoolFlag: true/false (any case), 1/0."""
    value = text.strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise argparse.ArgumentTypeError(f"Couldn't interpret value {text} as a "
                                     f"bool (expected true, false, 1 or 0)")


def _int_flag(bits: int):
    def parse(text: str) -> int:
        value = config_lib.parse_int(text, bits)
        if value is None:
            raise argparse.ArgumentTypeError(
                f"Couldn't interpret value {text} as an int{bits}")
        return value
    parse.__name__ = f"int{bits}"
    return parse


_INT32, _INT64 = _int_flag(32), _int_flag(64)


def _cpus() -> int:
    return os.cpu_count() or 1


# tensorflow_model_server's flags (model_servers/main.cc), in its order:
# (name, type, default, help).  Types: "bool", "int32", "int64", "float",
# "string", "seconds" (an int32 in TF Serving; fractions are accepted here).
# A help text starting with NO_EFFECT says why the flag changes nothing here.
TF_SERVING_FLAGS = (
    ("port", "int32", 8500,
     "TCP port to listen on for gRPC API. 0 picks a free port (the log says "
     "which) unless --grpc_socket_path is set, then gRPC listens on the "
     "socket only."),
    ("grpc_socket_path", "string", "",
     "If non-empty, listen to a UNIX socket for gRPC API on the given path. "
     "Can be either relative or absolute path."),
    ("rest_api_port", "int32", 0,
     "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will "
     "not be exported. This port must be different than the one specified "
     "in --port."),
    ("rest_api_num_threads", "int32", 4 * _cpus(),
     NO_EFFECT + ": the REST server starts one thread per connection."),
    ("rest_api_timeout_in_ms", "int32", 30000,
     "Timeout for HTTP/REST API calls (bounds the model run of predict, "
     "classify and regress; <= 0: none)."),
    ("rest_api_enable_cors_support", "bool", False,
     "Enable CORS headers in response"),
    ("enable_batching", "bool", False, "enable batching"),
    ("allow_version_labels_for_unavailable_models", "bool", False,
     "If true, allows assigning unused version labels to models that are "
     "not available yet."),
    ("batching_parameters_file", "string", "",
     "If non-empty, read an ascii BatchingParameters protobuf from the "
     "supplied file name and use the contained values instead of the "
     "defaults."),
    ("enable_per_model_batching_parameters", "bool", False,
     NO_EFFECT + ": batching_params.pbtxt in a SavedModel is not read."),
    ("model_config_file", "string", "",
     "If non-empty, read an ascii ModelServerConfig protobuf from the "
     "supplied file name, and serve the models in that file. (If used, "
     "--model_name, --model_base_path are ignored.)"),
    ("model_config_file_poll_wait_seconds", "seconds", 0,
     "Interval in seconds between each poll of the filesystem for "
     "model_config_file. If unset or set to zero, poll will be done exactly "
     "once and not periodically."),
    ("model_name", "string", "default",
     "name of model (ignored if --model_config_file flag is set)"),
    ("model_base_path", "string", "",
     "path to export (ignored if --model_config_file flag is set, otherwise "
     "required); absolute, as TF Serving requires"),
    ("num_load_threads", "int32", 0,
     NO_EFFECT + ": versions load one at a time."),
    ("num_unload_threads", "int32", 0,
     NO_EFFECT + ": versions unload one at a time."),
    ("max_num_load_retries", "int32", 5,
     "maximum number of times it retries loading a model after the first "
     "failure, before giving up. If set to 0, a load is attempted only once. "
     "Default: 5"),
    ("load_retry_interval_micros", "int64", 60 * 1000 * 1000,
     "The interval, in microseconds, between each servable load retry. If "
     "set negative, it doesn't wait. Default: 1 minute"),
    ("file_system_poll_wait_seconds", "seconds", 1,
     "Interval in seconds between each poll of the filesystem for new model "
     "version. If set to zero poll will be exactly done once and not "
     "periodically. Setting this to negative value will disable polling "
     "entirely."),
    ("flush_filesystem_caches", "bool", True,
     NO_EFFECT + ": the local file system has no caches to flush."),
    ("tensorflow_session_parallelism", "int64", 0,
     "Threads for each loaded version's Session, used for both its intra-op "
     "and inter-op pools when neither of those flags is set; 0 lets "
     "TensorFlow choose."),
    ("tensorflow_session_config_file", "string", "",
     "Text ConfigProto applied to every loaded version's Session; the "
     "thread-count flags are applied on top of it."),
    ("tensorflow_intra_op_parallelism", "int64", 0,
     "Threads one op may use (the Session's intra-op pool); 0 lets "
     "TensorFlow choose."),
    ("tensorflow_inter_op_parallelism", "int64", 0,
     "Threads for running independent ops at once (the Session's inter-op "
     "pool); 0 lets TensorFlow choose. Requests run their graph in their "
     "own thread, so this pool serves only ops that TensorFlow defers to "
     "it."),
    ("use_alts_credentials", "bool", False,
     "Use Google ALTS credentials"),
    ("ssl_config_file", "string", "",
     "If non-empty, read an ascii SSLConfig protobuf from the supplied file "
     "name and set up a secure gRPC channel"),
    ("platform_config_file", "string", "",
     NO_EFFECT + ": only the 'tensorflow' platform is served."),
    ("per_process_gpu_memory_fraction", "float", 0.0,
     "Share of each GPU's memory the Sessions may take, between 0 and 1; 0 "
     "lets TensorFlow grow as needed. Set in every Session's gpu_options; "
     "no effect on a machine without a GPU."),
    ("saved_model_tags", "string", "serve",
     "Comma-separated set of tags corresponding to the meta graph def to "
     "load from SavedModel."),
    ("grpc_channel_arguments", "string", "",
     "A comma separated list of arguments to be passed to the grpc server. "
     "(e.g. grpc.max_connection_age_ms=2000)"),
    ("grpc_max_threads", "int32", 4 * _cpus(),
     "Max grpc server threads to handle grpc messages."),
    ("enable_model_warmup", "bool", True,
     "Enables model warmup, which triggers lazy initializations (such as TF "
     "optimizations) at load time, to reduce first request latency."),
    ("num_request_iterations_for_warmup", "int32", 0,
     NO_EFFECT + ": each warmup record is replayed once."),
    ("version", "bool", False, "Display version"),
    ("monitoring_config_file", "string", "",
     "If non-empty, read an ascii MonitoringConfig protobuf from the "
     "supplied file name (serves Prometheus metrics on the REST port)"),
    ("remove_unused_fields_from_bundle_metagraph", "bool", True,
     NO_EFFECT + ": metadata is read from saved_model.pb as written."),
    ("prefer_tflite_model", "bool", False,
     NO_EFFECT + ": only SavedModels are served."),
    ("num_tflite_pools", "int32", _cpus(),
     NO_EFFECT + ": only SavedModels are served."),
    ("num_tflite_interpreters_per_pool", "int32", 1,
     NO_EFFECT + ": only SavedModels are served."),
    ("enable_signature_method_name_check", "bool", False,
     NO_EFFECT + ": the method_name checks are not made."),
    ("xla_cpu_compilation_enabled", "bool", False,
     NO_EFFECT + ": TensorFlow's own XLA defaults apply."),
    ("xla_gpu_compilation_enabled", "bool", False,
     NO_EFFECT + ": TensorFlow's own XLA defaults apply."),
    ("enable_profiler", "bool", True,
     NO_EFFECT + ": no ProfilerService is registered."),
    ("thread_pool_factory_config_file", "string", "",
     NO_EFFECT + ": no custom thread pools."),
    ("mixed_precision", "string", "",
     NO_EFFECT + ": models run as exported."),
    ("skip_initialize_tpu", "bool", False,
     NO_EFFECT + ": no TPU support."),
    ("enable_grpc_healthcheck_service", "bool", False,
     "Enable the standard gRPC health checking service."),
    ("enable_serialization_as_tensor_content", "bool", False,
     "Enable serialization of predict response as tensor content."),
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds tensorflow_model_server's flags (and --host,
    --shutdown_grace_seconds) to `parser`.

    Both ``--flag=value`` (TF Serving's syntax) and ``--flag value`` work; a
    bool flag alone means true.
    """
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="Address to listen on (default 127.0.0.1: local only; "
             "0.0.0.0 for every interface). Not a TF Serving flag.")
    for name, kind, default, help_text in TF_SERVING_FLAGS:
        flag = f"--{name}"
        help_text = f"{help_text} (default {default})"
        if name == "version":
            parser.add_argument(flag, nargs=0, action=_VersionAction,
                                help=help_text)
        elif kind == "bool":
            parser.add_argument(flag, type=_bool_flag, nargs="?", const=True,
                                default=default, metavar="true|false",
                                help=help_text)
        else:
            parser.add_argument(flag, type={
                "int32": _INT32, "int64": _INT64, "float": float,
                "seconds": float, "string": str}[kind], default=default,
                help=help_text)
    parser.add_argument(
        "--shutdown_grace_seconds", type=float, default=30,
        help="On SIGTERM, how long requests in flight may take to finish. "
             "Not a TF Serving flag.")


class _VersionAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(), end="")
        parser.exit(0)


def version_text() -> str:
    """--version's two lines, as tensorflow_model_server prints them."""
    from importlib import metadata

    def version_of(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"
    return (f"TensorFlow ModelServer: {version_of('tensorflow-serving-api')}"
            f"\nTensorFlow Library: {version_of('tensorflow')}\n")


@dataclasses.dataclass
class ServerOptions:
    models: list
    host: str = "127.0.0.1"
    port: int = 8500
    rest_api_port: int = 0
    batching: Optional[BatchingParameters] = None
    file_system_poll_wait_seconds: float = 1.0
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    grpc_max_threads: int = 16
    shutdown_grace_seconds: float = 30.0
    grpc_socket_path: str = ""
    grpc_channel_arguments: tuple = ()
    ssl: Optional[config_lib.SslConfig] = None
    use_alts_credentials: bool = False
    rest_api_timeout_in_ms: Optional[int] = 30000
    rest_api_enable_cors_support: bool = False
    metrics_path: Optional[str] = None
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    enable_grpc_healthcheck_service: bool = False
    enable_serialization_as_tensor_content: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    saved_model_tags: tuple = ("serve",)
    session_config: object = None      # a ConfigProto for every Session

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerOptions":
        """Checks the flags, as Server::BuildAndStart does before loading;
        raises ConfigError naming the bad one."""
        for flag in ("port", "rest_api_port"):
            value = getattr(args, flag)
            if not 0 <= value <= 65535:
                raise ConfigError(f"--{flag} must be in [0, 65535]; got {value}")
        if args.grpc_max_threads < 1:
            raise ConfigError(f"--grpc_max_threads must be >= 1; got "
                              f"{args.grpc_max_threads}")
        if args.shutdown_grace_seconds < 0:
            raise ConfigError(f"--shutdown_grace_seconds must be >= 0; got "
                              f"{args.shutdown_grace_seconds}")
        if args.use_alts_credentials and args.ssl_config_file:
            raise ConfigError("Either use_alts_credentials must be false or "
                              "ssl_config_file must be empty.")
        if not args.model_base_path and not args.model_config_file:
            raise ConfigError("Both server_options.model_base_path and "
                              "server_options.model_config_file are empty!")
        if args.model_config_file:
            # As TF Serving: --model_name and --model_base_path are ignored.
            models = config_lib.load_model_config(args.model_config_file)
        else:
            logger.info("Building single TensorFlow model file config:  "
                        "model_name: %s model_base_path: %s",
                        args.model_name, args.model_base_path)
            config = model_server_config_pb2.ModelServerConfig()
            mc = config.model_config_list.config.add(
                name=args.model_name, base_path=args.model_base_path,
                model_platform=config_lib.TENSORFLOW_PLATFORM)
            del mc
            models = config_lib.models_from_config_proto(config)
        batching = None
        if args.enable_batching:
            batching = (config_lib.load_batching_parameters(
                args.batching_parameters_file)
                if args.batching_parameters_file else BatchingParameters())
        elif args.batching_parameters_file:
            raise ConfigError(
                "server_options.batching_parameters_file is set without "
                "setting server_options.enable_batching to true.")
        if (args.tensorflow_session_parallelism > 0
                and args.tensorflow_intra_op_parallelism > 0
                and args.tensorflow_inter_op_parallelism > 0):
            raise ConfigError(
                "Either configure server_options.tensorflow_session_parallelism"
                " or (server_options.tensorflow_intra_op_parallelism, "
                "server_options.tensorflow_inter_op_parallelism) separately. "
                "You cannot configure all.")
        channel_arguments = tuple(config_lib.parse_grpc_channel_arguments(
            args.grpc_channel_arguments))
        ssl = (config_lib.load_ssl_config(args.ssl_config_file)
               if args.ssl_config_file else None)
        metrics_path = None
        # TF Serving reads the monitoring config only when REST is exported.
        if (args.monitoring_config_file and args.rest_api_port
                and args.rest_api_port != args.port):
            metrics_path = config_lib.load_prometheus_path(
                args.monitoring_config_file)
        return cls(
            models=models, host=args.host, port=args.port,
            rest_api_port=args.rest_api_port, batching=batching,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            model_config_file=args.model_config_file,
            model_config_file_poll_wait_seconds=(
                args.model_config_file_poll_wait_seconds),
            grpc_max_threads=args.grpc_max_threads,
            shutdown_grace_seconds=args.shutdown_grace_seconds,
            grpc_socket_path=args.grpc_socket_path,
            grpc_channel_arguments=channel_arguments, ssl=ssl,
            use_alts_credentials=args.use_alts_credentials,
            rest_api_timeout_in_ms=(args.rest_api_timeout_in_ms
                                    if args.rest_api_timeout_in_ms > 0
                                    else None),
            rest_api_enable_cors_support=args.rest_api_enable_cors_support,
            metrics_path=metrics_path,
            allow_version_labels_for_unavailable_models=(
                args.allow_version_labels_for_unavailable_models),
            enable_model_warmup=args.enable_model_warmup,
            enable_grpc_healthcheck_service=(
                args.enable_grpc_healthcheck_service),
            enable_serialization_as_tensor_content=(
                args.enable_serialization_as_tensor_content),
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_micros=args.load_retry_interval_micros,
            saved_model_tags=tuple(
                t for t in args.saved_model_tags.split(",") if t),
            session_config=config_lib.session_config(
                args.tensorflow_session_config_file,
                args.tensorflow_session_parallelism,
                args.tensorflow_intra_op_parallelism,
                args.tensorflow_inter_op_parallelism,
                args.per_process_gpu_memory_fraction))


class Server:
    """A running local model server (gRPC, optional REST, model polling)."""

    def __init__(self, options: ServerOptions):
        from serving.batching import Batcher
        from serving.core import ServingCore
        from serving.manager import ModelManager
        from serving.metrics import Metrics

        self.options = options
        self.metrics = Metrics()
        self.batcher = (Batcher(options.batching, self.metrics)
                        if options.batching else None)
        self.manager = ModelManager(
            options.models,
            warmup=((lambda s: self.core.warmup(s))
                    if options.enable_model_warmup else None),
            on_unload=self.batcher.release if self.batcher else None,
            allow_version_labels_for_unavailable_models=(
                options.allow_version_labels_for_unavailable_models),
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_micros=options.load_retry_interval_micros,
            saved_model_tags=options.saved_model_tags,
            session_config=options.session_config)
        self.core = ServingCore(
            self.manager, self.batcher, self.metrics,
            tensor_content=options.enable_serialization_as_tensor_content)
        self._grpc = None
        self._rest = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._config_thread = None
        self._config_stop = threading.Event()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Server":
        return cls(ServerOptions.from_args(args))

    @property
    def port(self) -> Optional[int]:
        return self._grpc.port if self._grpc else None

    @property
    def rest_port(self) -> Optional[int]:
        return self._rest.port if self._rest else None

    @property
    def target(self) -> str:
        return f"{self.options.host}:{self.port}"

    def start(self) -> "Server":
        """Loads the models present now, then binds and serves the ports.

        The order of Server::BuildAndStart: the initial config is applied
        (labels checked, versions loaded) before the gRPC and REST ports
        accept connections.  Raises ConfigError (TF Serving's code and
        message) if that fails, OSError if a port cannot be bound.
        """
        from serving.grpc_service import GrpcFrontEnd
        from serving.rest import RestFrontEnd

        opts = self.options
        if opts.batching:
            logger.info("Batching enabled: %s", opts.batching)
        self.manager.check_labels(opts.models)
        self.manager.start(opts.file_system_poll_wait_seconds)
        self.manager.check_initial_load()
        if opts.model_config_file and opts.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(
                target=self._watch_config, name="config-poller", daemon=True)
            self._config_thread.start()
        self._grpc = GrpcFrontEnd(
            self.core, opts.host, opts.port, opts.grpc_max_threads,
            socket_path=opts.grpc_socket_path,
            channel_arguments=opts.grpc_channel_arguments,
            credentials=self._grpc_credentials(),
            health_service=opts.enable_grpc_healthcheck_service)
        self._grpc.start()
        if self._grpc.port:
            logger.info("Running gRPC ModelServer at %s:%d ...", opts.host,
                        self._grpc.port)
        if opts.grpc_socket_path:
            logger.info("Running gRPC ModelServer at UNIX socket %s ...",
                        opts.grpc_socket_path)
        if opts.rest_api_port and opts.rest_api_port == opts.port:
            logger.error(
                "server_options.http_port cannot be same as grpc_port. Please "
                "use a different port for HTTP/REST API. Skipped exporting "
                "HTTP/REST API.")
        elif opts.rest_api_port:
            try:
                self._rest = RestFrontEnd(
                    self.core, opts.host, opts.rest_api_port,
                    cors=opts.rest_api_enable_cors_support,
                    timeout_ms=opts.rest_api_timeout_in_ms,
                    metrics_path=opts.metrics_path)
            except OSError as e:
                # As TF Serving: gRPC keeps serving without REST.
                logger.error("Failed to start HTTP Server at %s:%d: %s",
                             opts.host, opts.rest_api_port, e)
                return self
            self._rest.start()
            logger.info("Exporting HTTP/REST API at:%s:%d ...", opts.host,
                        self._rest.port)
        return self

    def _grpc_credentials(self):
        """BuildServerCredentials: ALTS, SSL from --ssl_config_file, or none."""
        opts = self.options
        if opts.use_alts_credentials:
            import grpc
            logger.info("Using ALTS credentials")
            return grpc.alts_server_credentials()
        if opts.ssl is None:
            logger.info("Using InsecureServerCredentials")
            return None
        import grpc
        logger.info("Using SSL credentials")
        ssl = opts.ssl
        return grpc.ssl_server_credentials(
            [(ssl.server_key.encode(), ssl.server_cert.encode())],
            root_certificates=ssl.custom_ca.encode() or None,
            require_client_auth=ssl.client_verify)

    def _watch_config(self) -> None:
        """Server::PollFilesystemAndReloadConfig: re-reads the file every
        period and applies it when it differs from the config applied."""
        from serving.grpc_service import handle_reload_config_request
        from serving import errors
        from tensorflow_serving.apis import model_management_pb2

        path = self.options.model_config_file
        applied = None
        try:
            applied = config_lib.read_model_server_config(path)
        except ConfigError:
            pass
        while not self._config_stop.wait(
                self.options.model_config_file_poll_wait_seconds):
            try:
                config = config_lib.read_model_server_config(path)
            except ConfigError as e:
                logger.error("Failed to read ModelServerConfig file: %s", e)
                continue
            if config == applied:
                continue
            if config.WhichOneof("config") is None:
                logger.info("Taking no action for empty config.")
                applied = config
                continue
            logger.info("Model config %s changed; applying it", path)
            request = model_management_pb2.ReloadConfigRequest(config=config)
            try:
                handle_reload_config_request(self.manager, request)
            except errors.ServingError as e:
                logger.error("PollFilesystemAndReloadConfig failed to "
                             "ReloadConfig: %s", e)
                continue
            applied = config

    def stop(self, grace: Optional[float] = None) -> None:
        """Stops accepting requests, drains those in flight, unloads models."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.options.shutdown_grace_seconds if grace is None else grace
        logger.info("Shutting down: draining %d request(s) in flight",
                    self.core.inflight)
        self._config_stop.set()
        grpc_done = None
        if self._grpc:
            grpc_done = self._grpc.begin_stop(grace)
        if self._rest:
            self._rest.stop(grace)
        if grpc_done is not None:
            grpc_done.wait()
        self.core.wait_idle(grace)
        self.manager.stop()
        if self.batcher:
            self.batcher.shutdown()
        logger.info("Server stopped")
        self._stopped.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the server has stopped; True if it has."""
        return self._stopped.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _mtime(path: str):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def configure_logging(level: int = logging.INFO) -> None:
    """Logs to stderr, unless the application already set up logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level, stream=sys.stderr,
            format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] "
                   "%(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def run_serve(args: argparse.Namespace) -> int:
    """Runs the server until SIGTERM/SIGINT; returns the exit status.

    0 after a clean shutdown, 1 if the server cannot start (a port in use,
    a model that fails to load, a label on an unavailable version), 2 for
    bad flags or config files.  Signals are handled when called from the main thread.
    """
    configure_logging()
    try:
        server = Server.from_args(args)
    except ConfigError as e:
        print(f"Failed to start server. Error: {e.code}: {e}",
              file=sys.stderr)
        return 2
    try:
        server.start()
    except ConfigError as e:
        print(f"Failed to start server. Error: {e.code}: {e}",
              file=sys.stderr)
        server.stop(grace=0)
        return 1
    except OSError as e:
        logger.error("%s", e)
        server.stop(grace=0)
        return 1
    stop_requested = threading.Event()
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, _frame):
            logger.info("Received %s", signal.Signals(signum).name)
            stop_requested.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    while not stop_requested.wait(0.5):
        pass
    server.stop()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve SavedModels over TF Serving's gRPC and REST APIs.")
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
