"""Training runs: build a model from a TrainConfig, fit it, write a run directory.

A run directory holds ``model.keras``, ``config.json``, ``history.csv``,
``metrics.json``, TensorBoard logs under ``logs/`` and pictures under ``pictures/``.
It is assembled in a hidden ``.NAME.incomplete-PID`` directory beside the target and
renamed into place only when everything is written, so a run that fails or is
interrupted never leaves a directory that looks complete.

Under a ``tf.distribute`` strategy (``config.strategy``, ``tfp_vae.distribute``) the
model is built and compiled in the strategy's scope, and only the chief writes the run
directory; other workers run the same steps into a temporary directory they remove.
"""

import contextlib
import csv
import dataclasses
import json
import os
import time

import numpy as np

from tfp_vae import autoencoders, data, distribute, files, likelihoods, networks, priors
from tfp_vae._backend import keras, tf
from tfp_vae.config import TrainConfig
from tfp_vae.vae import VAE


def load_splits(config):
    """((x_train, y_train), (x_val, y_val), (x_test, y_test)) as the config asks."""
    (x_train, y_train), (x_test, y_test) = data.load(
        config.dataset, binarize=config.binarize, data_dir=config.data_dir, seed=config.seed
    )
    if config.needs_padding(x_train.shape[1:]):
        x_train, x_test = data.pad_to_multiple(x_train), data.pad_to_multiple(x_test)
    n_val = int(round(len(x_train) * config.validation_fraction))
    order = np.random.default_rng(config.seed).permutation(len(x_train))
    val, train = order[:n_val], order[n_val:]
    return (x_train[train], y_train[train]), (x_train[val], y_train[val]), (x_test, y_test)


def build_model(config, data_shape, x=None):
    """The (uncompiled) VAE or Autoencoder the config describes, for ``data_shape``.

    ``x``: the training data. Given, and with ``config.output_bias == "data-mean"``, a
    VAE's decoder output bias starts at the likelihood's inverse of x's mean
    (``networks.initialize_output_bias``); otherwise it starts at zero (also when a saved
    run is rebuilt to load its weights).
    """
    config.validate()
    encoder, decoder = networks.build(config.network, config.latent_dim, tuple(data_shape), config.hidden)
    if config.model == "ae":
        return autoencoders.Autoencoder(
            encoder, decoder, config.latent_dim, loss=config.ae_loss, sparsity=config.sparsity,
            sparsity_weight=config.sparsity_weight, sparsity_target=config.sparsity_target,
            noise=config.noise, noise_level=config.noise_level, seed=config.seed,
        )
    prior_kwargs = {}
    if config.prior == "mog":
        prior_kwargs = {"num_components": config.num_components, "seed": config.seed}
    elif config.prior == "vamp":
        prior_kwargs = {"num_pseudo_inputs": config.num_components, "seed": config.seed}
    likelihood_kwargs = {}
    if config.likelihood == "gaussian":
        likelihood_kwargs = {"variance": config.gaussian_variance, "learn_scale": config.gaussian_scale}
    likelihood = likelihoods.get(config.likelihood, **likelihood_kwargs)
    if x is not None and config.output_bias == "data-mean":
        networks.initialize_output_bias(decoder, likelihood.inverse_mean, x)
    return VAE(
        encoder, decoder, config.latent_dim, posterior=config.posterior,
        prior=priors.get(config.prior, **prior_kwargs),
        likelihood=likelihood,
        beta=config.beta, kl_warmup_epochs=config.kl_warmup_epochs, objective=config.objective,
        num_train_samples=config.num_train_samples, kl=config.kl, seed=config.seed,
    )


