"""Writing a model as one version of a TF Serving model directory.

Layout (what ``tensorflow_model_server`` reads)::

    BASE/NAME/
        models.config               ModelServerConfig text proto
        batching_parameters.txt     BatchingParameters text proto
        1/
            saved_model.pb
            variables/variables.{index,data-*}
            assets.extra/tf_serving_warmup_requests
            assets.extra/tfp_vae_export.json     what was exported (kind, shapes, k, ...)
        2/ ...

A version is written under ``BASE/NAME/.<version>.tmp-<pid>-<random>`` (a name TF
Serving ignores: it only loads children whose names are integers), validated there,
and only then renamed to ``BASE/NAME/<version>`` in one ``os.rename`` on the same file
system (``tfp_vae.files.atomic_directory``), so a server polling the base path never sees half a version. If anything
fails or is interrupted the temporary directory is removed; one left behind by a
killed process is never mistaken for a version, and is removed by the next export
once its process is gone. An existing version is never overwritten. Concurrent
exports into the same model directory are serialized by a lock file
(``.export.lock``).
"""

import contextlib
import dataclasses
import json
import os

from export import contract, endpoints, saved_contract, server_config, validation, warmup
from export.checks import (ExportError, check_directory_path as _check_directory_path,
                           check_name as _check_name, check_version as _check_version,
                           list_versions, next_version, run_model_path)
from tfp_vae import files

LOCK_FILE = ".export.lock"
DEFAULT_NUM_LL_SAMPLES = contract.DEFAULT_NUM_LL_SAMPLES


@dataclasses.dataclass
class ExportResult:
    path: str
    version: int
    report: object  # validation.ValidationReport, or None when validation was skipped
    models_config: str
    batching_parameters: str
    removed_stale: list

    def __str__(self):
        return self.path


def remove_stale_temporaries(model_dir):
    """Removes temporary version directories whose process is gone; returns their paths."""
    return files.remove_stale_temporaries(model_dir)


