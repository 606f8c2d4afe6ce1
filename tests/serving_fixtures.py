"""Test fixtures for the serving tests: exported models and servers.

`build_model_version` is the one place that produces a model directory: a small
`tfp_vae.VAE` (`make_model`) exported by `export.exporter`, so its signatures,
tensor keys and methods are the rows of `export.contract.SIGNATURES`, with
warmup records, under ``BASE/<version>/``.  Sampling is the library's per-row
sampler, so the same seed row always gives the same sample.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

LATENT_DIM = 2
DATA_SHAPE = (4, 4)
NUM_IMPORTANCE_SAMPLES = 8
from export import contract  # noqa: E402  (TensorFlow-free)
from serving.net import free_port  # noqa: E402,F401  (the tests' one free-port helper)

SIGNATURES = contract.expected_signatures(contract.VAE, decoder_only=False)


def subprocess_env() -> dict:
    """Environment for child processes: quiet TF and the repository importable."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------

def make_model(latent_dim: int, data_shape: tuple, variant: int, network: str):
    """A small tfp_vae.VAE (full-covariance posterior, N(0, I) prior, Bernoulli).

    `variant` seeds the weights, so versions built with different variants
    answer differently.
    """
    import keras

    import tfp_vae

    networks = {"dense": "mlp", "conv": "conv"}
    if network not in networks:
        raise ValueError(f"network must be 'dense' or 'conv'; got {network!r}")
    keras.utils.set_random_seed(1000 + variant)
    kwargs = {"hidden": (16,)} if network == "dense" else {}
    encoder, decoder = tfp_vae.networks.build(networks[network], latent_dim,
                                              tuple(data_shape), **kwargs)
    return tfp_vae.VAE(encoder, decoder, latent_dim=latent_dim, posterior="tril")


def example_inputs(batch: int, *, latent_dim: int = LATENT_DIM,
                   data_shape: tuple = DATA_SHAPE, seed: int = 0) -> dict:
    """Inputs of every signature for a batch of `batch` rows, keyed as the table keys them.

    x is binary (valid under the Bernoulli likelihood), z standard normal, and
    seed row i is (seed, i).
    """
    rng = np.random.default_rng(seed)
    values = {
        "x": (rng.random((batch, *data_shape)) > 0.5).astype(np.float32),
        "seed": np.stack([np.full(batch, seed, np.int32),
                          np.arange(batch, dtype=np.int32)], axis=1),
        "z": rng.normal(size=(batch, latent_dim)).astype(np.float32),
    }
    return {row.name: {key: values[key] for key in row.input_keys}
            for row in contract.signatures(contract.VAE)}


