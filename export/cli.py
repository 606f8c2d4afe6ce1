"""Command-line hooks for ``tfp-vae export`` and ``tfp-vae validate``.

``add_export_arguments(parser)`` / ``check_export(args)`` / ``run_export(args)`` and
the same three for ``validate`` fill in, check and run an ``argparse`` sub-command;
``python -m export`` runs them on their own. Defining and checking the arguments
needs no TensorFlow (``export.checks``, ``export.contract``); only running does.
Exit codes: 0 success, 1 validation failed, 2 bad arguments or input.
"""

import argparse
import os
import sys

from export import checks, contract, server_config


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _int_list(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = None
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 8,16,32, got {text!r}"
        )
    return values


def add_export_arguments(parser):
    """Flags of ``tfp-vae export RUN_DIR --base-path DIR --name NAME ...``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding model.keras")
    parser.add_argument(
        "--base-path",
        required=True,
        metavar="DIR",
        help="models directory; the version goes to DIR/NAME/<version>/",
    )
    parser.add_argument("--name", required=True, help="model name TF Serving serves it under")
    parser.add_argument(
        "--version",
        type=_int_at_least(0),
        default=None,
        metavar="N",
        help="version number (default: one more than the highest present)",
    )
    parser.add_argument(
        "--decoder-only",
        action="store_true",
        help="export serving_default, decode and generate only, without the encoder's weights",
    )
    parser.add_argument(
        "--num-ll-samples",
        type=_int_at_least(1),
        default=contract.DEFAULT_NUM_LL_SAMPLES,
        metavar="K",
        help="importance samples per row of the log_likelihood signature (default %(default)s)",
    )
    parser.add_argument(
        "--warmup-batch-size",
        type=_int_at_least(1),
        default=2,
        metavar="B",
        help="rows in each warmup request (default %(default)s)",
    )
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip validation before the version is renamed into place",
    )
    parser.add_argument(
        "--no-session-check",
        dest="session_check",
        action="store_false",
        help="skip the TF1 session-loader part of validation",
    )
    config = parser.add_argument_group("models.config")
    config.add_argument(
        "--server-base-path",
        default=None,
        metavar="PATH",
        help="the model directory as the server sees it, e.g. /models/NAME in "
        "the serving image (default: the absolute local DIR/NAME)",
    )
    config.add_argument(
        "--num-versions",
        type=_int_at_least(1),
        default=1,
        metavar="N",
        help="serve the latest N versions (default %(default)s)",
    )
    defaults = server_config.BatchingOptions()
    batching = parser.add_argument_group("batching_parameters.txt")
    batching.add_argument(
        "--max-batch-size",
        type=_int_at_least(1),
        default=defaults.max_batch_size,
        metavar="N",
        help="largest batch TF Serving forms (default %(default)s)",
    )
    batching.add_argument(
        "--batch-timeout-micros",
        type=_int_at_least(0),
        default=defaults.batch_timeout_micros,
        metavar="US",
        help="how long a batch waits to fill (default %(default)s)",
    )
    batching.add_argument(
        "--num-batch-threads",
        type=_int_at_least(1),
        default=defaults.num_batch_threads,
        metavar="N",
        help="threads processing batches (default %(default)s)",
    )
    batching.add_argument(
        "--max-enqueued-batches",
        type=_int_at_least(1),
        default=defaults.max_enqueued_batches,
        metavar="N",
        help="queue length in batches (default %(default)s)",
    )
    batching.add_argument(
        "--allowed-batch-sizes",
        type=_int_list,
        default=None,
        metavar="B1,B2,...",
        help="increasing sizes ending at --max-batch-size (default: powers of two from 8)",
    )
    return parser


def _batching_from_args(args):
    return server_config.BatchingOptions(
        max_batch_size=args.max_batch_size,
        batch_timeout_micros=args.batch_timeout_micros,
        num_batch_threads=args.num_batch_threads,
        max_enqueued_batches=args.max_enqueued_batches,
        allowed_batch_sizes=args.allowed_batch_sizes,
    )


def _print_tree(path, out):
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            out.write(
                f"  {os.path.relpath(full, os.path.dirname(path))}  "
                f"({os.path.getsize(full)} bytes)\n"
            )


def check_export(args):
    """ValueError naming the first bad argument of ``tfp-vae export``; needs no TensorFlow."""
    try:
        checks.run_model_path(args.run_dir)
        checks.check_name(args.name)
        model_dir = os.path.join(args.base_path, args.name)
        checks.check_directory_path(model_dir)
        if args.version is not None:
            checks.check_version(args.version, model_dir)
        _batching_from_args(args)
    except checks.ExportError as e:
        raise ValueError(str(e)) from None


def run_export(args, out=None, err=None):
    """Runs ``tfp-vae export``; returns the exit code."""
    from export import exporter, validation

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        batching = _batching_from_args(args)
        result = exporter.export_run_version(
            args.run_dir,
            args.base_path,
            args.name,
            args.version,
            decoder_only=args.decoder_only,
            num_ll_samples=args.num_ll_samples,
            validate=args.validate,
            session_check=args.session_check,
            server_base_path=args.server_base_path,
            num_versions=args.num_versions,
            batching=batching,
            warmup_batch_size=args.warmup_batch_size,
        )
    except validation.ValidationError as e:
        out.write(str(e.report) + "\n")
        err.write(
            f"error: the export of {args.run_dir} failed validation; no version was written.\n"
        )
        return 1
    except (exporter.ExportError, ValueError) as e:
        err.write(f"error: {e}\n")
        return 2
    except OSError as e:
        err.write(f"error: {e.strerror or e}: {e.filename or args.base_path}\n")
        return 1
    for path in result.removed_stale:
        out.write(f"Removed a stale temporary export: {path}\n")
    out.write(f"Exported {args.run_dir} as version {result.version} of model {args.name!r}:\n")
    _print_tree(result.path, out)
    out.write(f"  {result.models_config}\n  {result.batching_parameters}\n")
    if result.report is not None:
        out.write(str(result.report) + "\n")
    else:
        out.write("Validation skipped (--no-validate).\n")
    return 0


def add_validate_arguments(parser):
    """Flags of ``tfp-vae validate MODELS_DIR/NAME/VERSION``."""
    parser.add_argument(
        "version_dir",
        metavar="VERSION_DIR",
        help="an exported version directory, BASE/NAME/<version>",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        metavar="RUN_DIR",
        help="also compare every signature with the live model of this run",
    )
    parser.add_argument(
        "--no-session-check",
        dest="session_check",
        action="store_false",
        help="skip the TF1 session-loader run",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=list(contract.DEFAULT_VALIDATION_BATCH_SIZES),
        metavar="B1,B2",
        help="batch sizes to run every signature at (default %(default)s)",
    )
    return parser


def _version_dir_error(version_dir):
    if not os.path.isdir(version_dir):
        return (f"{version_dir!r} is not a directory; expected an exported "
                "version directory BASE/NAME/<version>.")
    return None


def check_validate(args):
    """ValueError naming the first bad argument of ``tfp-vae validate``; needs no TensorFlow."""
    problem = _version_dir_error(args.version_dir)
    if problem:
        raise ValueError(problem)
    if args.run_dir:
        try:
            checks.run_model_path(args.run_dir)
        except checks.ExportError as e:
            raise ValueError(str(e)) from None


def run_validate(args, out=None, err=None):
    """Runs ``tfp-vae validate``; returns the exit code."""
    from export import exporter, validation

    out = out or sys.stdout
    err = err or sys.stderr
    problem = _version_dir_error(args.version_dir)
    if problem:
        err.write(f"error: {problem}\n")
        return 2
    model = None
    try:
        if args.run_dir:
            model = exporter.load_run_model(args.run_dir)
        report = validation.validate(
            args.version_dir,
            model,
            session_check=args.session_check,
            batch_sizes=args.batch_sizes,
            raise_on_failure=False,
        )
    except (exporter.ExportError, ValueError) as e:
        err.write(f"error: {e}\n")
        return 2
    out.write(str(report) + "\n")
    if not report.ok:
        err.write(report.failure_message() + "\n")
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m export", description="Export and validate TF Serving models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_export_arguments(commands.add_parser("export", help="export a run directory"))
    add_validate_arguments(commands.add_parser("validate", help="validate a version directory"))
    args = parser.parse_args(argv)
    return run_export(args) if args.command == "export" else run_validate(args)
