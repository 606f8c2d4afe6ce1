"""Screens full-covariance constructions against the diagonal posterior on short runs.

Every candidate is trained exactly as bench/bench_quality.py trains its models (same
TrainConfig, split, dynamic binarization, Adam, seed) and scored by the same estimator:
importance-sampled log p(x) with k samples on the first test digits. A candidate is a
``FullCovarianceGaussian`` subclass registered under a temporary name:

  tril_source          L = L_mask * L' + diag(sigma)                  (Algorithm 2)
  damped_<c>           L = L_mask * (c L') + diag(sigma)
  rowscaled_<c>        L = diag(sigma) (I + L_mask * (c L')): off-diagonals in units of sigma_i
  matched_<c>          damped_<c>, with the mu and log-sigma head columns initialized as diag's
  detached_<c>         matched_<c>, the encoder trunk receiving no gradient from the L' head
  iafgate_<b>          the iaf family with gate_bias b
  softdiag, softtril_<c>  diag, and tril's start with damping c, with sigma = softplus(raw) + 1e-5
  tril_<c>             the library's tril (softplus sigma, diag's exact head start) with damping c
  iaf_<T>x<H>[g<b>]    the iaf family with T steps, H hidden units per MADE (and gate_bias b)
  path-<candidate>     any weightless candidate above (diag, tril, tril_0.1, ...) with the
                       path-derivative KL: kl="path" (Roeder et al., 2017; see tfp_vae.vae.VAE)
  analytic-<candidate> any weightless candidate with the closed-form KL. The screens in
                       tfp_vae/posteriors.py ran when diag, tril and the tril_<c> and soft*
                       candidates trained with it; they now default to "path", so repeat
                       those rows with this prefix (analytic-diag, ...)

The library's families (diag, tril, tril_source) are screened under their own names.

Usage:
  python bench/screen_tril.py --epochs 30 --test-examples 300 --candidates diag tril_source damped_0.1
"""

import argparse
import dataclasses
import time

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import numpy as np
from bench_quality import train_and_score

from tfp_vae import posteriors
from tfp_vae import train as train_lib
from tfp_vae._backend import bounded_scale, keras, tf
from tfp_vae.config import TrainConfig


def _damped(c):
    return type(f"Damped{c}", (posteriors.FullCovarianceGaussian,),
                {"name": f"damped_{c}", "OFFDIAG_SCALE": float(c)})


def _rowscaled(c):
    def scale_tril(cls, log_scale, l_prime):
        d = log_scale.shape[-1]
        sigma = bounded_scale(log_scale)
        lower = tf.linalg.band_part(l_prime, -1, 0) - tf.linalg.band_part(l_prime, 0, 0)
        return sigma[..., :, None] * (tf.eye(d) + float(c) * lower)
    return type(f"RowScaled{c}", (posteriors.FullCovarianceGaussian,),
                {"name": f"rowscaled_{c}", "scale_tril": classmethod(scale_tril)})


def _matched(c):
    """damped_<c> whose mu and log-sigma head columns start as the diag family's do.

    Keras' Glorot initializer draws a Dense kernel's columns with limit
    sqrt(6 / (fan_in + fan_out)); the full-covariance head has D^2 more outputs, so its
    mu and log sigma columns start ~30% smaller than the diag head's (D = 16, 256 features).
    """
    def initialize_head(head, latent_dim):
        n = 2 * latent_dim
        kernel = head.kernel
        start = keras.initializers.GlorotUniform()((kernel.shape[0], n))
        kernel.assign(tf.concat([start, tf.zeros_like(kernel[:, n:])], axis=1))
    return type(f"Matched{c}", (posteriors.FullCovarianceGaussian,),
                {"name": f"matched_{c}", "OFFDIAG_SCALE": float(c),
                 "initialize_head": staticmethod(initialize_head)})


def _detached(c):
    """matched_<c> whose L' part of the head reads the encoder features through stop_gradient.

    The weights that emit L' still learn; only the encoder trunk no longer receives the
    L' head's gradient, so the features are shaped by mu and sigma alone.
    """
    matched = _matched(c)

    def initialize_head(head, latent_dim):
        matched.initialize_head(head, latent_dim)
        n = 2 * latent_dim

        def call(inputs, training=None):
            first = tf.matmul(inputs, head.kernel[:, :n]) + head.bias[:n]
            rest = tf.matmul(tf.stop_gradient(inputs), head.kernel[:, n:]) + head.bias[n:]
            return tf.concat([first, rest], axis=-1)

        head.call = call
    return type(f"Detached{c}", (posteriors.FullCovarianceGaussian,),
                {"name": f"detached_{c}", "OFFDIAG_SCALE": float(c),
                 "initialize_head": staticmethod(initialize_head)})


def _iafgate(b):
    """The iaf family with gate_bias b (default 2): b large starts the flow nearer the identity."""
    def __init__(self, **kwargs):
        kwargs.setdefault("name", f"iafgate_{b}")
        posteriors.InverseAutoregressiveFlow.__init__(self, gate_bias=float(b), **kwargs)

    cls = type(f"IAFGate{b}", (posteriors.InverseAutoregressiveFlow,), {"__init__": __init__})
    cls.name = f"iafgate_{b}"  # the registry key; instances get the same layer name
    return cls


