"""What per-row seeded sampling costs on top of decoding, before and after removing the loop.

For each batch size B, on the same model and batches, interleaved round by round:

* ``decode``            the decoder's mean for given z (no sampling at all);
* ``generate``          one prior draw per seed row, then decode -- the library's sampler:
                        Philox keyed by the seed row, the whole batch at once;
* ``generate (map_fn)`` the previous implementation: ``tf.map_fn`` over the rows, each
                        row drawn by TFP's stateless sampler with its own seed -- a
                        ``While`` loop of B iterations.

each both in process (compiled ``tf.function``) and through a SavedModel written with
Keras' ExportArchive and reloaded with ``tf.saved_model.load`` (what TF Serving runs).
Also timed: the sampler alone (z only), both ways. Printed: median CPU milliseconds of
this process per call (wall in brackets: CPU time is what other load on a shared
machine disturbs least), the sampling overhead = sampler / decode (target: at most 5%
at B = 256; the end-to-end difference generate - decode is shown too, but on a noisy
machine its spread exceeds the sampler's cost), and the sequential steps per request: the number of loop
iterations the graph executes one after the other (B for the map_fn loop, none for the
vectorized sampler: the request is one step).

    PYTHONPATH=. python bench/bench_sampling.py                       # conv, latent 2
    PYTHONPATH=. python bench/bench_sampling.py --prior mog --batch-sizes 1,256
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import _common  # noqa: E402  (quiet TensorFlow first)

import numpy as np  # noqa: E402

import tfp_vae  # noqa: E402
from tfp_vae._backend import keras, tf  # noqa: E402
from tfp_vae.row_sampling import sample_rows, seed_rows  # noqa: E402

LOOP_OPS = {"While", "StatelessWhile"}


def map_fn_generate(model, seeds):
    """The previous per-row sampler: one TFP stateless draw per row inside tf.map_fn."""
    prior = model.prior()
    z = tf.map_fn(lambda s: prior.sample(seed=s), seeds, fn_output_signature=tf.float32)
    return {"x": model.decode_mean(z), "z": z}


def map_fn_sample(model, seeds):
    prior = model.prior()
    return tf.map_fn(lambda s: prior.sample(seed=s), seeds, fn_output_signature=tf.float32)


def build_functions(model):
    d = model.latent_dim
    seed = tf.TensorSpec([None, 2], tf.int32, "seed")
    return {
        "decode": (lambda z: {"mean": model.decode_mean(z)}, tf.TensorSpec([None, d], tf.float32, "z")),
        "generate": (lambda s: model.generate(s), seed),
        "generate_map_fn": (lambda s: map_fn_generate(model, s), seed),
        "sample": (lambda s: {"z": sample_rows(model.prior(), s)}, seed),
        "sample_map_fn": (lambda s: {"z": map_fn_sample(model, s)}, seed),
    }


def export(model, functions, path):
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, spec) in functions.items():
        archive.add_endpoint(name, fn, input_signature=[spec])
    archive.write_out(path, verbose=False)
    return tf.saved_model.load(path)


def loop_ops(concrete):
    """Loop ops anywhere in a concrete function's graph, library functions included."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return sorted(n.op for n in nodes if n.op in LOOP_OPS)


def time_per_call(fn, min_time):
    """(wall seconds, CPU seconds of this process) per call, over >= min_time of calls."""
    calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls, (time.process_time() - cpu_start) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="conv", choices=["conv", "mlp"])
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--prior", default="normal", choices=["normal", "mog", "vamp"])
    parser.add_argument("--batch-sizes", default="1,64,256,1024")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per timing round")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    _common.print_environment()
    data_shape = (32, 32, 1) if args.network == "conv" else (28, 28, 1)
    encoder, decoder = tfp_vae.networks.build(args.network, args.latent_dim, data_shape)
    model = tfp_vae.VAE(encoder, decoder, latent_dim=args.latent_dim, prior=args.prior)
    functions = build_functions(model)
    in_process = {name: tf.function(fn, input_signature=[spec]) for name, (fn, spec) in functions.items()}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = export(model, functions, os.path.join(tmp, "1"))
        saved = {name: getattr(loaded, name) for name in functions}
        steps = {
            name: loop_ops(in_process[name].get_concrete_function()) for name in functions
        }
        print(f"model: {args.network}, latent {args.latent_dim}, prior {args.prior}; "
              f"median of {args.repeats} interleaved rounds of >= {args.min_time}s")
        print("loop ops in the graph: " + ", ".join(f"{n}: {steps[n] or 'none'}" for n in functions))
        print("median CPU ms of this process per call (wall ms in brackets); 'sampler' is the "
              "sampling alone, and its overhead is sampler / decode, measured side by side")
        header = ("| B | where | decode ms | sampler ms, Philox (map_fn) | overhead, Philox (map_fn) "
                  "| generate ms, Philox (map_fn) | sequential steps per request, Philox (map_fn) |")
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for batch in batch_sizes:
            z = tf.constant(np.random.default_rng(0).standard_normal((batch, args.latent_dim)), tf.float32)
            seeds = seed_rows(0, 0, batch)
            contenders = {}
            for where, fns in (("in process", in_process), ("SavedModel", saved)):
                for name in functions:
                    x = z if name == "decode" else seeds
                    contenders[(where, name)] = (lambda f=fns[name], x=x: f(x))
            for fn in contenders.values():
                fn()  # trace and warm up
                fn()
            samples = {key: [] for key in contenders}
            for _ in range(args.repeats):
                for key, fn in contenders.items():
                    samples[key].append(time_per_call(fn, args.min_time))
            wall = {key: statistics.median(w for w, _ in v) for key, v in samples.items()}
            cpu = {key: statistics.median(c for _, c in v) for key, v in samples.items()}

            def ms(key):
                return f"{cpu[key] * 1e3:.2f} ({wall[key] * 1e3:.2f})"

            for where in ("in process", "SavedModel"):
                decode = cpu[(where, "decode")]
                new, old = cpu[(where, "sample")], cpu[(where, "sample_map_fn")]
                after = batch * len(steps["generate"]) or 1
                before = batch * len(steps["generate_map_fn"]) or 1
                print(f"| {batch} | {where} | {ms((where, 'decode'))} | "
                      f"{ms((where, 'sample'))} ({ms((where, 'sample_map_fn'))}) | "
                      f"**{new / decode:.1%}** ({old / decode:.1%}) | "
                      f"{ms((where, 'generate'))} ({ms((where, 'generate_map_fn'))}) | "
                      f"{after} ({before}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
