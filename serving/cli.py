"""The ``tfp-vae`` command: one table of subcommands over the three packages.

    tfp-vae train | evaluate            tfp_vae.cli (the library's own commands)
    tfp-vae export | validate           export.cli
    tfp-vae serve                       serving.server
    tfp-vae generate                    serving.generate
    tfp-vae score                       serving.score
    tfp-vae demo                        serving.demo (the main job end to end)

The dispatcher lives here because ``serving`` is the top of the package stack
(serving -> export -> tfp_vae): it may import all three, and none of them imports it.
Each command is (help, description, add_arguments(parser), run(args) -> exit code).
"""

import argparse
import dataclasses
import sys
from typing import Callable

from export import cli as export_cli
from serving import demo, generate, score, server
from tfp_vae import cli as library_cli


@dataclasses.dataclass(frozen=True)
class Command:
    help: str
    description: str
    add_arguments: Callable
    run: Callable


COMMANDS = {
    "train": Command(
        "train a model and write a run directory",
        "Train a VAE or autoencoder and write RUN_DIR with model.keras, config.json, "
        "history.csv, metrics.json, TensorBoard logs and pictures.",
        library_cli.add_train_arguments,
        library_cli.run_train,
    ),
    "evaluate": Command(
        "importance-sampled log-likelihood and ELBO on the test split",
        "Evaluate a run on its test split: log p(x) estimated with K importance samples, "
        "and the ELBO. Writes RUN_DIR/evaluation-kK.json.",
        library_cli.add_evaluate_arguments,
        library_cli.run_evaluate,
    ),
    "export": Command(
        "turn a run directory into a TF Serving model directory",
        "Turn a run directory into a TF Serving model directory.",
        export_cli.add_export_arguments,
        export_cli.run_export,
    ),
    "validate": Command(
        "check an exported SavedModel version directory",
        "Check an exported SavedModel version directory.",
        export_cli.add_validate_arguments,
        export_cli.run_validate,
    ),
    "serve": Command(
        "start the local TF-Serving-compatible server",
        "Start the local TF-Serving-compatible server.",
        server.add_serve_arguments,
        server.run_serve,
    ),
    "generate": Command(
        "batch generation job, through a server or in process",
        "Batch generation job, through a server or in process.",
        generate.add_generate_arguments,
        generate.run_generate,
    ),
    "score": Command(
        "per-example log-likelihood and ELBO of a dataset, in process, through a "
        "server, or on Apache Beam",
        "Score a dataset (.npy/.npz) with a model's log_likelihood signature: "
        "per-example log_likelihood and elbo in shards, and summary.json (mean, "
        "standard error, count). Options after a bare '--' go to Apache Beam "
        "(--runner beam).",
        score.add_score_arguments,
        score.run_score,
    ),
    "demo": Command(
        "the main job end to end: train, export, serve, generate, report",
        "The main job end to end: train, export, serve, generate, report.",
        demo.add_demo_arguments,
        demo.run_demo,
    ),
}

# Train's flags are many: show their defaults in --help.
_FORMATTERS = {"train": argparse.ArgumentDefaultsHelpFormatter}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfp-vae",
        description="Variational autoencoders with TensorFlow Probability posteriors, "
        "exported to and served by TensorFlow Serving.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=command.help,
            description=command.description,
            formatter_class=_FORMATTERS.get(name, argparse.HelpFormatter),
        )
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def split_pipeline_args(argv):
    """(the command's arguments, the Beam pipeline options after the first bare '--')."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def main(argv=None):
    argv, pipeline_args = split_pipeline_args(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if pipeline_args and args.command not in ("generate", "score"):
        parser.error(f"tfp-vae {args.command} takes no options after '--' "
                     f"(Beam pipeline options go with generate and score)")
    args.pipeline_args = pipeline_args
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