def build_model_version(base_path: str, version: int, *, variant: int = 0,
                        model_name: str = "vae", network: str = "dense",
                        latent_dim: int = LATENT_DIM,
                        data_shape: tuple = DATA_SHAPE,
                        warmup: bool = True) -> str:
    """Exports one version of `make_model` to BASE/<version>/; returns its path.

    The exporter (signatures from `export.contract`, warmup records, atomic
    rename) writes it under a scratch BASE'/<model_name>/, and it is renamed
    into `base_path`, so a polling server never sees half a version.
    """
    from export import exporter, warmup as warmup_lib

    model = make_model(latent_dim, tuple(data_shape), variant, network)
    os.makedirs(base_path, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".export-", dir=base_path)
    try:
        path = exporter.export_model(
            model, scratch, model_name, version, validate=False,
            num_ll_samples=NUM_IMPORTANCE_SAMPLES)
        if not warmup:
            os.remove(warmup_lib.warmup_path(path))
        final = os.path.join(base_path, str(version))
        os.replace(path, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def copy_version(src_version_dir: str, base_path: str, version: int) -> str:
    """Copies a built version to another version number (fast, no re-tracing)."""
    final = os.path.join(base_path, str(version))
    tmp = os.path.join(base_path, f".tmp-copy-{version}-{os.getpid()}")
    os.makedirs(base_path, exist_ok=True)
    shutil.copytree(src_version_dir, tmp)
    os.replace(tmp, final)
    return final


def write_broken_version(base_path: str, version: int) -> str:
    """A version directory that cannot be loaded (corrupt saved_model.pb)."""
    path = os.path.join(base_path, str(version))
    tmp = path + ".partial"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
    os.replace(tmp, path)
    return path


@functools.lru_cache(maxsize=None)
def shared_versions() -> dict:
    """Two built versions, shared by every test in this process.

    Returns {1: path, 2: path}; version 2's decoder differs from version 1's.
    Copy them into a test's own base path with `copy_version`.
    """
    root = tempfile.mkdtemp(prefix="serving-fixture-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    base = os.path.join(root, "vae")
    return {1: build_model_version(base, 1, variant=0),
            2: build_model_version(base, 2, variant=1)}


@functools.lru_cache(maxsize=None)
def load_reference(path: str):
    """The SavedModel at `path`, loaded in this process (for comparisons)."""
    import tensorflow as tf

    return tf.saved_model.load(path)


def reference_outputs(path: str, signature: str, inputs: dict) -> dict:
    """Outputs of calling a signature in process, as numpy."""
    import tensorflow as tf

    fn = load_reference(path).signatures[signature]
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------
# Servers.
# ---------------------------------------------------------------------------

def start_one_model_server(root):
    """Version 1 of the shared model under root/vae, served in this process on
    free gRPC and REST ports, without polling (loaded once)."""
    fx_base = os.path.join(str(root), "vae")
    copy_version(shared_versions()[1], fx_base, 1)
    srv = start_server_in_thread([
        "--port", "0", "--rest_api_port", str(free_port()),
        "--model_name", "vae", "--model_base_path", fx_base,
        "--file_system_poll_wait_seconds", "-1"])
    srv.manager.poll_once()
    return srv


def start_server_in_thread(argv: list):
    """Starts the local server in this process; returns the running Server."""
    import argparse

    from serving import server as server_lib

    parser = argparse.ArgumentParser()
    server_lib.add_serve_arguments(parser)
    args = parser.parse_args(argv)
    srv = server_lib.Server.from_args(args)
    srv.start()
    return srv


_GRPC_LINE = re.compile(r"Running gRPC ModelServer at [^:\s]+:(\d+)")
_REST_LINE = re.compile(r"Exporting HTTP/REST API at:[^:\s]+:(\d+)")


def _rest_port_asked(argv: list) -> bool:
    """True if `argv` sets --rest_api_port to a port other than 0."""
    for i, arg in enumerate(argv):
        if arg.startswith("--rest_api_port="):
            return arg.split("=", 1)[1] != "0"
        if arg == "--rest_api_port" and i + 1 < len(argv):
            return str(argv[i + 1]) != "0"
    return False


class ServerProcess:
    """`python -m serving.server ...` in a child process, log captured."""

    def __init__(self, argv: list, log_path: str, startup_timeout: float = 90.0):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.server", *argv],
            cwd=REPO_ROOT, env=subprocess_env(), stdout=self._log,
            stderr=subprocess.STDOUT)
        self.port = None
        self.rest_port = None
        # With a REST port asked for, wait for its line too: it is logged
        # after the gRPC one.
        wants_rest = _rest_port_asked(argv)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            m = _GRPC_LINE.search(text)
            r = _REST_LINE.search(text)
            if m and (r or not wants_rest):
                self.port = int(m.group(1))
                self.rest_port = int(r.group(1)) if r else None
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start; log:\n{self.log_text()}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


def wait_for(predicate, timeout: float, interval: float = 0.05,
             message: str = "condition"):
    """Polls `predicate` until it returns a true value; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{message}")
        time.sleep(interval)


def run_in_threads(fn, n: int) -> list:
    """Runs fn(i) for i in range(n) in n threads released together."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def target(i):
        barrier.wait()
        try:
            results[i] = ("ok", fn(i))
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            results[i] = ("error", e)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results
