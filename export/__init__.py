"""Export trained tfp_vae models as TF Serving SavedModels, and validate them.

    import export
    path = export.export_run("runs/mnist", "models", "vae")          # models/vae/1
    path = export.export_model(model, "models", "vae", decoder_only=True)
    report = export.validate(path, model)

``export.contract`` is the table of signatures (TensorFlow-free); ``export.exporter``
writes versions; ``export.validation`` checks them. Names load lazily: ``import
export`` or ``from export import contract`` does not import TensorFlow.
"""

import importlib

_EXPORTS = {
    "add_export_arguments": "export.cli",
    "add_validate_arguments": "export.cli",
    "run_export": "export.cli",
    "run_validate": "export.cli",
    "AUTOENCODER": "export.contract",
    "DECODE": "export.contract",
    "ENCODE": "export.contract",
    "GENERATE": "export.contract",
    "LOG_LIKELIHOOD": "export.contract",
    "RECONSTRUCT": "export.contract",
    "SERVING_DEFAULT": "export.contract",
    "VAE": "export.contract",
    "expected_signatures": "export.contract",
    "signature_spec": "export.contract",
    "ExportModelError": "export.endpoints",
    "FrozenPrior": "export.endpoints",
    "ExportError": "export.exporter",
    "ExportResult": "export.exporter",
    "export_model": "export.exporter",
    "export_run": "export.exporter",
    "export_run_version": "export.exporter",
    "export_version": "export.exporter",
    "list_versions": "export.exporter",
    "load_run_model": "export.exporter",
    "next_version": "export.exporter",
    "BATCHING_PARAMETERS": "export.server_config",
    "MODELS_CONFIG": "export.server_config",
    "BatchingOptions": "export.server_config",
    "ValidationError": "export.validation",
    "ValidationReport": "export.validation",
    "validate": "export.validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
