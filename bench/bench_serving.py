"""Benchmark: the local server against calling the same SavedModel in process.

    python bench/bench_serving.py [--saved-model MODELS/NAME/VERSION]

Prints, side by side in one run:

1. Predict latency (median, p99) of the `decode` signature at batch 1, 64
   and 256 through the local server (gRPC, one client) and in process
   (``loaded.signatures["decode"](z=...)`` plus the copy to numpy); targets:
   server <= 1.3x in process at batch 1, <= 1.1x at batch 256.  A third
   column runs the server's own call (its Session callable) in this
   process, so "transport" is what gRPC and the request handling add.
   The server answers in its default encoding (typed ``float_val``),
   which the client decodes; the client sends ``tensor_content``.  The gRPC floor rows are GetModelStatus round trips:
   to this server, and to an empty Python gRPC server (no TensorFlow).
2. Batch generation throughput (samples/s) of the generation job through
   the server with concurrency, against the job generating in process;
   target: server >= 0.8x in process.
3. Server-side batching with many small concurrent requests: the same load
   of batch-1 requests against a server without and with --enable_batching.

Without --saved-model it builds a contract-shaped model whose decoder is the
reference network of SPEC.md (Dense -> 3 Conv2DTranspose -> Conv2D, data
32x32x1, latent 2) with random weights.  Servers listen on 127.0.0.1 only and
are stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import serving_fixtures as fx  # noqa: E402  (tests/serving_fixtures.py)


def _percentiles(samples: list) -> tuple:
    ms = np.asarray(samples) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 99))


def _time_alternating(fns, iterations: int, warmup: int = 3) -> list:
    """Times each of `fns` in turns, so drifting machine load hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(iterations):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return times


