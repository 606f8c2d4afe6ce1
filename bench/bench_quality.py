"""Held-out log-likelihood of posterior families, and of the tfp.layers peer, at equal budget.

Project models: ``tfp_vae.VAE`` built with ``tfp_vae.train.build_model`` from one
``TrainConfig`` that differs only in ``posterior`` (and ``prior``): same network, latent
size, epochs, batch size, learning rate, seed and data split, trained as ``tfp-vae
train`` trains (same split, seeding, optimizer, validation data and, with ``--binarize
dynamic``, the same re-binarized batches every epoch).

The decoder's output bias starts at zero, as ``tfp-vae train`` and the peers start it;
``--output-bias data-mean`` starts it at the training data's mean instead.

Peer models (``--peer``): the same MLP written with TFP's own Keras layers on tf_keras
(bench/tfp_layers_peer.py): ``tfpl.IndependentNormal`` or ``tfpl.MultivariateNormalTriL``
encoder, ``tfpl.IndependentBernoulli`` decoder, the exact KL against N(0, I) added by
``tfpl.KLDivergenceRegularizer`` and counted once (its weight is set to 1/2 after
measuring that the training loss holds it twice, tensorflow/probability#1215), trained
on the same batches (same pipeline and seed), epochs, Adam learning rate and
validation data.

Every model -- project and peer alike -- is scored by the same code (bench/estimator.py),
on the same test digits, with the same seeds:

  LL    importance-sampled log p(x) with k samples
  ELBO  E_q[log p(x|z) + log p(z) - log q(z|x)] from ``--elbo-samples`` draws

Both in mean nats per example. With several ``--seeds`` every model is trained and
scored once per seed (the seed sets initialization, data order and binarization, and the
estimator's draws); the table gives the mean over seeds and the spread (standard
deviation over seeds, and the range), and "dLL" each model's LL minus the first model's,
paired by seed. "ahead of its peer" compares each project model with its tfp.layers
counterpart (diag with IndependentNormal, tril and tril_source with
MultivariateNormalTriL) seed by seed.

Usage:
  python bench/bench_quality.py --epochs 30 --seeds 0 1 2 --peer --json quality.json
  python bench/bench_quality.py --epochs 20 --test-examples 300 --only diag/normal iaf/normal
  python bench/bench_quality.py --only diag/normal diag+analytic/normal --peers IndependentNormal
  # one process per seed, side by side, then one table:
  for s in 0 1 2; do python bench/bench_quality.py --seeds $s --json q$s.json & done; wait
  python bench/bench_quality.py --merge q0.json q1.json q2.json
"""

import argparse
import dataclasses
import json
import math
import time

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import estimator
import keras
import numpy as np

from tfp_vae import data as data_lib
from tfp_vae.names import OUTPUT_BIAS
from tfp_vae import train as train_lib
from tfp_vae.config import TrainConfig
from tfp_vae.vae import KL_METHODS

COMBINATIONS = (
    ("diag", "normal"), ("tril", "normal"), ("tril_source", "normal"), ("iaf", "normal"),
    ("diag", "mog"), ("tril", "mog"), ("iaf", "mog"),
)
DEFAULT = (("diag", "normal"), ("tril", "normal"), ("tril_source", "normal"), ("iaf", "normal"))
PEERS = ("IndependentNormal", "MultivariateNormalTriL")
COUNTERPART = {"diag": "IndependentNormal", "tril": "MultivariateNormalTriL",
               "tril_source": "MultivariateNormalTriL"}


def _training_data(x_train, config):
    if config.binarize == "dynamic":
        return data_lib.binarized_batches(x_train, config.batch_size, seed=config.seed), {"shuffle": False}
    return x_train, {"batch_size": config.batch_size, "shuffle": True}


def _score(fns, x_test, args, seed):
    start = time.perf_counter()
    ll = estimator.importance_log_likelihood(*fns, x_test, num_samples=args.num_samples, seed=seed)
    elbo = estimator.elbo(*fns, x_test, num_samples=args.elbo_samples, seed=seed)
    seconds = time.perf_counter() - start
    if not (np.all(np.isfinite(ll)) and np.all(np.isfinite(elbo))):
        raise FloatingPointError("non-finite scores")
    return ll, elbo, seconds


