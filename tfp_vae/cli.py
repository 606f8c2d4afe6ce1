"""The library's own commands, ``tfp-vae train`` and ``tfp-vae evaluate``.

Each command is a pair: ``add_<command>_arguments(parser)`` and ``run_<command>(args)``.
The ``tfp-vae`` dispatcher (``serving.cli``) puts them beside the export and serving
commands; the library knows nothing of those. ``check_<command>(args)`` raises a
ValueError (or FileNotFoundError/FileExistsError) naming the bad argument; it and the
argument definitions import no TensorFlow, so a typo fails before TensorFlow loads.
"""

import argparse
import dataclasses
import json
import os

from tfp_vae import distribute, files
from tfp_vae.config import TrainConfig

_TRAIN_HELP = {
    "dataset": "mnist5k (bundled), digits (bundled), mnist, fashion_mnist, or a .npy/.npz path",
    "data_dir": "directory holding mnist.npz or the Fashion-MNIST .gz files (offline loading)",
    "pad": "pad H and W with zeros to a multiple of 8 (28->32); default: only when --network conv needs it",
    "binarize": "none, static (once) or dynamic (re-drawn every epoch)",
    "validation_fraction": "fraction of the training split held out for validation",
    "model": "vae, or ae for a deterministic autoencoder",
    "network": "mlp, conv (the 32x32 convolutional network) or linear (PCA's special case)",
    "hidden": "hidden layer sizes of the mlp network",
    "latent_dim": "size of the latent code z",
    "output_bias": "how a VAE decoder's output bias starts: zeros (Keras' start) or data-mean (the "
                   "likelihood's inverse of the training split's mean: each pixel's logit for bernoulli). "
                   "On mnist5k's MLP (bench/bench_quality.py, three seeds) data-mean raised test "
                   "log-likelihood by 1.2-1.9 nats at 30 epochs; at 100 iaf and diag with --kl analytic "
                   "were level, diag 0.5 and tril 1.2 lower",
    "jit_compile": "compile the training step with XLA (default false; same result up to float rounding; export "
                   "is unaffected). On 2 CPU cores, with --steps-per-execution set to an epoch's steps, it trained "
                   "the mlp network about 1.6x faster than the default; it slowed the conv network "
                   "(bench/bench_speed.py)",
    "steps_per_execution": "training steps run per call into TensorFlow (Keras' steps_per_execution): the same "
                           "steps and result with less Python between them; the progress bar moves this many "
                           "steps at a time",
    "posterior": "diag (MultivariateNormalDiag), tril (MultivariateNormalTriL, damped off-diagonal), "
                 "tril_source (the source's Algorithm 2) or iaf (inverse autoregressive flow)",
    "prior": "normal, mog (learnable mixture of Gaussians) or vamp (VampPrior)",
    "num_components": "mixture components (mog) or pseudo-inputs (vamp)",
    "likelihood": "bernoulli or gaussian",
    "gaussian_variance": "variance c of the gaussian likelihood N(f(z), cI) (initial value if learned)",
    "gaussian_scale": "fixed, global (one learned scale) or pixel (one per data element)",
    "beta": "weight of the KL term",
    "kl_warmup_epochs": "ramp the KL weight linearly from 0 over this many epochs",
    "kl": "how the KL term is trained: auto (path for diag, tril and iaf; for tril_source, the "
          "source's construction, the closed form, sampled against mog or vamp), analytic (closed "
          "form), sampled, or path (sampled, path-derivative gradient). Reported ELBOs "
          "(validation, evaluate) use the closed form wherever one exists",
    "objective": "elbo, or iwae (importance-weighted bound with --num-train-samples samples)",
    "num_train_samples": "posterior samples per example in training (k of IWAE)",
    "ae_loss": "autoencoder reconstruction loss: bce or mse",
    "sparsity": "autoencoder sparsity penalty: none, l1 or kl",
    "sparsity_weight": "lambda (l1) or beta (kl) of the sparsity penalty",
    "sparsity_target": "target mean activation rho of the kl sparsity penalty",
    "noise": "denoising autoencoder corruption: none, gaussian or mask",
    "noise_level": "std of the gaussian noise, or the masking probability",
    "epochs": "training epochs",
    "batch_size": "examples per batch; with --strategy, the global batch, split across the replicas "
                  "(a multiple of their number)",
    "learning_rate": "Adam learning rate",
    "seed": "seed of every random choice of the run",
    "early_stopping_patience": "stop after this many epochs without validation improvement (0: off)",
    "eval_samples": "importance samples k of the final test log-likelihood",
    "eval_examples": "test examples to evaluate (default: all)",
    "pictures": "write pictures into RUN_DIR/pictures",
    "strategy": "tf.distribute strategy: none, mirrored (this machine's GPUs, else its CPU devices; see "
                "--cpu-replicas) or multi_worker (one process per worker, cluster from the TF_CONFIG "
                "environment variable; the chief writes RUN_DIR)",
    "num_replicas": "replicas the run trains on; recorded in config.json, and when given the strategy "
                    "must find exactly this many",
}
_NONE_WORDS = {"none", "null", ""}