def bench_latency(client, loaded, servable, latent_dim: int, batches,
                  scale: float):
    """Per batch: (batch, calls, in process, server's call in process,
    through the server), each (median, p99) in ms, timed in turns."""
    import tensorflow as tf

    fn = loaded.signatures["decode"]
    rows = []
    for batch in batches:
        iterations = max(20, int(scale * {1: 300, 64: 100}.get(batch, 50)))
        z = np.random.default_rng(batch).normal(
            size=(batch, latent_dim)).astype(np.float32)
        expected = fn(z=tf.constant(z))["mean"].numpy()
        np.testing.assert_allclose(client.decode(z), expected, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(servable.run("decode", {"z": z})["mean"],
                                   expected, rtol=1e-5, atol=1e-6)
        local, session, remote = _time_alternating([
            lambda: fn(z=tf.constant(z))["mean"].numpy(),
            lambda: servable.run("decode", {"z": z})["mean"],
            lambda: client.decode(z)], iterations)
        rows.append((batch, iterations, _percentiles(local),
                     _percentiles(session), _percentiles(remote)))
    return rows


_BARE_SERVER = r"""
import sys
from concurrent import futures
import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

class Empty(model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):
        return get_model_status_pb2.GetModelStatusResponse()

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
model_service_pb2_grpc.add_ModelServiceServicer_to_server(Empty(), server)
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
sys.stdin.read()
"""


def bench_bare_floor(iterations: int) -> tuple:
    """Median and p99 of a GetModelStatus round trip to a Python gRPC server
    whose handler does nothing (no TensorFlow, no model): what any Python
    gRPC server costs on this machine before it does any work."""
    import subprocess

    import grpc
    from tensorflow_serving.apis import (get_model_status_pb2,
                                         model_service_pb2_grpc)

    proc = subprocess.Popen([sys.executable, "-c", _BARE_SERVER],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "vae"
            for _ in range(20):
                stub.GetModelStatus(request, timeout=30)
            times = []
            for _ in range(iterations):
                start = time.perf_counter()
                stub.GetModelStatus(request, timeout=30)
                times.append(time.perf_counter() - start)
    finally:
        proc.stdin.close()
        proc.wait(30)
    return _percentiles(times)


def bench_floor(client, iterations: int) -> tuple:
    """Median and p99 of a GetModelStatus round trip (no model run)."""
    for _ in range(5):
        client.status()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        client.status()
        times.append(time.perf_counter() - start)
    return _percentiles(times)


def _job_rate(argv) -> float:
    from serving import generate as gen

    parser = argparse.ArgumentParser()
    gen.add_generate_arguments(parser)
    args = parser.parse_args([str(a) for a in argv] + ["--quiet"])
    gen.validate_args(args)
    stream = io.StringIO()
    code = gen.Job(args, stream=stream).run()
    text = stream.getvalue()
    if code != 0:
        raise RuntimeError(f"generation job failed:\n{text}")
    return float(re.search(r"\(([\d.]+) samples/s\)", text).group(1))


def bench_generation(target: str, saved_model: str, work: str,
                     num_samples: int, batch: int, concurrency: int,
                     rounds: int):
    common = ["--num-samples", num_samples, "--batch-size", batch,
              "--shard-size", max(batch, 1024), "--seed", 1]
    results = {}
    for _ in range(rounds):          # best of `rounds`, taken in turns
        for c in sorted({1, concurrency}):
            for where, source in (
                    ("in process", ["--saved-model", saved_model]),
                    ("server", ["--target", target, "--model_name", "vae"])):
                out = os.path.join(work, "gen")
                rate = _job_rate([*source, "--concurrency", c, "--out", out,
                                  *common])
                shutil.rmtree(out)
                results[(where, c)] = max(rate, results.get((where, c), 0.0))
    return results


def bench_small_requests(target: str, latent_dim: int, clients: int,
                         requests_each: int):
    from serving.client import Client

    z = np.random.default_rng(0).normal(size=(1, latent_dim)).astype(np.float32)
    latencies = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    errors = []

    def worker(i):
        with Client(target, "vae", timeout=60) as c:
            c.decode(z)
            barrier.wait()
            for _ in range(requests_each):
                start = time.perf_counter()
                try:
                    c.decode(z)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(e)
                latencies[i].append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    flat = [x for per in latencies for x in per]
    median, p99 = _percentiles(flat)
    return {"rps": len(flat) / elapsed, "median": median, "p99": p99,
            "errors": len(errors)}


def _metric(rest_port: int, name: str) -> float:
    import urllib.request

    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(
        rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved-model",
                        help="SavedModel version directory (BASE/NAME/VERSION); "
                             "default: build the reference-network model")
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="Multiplies the number of timed calls.")
    parser.add_argument("--gen-samples", type=int, default=4096)
    parser.add_argument("--gen-batch", type=int, default=256)
    parser.add_argument("--gen-concurrency", type=int, default=4)
    parser.add_argument("--clients", type=int, default=32,
                        help="Concurrent clients of batch-1 requests.")
    parser.add_argument("--requests-each", type=int, default=40)
    parser.add_argument("--sections", default="1,2,3",
                        help="Which of the sections 1 (latency), 2 "
                             "(generation job), 3 (batching) to run.")
    parser.add_argument("--server-flags", default="",
                        help="More flags for the server of sections 1 and 2, "
                             "one string, e.g. "
                             "'--tensorflow_intra_op_parallelism=1'.")
    parser.add_argument("--rounds", type=int, default=2,
                        help="Sections 2 and 3 keep the best of this many "
                             "runs, taken in turns.")
    args = parser.parse_args(argv)

    import tensorflow as tf

    work = tempfile.mkdtemp(prefix="bench-serving-")
    servers = []
    try:
        base = os.path.join(work, "models", "vae")
        if args.saved_model:
            source = os.path.abspath(args.saved_model)
            fx.copy_version(source, base, 1)
            model_text = source
        else:
            fx.build_model_version(base, 1, network="conv",
                                   data_shape=(32, 32, 1))
            model_text = ("built: reference conv decoder, latent 2, "
                          "data 32x32x1, random weights")
        version_dir = os.path.join(base, "1")
        loaded = tf.saved_model.load(version_dir)
        z_spec = loaded.signatures["decode"].structured_input_signature[1]["z"]
        latent_dim = int(z_spec.shape[-1])

        plain = fx.ServerProcess(
            ["--port", "0", "--model_name", "vae", "--model_base_path", base,
             "--file_system_poll_wait_seconds", "0",
             *args.server_flags.split()],
            os.path.join(work, "server.log"))
        servers.append(plain)
        params = os.path.join(work, "batching.txt")
        with open(params, "w") as f:
            f.write("max_batch_size { value: 64 } "
                    "batch_timeout_micros { value: 2000 } "
                    "num_batch_threads { value: 2 } "
                    "max_enqueued_batches { value: 100 }")
        monitoring = os.path.join(work, "monitoring.txt")
        with open(monitoring, "w") as f:
            f.write("prometheus_config { enable: true }")
        batching = fx.ServerProcess(
            ["--port", "0", "--rest_api_port", str(fx.free_port()),
             "--monitoring_config_file", monitoring,
             "--model_name", "vae", "--model_base_path", base,
             "--file_system_poll_wait_seconds", "0", "--enable_batching",
             "--batching_parameters_file", params],
            os.path.join(work, "server-batching.log"))
        servers.append(batching)

        print(f"model: {model_text}")
        print(f"machine: {os.cpu_count()} CPU(s); tensorflow {tf.__version__}; "
              f"server and client on the same machine")
        if args.server_flags:
            print(f"server flags (sections 1 and 2): {args.server_flags}")
        print()

        sections = {int(x) for x in args.sections.split(",")}
        if 1 in sections:
            bench_section_latency(args, plain, loaded, latent_dim, version_dir)
        if 2 in sections:
            bench_section_generation(args, plain, version_dir, work)
        if 3 in sections:
            bench_section_batching(args, plain, batching, latent_dim)
    finally:
        for s in servers:
            s.terminate(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_section_latency(args, plain, loaded, latent_dim,
                          version_dir) -> None:
    from serving.client import Client
    from serving.servable import Servable

    batches = [int(b) for b in args.batches.split(",")]
    servable = Servable("vae", 1, version_dir)
    with Client(plain.target, "vae", timeout=120) as client:
        rows = bench_latency(client, loaded, servable, latent_dim, batches,
                             args.scale)
        floor = bench_floor(client, max(20, int(300 * args.scale)))
    bare = bench_bare_floor(max(20, int(300 * args.scale)))
    print("1. Predict latency, signature 'decode' (ms)")
    print("   in process: loaded.signatures['decode'](z=...) and .numpy();")
    print("   server's call: the server's Session callable, run in this "
          "process;")
    print("   local server: the same through gRPC (ratio to in process, "
          "and to the server's call)")
    print(f"{'batch':>6} {'calls':>6} | {'in process':>17} | "
          f"{'server call':>17} | {'local server':>17} | {'ratio':>13} | "
          f"{'transport':>9}")
    print(f"{'':>6} {'':>6} | {'median':>8} {'p99':>8} | {'median':>8} "
          f"{'p99':>8} | {'median':>8} {'p99':>8} | {'median':>6} {'p99':>6} |"
          f" {'median':>9}")
    for batch, calls, (lm, lp), (sm, sp), (rm, rp) in rows:
        print(f"{batch:>6} {calls:>6} | {lm:>8.3f} {lp:>8.3f} | "
              f"{sm:>8.3f} {sp:>8.3f} | {rm:>8.3f} {rp:>8.3f} | "
              f"{rm / lm:>5.2f}x {rp / lp:>5.2f}x | {rm / sm:>8.2f}x")
    print(f"   gRPC floor, this server (GetModelStatus, no model run): "
          f"median {floor[0]:.3f} ms, p99 {floor[1]:.3f} ms")
    print(f"   gRPC floor, an empty Python gRPC server (no TensorFlow): "
          f"median {bare[0]:.3f} ms, p99 {bare[1]:.3f} ms")
    targets = {1: 1.3, 256: 1.1}
    for batch, _, local, _, remote in rows:
        if batch in targets:
            ratio = remote[0] / local[0]
            print(f"   target at batch {batch}: server <= "
                  f"{targets[batch]}x in process; median ratio "
                  f"{ratio:.2f}x ({'met' if ratio <= targets[batch] else 'not met'})")
            if batch == 1:
                budget = (targets[batch] - 1) * local[0]
                print(f"   at batch 1 the target leaves {budget:.3f} ms over "
                      f"the in-process call for transport and request "
                      f"handling; the empty server's round trip alone takes "
                      f"{bare[0]:.3f} ms")
    print()


def bench_section_generation(args, plain, version_dir, work) -> None:
    gen = bench_generation(plain.target, version_dir, work,
                           args.gen_samples, args.gen_batch,
                           args.gen_concurrency, args.rounds)
    print(f"2. Batch generation, {args.gen_samples} samples, batch "
          f"{args.gen_batch} (samples/s)")
    for (where, c), rate in sorted(gen.items()):
        print(f"   {where:<11} concurrency {c:>2}: {rate:>10.1f}")
    best_local = max(v for (w, _), v in gen.items() if w == "in process")
    server_rate = gen[("server", args.gen_concurrency)]
    print(f"   server (concurrency {args.gen_concurrency}) / best in "
          f"process: {server_rate / best_local:.2f}x (target >= 0.8x)")
    print()


def bench_section_batching(args, plain, batching, latent_dim) -> None:
    plain_result = batched_result = None
    before = _metric(batching.rest_port, "tfp_vae_serving_batches_total")
    for _ in range(args.rounds):     # best of `rounds`, taken in turns
        r = bench_small_requests(plain.target, latent_dim, args.clients,
                                 args.requests_each)
        if plain_result is None or r["rps"] > plain_result["rps"]:
            plain_result = r
        r = bench_small_requests(batching.target, latent_dim, args.clients,
                                 args.requests_each)
        if batched_result is None or r["rps"] > batched_result["rps"]:
            batched_result = r
    batches_run = _metric(batching.rest_port,
                          "tfp_vae_serving_batches_total") - before
    requests = args.rounds * args.clients * (args.requests_each + 1)
    print(f"3. {args.clients} concurrent clients x {args.requests_each} "
          f"batch-1 'decode' requests")
    print(f"   {'server':<24} {'requests/s':>10} {'median ms':>10} "
          f"{'p99 ms':>10} {'errors':>7}")
    for name, r in (("without batching", plain_result),
                    ("with --enable_batching", batched_result)):
        print(f"   {name:<24} {r['rps']:>10.1f} {r['median']:>10.3f} "
              f"{r['p99']:>10.3f} {r['errors']:>7}")
    print(f"   batching: {requests} requests ran as {batches_run:.0f} "
          f"batches ({requests / max(batches_run, 1):.1f} requests per "
          f"batch); throughput ratio "
          f"{batched_result['rps'] / plain_result['rps']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