def _soft(name):
    """A family with sigma = softplus(raw) + 1e-5, as tfp.layers parameterizes scales.

    softdiag: the diag family; softtril_<c>: the tril family's start with damping c.
    """
    def loc_scale(params, latent_dim):
        loc, raw = tf.split(params, [latent_dim, latent_dim], axis=-1)
        return loc, tf.nn.softplus(raw) + 1e-5

    if name == "softdiag":
        return type("SoftDiag", (posteriors.DiagonalGaussian,),
                    {"name": name, "_loc_scale": staticmethod(loc_scale)})
    c = float(name.partition("_")[2])

    def scale_tril(cls, raw_scale, l_prime):
        d = raw_scale.shape[-1]
        lower = tf.linalg.band_part(l_prime, -1, 0) - tf.linalg.band_part(l_prime, 0, 0)
        return c * lower + tf.linalg.diag(tf.nn.softplus(raw_scale) + 1e-5)

    return type(f"SoftTril{c}", (posteriors.DampedFullCovarianceGaussian,),
                {"name": name, "scale_tril": classmethod(scale_tril)})


def _tril(c):
    return type(f"Tril{c}", (posteriors.DampedFullCovarianceGaussian,),
                {"name": f"tril_{c}", "OFFDIAG_SCALE": float(c)})


def _iaf(spec):
    """iaf_<T>x<H>[g<b>]: T steps of H hidden units each, gate bias b (default 2)."""
    shape, _, gate = spec.partition("g")
    steps, hidden = (int(v) for v in shape.split("x"))
    name = f"iaf_{spec}"

    def __init__(self, **kwargs):
        kwargs.setdefault("name", name)
        posteriors.InverseAutoregressiveFlow.__init__(
            self, num_steps=steps, hidden_units=hidden, gate_bias=float(gate or 2.0), **kwargs)

    cls = type(f"IAF{steps}x{hidden}", (posteriors.InverseAutoregressiveFlow,), {"__init__": __init__})
    cls.name = name
    return cls


def _subclassable(prefix, name, allow_flows):
    """candidate(name) as a class to subclass; flows (layers) only where ``allow_flows``."""
    family = candidate(name)
    if isinstance(family, keras.layers.Layer):  # registered flows are instances
        family = type(family)
    is_flow = issubclass(family, keras.layers.Layer)
    if is_flow and not allow_flows:
        raise SystemExit(f"{prefix}{name}: the {prefix[:-1]} prefix takes a weightless candidate "
                         f"(a flow has no closed-form KL), e.g. {prefix}diag or {prefix}tril_0.01")
    return family


def _path(name):
    """The candidate ``name`` (a weightless family or an iaf_<T>x<H> flow class) with the
    path-derivative KL estimator."""
    family = _subclassable("path-", name, allow_flows=True)
    return type(f"Path{family.__name__}", (family,),
                {"name": f"path-{name}", "KL_ESTIMATOR": "path"})


def _analytic(name):
    """The weightless candidate ``name`` with the closed-form KL (no estimator of its own)."""
    family = _subclassable("analytic-", name, allow_flows=False)
    return type(f"Analytic{family.__name__}", (family,),
                {"name": f"analytic-{name}", "KL_ESTIMATOR": None})


def candidate(name):
    if name.startswith("path-"):
        return posteriors.register(_path(name[len("path-"):]))
    if name.startswith("analytic-"):
        return posteriors.register(_analytic(name[len("analytic-"):]))
    if name.startswith("soft"):
        return posteriors.register(_soft(name))
    if name in posteriors.names():
        return posteriors.get(name)
    kind, _, c = name.partition("_")
    family = {"damped": _damped, "rowscaled": _rowscaled, "matched": _matched,
              "detached": _detached, "iafgate": _iafgate, "tril": _tril, "iaf": _iaf}[kind](c)
    return posteriors.register(family)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", nargs="+", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--test-examples", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--elbo-samples", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    _common.print_environment()
    families = [candidate(n) for n in args.candidates]
    base = TrainConfig(dataset="mnist5k", network="mlp", hidden=(512, 256),
                       latent_dim=args.latent_dim, binarize="dynamic", epochs=args.epochs,
                       batch_size=100, learning_rate=1e-3, pictures=False).validate()
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_lib.load_splits(base)
    splits = ((x_train, y_train), (x_val, y_val), (x_test[: args.test_examples], y_test))
    rows = {}
    for seed in args.seeds:
        for family in families:
            config = dataclasses.replace(base, posterior=family.name, seed=seed).validate()
            start = time.perf_counter()
            row = train_and_score(config, splits, args, family.name)
            rows.setdefault(family.name, []).append(row)
            print(f"seed {seed} {family.name:16s} LL {row['log_likelihood']:8.2f}  ELBO "
                  f"{row['elbo']:8.2f}  train ELBO (last epoch) {row['train_elbo_last_epoch']:8.2f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nmean over seeds {args.seeds}, {args.epochs} epochs, first {args.test_examples} test digits, k={args.num_samples}")
    for name, rs in rows.items():
        ll = np.array([r["log_likelihood"] for r in rs])
        print(f"  {name:16s} LL {ll.mean():8.2f} (seeds: {', '.join(f'{v:.2f}' for v in ll)})  "
              f"ELBO {np.mean([r['elbo'] for r in rs]):8.2f}")


if __name__ == "__main__":
    main()
