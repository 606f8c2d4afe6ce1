"""Helpers shared by the benchmark scripts: quiet TensorFlow, timing, environment."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Seconds of every epoch, from on_epoch_begin to on_epoch_end.

    ``seconds`` is wall-clock time; ``cpu_seconds`` is the CPU time of this process
    (all threads), which other processes on the machine inflate far less.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._start
        self.seconds.append(time.perf_counter() - wall)
        self.cpu_seconds.append(time.process_time() - cpu)


def median(values):
    return statistics.median(values) if values else float("nan")


def quartiles(values):
    """(25th, 75th) percentiles; (nan, nan) for fewer than two values."""
    if len(values) < 2:
        return float("nan"), float("nan")
    q = np.percentile(np.asarray(values, np.float64), [25, 75])
    return float(q[0]), float(q[1])


def load_average():
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


def environment():
    """What the numbers were measured on."""
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tensorflow_probability": tfp.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "devices": devices,
        "load_average_1_5_15": load_average(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def print_environment():
    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    return env


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
