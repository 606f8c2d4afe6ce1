"""Test fixtures for the serving tests: contract-shaped SavedModels and servers.

`build_model_version` is the one place that produces a model directory.  It
writes ``BASE/<version>/`` with ``saved_model.pb``, ``variables/`` and
``assets.extra/tf_serving_warmup_requests``, carrying the signatures of the
"Exported SavedModel" table in SPEC.md (``serving_default``, ``decode``,
``generate``, ``encode``, ``reconstruct``, ``log_likelihood``).  The model is
small and deterministic: a dense (or, for benchmarks, convolutional) decoder
with Bernoulli means, a full-covariance Gaussian encoder, and stateless
per-row sampling so the same seed row always gives the same sample.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import re
import shutil
import signal
import socket
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
SIGNATURES = ("serving_default", "decode", "generate", "encode", "reconstruct",
              "log_likelihood")


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

def _make_module(latent_dim: int, data_shape: tuple, variant: int,
                 network: str):
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    from tfp_vae import row_sampling
    d = latent_dim
    n = int(np.prod(data_shape))
    rng = np.random.default_rng(1000 + variant)

    def var(*shape, scale=1.0, shift=0.0):
        return tf.Variable((rng.normal(size=shape) * scale + shift)
                           .astype(np.float32))

    class ContractModel(tf.Module):
        """Encoder, decoder and prior of a small VAE, as TF functions."""

        def __init__(self):
            super().__init__()
            if network == "dense":
                self.dec_w = var(d, n)
                # `variant` shifts the decoder output so versions differ.
                self.dec_b = var(n, scale=0.1, shift=float(variant))
                self.enc_w = var(n, 2 * d + d * d, scale=1.0 / math.sqrt(n))
            elif network == "conv":
                if len(data_shape) != 3 or data_shape[0] % 8 or data_shape[1] % 8:
                    raise ValueError(
                        f"conv fixture needs data_shape (H, W, C) with H, W "
                        f"multiples of 8; got {data_shape}")
                h, w, c = data_shape
                self.h0, self.w0 = h // 8, w // 8
                self.dec_dense = var(d, self.h0 * self.w0 * 128, scale=0.5)
                self.dec_dense_b = var(self.h0 * self.w0 * 128, scale=0.0,
                                       shift=float(variant))
                self.dec_t = [var(3, 3, 128, 128, scale=0.05),
                              var(3, 3, 64, 128, scale=0.05),
                              var(3, 3, 32, 64, scale=0.05)]
                self.dec_out = var(3, 3, 32, c, scale=0.05)
                self.enc_c = [var(3, 3, c, 32, scale=0.2),
                              var(3, 3, 32, 64, scale=0.05),
                              var(3, 3, 64, 128, scale=0.05)]
                self.enc_w = var(self.h0 * self.w0 * 128, 2 * d + d * d,
                                 scale=0.01)
            else:
                raise ValueError(f"network must be 'dense' or 'conv'; got "
                                 f"{network!r}")

        # -- building blocks -------------------------------------------------
        def decoder_logits(self, z):
            if network == "dense":
                return tf.reshape(tf.matmul(z, self.dec_w) + self.dec_b,
                                  [-1, *data_shape])
            b = tf.shape(z)[0]
            h = tf.nn.relu(tf.matmul(z, self.dec_dense) + self.dec_dense_b)
            h = tf.reshape(h, [b, self.h0, self.w0, 128])
            size_h, size_w = self.h0, self.w0
            for kernel in self.dec_t:
                size_h, size_w = size_h * 2, size_w * 2
                h = tf.nn.relu(tf.nn.conv2d_transpose(
                    h, kernel, [b, size_h, size_w, kernel.shape[2]], 2,
                    padding="SAME"))
            return tf.nn.conv2d(h, self.dec_out, 1, padding="SAME")

        def posterior_params(self, x):
            if network == "dense":
                hid = tf.matmul(tf.reshape(x, [-1, n]), self.enc_w)
            else:
                h = x
                for kernel in self.enc_c:
                    h = tf.nn.relu(tf.nn.conv2d(h, kernel, 2, padding="SAME"))
                hid = tf.matmul(tf.reshape(h, [tf.shape(x)[0], -1]),
                                self.enc_w)
            loc = hid[:, :d]
            diag = tf.nn.softplus(hid[:, d:2 * d]) + 1e-3
            off = tf.reshape(hid[:, 2 * d:], [-1, d, d])
            strictly_lower = (tf.linalg.band_part(off, -1, 0)
                              - tf.linalg.band_part(off, 0, 0))
            return loc, strictly_lower + tf.linalg.diag(diag)

        # -- signatures ------------------------------------------------------
        @tf.function(input_signature=[tf.TensorSpec([None, d], tf.float32)])
        def decode(self, z):
            return {"mean": tf.sigmoid(self.decoder_logits(z))}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int32)])
        def generate(self, seed):
            prior = tfd.MultivariateNormalDiag(tf.zeros([d]), tf.ones([d]))
            z = row_sampling.sample_rows(prior, seed)
            return {"x": tf.sigmoid(self.decoder_logits(z)), "z": z}

        @tf.function(input_signature=[
            tf.TensorSpec([None, *data_shape], tf.float32)])
        def encode(self, x):
            loc, scale_tril = self.posterior_params(x)
            return {"loc": loc, "scale_tril": scale_tril}

        @tf.function(input_signature=[
            tf.TensorSpec([None, *data_shape], tf.float32)])
        def reconstruct(self, x):
            loc, _ = self.posterior_params(x)
            return {"mean": tf.sigmoid(self.decoder_logits(loc))}

        @tf.function(input_signature=[
            tf.TensorSpec([None, *data_shape], tf.float32),
            tf.TensorSpec([None, 2], tf.int32)])
        def log_likelihood(self, x, seed):
            loc, scale_tril = self.posterior_params(x)
            prior = tfd.MultivariateNormalDiag(tf.zeros([d]), tf.ones([d]))

            q = tfd.MultivariateNormalTriL(loc, scale_tril)
            z = row_sampling.sample_rows(q, seed, (NUM_IMPORTANCE_SAMPLES,),
                                         row_sampling.POSTERIOR)
            z = tf.transpose(z, [1, 0, 2])  # [k, B, d]
            logits = tf.reshape(self.decoder_logits(tf.reshape(z, [-1, d])),
                                [NUM_IMPORTANCE_SAMPLES, -1, *data_shape])
            likelihood = tfd.Independent(
                tfd.Bernoulli(logits=logits),
                reinterpreted_batch_ndims=len(data_shape))
            log_w = (likelihood.log_prob(x) + prior.log_prob(z)
                     - q.log_prob(z))
            return {"log_likelihood": tf.reduce_logsumexp(log_w, 0)
                    - math.log(NUM_IMPORTANCE_SAMPLES),
                    "elbo": tf.reduce_mean(log_w, 0)}

    return ContractModel()


def example_inputs(batch: int, *, latent_dim: int = LATENT_DIM,
                   data_shape: tuple = DATA_SHAPE, seed: int = 0) -> dict:
    """Inputs of every signature for a batch of `batch` rows."""
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, *data_shape)) > 0.5).astype(np.float32)
    seeds = np.stack([np.full(batch, seed, np.int32),
                      np.arange(batch, dtype=np.int32)], axis=1)
    z = rng.normal(size=(batch, latent_dim)).astype(np.float32)
    return {
        "serving_default": {"z": z},
        "decode": {"z": z},
        "generate": {"seed": seeds},
        "encode": {"x": x},
        "reconstruct": {"x": x},
        "log_likelihood": {"x": x, "seed": seeds},
    }


def write_warmup_requests(version_dir: str, model_name: str,
                          inputs_by_signature: dict) -> str:
    """Writes assets.extra/tf_serving_warmup_requests as PredictionLog records."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    extra = os.path.join(version_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in sorted(inputs_by_signature.items()):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def build_model_version(base_path: str, version: int, *, variant: int = 0,
                        model_name: str = "vae", network: str = "dense",
                        latent_dim: int = LATENT_DIM,
                        data_shape: tuple = DATA_SHAPE,
                        warmup: bool = True) -> str:
    """Writes one servable version to BASE/<version>/ and returns its path.

    The version is written under a temporary name and renamed into place, as
    an exporter should, so a polling server never sees half a version.
    """
    import tensorflow as tf

    module = _make_module(latent_dim, tuple(data_shape), variant, network)
    final = os.path.join(base_path, str(version))
    tmp = os.path.join(base_path, f".tmp-{version}-{os.getpid()}")
    signatures = {
        "serving_default": module.decode.get_concrete_function(),
        "decode": module.decode.get_concrete_function(),
        "generate": module.generate.get_concrete_function(),
        "encode": module.encode.get_concrete_function(),
        "reconstruct": module.reconstruct.get_concrete_function(),
        "log_likelihood": module.log_likelihood.get_concrete_function(),
    }
    os.makedirs(base_path, exist_ok=True)
    tf.saved_model.save(module, tmp, signatures=signatures)
    if warmup:
        inputs = example_inputs(2, latent_dim=latent_dim, data_shape=data_shape)
        write_warmup_requests(tmp, model_name, inputs)
    os.replace(tmp, final)
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

def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET,
                                          socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            m = _GRPC_LINE.search(text)
            if m:
                self.port = int(m.group(1))
                r = _REST_LINE.search(text)
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