def _check_data(x, config, name):
    if len(x) == 0:
        raise ValueError(f"The {name} split of {config.dataset!r} is empty.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"The {name} split of {config.dataset!r} holds NaN or infinite values.")


EVALUATE_BATCH = 100  # examples per batch of the final test evaluation


def _check_first_batches(config, n_train, n_val, n_test):
    """ValueError unless the first batch of each fit/evaluate splits evenly over replicas.

    Under a strategy, Keras' fit and evaluate take the mean over replicas of their first
    batch (to build the model symbolically), which fails when the replicas' parts differ
    in size. Later batches may split unevenly; the first one is the only one checked.
    """
    replicas = config.num_replicas or 1
    batches = [("training", n_train, config.batch_size), ("validation", n_val, config.batch_size)]
    if config.model == "ae":  # the test metrics come from model.evaluate
        n_eval = min(n_test, config.eval_examples or n_test)
        batches.append(("test", n_eval, EVALUATE_BATCH))
    for name, n, batch_size in batches:
        first = min(n, batch_size)
        if replicas > 1 and first % replicas:
            raise ValueError(
                f"The first {name} batch holds {first} examples, which {replicas} replicas cannot "
                f"share evenly; choose a --batch-size, --validation-fraction or --eval-examples "
                f"that makes it a multiple of {replicas}."
            )


def evaluate_model(model, x, num_samples, seed=0, batch_size=EVALUATE_BATCH):
    """Test metrics: importance-sampled log-likelihood and ELBO (VAE), or losses (AE)."""
    if isinstance(model, autoencoders.Autoencoder):
        logs = model.evaluate(x, batch_size=batch_size, verbose=0, return_dict=True)
        return {k: float(v) for k, v in logs.items()} | {"num_examples": int(len(x))}
    ll = model.log_likelihood(x, num_samples=num_samples, seed=seed, batch_size=batch_size)
    elbo = model.elbo(x, seed=seed)
    return {
        "log_likelihood": float(tf.reduce_mean(ll)),
        "elbo": float(tf.reduce_mean(elbo)),
        "num_samples": int(num_samples),
        "num_examples": int(len(x)),
        "kl_method": model.kl_method,  # how the KL term was trained
        "elbo_kl_method": model.elbo_kl_method,  # how the KL value in "elbo" was computed
    }


def staged_directory(out_dir):
    """A hidden staging directory that becomes ``out_dir`` only on success (``files``)."""
    return files.atomic_directory(files.require_new_directory(out_dir))


@contextlib.contextmanager
def _run_directory(out_dir, chief):
    """The staging directory of ``out_dir`` for the chief; a scratch one for other workers."""
    if chief:
        with staged_directory(out_dir) as staging:
            yield staging
    else:
        with distribute.scratch_directory() as scratch, staged_directory(scratch) as staging:
            yield staging


def _start_strategy(config, cpu_replicas):
    """(strategy, config with num_replicas recorded); ValueError if the replicas do not fit."""
    strategy = distribute.make_strategy(config.strategy, cpu_replicas)
    replicas = int(strategy.num_replicas_in_sync)
    if config.num_replicas is not None and config.num_replicas != replicas:
        raise ValueError(
            f"num_replicas={config.num_replicas} is not valid: strategy={config.strategy!r} "
            f"found {replicas} replica(s) here."
        )
    return strategy, dataclasses.replace(config, num_replicas=replicas).validate()


def write_json(path, obj):
    """Writes JSON atomically (``files.write_atomically``)."""
    files.write_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_history(path, history):
    keys = list(history)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]]) if keys else 0):
            writer.writerow([epoch, *(history[k][epoch] for k in keys)])