def train_and_score(config, splits, args, label):
    """Trains one tfp_vae model as ``tfp-vae train`` does and scores it; a result row."""
    (x_train, _), (x_val, _), (x_test, _) = splits
    keras.utils.set_random_seed(config.seed)
    model = train_lib.build_model(config, x_train.shape[1:], x=x_train)
    steps = math.ceil(len(x_train) / config.batch_size)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  **({"jit_compile": True, "steps_per_execution": steps} if args.fast else {}))
    train_data, fit_kwargs = _training_data(x_train, config)
    start = time.perf_counter()
    history = model.fit(
        train_data, epochs=config.epochs, validation_data=(x_val,) if len(x_val) else None,
        callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0, **fit_kwargs,
    ).history
    train_seconds = time.perf_counter() - start
    ll, elbo, eval_seconds = _score(estimator.for_tfp_vae(model), x_test, args, config.seed)
    return _row(label, config.prior, model.kl_method, config.seed, ll, elbo, train_seconds,
                eval_seconds, history.get("elbo", [None])[-1])


def train_and_score_peer(kind, config, splits, args):
    """Trains the tfp.layers peer on the same batches and scores it with the same estimator."""
    import tf_keras
    import tfp_layers_peer as peer

    (x_train, _), (x_val, _), (x_test, _) = splits
    tf_keras.utils.set_random_seed(config.seed)
    probe = (x_train[: config.batch_size] > 0.5).astype(np.float32)
    vae, encoder, decoder, prior, held = peer.build_counting_kl_once(
        kind, tuple(x_train.shape[1:]), probe, latent_dim=config.latent_dim, hidden=tuple(config.hidden))
    vae.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate), loss=peer.negative_log_likelihood)
    train_data, fit_kwargs = _training_data(x_train, config)
    if config.binarize == "dynamic":
        train_data = train_data.map(lambda x: (x, x))
    else:
        train_data, fit_kwargs = (x_train, x_train), fit_kwargs
    start = time.perf_counter()
    if isinstance(train_data, tuple):
        history = vae.fit(*train_data, epochs=config.epochs, validation_data=(x_val, x_val),
                          verbose=0, **fit_kwargs).history
    else:
        history = vae.fit(train_data, epochs=config.epochs, validation_data=(x_val, x_val),
                          verbose=0, **fit_kwargs).history
    train_seconds = time.perf_counter() - start
    ll, elbo, eval_seconds = _score(estimator.for_peer(encoder, decoder, prior), x_test, args, config.seed)
    row = _row(f"tfp.layers {kind}", "normal", f"exact, held {held}x, weight 1/{held}", config.seed,
               ll, elbo, train_seconds, eval_seconds, -history["loss"][-1])
    return row