@contextlib.contextmanager
def _model_dir_lock(model_dir):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(os.path.join(model_dir, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _manifest(plan, name, extra):
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tfp_vae

    return {
        "format": 1,
        "model_name": name,
        "kind": plan.kind,
        "decoder_only": plan.decoder_only,
        "latent_dim": plan.latent_dim,
        "data_shape": list(plan.data_shape),
        "signatures": list(plan.functions),
        **plan.manifest,
        "versions": {
            "tensorflow": tf.__version__,
            "tensorflow_probability": tfp.__version__,
            "keras": keras.__version__,
            "tfp_vae": getattr(tfp_vae, "__version__", None),
        },
        **(extra or {}),
    }


def _write_version(tmp, model, plan, name, warmup_batch_size, extra_manifest):
    import keras

    archive = keras.export.ExportArchive()
    for resource in plan.track:
        archive.track(resource)
    for signature, (fn, _) in plan.functions.items():
        archive.add_endpoint(signature, fn, input_signature=plan.input_signature(signature))
    archive.write_out(tmp, verbose=False)
    warmup.write_warmup_requests(
        tmp,
        name,
        {
            signature: contract.example_inputs(spec, warmup_batch_size)
            for signature, (_, spec) in plan.functions.items()
        },
    )
    with open(os.path.join(tmp, warmup.ASSETS_EXTRA, saved_contract.MANIFEST_FILE), "w") as f:
        json.dump(_manifest(plan, name, extra_manifest), f, indent=2, sort_keys=True)


def export_version(
    model,
    base_path,
    name,
    version=None,
    *,
    decoder_only=False,
    num_ll_samples=DEFAULT_NUM_LL_SAMPLES,
    validate=True,
    session_check=True,
    server_base_path=None,
    num_versions=1,
    batching=None,
    warmup_batch_size=2,
    extra_manifest=None,
):
    """Like ``export_model``, returning an ExportResult (path, version, report, config paths)."""
    _check_name(name)
    if not isinstance(warmup_batch_size, int) or warmup_batch_size < 1:
        raise ExportError(
            f"warmup_batch_size must be a positive integer, got {warmup_batch_size!r}."
        )
    batching = batching or server_config.BatchingOptions()
    # Fail on bad configuration before the (slow) export, not after it.
    model_dir = os.path.abspath(os.path.join(os.fspath(base_path), name))
    _check_directory_path(model_dir)
    try:
        server_config.models_config(name, server_base_path or model_dir, num_versions)
        plan = endpoints.plan(model, decoder_only=decoder_only, num_ll_samples=num_ll_samples)
    except ValueError as e:
        raise ExportError(str(e)) from e
    os.makedirs(model_dir, exist_ok=True)

    with _model_dir_lock(model_dir):
        removed = remove_stale_temporaries(model_dir)
        if version is None:
            version = next_version(model_dir)
        version = _check_version(version, model_dir)
        final = os.path.join(model_dir, str(version))
        report = None
        try:
            with files.atomic_directory(final) as tmp:
                _write_version(tmp, model, plan, name, warmup_batch_size, extra_manifest)
                if validate:
                    report = validation.validate(
                        tmp,
                        model,
                        session_check=session_check,
                        expect_version_name=False,
                        raise_on_failure=False,
                    )
                    report.version_dir = final
                    if not report.ok:
                        report.not_written = True
                        raise validation.ValidationError(report)
        except FileExistsError:  # appeared while we were writing
            raise ExportError(
                f"Version {version} appeared at {final} during the export; not overwritten."
            ) from None
        paths = server_config.write_server_configs(
            model_dir, name, server_base_path, num_versions, batching
        )
    return ExportResult(
        path=final,
        version=version,
        report=report,
        models_config=paths["models_config"],
        batching_parameters=paths["batching_parameters"],
        removed_stale=removed,
    )


def export_model(
    model,
    base_path,
    name,
    version=None,
    *,
    decoder_only=False,
    num_ll_samples=DEFAULT_NUM_LL_SAMPLES,
    validate=True,
    session_check=True,
    server_base_path=None,
    num_versions=1,
    batching=None,
    warmup_batch_size=2,
    extra_manifest=None,
):
    """Exports ``model`` to ``base_path/name/<version>/`` for TF Serving; returns that path.

    Args:
      model: a built ``tfp_vae.VAE`` (or autoencoder).
      base_path: directory holding one sub-directory per model name.
      name: the model name TF Serving serves it under.
      version: integer version; default one more than the highest present (or 1).
      decoder_only: export only ``serving_default``, ``decode`` and ``generate``, without
        the encoder's weights.
      num_ll_samples: k, the importance samples per row of ``log_likelihood``.
      validate: run ``export.validate`` on the written version before renaming it into
        place (``session_check`` includes the TF1 session-loader run).
      server_base_path: the model directory as the server sees it, written into
        models.config (default: the local absolute path; ``/models/NAME`` in Docker).
      num_versions: how many of the latest versions models.config tells TF Serving to serve.
      batching: ``server_config.BatchingOptions`` for batching_parameters.txt.
      warmup_batch_size: rows in each warmup request.
      extra_manifest: more facts recorded in assets.extra/tfp_vae_export.json.

    Raises:
      ExportError: bad arguments, or the version exists.
      ValidationError: the written version broke the contract (nothing is left behind).
    """
    return export_version(
        model,
        base_path,
        name,
        version,
        decoder_only=decoder_only,
        num_ll_samples=num_ll_samples,
        validate=validate,
        session_check=session_check,
        server_base_path=server_base_path,
        num_versions=num_versions,
        batching=batching,
        warmup_batch_size=warmup_batch_size,
        extra_manifest=extra_manifest,
    ).path


def load_run_model(run_dir):
    """The model of a run directory (its ``model.keras``), for export.

    Unlike ``tfp_vae.train.load_run`` it needs no ``config.json``: any saved tfp_vae
    model can be exported.
    """
    model_path = run_model_path(run_dir)
    import keras

    import tfp_vae  # noqa: F401  (registers the classes model.keras refers to)

    return keras.models.load_model(model_path, compile=False)


def _run_config(run_dir):
    """config.json of a run directory as written (a dict), or None."""
    path = os.path.join(os.fspath(run_dir), "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def export_run_version(run_dir, base_path, name, version=None, **options):
    """Like ``export_run``, returning an ExportResult."""
    model, config = load_run_model(run_dir), _run_config(run_dir)
    extra = dict(options.pop("extra_manifest", None) or {})
    extra["run_dir"] = os.path.abspath(os.fspath(run_dir))
    if config is not None:
        extra["run_config"] = config
    return export_version(model, base_path, name, version, extra_manifest=extra, **options)


def export_run(run_dir, base_path, name, version=None, **options):
    """Exports the model of a run directory (``model.keras``); returns the version path.

    Takes the same options as ``export_model``.
    """
    return export_run_version(run_dir, base_path, name, version, **options).path
