"""Configuration the local server reads, in TF Serving's own file formats.

* ``--model_config_file``: a ``ModelServerConfig`` text proto
  (``tensorflow_serving.config.model_server_config_pb2``) with a
  ``model_config_list`` of models: name, base_path, model_platform,
  model_version_policy (latest / all / specific) and version_labels.
* ``--batching_parameters_file``: a ``BatchingParameters`` text proto, as
  ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``
  defines it.  That proto is not shipped in tensorflow-serving-api; the
  exporter and this server use the one class ``export.batching_proto`` builds.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from typing import Optional

from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory,
                             text_format)
from tensorflow_serving.config import model_server_config_pb2

from export.batching_proto import batching_parameters_class


logger = logging.getLogger(__name__)

TENSORFLOW_PLATFORM = "tensorflow"
# The platforms tensorflow_model_server's default platform config serves.
SUPPORTED_PLATFORMS = (TENSORFLOW_PLATFORM,)


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used; the message says why.

    `code` is the status name TF Serving gives the same error.
    """

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# BatchingParameters.
# ---------------------------------------------------------------------------

BatchingParametersProto = batching_parameters_class()


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Server-side batching settings (defaults as TF Serving's scheduler).

    What --batching_parameters_file says, parsed; not to be confused with
    ``export.server_config.BatchingOptions``, which chooses what an export
    writes into that file.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: Optional[int] = None

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches",
                     "num_batch_threads"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"batching parameter {name} must be >= 1; "
                                  f"got {value}")
        if self.batch_timeout_micros < 0:
            raise ConfigError(f"batching parameter batch_timeout_micros must "
                              f"be >= 0; got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ConfigError(
                    f"allowed_batch_sizes must be positive and strictly "
                    f"increasing; got {sizes}")
            limit = self.execution_batch_size
            if sizes[-1] != limit:
                raise ConfigError(
                    f"the last entry of allowed_batch_sizes must equal "
                    f"max_batch_size (or max_execution_batch_size when "
                    f"splitting); got {sizes[-1]}, expected {limit}")
        if self.pad_variable_length_inputs:
            raise ConfigError("pad_variable_length_inputs is not supported by "
                              "the local server; expected false")

    @property
    def execution_batch_size(self) -> int:
        """Largest batch actually run (smaller than max with splitting)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size


def parse_batching_parameters(text: str, source: str = "<text>") -> BatchingParameters:
    """Parses a BatchingParameters text proto into BatchingParameters."""
    proto = BatchingParametersProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        raise ConfigError(f"cannot parse batching parameters {source}: {e}") from e
    kwargs = {}
    for name in ("max_batch_size", "batch_timeout_micros",
                 "max_enqueued_batches", "num_batch_threads",
                 "max_execution_batch_size"):
        if proto.HasField(name):
            kwargs[name] = int(getattr(proto, name).value)
    if proto.HasField("enable_large_batch_splitting"):
        kwargs["enable_large_batch_splitting"] = bool(
            proto.enable_large_batch_splitting.value)
    kwargs["allowed_batch_sizes"] = tuple(int(v) for v in proto.allowed_batch_sizes)
    kwargs["pad_variable_length_inputs"] = bool(proto.pad_variable_length_inputs)
    return BatchingParameters(**kwargs)


def load_batching_parameters(path: str) -> BatchingParameters:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read --batching_parameters_file {path!r}: "
                          f"{e.strerror}") from e
    return parse_batching_parameters(text, source=repr(path))


# ---------------------------------------------------------------------------
# Models.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions found on disk are served ("aspired")."""

    kind: str = "latest"          # "latest" | "all" | "specific"
    num_versions: int = 1         # for "latest"
    versions: tuple = ()          # for "specific"

    def select(self, on_disk) -> set:
        on_disk = sorted(set(on_disk))
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return set(on_disk) & set(self.versions)
        return set(on_disk[-self.num_versions:]) if on_disk else set()


@dataclasses.dataclass(frozen=True)
class ModelSpecConfig:
    """One served model: where its versions are and which ones to serve."""

    name: str
    model_base_path: str          # BASE/NAME, holding the integer versions
    policy: VersionPolicy = VersionPolicy()
    labels: tuple = ()            # ((label, version), ...)
    platform: str = TENSORFLOW_PLATFORM

    @property
    def label_map(self) -> dict:
        return dict(self.labels)


def _policy_from_proto(policy_proto, model_name: str) -> VersionPolicy:
    which = policy_proto.WhichOneof("policy_choice")
    if which is None or which == "latest":
        n = policy_proto.latest.num_versions if which == "latest" else 0
        # FileSystemStoragePathSource serves max(num_versions, 1) versions.
        return VersionPolicy("latest", num_versions=max(n, 1))
    if which == "all":
        return VersionPolicy("all")
    # An empty specific list is legal in TF Serving: nothing is served (and
    # "No specific versions requested" is logged by the manager).
    versions = tuple(sorted(int(v) for v in policy_proto.specific.versions))
    return VersionPolicy("specific", versions=versions)


