"""Export trained tfp_vae models as TF Serving SavedModels, and validate them.

    import export
    path = export.export_run("runs/mnist", "models", "vae")          # models/vae/1
    path = export.export_model(model, "models", "vae", decoder_only=True)
    report = export.validate(path, model)

The signatures, layout and checks are described in ``export.contract``,
``export.exporter`` and ``export.validation``.
"""

from export.cli import add_export_arguments, add_validate_arguments, run_export, run_validate
from export.contract import (
    AUTOENCODER,
    DECODE,
    ENCODE,
    GENERATE,
    LOG_LIKELIHOOD,
    RECONSTRUCT,
    SERVING_DEFAULT,
    VAE,
    expected_signatures,
    signature_spec,
)
from export.endpoints import ExportModelError, FrozenPrior
from export.exporter import (
    ExportError,
    ExportResult,
    export_model,
    export_run,
    export_run_version,
    export_version,
    list_versions,
    load_run,
    next_version,
)
from export.server_config import BATCHING_PARAMETERS, MODELS_CONFIG, BatchingOptions
from export.validation import ValidationError, ValidationReport, validate

__all__ = [
    "AUTOENCODER",
    "BATCHING_PARAMETERS",
    "BatchingOptions",
    "DECODE",
    "ENCODE",
    "ExportError",
    "ExportModelError",
    "ExportResult",
    "FrozenPrior",
    "GENERATE",
    "LOG_LIKELIHOOD",
    "MODELS_CONFIG",
    "RECONSTRUCT",
    "SERVING_DEFAULT",
    "VAE",
    "ValidationError",
    "ValidationReport",
    "add_export_arguments",
    "add_validate_arguments",
    "export_model",
    "export_run",
    "export_run_version",
    "export_version",
    "expected_signatures",
    "list_versions",
    "load_run",
    "next_version",
    "run_export",
    "run_validate",
    "signature_spec",
    "validate",
]
