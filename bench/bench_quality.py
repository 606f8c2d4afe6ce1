"""Held-out log-likelihood of posterior and prior families at equal training budget.

Four VAEs on mnist5k -- {diagonal, full-covariance} posterior x {standard normal,
mixture-of-Gaussians} prior -- are built with ``tfp_vae.train.build_model`` from one
``TrainConfig`` that differs only in ``posterior`` and ``prior``: same network, latent
size, epochs, batch size, learning rate, seed and data split. Training follows
``tfp-vae train`` (same split, seeding, optimizer, validation data and, with
``--binarize dynamic``, the same re-binarized batches every epoch).

Each model is then scored on the same held-out test examples:

  LL    importance-sampled log p(x) with k samples, ``model.log_likelihood(x, k)``
  ELBO  ``model.elbo(x)`` averaged over ``--elbo-samples`` posterior draws per example

The full-covariance posterior starts out diagonal (the library zeroes the head weights
that emit L'); with the Dense layer's random start it scored ~8 nats lower here.

Both are mean nats per example. ``+-`` is the standard error over test examples;
"dLL" is each model's LL minus the first model's, with the standard error of the
paired per-example differences (the models see the same test examples).

Usage:
  python bench/bench_quality.py --json /tmp/quality.json
  python bench/bench_quality.py --latent-dim 8 --epochs 20 --test-examples 500 --only diag/normal tril/normal
"""

import argparse
import dataclasses
import math
import time

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import keras
import numpy as np

from tfp_vae import data as data_lib
from tfp_vae import train as train_lib
from tfp_vae.config import TrainConfig

COMBINATIONS = (("diag", "normal"), ("tril", "normal"), ("diag", "mog"), ("tril", "mog"))


