"""The generation job on Apache Beam against the local job, side by side.

For each size N (default 20,000 and 200,000 samples) both runners generate the
same files from the same exported model, each as the user runs it -- a fresh
``python -m serving.cli generate ...`` process:

* ``local``  ``--runner local`` (threads, --concurrency 4);
* ``beam``   ``--runner beam -- --runner=FnApiRunner
             --direct_running_mode=multi_processing --direct_num_workers=2``:
             two worker processes, each a fresh interpreter that imports
             TensorFlow and loads the SavedModel;
* ``beam-threads`` (with --threads) the same with
             ``--direct_running_mode=multi_threading``: two worker threads in
             the launching process, which has TensorFlow loaded already.

Start-up is measured apart from the steady rate: each runner also runs a job
of one request (N0 = --batch-size samples), whose time is its start-up; the
steady rate at N is (N - N0) / (T(N) - T(N0)).  (The FnApiRunner runs a stage
to its end before the next, so Beam writes its shards only at the end and
"time to first shard" would measure nearly all of it.)  Printed: end-to-end
seconds, start-up, steady samples/s, and Beam / local ratios (end-to-end
throughput ratio: target >= 0.7 at 200,000).  Each round runs the runners
one after the other, alternating which goes first; medians over --rounds.
The files of both runners are compared (manifest bytes: every shard's sha256).

    PYTHONPATH=. python bench/bench_beam.py                  # 20k and 200k
    PYTHONPATH=. python bench/bench_beam.py --sizes 20000 --rounds 3
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import _common  # noqa: E402  (quiet TensorFlow first)


def export_model(root: str, network: str, data_shape: tuple) -> str:
    import keras

    import tfp_vae
    from export import exporter

    keras.utils.set_random_seed(0)
    kwargs = {"hidden": (256,)} if network == "mlp" else {}
    encoder, decoder = tfp_vae.networks.build(network, 2, data_shape, **kwargs)
    model = tfp_vae.VAE(encoder, decoder, latent_dim=2, posterior="tril")
    return exporter.export_model(model, root, "vae", 1, validate=False)


def run_job(runner: str, model: str, n: int, args, out: str) -> float:
    """Seconds of one `generate` process, end to end."""
    argv = [sys.executable, "-m", "serving.cli", "generate", "--saved-model", model,
            "--num-samples", str(n), "--batch-size", str(args.batch_size),
            "--shard-size", str(args.shard_size), "--seed", "1", "--out", out,
            "--quiet", "--runner", runner]
    if runner.startswith("beam"):
        mode = "multi_threading" if runner == "beam-threads" else "multi_processing"
        argv[-1] = "beam"
        argv += ["--", "--runner=FnApiRunner", f"--direct_running_mode={mode}",
                 f"--direct_num_workers={args.workers}"]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{runner} job failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000",
                        help="Sample counts N, comma-separated.")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2,
                        help="Beam worker processes (--direct_num_workers).")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--network", choices=("mlp", "conv"), default="mlp")
    parser.add_argument("--threads", action="store_true",
                        help="Also time Beam with worker threads (multi_threading).")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    _common.print_environment()
    print(f"model: VAE {args.network}, latent 2, data 28x28; batch {args.batch_size}, "
          f"shard {args.shard_size}; beam: FnApiRunner, {args.workers} worker processes",
          flush=True)

    root = tempfile.mkdtemp(prefix="bench-beam-")
    try:
        model = export_model(os.path.join(root, "models"), args.network, (28, 28))
        runners = ("local", "beam") + (("beam-threads",) if args.threads else ())
        times = {(r, n): [] for r in runners for n in [args.batch_size] + sizes}
        turn = 0
        for round_ in range(args.rounds):
            for n in [args.batch_size] + sizes:
                order = runners if turn % 2 == 0 else runners[::-1]
                turn += 1
                outs = {}
                for runner in order:
                    out = os.path.join(root, f"{runner}-{n}-{round_}")
                    seconds = run_job(runner, model, n, args, out)
                    times[(runner, n)].append(seconds)
                    outs[runner] = out
                    print(f"  round {round_ + 1} N={n:>7} {runner:>5}: {seconds:7.1f} s "
                          f"(load {_common.load_average()})", flush=True)
                with open(os.path.join(outs["local"], "manifest.json"), "rb") as f:
                    local_manifest = f.read()
                for runner in runners[1:]:
                    with open(os.path.join(outs[runner], "manifest.json"), "rb") as f:
                        same = f.read() == local_manifest
                    print(f"  N={n}: {runner} files "
                          f"{'byte-identical to local' if same else 'DIFFER from local'}",
                          flush=True)
                for out in outs.values():
                    shutil.rmtree(out, ignore_errors=True)

        med = {k: statistics.median(v) for k, v in times.items()}
        n0 = args.batch_size
        print(f"\nmedians of {args.rounds} round(s); start-up = a job of one "
              f"request (N0={n0}): "
              + ", ".join(f"{r} {med[(r, n0)]:.1f} s" for r in runners))
        print(f"{'runner':>13} {'N':>8} {'seconds':>8} {'thpt/local':>11} "
              f"{'steady/s':>9} {'steady/local':>13}")
        def steady(r, n):
            """(n - N0) / (T(n) - T(N0)); None when noise makes T(n) <= T(N0)."""
            extra = med[(r, n)] - med[(r, n0)]
            return (n - n0) / extra if extra > 0 else None

        for n in sizes:
            local_steady = steady("local", n)
            for r in runners:
                rate = steady(r, n)
                ratio = (f"{rate / local_steady:13.2f}" if rate and local_steady
                         else f"{'n/a':>13}")
                shown = f"{rate:9.0f}" if rate else f"{'n/a':>9}"
                print(f"{r:>13} {n:>8} {med[(r, n)]:>8.1f} "
                      f"{med[('local', n)] / med[(r, n)]:>11.2f} {shown} {ratio}")
        print("(steady n/a: the job of N took no longer than the one-request job, "
              "the machine's noise exceeds the work)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
