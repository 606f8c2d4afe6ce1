"""Training on several devices or machines with ``tf.distribute``.

``tfp-vae train --strategy`` picks one of ``STRATEGIES``:

* ``"none"``: TensorFlow's default strategy, one device, as without this module.
* ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over this machine's GPUs, or over
  its logical CPU devices when it has none. ``--cpu-replicas N`` splits the CPU into N
  logical devices first, so N replicas can be tried (and tested) on a CPU machine.
* ``"multi_worker"``: ``tf.distribute.MultiWorkerMirroredStrategy``, one process per
  worker, the cluster and this process's place in it read from the ``TF_CONFIG``
  environment variable (checked by ``parse_tf_config`` before anything is trained).

The model, its optimizer and its metrics are built inside the strategy's scope and
trained with ``model.fit``. ``--batch-size`` is the global batch: ``tf.distribute``
splits each batch across the replicas. What each replica computes is in
``tfp_vae._training``: its loss is its share of the global-batch mean (gradients are
summed over replicas), and its training noise comes from a seed with the replica id
folded in, so no two replicas draw the same noise.

One process writes the run directory: the chief (TF_CONFIG task "chief", or "worker"
0 when the cluster has no chief; the only process for the other strategies). The
other workers run the same steps -- collective operations need every worker -- but
write into a temporary directory that is removed at the end.

This module imports TensorFlow only inside the functions that need it, so flags and
TF_CONFIG can be checked before TensorFlow starts.
"""

import contextlib
import json
import os
import shutil
import tempfile

from tfp_vae.names import STRATEGIES

TF_CONFIG = "TF_CONFIG"
_TASK_TYPES = ("chief", "worker")


def check_arguments(strategy, cpu_replicas=None, environ=None):
    """Raises ValueError naming a bad ``--strategy``/``--cpu-replicas`` value or TF_CONFIG.

    Standard library only: meant to run before TensorFlow is imported.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not valid; expected one of {list(STRATEGIES)}.")
    if cpu_replicas is not None:
        if not isinstance(cpu_replicas, int) or isinstance(cpu_replicas, bool) or cpu_replicas < 1:
            raise ValueError(f"cpu_replicas={cpu_replicas!r} is not valid; expected a positive integer.")
        if strategy != "mirrored":
            raise ValueError(
                f"cpu_replicas={cpu_replicas} needs strategy='mirrored' (got {strategy!r}): "
                "it splits this machine's CPU into replicas of a MirroredStrategy."
            )
    if strategy == "multi_worker":
        parse_tf_config((os.environ if environ is None else environ).get(TF_CONFIG))


def parse_tf_config(text):
    """The ``TF_CONFIG`` JSON as a dict, checked; ValueError naming what is wrong.

    Expected: {"cluster": {"worker": ["host:port", ...], "chief": [...]?},
    "task": {"type": "worker" | "chief", "index": i}}, i a position in that job's list.
    """
    if text is None or not text.strip():
        raise ValueError(
            f"--strategy multi_worker needs the {TF_CONFIG} environment variable, which is not set; "
            'expected JSON such as {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{TF_CONFIG} is not valid JSON ({e}): {text!r}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{TF_CONFIG} must be a JSON object, got {type(config).__name__}: {text!r}.")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"{TF_CONFIG} needs a non-empty \"cluster\" object, got {cluster!r}.")
    unknown = sorted(set(cluster) - set(_TASK_TYPES))
    if unknown:
        raise ValueError(
            f"{TF_CONFIG} cluster has jobs {unknown} that MultiWorkerMirroredStrategy does not "
            f"run; expected only {list(_TASK_TYPES)}."
        )
    if "worker" not in cluster:
        raise ValueError(f"{TF_CONFIG} cluster needs a \"worker\" job, got jobs {sorted(cluster)}.")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(
                f"{TF_CONFIG} cluster job {job!r} must be a non-empty list of \"host:port\", "
                f"got {addresses!r}."
            )
        for address in addresses:
            _check_address(job, address)
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"{TF_CONFIG} cluster may have one chief, got {len(cluster['chief'])}.")
    if not isinstance(task, dict):
        raise ValueError(f"{TF_CONFIG} needs a \"task\" object with \"type\" and \"index\", got {task!r}.")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise ValueError(
            f"{TF_CONFIG} task type {task_type!r} is not a job of the cluster; "
            f"expected one of {sorted(cluster)}."
        )
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"{TF_CONFIG} task index {index!r} is not valid for job {task_type!r}; expected an "
            f"integer in [0, {len(cluster[task_type]) - 1}]."
        )
    return config


def _check_address(job, address):
    host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(
            f"{TF_CONFIG} cluster job {job!r} has address {address!r}; expected \"host:port\" "
            "with a port in [1, 65535]."
        )


def is_chief_task(tf_config):
    """Whether the task of a parsed TF_CONFIG writes the run: the chief, else worker 0."""
    task_type, index = tf_config["task"]["type"], tf_config["task"]["index"]
    if "chief" in tf_config["cluster"]:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def writes_run(strategy, environ=None):
    """Whether this process writes the run directory under ``--strategy strategy``."""
    if strategy != "multi_worker":
        return True
    return is_chief_task(parse_tf_config((os.environ if environ is None else environ).get(TF_CONFIG)))


def split_cpu(replicas):
    """Splits the first physical CPU into ``replicas`` logical devices.

    Must run before TensorFlow initializes its devices (before the first operation);
    otherwise raises ValueError saying so.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError as e:
        raise ValueError(
            f"cpu_replicas={replicas}: the CPU can only be split before TensorFlow "
            f"initializes its devices ({e})."
        ) from None


def make_strategy(name, cpu_replicas=None):
    """The ``tf.distribute.Strategy`` that ``--strategy name`` asks for (see the docstring).

    Call it first in a process: MultiWorkerMirroredStrategy and ``cpu_replicas`` must
    come before any other TensorFlow operation.
    """
    check_arguments(name, cpu_replicas)
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas:
        split_cpu(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


@contextlib.contextmanager
def scratch_directory():
    """A temporary directory for a worker that does not write the run; removed on exit."""
    path = tempfile.mkdtemp(prefix="tfp-vae-worker-")
    try:
        yield os.path.join(path, "run")
    finally:
        shutil.rmtree(path, ignore_errors=True)
