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
import os
from typing import Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from export.batching_proto import batching_parameters_class


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used; the message says why."""


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

    @property
    def label_map(self) -> dict:
        return dict(self.labels)


def _policy_from_proto(policy_proto, model_name: str) -> VersionPolicy:
    which = policy_proto.WhichOneof("policy_choice")
    if which is None or which == "latest":
        n = policy_proto.latest.num_versions if which == "latest" else 0
        n = n or 1
        if n < 1:
            raise ConfigError(f"model {model_name!r}: latest.num_versions "
                              f"must be >= 1; got {n}")
        return VersionPolicy("latest", num_versions=n)
    if which == "all":
        return VersionPolicy("all")
    versions = tuple(sorted(int(v) for v in policy_proto.specific.versions))
    if not versions:
        raise ConfigError(f"model {model_name!r}: a 'specific' version policy "
                          f"needs at least one version")
    return VersionPolicy("specific", versions=versions)


def models_from_config_proto(config, config_dir: str = ".") -> list:
    """ModelSpecConfigs from a ModelServerConfig proto."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("custom_model_config is not supported; expected a "
                          "model_config_list")
    models = []
    seen = set()
    for mc in config.model_config_list.config:
        if not mc.name:
            raise ConfigError("a model config has no name")
        if mc.name in seen:
            raise ConfigError(f"model name {mc.name!r} appears twice in the "
                              f"model config list")
        seen.add(mc.name)
        if not mc.base_path:
            raise ConfigError(f"model {mc.name!r} has no base_path")
        if mc.model_platform and mc.model_platform != "tensorflow":
            raise ConfigError(f"model {mc.name!r}: model_platform "
                              f"{mc.model_platform!r} is not supported; "
                              f"expected 'tensorflow'")
        base_path = mc.base_path
        if not os.path.isabs(base_path):
            base_path = os.path.join(config_dir, base_path)
        labels = tuple(sorted((k, int(v)) for k, v in mc.version_labels.items()))
        models.append(ModelSpecConfig(
            name=mc.name, model_base_path=os.path.abspath(base_path),
            policy=_policy_from_proto(mc.model_version_policy, mc.name),
            labels=labels))
    return models


def parse_model_config(text: str, source: str = "<text>",
                       config_dir: str = ".") -> list:
    """Parses ModelServerConfig text into a list of ModelSpecConfig."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ConfigError(f"cannot parse model config {source}: {e}") from e
    return models_from_config_proto(config, config_dir)


def load_model_config(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read --model_config_file {path!r}: "
                          f"{e.strerror}") from e
    # TF Serving resolves relative base paths against the working directory;
    # so does the local server.
    return parse_model_config(text, source=repr(path), config_dir=os.getcwd())
