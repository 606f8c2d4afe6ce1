"""The local model server: TF Serving's protocol, flags and directory layout.

    python -m serving.server --port 8500 --rest_api_port 8501 \\
        --model_name vae --model_base_path /models/vae

serves every SavedModel under ``BASE/<integer version>/`` through the gRPC
PredictionService / ModelService (and the standard health service) and, if
``--rest_api_port`` is set, TF Serving's REST API.  It listens on
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

from serving import config as config_lib
from serving.config import BatchingParameters, ConfigError, ModelSpecConfig

logger = logging.getLogger("serving.server")


def _bool_flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y"):
        return True
    if value in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds tensorflow_model_server's flags (and --host) to `parser`."""
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="Address to listen on (default 127.0.0.1: local only; "
             "0.0.0.0 for every interface).")
    parser.add_argument(
        "--port", type=int, default=8500,
        help="Port to listen on for the gRPC API (0 picks a free port; the "
             "log says which).")
    parser.add_argument(
        "--rest_api_port", type=int, default=0,
        help="Port to listen on for the HTTP/REST API; 0 (the default) "
             "disables REST.")
    parser.add_argument(
        "--model_name", default="default",
        help="Name of the model served from --model_base_path.")
    parser.add_argument(
        "--model_base_path", default="",
        help="Directory holding the model's integer-named version "
             "directories.")
    parser.add_argument(
        "--model_config_file", default="",
        help="ModelServerConfig text proto listing the models to serve "
             "(instead of --model_name/--model_base_path).")
    parser.add_argument(
        "--model_config_file_poll_wait_seconds", type=float, default=0,
        help="Re-read --model_config_file this often when it changes "
             "(0: read once).")
    parser.add_argument(
        "--enable_batching", type=_bool_flag, nargs="?", const=True,
        default=False, help="Merge concurrent requests into batches.")
    parser.add_argument(
        "--batching_parameters_file", default="",
        help="BatchingParameters text proto (max_batch_size, "
             "batch_timeout_micros, num_batch_threads, max_enqueued_batches, "
             "allowed_batch_sizes...). Requires --enable_batching.")
    parser.add_argument(
        "--file_system_poll_wait_seconds", type=float, default=1,
        help="Poll the base paths for new versions this often; 0 polls once, "
             "a negative value never.")
    parser.add_argument(
        "--grpc_max_threads", type=int, default=4 * (os.cpu_count() or 1),
        help="Threads answering gRPC calls.")
    parser.add_argument(
        "--shutdown_grace_seconds", type=float, default=30,
        help="On SIGTERM, how long requests in flight may take to finish.")


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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ServerOptions":
        """Checks the flags; raises ConfigError naming the bad one."""
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
        if args.model_config_file and args.model_base_path:
            raise ConfigError(
                f"give either --model_config_file ({args.model_config_file!r}) "
                f"or --model_base_path ({args.model_base_path!r}), not both")
        if args.model_config_file:
            models = config_lib.load_model_config(args.model_config_file)
        elif args.model_base_path:
            if not args.model_name:
                raise ConfigError("--model_name must not be empty")
            models = [ModelSpecConfig(
                name=args.model_name,
                model_base_path=os.path.abspath(args.model_base_path))]
        else:
            raise ConfigError("Both --model_base_path and --model_config_file "
                              "are empty; expected one of them")
        batching = None
        if args.enable_batching:
            batching = (config_lib.load_batching_parameters(
                args.batching_parameters_file)
                if args.batching_parameters_file else BatchingParameters())
        elif args.batching_parameters_file:
            raise ConfigError(
                f"--batching_parameters_file ({args.batching_parameters_file!r})"
                f" is set without --enable_batching")
        return cls(
            models=models, host=args.host, port=args.port,
            rest_api_port=args.rest_api_port, batching=batching,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            model_config_file=args.model_config_file,
            model_config_file_poll_wait_seconds=(
                args.model_config_file_poll_wait_seconds),
            grpc_max_threads=args.grpc_max_threads,
            shutdown_grace_seconds=args.shutdown_grace_seconds)


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
            options.models, warmup=lambda s: self.core.warmup(s),
            on_unload=self.batcher.release if self.batcher else None)
        self.core = ServingCore(self.manager, self.batcher, self.metrics)
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
        """Binds the ports, loads the models present now, starts serving."""
        from serving.grpc_service import GrpcFrontEnd
        from serving.rest import RestFrontEnd

        opts = self.options
        self._grpc = GrpcFrontEnd(self.core, opts.host, opts.port,
                                  opts.grpc_max_threads)
        if opts.rest_api_port:
            self._rest = RestFrontEnd(self.core, opts.host, opts.rest_api_port)
        if opts.batching:
            logger.info("Batching enabled: %s", opts.batching)
        self.manager.start(opts.file_system_poll_wait_seconds)
        self._grpc.start()
        logger.info("Running gRPC ModelServer at %s:%d ...", opts.host,
                    self._grpc.port)
        if self._rest:
            self._rest.start()
            logger.info("Exporting HTTP/REST API at:%s:%d ...", opts.host,
                        self._rest.port)
        if opts.model_config_file and opts.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(
                target=self._watch_config, name="config-poller", daemon=True)
            self._config_thread.start()
        return self

    def _watch_config(self) -> None:
        path = self.options.model_config_file
        last = _mtime(path)
        while not self._config_stop.wait(
                self.options.model_config_file_poll_wait_seconds):
            now = _mtime(path)
            if now == last:
                continue
            last = now
            try:
                models = config_lib.load_model_config(path)
            except ConfigError as e:
                logger.error("Keeping the previous model config: %s", e)
                continue
            logger.info("Model config %s changed; applying it", path)
            self.manager.set_models(models)
            self.manager.poll_once()

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

    0 after a clean shutdown, 1 if the server cannot start (a port in use),
    2 for bad flags.  Signals are handled when called from the main thread.
    """
    configure_logging()
    try:
        server = Server.from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        server.start()
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
