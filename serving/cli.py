"""The ``tfp-vae`` command: one table of subcommands over the three packages.

    tfp-vae train | evaluate            tfp_vae.cli (the library's own commands)
    tfp-vae export | validate           export.cli
    tfp-vae serve                       serving.server
    tfp-vae generate                    serving.generate
    tfp-vae score                       serving.score
    tfp-vae demo                        serving.demo (the main job end to end)

The dispatcher lives here because ``serving`` is the top of the package stack
(serving -> export -> tfp_vae): it may import all three, and none of them imports it.
Each command names its module and its functions: add_arguments(parser), an optional
check(args) that raises ValueError/OSError naming the bad argument, and
run(args) -> exit code. Arguments are defined and checked without TensorFlow, so a
mistyped flag or value fails in a fraction of a second; TensorFlow loads when the
command runs.
"""

import argparse
import dataclasses
import importlib
import importlib.util
import sys

# The package whose __init__ imports TensorFlow; see _DeferredInit.
LIBRARY = "tfp_vae"
# The commands that take Apache Beam pipeline options after a bare '--'.
PIPELINE_COMMANDS = ("generate", "score")


@dataclasses.dataclass(frozen=True)
class Command:
    help: str
    description: str
    module: str
    add_arguments: str
    run: str
    check: str = None  # TensorFlow-free checks, run before `run`'s imports
    library: bool = False  # whether `run` uses the tfp_vae package (and so TensorFlow)

    def function(self, name):
        return getattr(importlib.import_module(self.module), name)


COMMANDS = {
    "train": Command(
        "train a model and write a run directory",
        "Train a VAE or autoencoder and write RUN_DIR with model.keras, config.json, "
        "history.csv, metrics.json, TensorBoard logs and pictures.",
        "tfp_vae.cli", "add_train_arguments", "run_train", "check_train", library=True,
    ),
    "evaluate": Command(
        "importance-sampled log-likelihood and ELBO on the test split",
        "Evaluate a run on its test split: log p(x) estimated with K importance samples, "
        "and the ELBO. Writes RUN_DIR/evaluation-kK.json.",
        "tfp_vae.cli", "add_evaluate_arguments", "run_evaluate", "check_evaluate", library=True,
    ),
    "export": Command(
        "turn a run directory into a TF Serving model directory",
        "Turn a run directory into a TF Serving model directory.",
        "export.cli", "add_export_arguments", "run_export", "check_export", library=True,
    ),
    "validate": Command(
        "check an exported SavedModel version directory",
        "Check an exported SavedModel version directory.",
        "export.cli", "add_validate_arguments", "run_validate", "check_validate", library=True,
    ),
    # These check their own arguments first thing and import TensorFlow only later
    # (generate and score import Apache Beam only for --runner beam).
    "serve": Command(
        "start the local TF-Serving-compatible server",
        "Start the local TF-Serving-compatible server.",
        "serving.server", "add_serve_arguments", "run_serve",
    ),
    "generate": Command(
        "batch generation job, through a server or in process",
        "Batch generation job, through a server or in process.",
        "serving.generate", "add_generate_arguments", "run_generate",
    ),
    "score": Command(
        "per-example log-likelihood and ELBO of a dataset, in process, through a "
        "server, or on Apache Beam",
        "Score a dataset (.npy/.npz) with a model's log_likelihood signature: "
        "per-example log_likelihood and elbo in shards, and summary.json (mean, "
        "standard error, count). Options after a bare '--' go to Apache Beam "
        "(--runner beam).",
        "serving.score", "add_score_arguments", "run_score",
    ),
    "demo": Command(
        "the main job end to end: train, export, serve, generate, report",
        "The main job end to end: train, export, serve, generate, report.",
        "serving.demo", "add_demo_arguments", "run_demo",
    ),
}


class _DeferredInit:
    """Imports the library's TensorFlow-free modules without running its ``__init__``.

    ``import tfp_vae`` loads TensorFlow (seconds) and registers the Keras classes, as a
    library import should. The command line needs only ``tfp_vae.config``,
    ``tfp_vae.names`` and ``tfp_vae.files`` to define and check its arguments, so it
    puts the package in ``sys.modules`` uninitialised, imports those, and afterwards
    either runs the package's ``__init__`` in that same module object (``finish``: the
    command uses the library) or takes the package back out (``undo``: it does not), so
    later imports see the ordinary package. Until then a missing attribute finishes the
    import on demand. Nothing changes if the package is already imported.
    """

    def __init__(self, name):
        self.name = name
        self.module = None
        if name in sys.modules:
            return
        spec = importlib.util.find_spec(name)
        module = importlib.util.module_from_spec(spec)

        def on_demand(attribute):
            # `from tfp_vae import names` asks for the attribute before importing the
            # submodule: give it the submodule; anything else needs the whole package.
            if importlib.util.find_spec(f"{name}.{attribute}") is not None:
                return importlib.import_module(f"{name}.{attribute}")
            self.finish()
            return getattr(module, attribute)

        module.__getattr__ = on_demand
        sys.modules[name] = module
        self.module = module

    def _release(self):
        module, self.module = self.module, None
        if module is not None:
            del module.__getattr__
        return module

    def finish(self):
        module = self._release()
        if module is not None:
            module.__spec__.loader.exec_module(module)

    def undo(self):
        module = self._release()
        if module is not None:
            prefix = self.name + "."
            for name in [n for n in sys.modules if n == self.name or n.startswith(prefix)]:
                del sys.modules[name]


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
        command.function(command.add_arguments)(p)
    return parser


def split_pipeline_args(argv):
    """(the command's arguments, the Beam pipeline options after the first bare '--')."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def main(argv=None):
    """Parses and checks the arguments before TensorFlow is imported, then runs.

    Arguments after the first bare '--' are Apache Beam pipeline options
    (``args.pipeline_args``, [] if none), for generate and score.
    """
    argv, pipeline_args = split_pipeline_args(argv)
    deferred = _DeferredInit(LIBRARY)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if pipeline_args and args.command not in PIPELINE_COMMANDS:
            parser.error(f"tfp-vae {args.command} takes no options after '--' "
                         f"(Beam pipeline options go with generate and score)")
        args.pipeline_args = pipeline_args
        command = COMMANDS[args.command]
        try:
            if command.check:
                command.function(command.check)(args)
            deferred.finish() if command.library else deferred.undo()
            return command.function(command.run)(args)
        except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
            print(f"tfp-vae {args.command}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"tfp-vae {args.command}: interrupted", file=sys.stderr)
            return 130
    finally:
        deferred.undo()  # --help, a usage error or a failed check: nothing ran


if __name__ == "__main__":
    sys.exit(main())
