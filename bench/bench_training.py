"""Training throughput of tfp_vae.VAE against a plain Keras 3 VAE with identical layers.

Three models are trained in one process on the same data (mnist5k padded to 32x32x1),
with the same batch size, optimizer and compile settings:

  tfp_vae diag   tfp_vae.VAE, conv network, MultivariateNormalDiag posterior, Bernoulli
  plain keras    the Keras VAE example's structure: a Sampling layer, an encoder emitting
                 z_mean and z_log_var from Dense layers, closed-form KL and summed binary
                 cross-entropy in a custom train_step with GradientTape
  tfp_vae tril   tfp_vae.VAE with the MultivariateNormalTriL posterior (full covariance)

After one warm-up epoch each (tracing, first-touch allocations), the models take turns:
every round, each model trains ``--epochs`` epochs (one ``fit`` call), in an order that
rotates from round to round, so drifting machine load falls on all of them alike.
Throughput is training examples per second of epoch wall time (callback from epoch
begin to epoch end). Reported: the median over all measured epochs per model, and the
median over rounds of the per-round ratio (a paired estimate, robust to slow drift).
Examples per CPU-second of the process are printed too: other processes on a shared
machine inflate wall time much more than the work a model does per example.

``--profile`` adds: the op types whose counts differ between the traced train_step
graphs; train_step timed on one fixed batch (no input pipeline or fit loop), models
alternating every few steps; and the loss pieces that differ (likelihood, posterior
sample + KL) timed alone, forward and gradient.

Keras' ``jit_compile="auto"`` is resolved for every model and reported; all models are
compiled with the same value (``--jit-compile`` overrides it).

Usage:
  python bench/bench_training.py --latent-dim 2 --examples 2000 --repeats 20 --profile
  python bench/bench_training.py --latent-dim 16 --examples 2000 --repeats 20 --profile
"""

import argparse
import time

import _common  # noqa: F401  (sets TensorFlow's log level before it is imported)
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

import tfp_vae
from tfp_vae import data as data_lib
from tfp_vae._backend import tfd

CONV_FILTERS = (32, 64, 128)


# --------------------------------------------------------------------- plain VAE


