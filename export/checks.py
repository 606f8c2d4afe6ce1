"""Checks of an export's name, version and paths: plain Python, no TensorFlow.

The exporter runs them before it writes anything; ``tfp-vae export`` runs them before
TensorFlow is even imported, so a mistyped name or path fails at once.
"""

import numbers
import os
import re

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ExportError(Exception):
    """An export could not be done as asked; the message names the value and what was expected."""


def list_versions(model_dir):
    """Sorted integer versions present in ``model_dir`` (directories named by an integer)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry))
    )


def next_version(model_dir):
    """One more than the highest version present, or 1."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def check_name(name):
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise ExportError(
            f"Model name {name!r} is not valid: expected letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes a directory and a URL path segment)."
        )


def check_directory_path(path):
    """ExportError unless ``path`` is a directory or can be made one (no file in the way)."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        raise ExportError(
            f"Cannot create the model directory {path}: {probe} is a file, not a directory."
        )


def check_version(version, model_dir):
    if not isinstance(version, numbers.Integral) or isinstance(version, bool) or version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version!r}.")
    if version > 2**63 - 1:
        # TF Serving reads version directory names as int64 and skips any other name.
        raise ExportError(
            f"version must fit in int64 (at most {2**63 - 1}), as TF Serving reads it; "
            f"got {version}."
        )
    version = int(version)
    path = os.path.join(model_dir, str(version))
    if os.path.exists(path) or version in list_versions(model_dir):
        raise ExportError(
            f"Version {version} already exists at {path}; versions are never overwritten. "
            f"Pass another version or none (the next free one is {next_version(model_dir)})."
        )
    return version


def run_model_path(run_dir):
    """``RUN_DIR/model.keras``, or ExportError saying what a run directory holds."""
    run_dir = os.fspath(run_dir)
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        raise ExportError(
            f"{run_dir!r} is not a run directory: {model_path} is missing "
            "(expected model.keras and config.json written by `tfp-vae train`)."
        )
    return model_path
