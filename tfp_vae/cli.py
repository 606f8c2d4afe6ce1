"""The ``tfp-vae`` command: train, evaluate, export, validate, serve, generate, demo."""

import argparse
import dataclasses
import json
import os
import sys

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
    "jit_compile": "compile the training step with XLA (default false: it measured no faster on CPU; same result "
                   "up to float rounding; export is unaffected)",
    "posterior": "diag (MultivariateNormalDiag), tril (MultivariateNormalTriL, damped off-diagonal), "
                 "tril_source (the source's Algorithm 2) or iaf (inverse autoregressive flow)",
    "prior": "normal, mog (learnable mixture of Gaussians) or vamp (VampPrior)",
    "num_components": "mixture components (mog) or pseudo-inputs (vamp)",
    "likelihood": "bernoulli or gaussian",
    "gaussian_variance": "variance c of the gaussian likelihood N(f(z), cI) (initial value if learned)",
    "gaussian_scale": "fixed, global (one learned scale) or pixel (one per data element)",
    "beta": "weight of the KL term",
    "kl_warmup_epochs": "ramp the KL weight linearly from 0 over this many epochs",
    "objective": "elbo, or iwae (importance-weighted bound with --num-train-samples samples)",
    "num_train_samples": "posterior samples per example in training (k of IWAE)",
    "ae_loss": "autoencoder reconstruction loss: bce or mse",
    "sparsity": "autoencoder sparsity penalty: none, l1 or kl",
    "sparsity_weight": "lambda (l1) or beta (kl) of the sparsity penalty",
    "sparsity_target": "target mean activation rho of the kl sparsity penalty",
    "noise": "denoising autoencoder corruption: none, gaussian or mask",
    "noise_level": "std of the gaussian noise, or the masking probability",
    "epochs": "training epochs",
    "batch_size": "examples per batch",
    "learning_rate": "Adam learning rate",
    "seed": "seed of every random choice of the run",
    "early_stopping_patience": "stop after this many epochs without validation improvement (0: off)",
    "eval_samples": "importance samples k of the final test log-likelihood",
    "eval_examples": "test examples to evaluate (default: all)",
    "pictures": "write pictures into RUN_DIR/pictures",
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


def _add_train_arguments(parser):
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
        elif field.name == "eval_examples":
            kwargs.update(type=_optional(int))
        else:
            kwargs.update(type=type(default))
        kwargs["help"] += f" (default: {'none' if default is None else default})"
        parser.add_argument(flag, **kwargs)


def _train_config(args):
    base = TrainConfig.from_json_file(args.config) if args.config else TrainConfig()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    return dataclasses.replace(base, **overrides).validate()


def _run_train(args):
    config = _train_config(args)  # fails on bad input before anything is loaded or written
    from tfp_vae import train

    metrics = train.run(config, args.out, verbose=0 if args.quiet else "auto")
    print(json.dumps({"run_dir": os.path.abspath(args.out), **metrics}, indent=2))
    return 0


def _run_evaluate(args):
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


def _delegated(module, add_name, run_name):
    """Arguments and runner living in the export/ or serving/ package."""

    def add(parser):
        mod = __import__(module, fromlist=[add_name])
        getattr(mod, add_name)(parser)

    def run(args):
        mod = __import__(module, fromlist=[run_name])
        return getattr(mod, run_name)(args)

    return add, run


_COMMANDS = {
    "export": ("turn a run directory into a TF Serving model directory",
               *_delegated("export", "add_export_arguments", "run_export")),
    "validate": ("check an exported SavedModel version directory",
                 *_delegated("export", "add_validate_arguments", "run_validate")),
    "serve": ("start the local TF-Serving-compatible server",
              *_delegated("serving.server", "add_serve_arguments", "run_serve")),
    "generate": ("batch generation job, through a server or in process",
                 *_delegated("serving.generate", "add_generate_arguments", "run_generate")),
    "demo": ("the main job end to end: train, export, serve, generate, report",
             *_delegated("serving.demo", "add_demo_arguments", "run_demo")),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfp-vae",
        description="Variational autoencoders with TensorFlow Probability posteriors, "
        "exported to and served by TensorFlow Serving.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train", help="train a model and write a run directory",
        description="Train a VAE or autoencoder and write RUN_DIR with model.keras, "
        "config.json, history.csv, metrics.json, TensorBoard logs and pictures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_train_arguments(train)
    train.set_defaults(run=_run_train)

    evaluate = sub.add_parser(
        "evaluate", help="importance-sampled log-likelihood and ELBO on the test split",
        description="Evaluate a run on its test split: log p(x) estimated with K importance "
        "samples, and the ELBO. Writes RUN_DIR/evaluation-kK.json.",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--num-samples", type=_positive_int, default=1000,
                          help="importance samples K per example (default: 1000)")
    evaluate.add_argument("--num-examples", type=_positive_int, default=None,
                          help="evaluate only the first N test examples (default: all)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    evaluate.set_defaults(run=_run_evaluate)

    for name, (help_text, add, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"tfp-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfp-vae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