def _row(label, prior, kl, seed, ll, elbo, train_seconds, eval_seconds, train_elbo):
    return {
        "model": label, "prior": prior, "kl": kl, "seed": seed,
        "log_likelihood": float(ll.mean()),
        "log_likelihood_se": float(ll.std(ddof=1) / math.sqrt(len(ll))),
        "elbo": float(elbo.mean()),
        "train_elbo_last_epoch": None if train_elbo is None else float(train_elbo),
        "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "per_example_log_likelihood": ll.tolist(),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="mlp", choices=("mlp", "conv"))
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 256],
                   help="MLP hidden sizes (default 512 256)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=30)
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
                   help="project models, from " + " ".join("/".join(c) for c in COMBINATIONS)
                        + " (default: " + " ".join("/".join(c) for c in DEFAULT) + "); a posterior "
                        "followed by +KL trains with that KL estimate, e.g. diag+path/normal")
    p.add_argument("--peer", action="store_true", help="also train and score the tfp.layers peers")
    p.add_argument("--peers", nargs="+", choices=PEERS, metavar="KIND",
                   help="train and score only these tfp.layers peers (implies --peer): "
                        + " ".join(PEERS))
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="train nothing: print the table of the runs stored in these --json "
                        "files (e.g. one per seed, run side by side)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--fast", action="store_true",
                   help="compile the tfp_vae models as bench_speed.py's fastest MLP setting "
                        "(jit_compile=True, a whole epoch per execution; it slows --network conv); "
                        "rows get ' xla+spe'")
    p.add_argument("--output-bias", choices=OUTPUT_BIAS, default="zeros",
                   help="how the tfp_vae models' decoder output bias starts (TrainConfig.output_bias): "
                        "zeros (default: Keras' start, as tfp-vae train and the peers) or data-mean "
                        "(the data's mean; rows get ' mean-bias')")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    args = p.parse_args(argv)
    for name in ("latent_dim", "epochs", "batch_size", "num_samples", "elbo_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.num_samples < 1000:
        print(f"note: --num-samples {args.num_samples} is below 1000")
    combos = DEFAULT
    if args.only:
        wanted = [tuple(s.split("/")) for s in args.only]
        unknown = [w for w in wanted if len(w) != 2 or (w[0].partition("+")[0], w[1]) not in COMBINATIONS
                   or w[0].partition("+")[2] not in ("",) + KL_METHODS]
        if unknown:
            p.error(f"unknown combinations {unknown}; choose from "
                    + " ".join("/".join(c) for c in COMBINATIONS)
                    + f", the posterior optionally followed by +KL, KL one of {' '.join(KL_METHODS)}")
        combos = tuple(wanted)
    if args.peers:
        args.peer = True
    args.peer_kinds = tuple(args.peers) if args.peers else PEERS
    if args.peer and args.network != "mlp":
        p.error("the tfp.layers peer is written for the mlp network")
    args.combinations = combos
    return args


def summarize(rows):
    """One line per model: mean over seeds, spread, dLL paired by seed against the first model."""
    names = list(dict.fromkeys((r["model"], r["prior"]) for r in rows))
    by = {n: {r["seed"]: r for r in rows if (r["model"], r["prior"]) == n} for n in names}
    ref = names[0]
    table = []
    for n in names:
        seeds = sorted(by[n])
        ll = np.array([by[n][s]["log_likelihood"] for s in seeds])
        elbo = np.array([by[n][s]["elbo"] for s in seeds])
        common = [s for s in seeds if s in by[ref]]
        dll = np.array([by[n][s]["log_likelihood"] - by[ref][s]["log_likelihood"] for s in common])
        table.append({
            "model": n[0], "prior": n[1], "kl": by[n][seeds[0]]["kl"], "seeds": seeds,
            "log_likelihood_mean": float(ll.mean()),
            "log_likelihood_sd_over_seeds": float(ll.std(ddof=1)) if len(ll) > 1 else 0.0,
            "log_likelihood_min": float(ll.min()), "log_likelihood_max": float(ll.max()),
            "log_likelihood_per_seed": ll.tolist(),
            "log_likelihood_se_within_seed": float(np.mean([by[n][s]["log_likelihood_se"] for s in seeds])),
            "elbo_mean": float(elbo.mean()),
            "delta_log_likelihood_mean": float(dll.mean()) if len(dll) else float("nan"),
            "delta_seeds": common,
            "delta_log_likelihood_per_seed": dll.tolist(),
            "train_seconds_median": float(np.median([by[n][s]["train_seconds"] for s in seeds])),
        })
    return table


def print_table(rows, args, num_test, total):
    """Prints the summary table (and the peer comparison) of result rows; returns the table."""
    seeds = sorted({r["seed"] for r in rows})
    table = summarize(rows)
    ref = f"{table[0]['model']}/{table[0]['prior']}"
    print(f"\nheld-out scores, nats per example, higher is better: mean over seeds {seeds} "
          f"(sd over seeds; range); {num_test} test digits; total {total:.0f} s")
    print(f"  {'model':34s} {'prior':6s} {'LL':>8s} {'sd':>5s} {'range':>16s} {'ELBO':>8s} "
          f"{'dLL vs ' + ref:>18s} {'train s':>8s}")
    for t in table:
        print(f"  {t['model']:34s} {t['prior']:6s} {t['log_likelihood_mean']:8.2f} "
              f"{t['log_likelihood_sd_over_seeds']:5.2f} "
              f"{t['log_likelihood_min']:7.2f}..{t['log_likelihood_max']:7.2f} {t['elbo_mean']:8.2f} "
              f"{t['delta_log_likelihood_mean']:+18.2f} {t['train_seconds_median']:8.0f}")
    for t in table:
        if t["seeds"] != seeds:
            print(f"  ({t['model']}/{t['prior']}: mean over seeds {t['seeds']} only)")
    print(f"  per seed {seeds}: LL, and dLL vs {ref} paired by seed (n/a: not run on that seed)")
    for t in table:
        ll = dict(zip(t["seeds"], t["log_likelihood_per_seed"]))
        dll = dict(zip(t["delta_seeds"], t["delta_log_likelihood_per_seed"]))
        print(f"  {t['model']:34s} " + " ".join(f"{ll[s]:8.2f}" if s in ll else f"{'n/a':>8s}" for s in seeds)
              + "   dLL " + " ".join(f"{dll[s]:+6.2f}" if s in dll else f"{'n/a':>6s}" for s in seeds))
    if any(t["model"].startswith("tfp.layers") for t in table):
        print("\nproject model against its tfp.layers counterpart, per seed (LL difference, nats):")
        peers = {t["model"]: t for t in table}
        for t in table:
            kind = COUNTERPART.get(t["model"].split()[0].partition("+")[0])  # "diag+path mean-bias" -> diag
            if kind is None or t["prior"] != "normal" or f"tfp.layers {kind}" not in peers:
                continue
            other = peers[f"tfp.layers {kind}"]
            mine = dict(zip(t["seeds"], t["log_likelihood_per_seed"]))
            theirs = dict(zip(other["seeds"], other["log_likelihood_per_seed"]))
            paired = [s for s in t["seeds"] if s in theirs]  # differences paired by seed
            diffs = [mine[s] - theirs[s] for s in paired]
            if not diffs:
                print(f"  {t['model']:20s} vs {kind:24s} n/a: no seed in common")
                continue
            ahead = all(d > 0 for d in diffs)
            speed = other["train_seconds_median"] / t["train_seconds_median"]
            print(f"  {t['model']:20s} vs {kind:24s} " + " ".join(f"{d:+.2f}" for d in diffs)
                  + f"  (mean {np.mean(diffs):+.2f} over seeds {paired})"
                  + f"  -> {'ahead on every seed' if ahead else 'NOT ahead on every seed'}; "
                  f"peer train time / project = {speed:.2f}")
    return table


def merge(paths):
    """The table of runs stored by several --json files (one run per file, or more)."""
    rows, total, num_test = [], 0.0, None
    for path in paths:
        with open(path) as f:
            stored = json.load(f)
        rows += stored["runs"]
        total += stored.get("total_seconds", 0.0)
        num_test = stored["args"].get("test_examples") or 1000
    print(f"merged {len(rows)} runs from {len(paths)} files; total = sum of the files' wall times; "
          "train times (and their ratios) compare only runs made side by side at the same load")
    return print_table(rows, None, num_test, total)


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        merge(args.merge)
        return None
    env = _common.print_environment()
    base = TrainConfig(
        dataset="mnist5k", network=args.network, hidden=tuple(args.hidden),
        latent_dim=args.latent_dim, num_components=args.num_components,
        binarize=None if args.binarize == "none" else args.binarize,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.seeds[0], eval_samples=args.num_samples, eval_examples=args.test_examples,
        pictures=False, output_bias=args.output_bias,
    ).validate()
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_lib.load_splits(base)
    if args.test_examples:
        x_test, y_test = x_test[: args.test_examples], y_test[: args.test_examples]
    splits = ((x_train, y_train), (x_val, y_val), (x_test, y_test))
    print(f"data: mnist5k, binarize={base.binarize}, train {len(x_train)}, validation "
          f"{len(x_val)}, test {len(x_test)} examples of shape {tuple(x_train.shape[1:])}")
    print(f"budget (all models): network={args.network} hidden={tuple(args.hidden)} "
          f"latent_dim={args.latent_dim} epochs={args.epochs} batch={args.batch_size} "
          f"Adam({args.learning_rate}) seeds={args.seeds}; mog prior: {args.num_components} "
          f"components; LL with k={args.num_samples}, ELBO with {args.elbo_samples} samples, "
          "both by bench/estimator.py for every model")

    rows = []
    started = time.perf_counter()
    for seed in args.seeds:
        jobs = [(p, pr) for p, pr in args.combinations] + ([("peer", k) for k in args.peer_kinds] if args.peer else [])
        for first, second in jobs:
            if first == "peer":
                config = dataclasses.replace(base, seed=seed).validate()
                row = train_and_score_peer(second, config, splits, args)
            else:
                posterior, _, kl = first.partition("+")
                config = dataclasses.replace(base, posterior=posterior, kl=kl or "auto", prior=second,
                                             seed=seed).validate()
                label = (first + (" xla+spe" if args.fast else "")
                         + (" mean-bias" if args.output_bias == "data-mean" else ""))
                row = train_and_score(config, splits, args, label)
            rows.append(row)
            print(f"  seed {seed} {row['model']}/{row['prior']}: LL {row['log_likelihood']:.2f}  "
                  f"ELBO {row['elbo']:.2f}  (train {row['train_seconds']:.0f} s, eval "
                  f"{row['eval_seconds']:.0f} s, load {_common.load_average()})", flush=True)

    total = time.perf_counter() - started
    table = print_table(rows, args, len(x_test), total)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "combinations"}
        config["combinations"] = ["/".join(c) for c in args.combinations]
        slim = [{k: v for k, v in r.items() if k != "per_example_log_likelihood"} for r in rows]
        _common.write_json(args.json, {"environment": env, "args": config, "summary": table, "runs": slim,
                                       "total_seconds": total})
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
