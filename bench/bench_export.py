"""Latency and throughput of the exported ``decode`` and ``generate`` against the live model.

Both run in this process on the same batches, interleaved repeat by repeat so that
drift in machine load hits both alike:

* decode:   live ``model.decode_mean(z)``  vs  the SavedModel's ``decode`` signature;
* generate: live ``model.generate(seed)``  vs  the SavedModel's ``generate`` signature.

For each batch size we time ``--repeats`` rounds; a round calls the function until
``--min-time`` seconds have passed and records the mean time per call. The table
shows the median over rounds as milliseconds per call and examples per second, and
``ratio`` = the median over rounds of that round's SavedModel examples/s / live
examples/s (>= 0.95 is the target: the SavedModel no slower than the live model). The
order of the contenders within a round rotates every round. ``--traced-live`` adds the live method
wrapped in ``tf.function`` as a third column, the fairest graph-to-graph comparison.

    PYTHONPATH=. python bench/bench_export.py                      # conv, latent 2, untrained
    PYTHONPATH=. python bench/bench_export.py --run-dir runs/mnist --batch-sizes 1,64,256
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np

_PRECISION = re.compile(r"\.\d+f$")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def _build_model(args):
    import tfp_vae
    from export import exporter

    if args.run_dir:
        model = exporter.load_run_model(args.run_dir)
        return model
    encoder, decoder = tfp_vae.networks.build(args.network, args.latent_dim, tuple(args.data_shape))
    return tfp_vae.VAE(
        encoder, decoder, latent_dim=args.latent_dim, prior=args.prior, posterior=args.posterior
    )


def _time_per_call(fn, min_time):
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def _bench(contenders, repeats, min_time, warmup):
    """({name: median seconds per call}, {name: [seconds per call, one per round]}).

    contenders is {name: zero-argument callable}; the order within a round rotates
    every round, so that neither always runs first after the other warmed the caches.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    names = list(contenders)
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(_time_per_call(contenders[name], min_time))
    return {name: statistics.median(values) for name, values in samples.items()}, samples


def _ratio(samples, other):
    """Median over rounds of the per-round speed ratio saved / other (time other / time saved)."""
    return statistics.median(o / s for s, o in zip(samples["saved"], samples[other]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="benchmark this run's model instead")
    parser.add_argument("--network", default="conv", choices=["conv", "mlp"])
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument(
        "--data-shape",
        type=lambda s: [int(v) for v in s.split("x")],
        default=[32, 32, 1],
        help="HxWxC (default 32x32x1)",
    )
    parser.add_argument("--prior", default="normal", choices=["normal", "mog", "vamp"])
    parser.add_argument("--posterior", default="diag", choices=["diag", "tril"])
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64, 256]
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--min-time", type=float, default=0.3, help="seconds of calls per timing round"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--traced-live",
        action="store_true",
        help="also time the live methods wrapped in tf.function",
    )
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if any ratio is below 0.95")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import export

    model = _build_model(args)
    with tempfile.TemporaryDirectory() as base:
        path = export.export_model(model, base, "bench", validate=False)
        saved = tf.saved_model.load(path)
        sigs = {"decode": saved.signatures["decode"], "generate": saved.signatures["generate"]}
        live = {
            "decode": lambda z: model.decode_mean(z),
            "generate": lambda seed: model.generate(seed),
        }
        traced = {
            "decode": tf.function(live["decode"], reduce_retracing=True),
            "generate": tf.function(live["generate"], reduce_retracing=True),
        }

        rows = []
        rng = np.random.default_rng(0)
        for batch in args.batch_sizes:
            z = tf.constant(rng.standard_normal((batch, model.latent_dim)).astype(np.float32))
            seed = tf.constant(
                np.stack([np.zeros(batch, np.int32), np.arange(batch, dtype=np.int32)], 1)
            )
            for name, key, value in (("decode", "z", z), ("generate", "seed", seed)):
                contenders = {
                    "live": lambda f=live[name], v=value: f(v),
                    "saved": lambda f=sigs[name], k=key, v=value: f(**{k: v}),
                }
                if args.traced_live:
                    contenders["live_traced"] = lambda f=traced[name], v=value: f(v)
                seconds, rounds = _bench(contenders, args.repeats, args.min_time, args.warmup)
                row = {"signature": name, "batch": batch}
                for who, s in seconds.items():
                    row[f"{who}_ms"] = s * 1e3
                    row[f"{who}_examples_per_s"] = batch / s
                row["ratio"] = _ratio(rounds, "live")
                if args.traced_live:
                    row["ratio_vs_traced"] = _ratio(rounds, "live_traced")
                rows.append(row)

    columns = [  # (header, row key, format)
        ("signature", "signature", "<9"),
        ("batch", "batch", ">5"),
        ("live ms", "live_ms", ">9.3f"),
        ("saved ms", "saved_ms", ">9.3f"),
        ("live ex/s", "live_examples_per_s", ">11.1f"),
        ("saved ex/s", "saved_examples_per_s", ">11.1f"),
        ("ratio", "ratio", ">6.2f"),
    ]
    if args.traced_live:
        columns += [
            ("traced ms", "live_traced_ms", ">9.3f"),
            ("vs traced", "ratio_vs_traced", ">9.2f"),
        ]
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    source = f"run {args.run_dir}" if args.run_dir else f"untrained {args.network}"
    print(
        f"device {device}, tensorflow {tf.__version__}, {source} model, latent "
        f"{model.latent_dim}, data {tuple(model.data_shape)}; median of {args.repeats} rounds"
    )
    title_formats = [_PRECISION.sub("", fmt) for _, _, fmt in columns]
    print(" ".join(f"{title:{fmt}}" for (title, _, _), fmt in zip(columns, title_formats)))
    for r in rows:
        print(" ".join(f"{r[key]:{fmt}}" for _, key, fmt in columns))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    worst = min(r["ratio"] for r in rows)
    print(f"lowest ratio {worst:.2f} (target >= 0.95)")
    if args.check and worst < 0.95:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