class _Throughput(keras.callbacks.Callback):
    """Records the wall time of each epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def run(config, out_dir, verbose="auto", cpu_replicas=None):
    """Trains as ``config`` says and writes the run directory ``out_dir``; returns metrics.

    ``cpu_replicas``: with ``strategy="mirrored"``, split the CPU into that many devices
    first (``distribute.make_strategy``; only before TensorFlow has run anything).
    """
    config.validate()
    chief = distribute.writes_run(config.strategy)
    if chief:
        files.require_new_directory(out_dir)
    # First: MultiWorkerMirroredStrategy and split CPUs must precede any TensorFlow op.
    strategy, config = _start_strategy(config, cpu_replicas)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_splits(config)
    for x, name in ((x_train, "train"), (x_test, "test")):
        _check_data(x, config, name)
    _check_first_batches(config, len(x_train), len(x_val), len(x_test))
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():  # the model's, optimizer's and metrics' variables
        model = build_model(config, x_train.shape[1:], x=x_train)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      jit_compile=config.jit_compile,
                      steps_per_execution=config.steps_per_execution)

    with _run_directory(out_dir, chief) as staging:
        timer = _Throughput()
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.TensorBoard(os.path.join(staging, "logs")),
            timer,
        ]
        validation = (x_val,) if len(x_val) else None
        if config.early_stopping_patience and validation is not None:
            callbacks.append(keras.callbacks.EarlyStopping(
                patience=config.early_stopping_patience, restore_best_weights=True))
        if config.binarize == "dynamic":
            train_data = data.binarized_batches(x_train, config.batch_size, seed=config.seed)
            fit_kwargs = {}
        else:
            train_data, fit_kwargs = x_train, {"batch_size": config.batch_size, "shuffle": True}
        history = model.fit(
            train_data, epochs=config.epochs, validation_data=validation,
            callbacks=callbacks, verbose=verbose, **fit_kwargs,
        ).history
        if any(not np.all(np.isfinite(v)) for v in history.values()):
            raise FloatingPointError(
                "Training diverged (a loss became NaN or infinite); lower --learning-rate or "
                "check the data. No run directory was written."
            )
        model.save(os.path.join(staging, "model.keras"))
        with open(os.path.join(staging, "config.json"), "w") as f:
            f.write(config.to_json() + "\n")
        _write_history(os.path.join(staging, "history.csv"), history)

        x_eval = x_test[: config.eval_examples] if config.eval_examples else x_test
        metrics = {
            "train": {k: float(v[-1]) for k, v in history.items() if not k.startswith("val_")},
            "validation": {k[4:]: float(v[-1]) for k, v in history.items() if k.startswith("val_")},
            "test": evaluate_model(model, x_eval, config.eval_samples, seed=config.seed),
            "epochs_run": len(timer.seconds),
            "epoch_seconds": [round(s, 3) for s in timer.seconds],
            "train_examples": int(len(x_train)),
        }
        if isinstance(model, VAE):
            metrics["kl_method"] = model.kl_method
        write_json(os.path.join(staging, "metrics.json"), metrics)
        if config.pictures:
            from tfp_vae import plots

            plots.save_all(model, history, (x_test, y_test), os.path.join(staging, "pictures"),
                           seed=config.seed)
    return metrics


def load_run(run_dir):
    """(model, config) of a complete run directory."""
    run_dir = os.path.abspath(run_dir)
    missing = [f for f in ("model.keras", "config.json") if not os.path.exists(os.path.join(run_dir, f))]
    if not os.path.isdir(run_dir) or missing:
        raise FileNotFoundError(
            f"{run_dir} is not a complete run directory (missing {missing or 'the directory'}); "
            "expected the output of `tfp-vae train --out DIR`."
        )
    config = TrainConfig.from_json_file(os.path.join(run_dir, "config.json"))
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    return model, config


def evaluate_run(run_dir, num_samples=1000, num_examples=None, seed=0):
    """Test-split metrics of a run; also written to ``evaluation-k<K>.json`` in the run."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    model, config = load_run(run_dir)
    _, _, (x_test, _) = load_splits(config)
    if num_examples:
        x_test = x_test[:num_examples]
    metrics = evaluate_model(model, x_test, num_samples, seed=seed)
    write_json(os.path.join(os.path.abspath(run_dir), f"evaluation-k{num_samples}.json"), metrics)
    return metrics