def train_and_score(config, splits, args, label):
    (x_train, _), (x_val, _), (x_test, _) = splits
    keras.utils.set_random_seed(config.seed)
    model = train_lib.build_model(config, x_train.shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    if config.binarize == "dynamic":
        train_data = data_lib.binarized_batches(x_train, config.batch_size, seed=config.seed)
        fit_kwargs = {"shuffle": False}  # the pipeline shuffles every epoch itself
    else:
        train_data, fit_kwargs = x_train, {"batch_size": config.batch_size, "shuffle": True}
    start = time.perf_counter()
    history = model.fit(
        train_data, epochs=config.epochs, validation_data=(x_val,) if len(x_val) else None,
        callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0, **fit_kwargs,
    ).history
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    ll = model.log_likelihood(x_test, num_samples=args.num_samples, seed=config.seed).numpy()
    elbo = model.elbo(x_test, seed=config.seed, num_samples=args.elbo_samples).numpy()
    eval_seconds = time.perf_counter() - start
    if not (np.all(np.isfinite(ll)) and np.all(np.isfinite(elbo))):
        raise FloatingPointError(f"{label}/{config.prior}: non-finite scores.")
    last = {k: float(v[-1]) for k, v in history.items()}
    return {
        "posterior": label,
        "prior": config.prior,
        "kl_method": model.kl_method,
        "log_likelihood": float(ll.mean()),
        "log_likelihood_se": float(ll.std(ddof=1) / math.sqrt(len(ll))),
        "elbo": float(elbo.mean()),
        "elbo_se": float(elbo.std(ddof=1) / math.sqrt(len(elbo))),
        "train_elbo_last_epoch": last.get("elbo"),
        "val_elbo_last_epoch": last.get("val_elbo"),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "per_example_log_likelihood": ll.tolist(),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="mlp", choices=("mlp", "conv"))
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 256],
                   help="MLP hidden sizes (default 512 256)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--num-components", type=int, default=10, help="mixture components")
    p.add_argument("--binarize", choices=("none", "static", "dynamic"), default="dynamic",
                   help="dynamic (default): training batches re-binarized every epoch, "
                        "test split binarized once, so LL is of binary data")
    p.add_argument("--num-samples", type=int, default=1000, help="k for the LL estimate")
    p.add_argument("--elbo-samples", type=int, default=10)
    p.add_argument("--test-examples", type=int, default=None,
                   help="score the first N test examples (default: all 1,000)")
    p.add_argument("--only", nargs="+", metavar="POSTERIOR/PRIOR",
                   help="models to train, from diag/normal tril/normal diag/mog tril/mog "
                        "(default: all four)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    args = p.parse_args(argv)
    for name in ("latent_dim", "epochs", "batch_size", "num_samples", "elbo_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.num_samples < 1000:
        print(f"note: --num-samples {args.num_samples} is below 1000")
    combos = COMBINATIONS
    if args.only:
        wanted = [tuple(s.split("/")) for s in args.only]
        unknown = [w for w in wanted if w not in COMBINATIONS]
        if unknown:
            p.error(f"unknown combinations {unknown}; choose from "
                    + " ".join("/".join(c) for c in COMBINATIONS))
        combos = tuple(wanted)
    args.combinations = combos
    return args


def main(argv=None):
    args = parse_args(argv)
    env = _common.print_environment()
    base = TrainConfig(
        dataset="mnist5k", network=args.network, hidden=tuple(args.hidden),
        latent_dim=args.latent_dim, num_components=args.num_components,
        binarize=None if args.binarize == "none" else args.binarize,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.seed, eval_samples=args.num_samples, eval_examples=args.test_examples,
        pictures=False,
    ).validate()
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_lib.load_splits(base)
    if args.test_examples:
        x_test, y_test = x_test[: args.test_examples], y_test[: args.test_examples]
    splits = ((x_train, y_train), (x_val, y_val), (x_test, y_test))
    print(f"data: mnist5k, binarize={base.binarize}, train {len(x_train)}, validation "
          f"{len(x_val)}, test {len(x_test)} examples of shape {tuple(x_train.shape[1:])}")
    print(f"budget (all models): network={args.network} hidden={tuple(args.hidden)} "
          f"latent_dim={args.latent_dim} epochs={args.epochs} batch={args.batch_size} "
          f"Adam({args.learning_rate}) seed={args.seed}; mog prior: {args.num_components} "
          f"components; LL with k={args.num_samples}, ELBO with {args.elbo_samples} samples")

    rows = []
    for posterior, prior in args.combinations:
        config = dataclasses.replace(base, posterior=posterior, prior=prior).validate()
        row = train_and_score(config, splits, args, posterior)
        rows.append(row)
        print(f"  {posterior}/{prior}: LL {row['log_likelihood']:.2f}  ELBO {row['elbo']:.2f}  "
              f"(train {row['train_seconds']:.0f} s, eval {row['eval_seconds']:.0f} s, "
              f"load {_common.load_average()})", flush=True)

    reference = np.asarray(rows[0]["per_example_log_likelihood"])
    for row in rows:
        diff = np.asarray(row["per_example_log_likelihood"]) - reference
        row["delta_log_likelihood"] = float(diff.mean())
        row["delta_log_likelihood_se"] = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0

    ref_name = f"{rows[0]['posterior']}/{rows[0]['prior']}"
    print(f"\nheld-out scores, nats per example (mean +- standard error over {len(x_test)} "
          f"test examples; higher is better)")
    header = (f"  {'posterior':9s} {'prior':6s} {'KL':8s} {'LL (k=' + str(args.num_samples) + ')':>18s} "
              f"{'ELBO':>16s} {'LL-ELBO':>8s} {'dLL vs ' + ref_name:>22s} {'train s':>8s} {'eval s':>7s}")
    print(header)
    for r in rows:
        print(f"  {r['posterior']:9s} {r['prior']:6s} {r['kl_method']:8s} "
              f"{r['log_likelihood']:10.2f} +- {r['log_likelihood_se']:4.2f} "
              f"{r['elbo']:8.2f} +- {r['elbo_se']:4.2f} {r['log_likelihood'] - r['elbo']:8.2f} "
              f"{r['delta_log_likelihood']:+14.2f} +- {r['delta_log_likelihood_se']:4.2f} "
              f"{r['train_seconds']:8.0f} {r['eval_seconds']:7.0f}")
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "combinations"}
        config["combinations"] = ["/".join(c) for c in args.combinations]
        table = [{k: v for k, v in r.items() if k != "per_example_log_likelihood"} for r in rows]
        _common.write_json(args.json, {"environment": env, "args": config, "results": table})
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