_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_relative_path(base_path: str) -> bool:
    """TF Serving's UriIsRelativePath: no URI scheme and no leading '/'."""
    return not (_URI_SCHEME.match(base_path) or base_path.startswith("/"))


def model_platform(mc) -> str:
    """TF Serving's GetPlatform (server_core.cc) for one ModelConfig."""
    if mc.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if mc.model_platform:
            raise ConfigError(
                "Illegal setting both ModelServerConfig::model_type "
                "(deprecated) and ModelServerConfig::model_platform, model "
                f"name is {mc.name}")
        if mc.model_type != model_server_config_pb2.TENSORFLOW:
            raise ConfigError(f"ModelServerConfig::model_type choice "
                              f"{mc.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not mc.model_platform:
        raise ConfigError(
            "Illegal setting neither ModelServerConfig::model_type "
            "(deprecated) nor ModelServerConfig::model_platform, model name "
            f"is {mc.name}")
    return mc.model_platform


def validate_model_config_list(config_list, old_platforms=None) -> None:
    """ServerCore::ReloadConfig's checks before anything is applied.

    ValidateModelConfigList (no name twice, absolute base paths or URIs)
    then, on a reload, ValidateNoModelsChangePlatforms; `old_platforms` is
    {name: platform} of the models served now.  Raises ConfigError
    (INVALID_ARGUMENT) with TF Serving's message.
    """
    names = set()
    for mc in config_list.config:
        if mc.name in names:
            raise ConfigError(f"Illegal to list model {mc.name} multiple "
                              f"times in config list")
        names.add(mc.name)
    for mc in config_list.config:
        if is_relative_path(mc.base_path):
            raise ConfigError(
                f"Expected model {mc.name} to have an absolute path or URI; "
                f"got base_path()={mc.base_path}")
    if old_platforms:
        for mc in config_list.config:
            old = old_platforms.get(mc.name)
            if old is None:
                continue
            new = model_platform(mc)
            if new != old:
                raise ConfigError(
                    f"Illegal to change a model's platform. For model "
                    f"{mc.name} platform was {old} and new platform "
                    f"requested is {new}")


def models_from_config_list(config_list) -> list:
    """ModelSpecConfigs from a validated ModelConfigList (GetPlatform per
    model, as AddModelsViaModelConfigList does)."""
    models = []
    for mc in config_list.config:
        platform = model_platform(mc)
        if platform not in SUPPORTED_PLATFORMS:
            raise ConfigError(f"Model {mc.name} requests unsupported "
                              f"platform {platform}")
        labels = tuple(sorted((k, int(v)) for k, v in mc.version_labels.items()))
        models.append(ModelSpecConfig(
            name=mc.name, model_base_path=mc.base_path,
            policy=_policy_from_proto(mc.model_version_policy, mc.name),
            labels=labels, platform=platform))
    return models


def models_from_config_proto(config) -> list:
    """ModelSpecConfigs from a start-up ModelServerConfig proto.

    An empty ModelServerConfig serves nothing ("Taking no action for empty
    config."); custom_model_config stops the server as TF Serving's does.
    """
    which = config.WhichOneof("config")
    if which is None:
        logger.info("Taking no action for empty config.")
        return []
    if which == "custom_model_config":
        raise ConfigError("ModelServer does not yet support custom model "
                          "config.")
    validate_model_config_list(config.model_config_list)
    return models_from_config_list(config.model_config_list)


def parse_model_server_config(text: str, source: str = "<text>"):
    """A ModelServerConfig from text format, or ConfigError."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        logger.error("Error parsing text-format "
                     "tensorflow.serving.ModelServerConfig: %s", e)
        raise ConfigError(f"Invalid protobuf file: {source} ({e})") from e
    return config


def parse_model_config(text: str, source: str = "<text>") -> list:
    """Parses ModelServerConfig text into a list of ModelSpecConfig."""
    return models_from_config_proto(parse_model_server_config(text, source))


def read_model_server_config(path: str):
    """The ModelServerConfig in the --model_config_file at `path`."""
    return parse_model_server_config(_read(path, "--model_config_file"),
                                     source=f"'{path}'")


def load_model_config(path: str) -> list:
    return models_from_config_proto(read_model_server_config(path))


def _read(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {flag} {path!r}: {e.strerror}") from e


# ---------------------------------------------------------------------------
# Other files named by flags: --monitoring_config_file, --ssl_config_file.
# tensorflow-serving-api ships neither message; both are built here from
# TF Serving's config/monitoring_config.proto and config/ssl_config.proto.
# ---------------------------------------------------------------------------

PROMETHEUS_DEFAULT_PATH = "/monitoring/prometheus/metrics"


@functools.lru_cache(maxsize=None)
def _config_messages():
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/server_flags_configs.proto",
        package="tensorflow.serving", syntax="proto3")

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            f = m.field.add(name=field_name, number=number,
                            label=F.LABEL_OPTIONAL)
            if kind.startswith("."):
                f.type = F.TYPE_MESSAGE
                f.type_name = kind
            else:
                f.type = {"bool": F.TYPE_BOOL, "string": F.TYPE_STRING}[kind]

    message("PrometheusConfig", (("enable", 1, "bool"), ("path", 2, "string")))
    message("MonitoringConfig", (
        ("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig"),))
    message("SSLConfig", (("server_key", 1, "string"),
                          ("server_cert", 2, "string"),
                          ("custom_ca", 3, "string"),
                          ("client_verify", 4, "bool")))
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("MonitoringConfig", "SSLConfig")}


def _parse_file(path: str, flag: str, message_name: str):
    return _parse_text_into(path, flag, _config_messages()[message_name]())


def _parse_text_into(path: str, flag: str, message):
    """Parses the text proto file `path` (named by `flag`) into `message`."""
    text = _read(path, flag)
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ConfigError(f"Invalid protobuf file: '{path}' ({flag}: {e})") from e
    return message


def load_prometheus_path(path: str) -> Optional[str]:
    """The Prometheus path a --monitoring_config_file enables, or None.

    As PrometheusExporter: an enabled config with no path serves at
    /monitoring/prometheus/metrics.
    """
    config = _parse_file(path, "--monitoring_config_file", "MonitoringConfig")
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or PROMETHEUS_DEFAULT_PATH


def session_config(config_file: str = "", session_parallelism: int = 0,
                   intra_op_parallelism: int = 0,
                   inter_op_parallelism: int = 0,
                   per_process_gpu_memory_fraction: float = 0.0):
    """The ConfigProto every loaded version's Session gets, built as
    Server::BuildAndStart builds session_bundle_config.session_config.

    The --tensorflow_session_config_file text proto comes first; then the
    GPU memory fraction; then the thread counts: intra/inter-op if either
    is set, otherwise --tensorflow_session_parallelism for both (0 lets
    TensorFlow choose).  Setting all three is refused by the caller.
    """
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    if config_file:
        _parse_text_into(config_file, "--tensorflow_session_config_file", config)
    config.gpu_options.per_process_gpu_memory_fraction = (
        per_process_gpu_memory_fraction)
    if intra_op_parallelism > 0 or inter_op_parallelism > 0:
        config.intra_op_parallelism_threads = intra_op_parallelism
        config.inter_op_parallelism_threads = inter_op_parallelism
    else:
        config.intra_op_parallelism_threads = session_parallelism
        config.inter_op_parallelism_threads = session_parallelism
    return config


@dataclasses.dataclass(frozen=True)
class SslConfig:
    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def load_ssl_config(path: str) -> SslConfig:
    config = _parse_file(path, "--ssl_config_file", "SSLConfig")
    return SslConfig(server_key=config.server_key,
                     server_cert=config.server_cert,
                     custom_ca=config.custom_ca,
                     client_verify=config.client_verify)


def parse_grpc_channel_arguments(text: str) -> list:
    """--grpc_channel_arguments "k=v,k2=v2" -> [(k, v)], as parseGrpcChannelArgs.

    Values that parse as int32 are passed as ints, the rest as strings;
    "a=b=c" keeps "b" as TF Serving does.  An entry without "=" (where TF
    Serving reads past the end of its list) is refused, naming the entry.
    """
    if not text:
        return []
    result = []
    for entry in text.split(","):
        parts = entry.split("=")
        if len(parts) < 2:
            raise ConfigError(f"--grpc_channel_arguments: expected key=value; "
                              f"got {entry!r} in {text!r}")
        key, value = parts[0], parts[1]
        number = parse_int(value, bits=32)
        result.append((key, number if number is not None else value))
    return result


_ASCII_SPACE = " \t\n\v\f\r"
_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str, bits: int = 64) -> Optional[int]:
    """absl::SimpleAtoi into a signed `bits`-bit int, or None.

    Surrounding ASCII whitespace and one sign are allowed; only ASCII decimal
    digits count (so "²" or "９９" are not numbers); out of range is None.
    """
    core = text.strip(_ASCII_SPACE)
    if not _INT_TEXT.fullmatch(core):
        return None
    value = int(core)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        return None
    return value
