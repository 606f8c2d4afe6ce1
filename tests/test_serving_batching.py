"""Server-side batching: concurrent requests merged, padded, split back."""

import time

import grpc
import numpy as np
import pytest

import serving_fixtures as fx

from serving import config as config_lib
from serving.client import Client
from serving.errors import ServingError

pytestmark = pytest.mark.timeout(120)

BATCHING = """
max_batch_size { value: 16 }
batch_timeout_micros { value: 300000 }
num_batch_threads { value: 1 }
max_enqueued_batches { value: 4 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
allowed_batch_sizes: 16
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    fx.copy_version(fx.shared_versions()[1], str(root / "vae"), 1)
    params = root / "batching.txt"
    params.write_text(BATCHING)
    srv = fx.start_server_in_thread([
        "--port", "0", "--model_name", "vae",
        "--model_base_path", str(root / "vae"), "--enable_batching",
        "--batching_parameters_file", str(params),
        "--file_system_poll_wait_seconds", "0"])
    yield srv
    srv.stop(grace=5)


def _metric(srv, name, **labels):
    return srv.metrics.value(name, model="vae", **labels)


def test_concurrent_requests_are_merged_and_split_back(server):
    before_batches = _metric(server, "tfp_vae_serving_batches_total",
                             signature="decode")
    before_requests = _metric(server, "tfp_vae_serving_batched_requests_total",
                              signature="decode")
    rng = np.random.default_rng(0)
    zs = [rng.normal(size=(2, fx.LATENT_DIM)).astype(np.float32)
          for _ in range(6)]

    clients = [Client(server.target, "vae", timeout=30) for _ in zs]
    for c in clients:
        c.metadata()                  # connected before the race starts
    try:
        results = fx.run_in_threads(lambda i: clients[i].decode(zs[i]), 6)
    finally:
        for c in clients:
            c.close()
    assert all(r[0] == "ok" for r in results), results
    path = fx.shared_versions()[1]
    for z, (_, mean) in zip(zs, results):
        expected = fx.reference_outputs(path, "decode", {"z": z})["mean"]
        np.testing.assert_allclose(mean, expected, rtol=1e-6, atol=1e-6)
    batches = _metric(server, "tfp_vae_serving_batches_total",
                      signature="decode") - before_batches
    requests = _metric(server, "tfp_vae_serving_batched_requests_total",
                       signature="decode") - before_requests
    assert requests == 6
    # Six requests arriving within the 0.3 s window share fewer batches.
    assert batches < 6
    assert server.metrics.max("tfp_vae_serving_max_requests_per_batch",
                              signature="decode") >= 2
    assert _metric(server, "tfp_vae_serving_merged_batches_total",
                   signature="decode") >= 1


def test_batches_padded_to_allowed_sizes(server):
    before = _metric(server, "tfp_vae_serving_padding_rows_total",
                     signature="generate")
    rows = fx.example_inputs(3, seed=4)["generate"]
    with Client(server.target, "vae", timeout=30) as c:
        x, z = c.generate(rows["seed"])
    assert x.shape[0] == 3 and z.shape[0] == 3
    expected = fx.reference_outputs(fx.shared_versions()[1], "generate", rows)
    np.testing.assert_array_equal(z, expected["z"])
    # 3 rows run as a batch of 4 (the smallest allowed size).
    assert _metric(server, "tfp_vae_serving_padding_rows_total",
                   signature="generate") - before == 1


def test_request_larger_than_max_batch_size_is_refused(server):
    with Client(server.target, "vae", timeout=30) as c:
        with pytest.raises(ServingError) as info:
            c.decode(np.zeros((17, fx.LATENT_DIM), np.float32))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 17 is larger than maximum input batch size 16" in (
            info.value.message)
        # Errors of validation come before batching, as without it.
        with pytest.raises(ServingError) as info:
            c.predict("decode", {"z": np.zeros((2, 3), np.float32)})
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_timeout_bounds_the_wait(server):
    with Client(server.target, "vae", timeout=30) as c:
        start = time.monotonic()
        c.decode(np.zeros((1, fx.LATENT_DIM), np.float32))
        elapsed = time.monotonic() - start
    # A lone request waits for the 0.3 s window, not longer.
    assert 0.25 <= elapsed < 5


def test_batching_parameters_text_proto():
    options = config_lib.parse_batching_parameters(BATCHING)
    assert options.max_batch_size == 16
    assert options.batch_timeout_micros == 300000
    assert options.num_batch_threads == 1
    assert options.allowed_batch_sizes == (4, 8, 16)
    with pytest.raises(config_lib.ConfigError, match="must equal max_batch_size"):
        config_lib.parse_batching_parameters(
            "max_batch_size { value: 16 } allowed_batch_sizes: 8")
    with pytest.raises(config_lib.ConfigError, match="strictly increasing"):
        config_lib.parse_batching_parameters(
            "max_batch_size { value: 8 } allowed_batch_sizes: 8 "
            "allowed_batch_sizes: 4 allowed_batch_sizes: 8")
    with pytest.raises(config_lib.ConfigError, match="cannot parse"):
        config_lib.parse_batching_parameters("max_batch_size: 16")