def _optional(kind):
    def parse(text):
        return None if text.lower() in _NONE_WORDS else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_train_arguments(parser):
    parser.add_argument("--config", help="JSON file with TrainConfig fields; flags override it")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        kwargs = {"dest": field.name, "default": None, "help": _TRAIN_HELP[field.name]}
        if field.name == "hidden":
            kwargs.update(type=int, nargs="+")
        elif field.name == "pad" or field.name == "pictures":
            kwargs.update(type=_optional(_bool) if field.name == "pad" else _bool)
        elif field.name in ("binarize", "sparsity", "noise", "data_dir"):
            kwargs.update(type=_optional(str))
        elif field.name in ("eval_examples", "num_replicas"):
            kwargs.update(type=_optional(int))
        else:
            kwargs.update(type=type(default))
        kwargs["help"] += f" (default: {'none' if default is None else default})"
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--cpu-replicas", type=_positive_int, default=None, metavar="N",
                        help="with --strategy mirrored: split the CPU into N logical devices, one "
                             "replica each (to try or test distribution on a CPU machine)")


def _train_config(args):
    base = TrainConfig.from_json_file(args.config) if args.config else TrainConfig()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    try:
        return dataclasses.replace(base, **overrides).validate()
    except ValueError as e:
        # Name the flag the value came from: "--seed -1: seed=-1 is not valid; ..."
        field = str(e).split("=", 1)[0]
        if field in overrides:
            flag = "--" + field.replace("_", "-")
            raise ValueError(f"{flag} {getattr(args, field)!r}: {e}") from None
        raise


def check_train(args):
    """The checks of ``tfp-vae train`` that need no TensorFlow: config, data file, --out."""
    config = _train_config(args)
    if config.dataset.endswith((".npy", ".npz")) and not os.path.isfile(config.dataset):
        raise FileNotFoundError(f"--dataset {config.dataset!r}: no such file; expected a .npy/.npz file.")
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise FileNotFoundError(f"--data-dir {config.data_dir!r}: no such directory.")
    distribute.check_arguments(config.strategy, args.cpu_replicas)  # and TF_CONFIG
    if distribute.writes_run(config.strategy):  # other workers of a cluster write nowhere
        files.require_new_directory(args.out)
    return config


def run_train(args):
    config = check_train(args)  # fails on bad input before anything is loaded or written
    from tfp_vae import train

    metrics = train.run(config, args.out, verbose=0 if args.quiet else "auto",
                        cpu_replicas=args.cpu_replicas)
    # Under multi_worker only the chief writes the run directory.
    run_dir = os.path.abspath(args.out) if distribute.writes_run(config.strategy) else None
    print(json.dumps({"run_dir": run_dir, **metrics}, indent=2))
    return 0


def check_evaluate(args):
    """RUN_DIR must be a complete run directory with a valid config.json."""
    missing = [f for f in ("model.keras", "config.json")
               if not os.path.isfile(os.path.join(args.run_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"{os.path.abspath(args.run_dir)} is not a complete run directory (missing "
            f"{', '.join(missing)}); expected the output of `tfp-vae train --out DIR`."
        )
    TrainConfig.from_json_file(os.path.join(args.run_dir, "config.json")).validate()


def run_evaluate(args):
    from tfp_vae import train

    metrics = train.evaluate_run(args.run_dir, args.num_samples, args.num_examples, args.seed)
    print(json.dumps(metrics, indent=2))
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_evaluate_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--num-samples", type=_positive_int, default=1000,
                        help="importance samples K per example (default: 1000)")
    parser.add_argument("--num-examples", type=_positive_int, default=None,
                        help="evaluate only the first N test examples (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
