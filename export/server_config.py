"""TF Serving configuration files written beside the versions of an exported model.

``models.config``
    A ``tensorflow.serving.ModelServerConfig`` text proto naming the model, the base
    path the *server* sees (``/models/NAME`` inside the serving image, the local
    absolute path otherwise) and a version policy. For
    ``tensorflow_model_server --model_config_file``.
``batching_parameters.txt``
    A ``tensorflow.serving.BatchingParameters`` text proto for
    ``--enable_batching --batching_parameters_file``. ``allowed_batch_sizes`` must
    increase and end at ``max_batch_size`` (TF Serving refuses the file otherwise).

``tensorflow-serving-api`` ships ``ModelServerConfig`` but not ``BatchingParameters``;
``export.batching_proto`` builds it, and the local server parses the file with that
same class.
"""

import dataclasses
import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from export.batching_proto import batching_parameters_class
from tfp_vae import files

MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"


def default_allowed_batch_sizes(max_batch_size):
    """Powers of two from 8 (or fewer, for small maxima) up to, and ending at, max_batch_size."""
    sizes = []
    size = min(8, max_batch_size)
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return sizes


@dataclasses.dataclass
class BatchingOptions:
    """The tunable fields of batching_parameters.txt."""

    max_batch_size: int = 256
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple = None  # None: default_allowed_batch_sizes(max_batch_size)

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("batch_timeout_micros", self.batch_timeout_micros, minimum=0)
        if self.allowed_batch_sizes is None:
            self.allowed_batch_sizes = default_allowed_batch_sizes(self.max_batch_size)
        sizes = list(self.allowed_batch_sizes)
        for size in sizes:
            _check_int("allowed_batch_sizes entry", size, minimum=1)
        if not sizes:
            raise ValueError(
                "allowed_batch_sizes must not be empty (leave it unset for the default)."
            )
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"allowed_batch_sizes must be strictly increasing, got {sizes}.")
        if sizes[-1] != self.max_batch_size:
            raise ValueError(
                f"The last allowed batch size must equal max_batch_size={self.max_batch_size}, "
                f"got allowed_batch_sizes={sizes}."
            )
        self.allowed_batch_sizes = tuple(sizes)

    def to_proto(self):
        msg = batching_parameters_class()()
        msg.max_batch_size.value = self.max_batch_size
        msg.batch_timeout_micros.value = self.batch_timeout_micros
        msg.num_batch_threads.value = self.num_batch_threads
        msg.max_enqueued_batches.value = self.max_enqueued_batches
        msg.allowed_batch_sizes.extend(self.allowed_batch_sizes)
        return msg


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def models_config(name, server_base_path, num_versions=1):
    """ModelServerConfig serving model ``name`` from ``server_base_path`` (latest N versions)."""
    if not name:
        raise ValueError(f"The model name must be non-empty, got {name!r}.")
    _check_int("num_versions", num_versions, minimum=1)
    if not os.path.isabs(server_base_path) and "://" not in server_base_path:
        raise ValueError(
            "The model base path as seen by the server must be absolute (e.g. /models/NAME), "
            f"got {server_base_path!r}."
        )
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = server_base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = num_versions
    return config


def write_server_configs(model_dir, name, server_base_path=None, num_versions=1, batching=None):
    """Writes models.config and batching_parameters.txt into ``model_dir`` (BASE/NAME).

    Returns {"models_config": path, "batching_parameters": path}.
    """
    batching = batching or BatchingOptions()
    server_base_path = server_base_path or os.path.abspath(model_dir)
    config = models_config(name, server_base_path, num_versions)
    paths = {
        "models_config": os.path.join(model_dir, MODELS_CONFIG),
        "batching_parameters": os.path.join(model_dir, BATCHING_PARAMETERS),
    }
    files.write_atomically(paths["models_config"], text_format.MessageToString(config))
    files.write_atomically(
        paths["batching_parameters"], text_format.MessageToString(batching.to_proto())
    )
    return paths


def read_models_config(path):
    """Parses a ModelServerConfig text proto."""
    with open(path) as f:
        return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())


def read_batching_parameters(path):
    """Parses a BatchingParameters text proto and checks TF Serving's rules on it."""
    with open(path) as f:
        msg = text_format.Parse(f.read(), batching_parameters_class()())
    sizes = list(msg.allowed_batch_sizes)
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"{path}: allowed_batch_sizes must increase, got {sizes}.")
        if sizes[-1] != msg.max_batch_size.value:
            raise ValueError(
                f"{path}: the last allowed batch size must equal max_batch_size="
                f"{msg.max_batch_size.value}, got {sizes}."
            )
    return msg