class Sampling(layers.Layer):
    """z = z_mean + exp(0.5 * z_log_var) * eps, eps ~ N(0, I)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps


def plain_encoder(latent_dim, data_shape, seed):
    inputs = keras.Input(shape=data_shape)
    h = inputs
    for filters in CONV_FILTERS:
        h = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Flatten()(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    z = Sampling(seed=seed)([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="plain_encoder")


def plain_decoder(latent_dim, data_shape, output):
    height, width, channels = data_shape
    factor = 2 ** len(CONV_FILTERS)
    top = CONV_FILTERS[-1]
    inputs = keras.Input(shape=(latent_dim,))
    h = layers.Dense((height // factor) * (width // factor) * top, activation="relu")(inputs)
    h = layers.Reshape((height // factor, width // factor, top))(h)
    for filters in reversed(CONV_FILTERS):
        h = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(h)
    activation = "sigmoid" if output == "sigmoid" else None
    outputs = layers.Conv2D(channels, 3, padding="same", activation=activation)(h)
    return keras.Model(inputs, outputs, name="plain_decoder")


class PlainVAE(keras.Model):
    """A VAE written directly in Keras: closed-form KL, BCE summed over pixels."""

    def __init__(self, latent_dim, data_shape, output="logits", seed=None, **kwargs):
        super().__init__(**kwargs)
        if output not in ("logits", "sigmoid"):
            raise ValueError(f"output must be 'logits' or 'sigmoid', got {output!r}.")
        self.output_kind = output
        self.encoder = plain_encoder(latent_dim, data_shape, seed)
        self.decoder = plain_decoder(latent_dim, data_shape, output)
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def call(self, x, training=False):
        _, _, z = self.encoder(x, training=training)
        return self.decoder(z, training=training)

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(x, training=True)
            reconstruction = self.decoder(z, training=True)
            bce = ops.binary_crossentropy(
                x, reconstruction, from_logits=self.output_kind == "logits"
            )
            reconstruction_loss = ops.mean(ops.sum(bce, axis=(1, 2, 3)))
            kl = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl, axis=1))
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}


# ------------------------------------------------------------------- models


def tfp_vae_model(latent_dim, data_shape, posterior, seed):
    encoder, decoder = tfp_vae.networks.build("conv", latent_dim, data_shape)
    return tfp_vae.VAE(
        encoder, decoder, latent_dim, posterior=posterior, likelihood="bernoulli", seed=seed
    )


def make_models(args, data_shape):
    builders = {
        "tfp_vae diag": lambda: tfp_vae_model(args.latent_dim, data_shape, "diag", args.seed),
        "plain keras": lambda: PlainVAE(
            args.latent_dim, data_shape, output=args.plain_output, seed=args.seed
        ),
    }
    if not args.no_tril:
        builders["tfp_vae tril"] = lambda: tfp_vae_model(
            args.latent_dim, data_shape, "tril", args.seed
        )
    models = {}
    for name, build in builders.items():
        keras.utils.set_random_seed(args.seed)
        model = build()
        if not model.built:
            model.build((None, *data_shape))
        models[name] = model
    return models


def resolve_jit(models, requested):
    """Compiles every model with the same jit_compile; returns (value, {name: auto value})."""
    auto = {}
    for name, model in models.items():
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile="auto")
        auto[name] = bool(model.jit_compile)
    if requested == "auto":
        values = set(auto.values())
        # Equal compile settings: when "auto" resolves differently, XLA is off for all.
        value = values.pop() if len(values) == 1 else False
    else:
        value = requested == "true"
    for model in models.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=value)
    actual = {name: bool(model.jit_compile) for name, model in models.items()}
    if len(set(actual.values())) != 1:
        raise RuntimeError(f"jit_compile differs between the models: {actual}")
    return value, auto, actual


# ----------------------------------------------------------------- profiling


def op_counts(model, batch):
    """Op types and counts in the traced graph of one train_step."""
    step = tf.function(model.train_step)
    graph = step.get_concrete_function(tf.TensorSpec(batch.shape, tf.float32)).graph
    counts = {}
    for op in graph.get_operations():
        counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def step_times(models, batch, steps, rounds):
    """Seconds per train_step on one fixed batch, models alternating every round."""
    steps_fns = {name: tf.function(model.train_step) for name, model in models.items()}
    for fn in steps_fns.values():
        for _ in range(3):
            fn(batch)
    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = steps_fns[name]
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                out = fn(batch)
            float(next(iter(out.values())))  # the last step has finished
            times[name].append((time.perf_counter() - start) / steps)
            cpu_times[name].append((time.process_time() - cpu_start) / steps)
    return times, cpu_times


def head_costs(latent_dim, batch_size, data_shape, iters, rounds, seed=0):
    """Microseconds per forward+gradient call of the loss pieces that differ between models.

    The networks are left out: each case starts from the decoder's logits or the encoder
    head's outputs (trainable variables of the right shapes) and returns the gradient.
    """
    from tfp_vae import likelihoods, posteriors, priors

    rng = np.random.default_rng(seed)
    d = latent_dim
    x = tf.constant((rng.random((batch_size, *data_shape)) < 0.5).astype(np.float32))
    logits = tf.Variable(rng.normal(size=(batch_size, *data_shape)).astype(np.float32))
    diag_params = tf.Variable(0.1 * rng.normal(size=(batch_size, 2 * d)).astype(np.float32))
    tril_params = tf.Variable(
        0.1 * rng.normal(size=(batch_size, 2 * d + d * d)).astype(np.float32)
    )
    bernoulli = likelihoods.Bernoulli()
    bernoulli.build((None, *data_shape))
    prior = priors.StandardNormal(latent_dim=d)
    prior.build((None, *data_shape))
    seed_t = tf.constant([seed, 1], tf.int32)

    def tfp_bernoulli():
        return -tf.reduce_mean(bernoulli.distribution(logits).log_prob(x))

    def plain_bce():
        bce = ops.binary_crossentropy(x, logits, from_logits=True)
        return ops.mean(ops.sum(bce, axis=tuple(range(1, 1 + len(data_shape)))))

    def tfp_posterior(family, params):
        def loss():
            q = family.new(params, d)
            z = q.sample(seed=seed_t)
            kl = tfd.kl_divergence(q, prior.distribution())
            return tf.reduce_mean(kl) + tf.reduce_mean(tf.reduce_sum(tf.square(z), -1))
        return loss

    def plain_posterior():
        z_mean, z_log_var = tf.split(diag_params, 2, axis=-1)
        eps = tf.random.stateless_normal(tf.shape(z_mean), seed=seed_t)
        z = z_mean + ops.exp(0.5 * z_log_var) * eps
        kl = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        return ops.mean(ops.sum(kl, axis=1)) + tf.reduce_mean(tf.reduce_sum(tf.square(z), -1))

    cases = {
        "likelihood: tfd.Independent(Bernoulli).log_prob": (tfp_bernoulli, logits),
        "likelihood: plain BCE from logits": (plain_bce, logits),
        "posterior: tfp_vae diag sample + kl_divergence": (
            tfp_posterior(posteriors.DiagonalGaussian, diag_params), diag_params),
        "posterior: plain Sampling + closed-form KL": (plain_posterior, diag_params),
        "posterior: tfp_vae tril sample + kl_divergence": (
            tfp_posterior(posteriors.FullCovarianceGaussian, tril_params), tril_params),
    }

    def compiled(loss_fn, var):
        @tf.function
        def run():
            total = tf.constant(0.0)
            for _ in tf.range(iters):
                with tf.GradientTape() as tape:
                    loss = loss_fn()
                total += tf.reduce_sum(tape.gradient(loss, var))
            return total
        return run

    fns = {name: compiled(*case) for name, case in cases.items()}
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # one trace per case, not a retracing problem
    try:
        for fn in fns.values():
            fn()
    finally:
        tf.get_logger().setLevel(level)
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            float(fns[name]())
            times[name].append(1e6 * (time.perf_counter() - start) / iters)
    return {name: _common.median(t) for name, t in times.items()}


def profile(models, x, args):
    batch = tf.constant(x[: args.batch_size])
    print("\nprofile: ops in the traced train_step graph (types whose counts differ)")
    counts = {name: op_counts(model, batch) for name, model in models.items()}
    names = list(models)
    types = sorted(set().union(*[set(c) for c in counts.values()]))
    print(f"  {'op type':34s}" + "".join(f"{n:>14s}" for n in names))
    print(f"  {'(total)':34s}" + "".join(f"{sum(counts[n].values()):14d}" for n in names))
    for t in types:
        row = [counts[n].get(t, 0) for n in names]
        if len(set(row)) > 1:
            print(f"  {t:34s}" + "".join(f"{v:14d}" for v in row))
    print(f"\nprofile: train_step on one fixed batch of {args.batch_size} "
          f"({args.profile_steps} steps x {args.profile_rounds} interleaved rounds; "
          "no input pipeline, no fit loop)")
    times, cpu_times = step_times(models, batch, args.profile_steps, args.profile_rounds)
    for name in names:
        ms = [1e3 * t for t in times[name]]
        lo, hi = _common.quartiles(ms)
        cpu_ms = _common.median([1e3 * t for t in cpu_times[name]])
        print(f"  {name:14s} median {_common.median(ms):7.2f} ms/step  (IQR {lo:.2f}-{hi:.2f});"
              f"  CPU {cpu_ms:7.2f} ms/step")
    def paired(a, b):
        return _common.median([ta / tb for ta, tb in zip(times[a], times[b])])

    def cpu_ratio(a, b):
        return _common.median(cpu_times[a]) / _common.median(cpu_times[b])

    print(f"  step time plain / tfp_vae diag = {paired('plain keras', 'tfp_vae diag'):.3f} "
          f"(median of per-round ratios; CPU time {cpu_ratio('plain keras', 'tfp_vae diag'):.3f};"
          " >= 1.0: tfp_vae not slower)")
    if "tfp_vae tril" in times:
        print(f"  step time tfp_vae diag / tfp_vae tril = "
              f"{paired('tfp_vae diag', 'tfp_vae tril'):.3f} (CPU time "
              f"{cpu_ratio('tfp_vae diag', 'tfp_vae tril'):.3f}; the tril throughput ratio)")
    step_us = 1e6 * _common.median(times["tfp_vae diag"])
    print(f"\nprofile: loss pieces alone, forward + gradient, batch {args.batch_size}, "
          f"latent_dim {args.latent_dim} (median microseconds per call; % of a tfp_vae diag "
          "step)")
    costs = head_costs(args.latent_dim, args.batch_size, tuple(x.shape[1:]), 50, 10, args.seed)
    for name, us in costs.items():
        print(f"  {name:50s} {us:9.1f} us  {100 * us / step_us:6.2f} %")
    return {"op_counts": counts, "step_seconds": times, "step_cpu_seconds": cpu_times,
            "loss_piece_microseconds": costs}


# ---------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1,
                   help="measured epochs per model in each round (default 1: strict alternation)")
    p.add_argument("--repeats", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--examples", type=int, default=2000,
                   help="training examples per epoch, a subset of mnist5k's 4,000 (default 2000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="'auto' resolves Keras' default per model and uses it for all when "
                        "they agree (XLA off for all otherwise)")
    p.add_argument("--plain-output", choices=("logits", "sigmoid"), default="logits",
                   help="plain decoder ends in logits (BCE from logits) or a sigmoid")
    p.add_argument("--no-tril", action="store_true", help="skip the full-covariance model")
    p.add_argument("--profile", action="store_true",
                   help="also count graph ops and time train_step on a fixed batch")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--profile-rounds", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    for name in ("epochs", "repeats", "latent_dim", "examples", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def main(argv=None):
    args = parse_args(argv)
    env = _common.print_environment()
    keras.utils.set_random_seed(args.seed)
    (x_train, _), _ = data_lib.load("mnist5k", pad=True)
    x = np.ascontiguousarray(x_train[: args.examples])
    data_shape = tuple(x.shape[1:])
    print(f"data: mnist5k padded, {len(x)} training examples of shape {data_shape}, "
          f"batch {args.batch_size}, Adam(1e-3), latent_dim {args.latent_dim}, "
          f"plain decoder output: {args.plain_output}")

    models = make_models(args, data_shape)
    jit, auto, actual = resolve_jit(models, args.jit_compile)
    print("jit_compile: Keras 'auto' resolves to "
          + ", ".join(f"{n}={v}" for n, v in auto.items())
          + f"; used for all: {jit} (actual {actual})")
    params = {
        name: int(sum(np.prod(w.shape) for w in model.trainable_weights))
        for name, model in models.items()
    }
    print("trainable parameters: " + ", ".join(f"{n}={v}" for n, v in params.items()))

    timers = {name: _common.EpochTimer() for name in models}
    fit_kwargs = {"batch_size": args.batch_size, "shuffle": True, "verbose": 0}
    start = time.perf_counter()
    for name, model in models.items():
        model.fit(x, epochs=args.warmup_epochs, **fit_kwargs)
    print(f"warm-up: {args.warmup_epochs} epoch(s) per model, {time.perf_counter() - start:.1f} s")

    names = list(models)
    per_round = {name: [] for name in names}  # median examples/s of each round
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            timer = timers[name]
            before = len(timer.seconds)
            models[name].fit(x, epochs=args.epochs, callbacks=[timer], **fit_kwargs)
            rates = [len(x) / s for s in timer.seconds[before:]]
            per_round[name].append(_common.median(rates))
        print(f"round {r + 1:2d}/{args.repeats}: "
              + ", ".join(f"{n} {per_round[n][-1]:7.1f}" for n in names) + " examples/s"
              + f"   load {_common.load_average()}")

    rates = {name: [len(x) / s for s in timers[name].seconds] for name in names}
    print(f"\nthroughput (examples/s over {args.epochs * args.repeats} measured epochs per model; "
          f"{len(x)} examples per epoch)")
    summary = {}
    for name in names:
        lo, hi = _common.quartiles(rates[name])
        summary[name] = {"median": _common.median(rates[name]), "q25": lo, "q75": hi,
                         "min": min(rates[name]), "max": max(rates[name])}
        s = summary[name]
        print(f"  {name:14s} median {s['median']:8.1f}   IQR {lo:8.1f} - {hi:8.1f}   "
              f"min {s['min']:8.1f}   max {s['max']:8.1f}")

    def ratio(a, b):
        paired = [ra / rb for ra, rb in zip(per_round[a], per_round[b])]
        q25, q75 = _common.quartiles(paired)
        return {
            "of_medians": summary[a]["median"] / summary[b]["median"],
            "paired_median": _common.median(paired),
            "paired_q25": q25,
            "paired_q75": q75,
        }

    def show(label, r):
        print(f"{label} = {r['of_medians']:.3f} (ratio of medians), {r['paired_median']:.3f} "
              f"(median of per-round ratios, IQR {r['paired_q25']:.3f}-{r['paired_q75']:.3f})")

    ratios = {"tfp_vae_diag/plain": ratio("tfp_vae diag", "plain keras")}
    print()
    show("ratio tfp_vae diag / plain keras", ratios["tfp_vae_diag/plain"])
    print("  (target >= 1.0)")
    if "tfp_vae tril" in models:
        ratios["tril/diag"] = ratio("tfp_vae tril", "tfp_vae diag")
        show(f"ratio tfp_vae tril / tfp_vae diag (latent_dim {args.latent_dim})",
             ratios["tril/diag"])

    # Work per example, less sensitive to other processes than wall time.
    cpu_rates = {name: [len(x) / s for s in timers[name].cpu_seconds] for name in names}
    cpu_medians = {name: _common.median(v) for name, v in cpu_rates.items()}
    print("\nexamples per CPU-second of this process (medians): "
          + ", ".join(f"{n} {v:.1f}" for n, v in cpu_medians.items()))
    print(f"  cpu ratio tfp_vae diag / plain keras = "
          f"{cpu_medians['tfp_vae diag'] / cpu_medians['plain keras']:.3f}"
          + (f", tfp_vae tril / tfp_vae diag = "
             f"{cpu_medians['tfp_vae tril'] / cpu_medians['tfp_vae diag']:.3f}"
             if "tfp_vae tril" in models else ""))
    ratios["cpu"] = cpu_medians

    result = {
        "environment": env, "args": vars(args), "jit_compile": jit, "jit_auto": auto,
        "parameters": params, "examples_per_second": rates, "round_medians": per_round,
        "examples_per_cpu_second": cpu_rates,
        "summary": summary, "ratios": ratios,
    }
    if args.profile:
        result["profile"] = profile(models, x, args)
    if args.json:
        _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
