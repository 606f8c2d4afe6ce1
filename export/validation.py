"""Validation of an exported version directory against the serving contract.

``validate(version_dir, model=None)`` runs, in order:

``layout``         saved_model.pb, variables/ and the warmup file are where TF Serving
                   looks, under an integer version directory.
``signatures``     the set of signatures is the one the export's kind carries.
``signature_def``  every input and output key, dtype and shape matches ``export.contract``,
                   with the batch dimension unknown, and the method is Predict.
``ops``            every op a signature runs has a GPU kernel, and none is a Python
                   callback, an unknown op or a stateful random op (``export.graph_ops``).
``variables``      a decoder-only export holds none of the encoder's variables.
``reload``         ``tf.saved_model.load`` and every signature at two batch sizes: output
                   keys, dtypes, shapes and finiteness; ``serving_default`` equals
                   ``decode``.
``live_model``     (with ``model``) each signature is allclose to the live Keras model.
``seeds``          for seeded signatures: the same rows give identical outputs, different
                   rows give different outputs, and a row's output is the same alone and
                   inside a bigger batch (``generate``'s z bit for bit, decoded outputs
                   within ROW_ATOL).
``session``        the TF1 session loader (what ``tensorflow_model_server`` does) loads the
                   graph with tag "serve" and runs every signature through its SignatureDef
                   tensor names; results match the reloaded functions.
``warmup``         the warmup records parse as PredictionLogs, cover every signature, carry
                   the right inputs and run.

Without the live model every check but ``live_model`` still runs. Every failure names
the signature, the check and the values; ``validate`` raises ``ValidationError`` (whose
``report`` holds all results) when any check fails.

Where each lives: ``export.saved_contract`` reads what the export is (the contract it
carries); ``export.file_checks`` checks its files without running it (layout,
signature_def, ops, variables); ``export.run_checks`` loads and runs it (reload,
live_model, seeds, session, warmup); ``export.report`` holds the results. Each check
returns its results; this module only orders the checks and gathers the report.
"""

import os

import tensorflow as tf

from export import contract, file_checks, run_checks
from export.report import CheckResult, ValidationError, ValidationReport
from export.saved_contract import (
    SERVE_TAG,
    contract_signatures,
    read_manifest,
    read_meta_graph,
    resolve_contract,
)

DEFAULT_BATCH_SIZES = contract.DEFAULT_VALIDATION_BATCH_SIZES

__all__ = ["DEFAULT_BATCH_SIZES", "ValidationError", "ValidationReport", "validate"]


def validate(
    version_dir,
    model=None,
    *,
    session_check=True,
    batch_sizes=DEFAULT_BATCH_SIZES,
    raise_on_failure=True,
    expect_version_name=True,
):
    """Checks an exported version directory; returns a ValidationReport.

    Args:
      version_dir: BASE/NAME/<version>.
      model: the live Keras model it was exported from, for the ``live_model`` and
        encoder-variable checks; without it those are skipped.
      session_check: also load and run it with the TF1 session loader.
      batch_sizes: the (two or more) batch sizes every signature is run at.
      raise_on_failure: raise ValidationError when a check fails (else just report).
      expect_version_name: require the directory name to be an integer version.

    Raises:
      ValidationError: a check failed (and ``raise_on_failure``).
    """
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if len(set(batch_sizes)) < 2 or min(batch_sizes) < 1:
        raise ValueError(
            f"batch_sizes must hold two or more distinct positive sizes, got {batch_sizes}."
        )
    results, found, ops = _run_checks(
        version_dir, model, session_check, batch_sizes, expect_version_name
    )
    report = ValidationReport(version_dir, results, found, ops)
    if raise_on_failure and not report.ok:
        raise ValidationError(report)
    return report


def _run_checks(version_dir, model, session_check, batch_sizes, expect_version_name):
    """(results, ExportContract or None, ops by signature), checks in order."""
    results = file_checks.check_layout(version_dir, expect_version_name)
    if not all(r.ok for r in results) and not os.path.isfile(
        os.path.join(version_dir, "saved_model.pb")
    ):
        return results, None, {}
    try:
        meta_graph = read_meta_graph(version_dir)
    except Exception as e:  # noqa: BLE001
        results += _failure("layout", f"saved_model.pb does not parse: {type(e).__name__}: {e}")
        return results, None, {}
    manifest = read_manifest(version_dir)
    found, more = resolve_contract(meta_graph, manifest, model)
    results += more
    more, ops = file_checks.check_ops(meta_graph, contract_signatures(meta_graph))
    results += more
    if found is None:
        return results, None, ops
    results += file_checks.check_signature_defs(meta_graph, found.specs)
    results += file_checks.check_variables(
        meta_graph, manifest, model, found.kind, found.decoder_only
    )
    try:
        loaded = tf.saved_model.load(version_dir, tags=[SERVE_TAG])
    except Exception as e:  # noqa: BLE001
        results += _failure("reload", f"tf.saved_model.load failed: {type(e).__name__}: {e}")
        return results, found, ops
    more, reloaded = run_checks.check_reload(loaded, found, batch_sizes, model, manifest)
    results += more
    results += run_checks.check_seeds(loaded, found.specs)
    if session_check:
        results += run_checks.check_session(version_dir, found.specs, reloaded)
    results += run_checks.check_warmup(version_dir, found.specs, loaded)
    return results, found, ops


def _failure(check, detail):
    return [CheckResult(check, None, False, detail)]
