"""Model versions on disk -> loaded, warmed-up, served versions.

The manager polls each model's base path for integer-named version
directories, picks the versions its policy aspires to (latest N, all, or
specific ones), loads and warms them up, and only then serves them.  Like
TF Serving's availability-preserving policy, a version that is no longer
aspired is unloaded only once an aspired version is available, so a new
version that fails to load leaves the old one serving.  A failed version is
reported (END with an error status) and retried only when its files change.

Version states are the ones GetModelStatus reports: START, LOADING,
AVAILABLE, UNLOADING, END.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Callable, Optional

from serving import errors
from serving import config as config_lib
from serving.config import ConfigError, ModelSpecConfig, parse_int
from serving.servable import Servable, version_fingerprint

logger = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = (
    "START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclasses.dataclass
class VersionRecord:
    """What the server knows about one version of one model."""

    version: int
    path: str
    state: str = START
    error: Optional[errors.ServingError] = None
    fingerprint: Optional[tuple] = None
    servable: Optional[Servable] = None


class _Model:
    def __init__(self, config: ModelSpecConfig):
        self.config = config
        self.records = {}          # version -> VersionRecord
        # No longer in the config: not polled, labels gone, but its versions
        # stay in GetModelStatus (END), as TF Serving's state monitor keeps them.
        self.removed = False
        self.ignored_names = set()


def list_versions(model_base_path: str, ignored: Optional[set] = None) -> dict:
    """{version: path} for the children of model_base_path named as versions.

    As FileSystemStoragePathSource: a child is a version when absl::SimpleAtoi
    reads its name as an int64 (ASCII digits, optional sign and surrounding
    whitespace; "007" is 7), files included.  Other names are skipped; each
    is logged once if `ignored` (the names already logged) is given.  Two
    names of one number keep the later one, with TF Serving's warning.
    """
    try:
        names = os.listdir(model_base_path)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for name in names:
        version = parse_int(name)
        if version is None:
            if ignored is not None and name not in ignored:
                ignored.add(name)
                logger.info("Ignoring %s under base path %s: not an int64 "
                            "version number", name, model_base_path)
            continue
        if version in found:
            logger.warning(
                "Duplicate version directories detected. Version %d will be "
                "loaded from %s, %s will be ignored.", version,
                os.path.join(model_base_path, name), found[version])
        found[version] = os.path.join(model_base_path, name)
    return found


class ModelManager:
    """Loads, serves and unloads the versions of the configured models.

    Args:
      models: ModelSpecConfig list.
      warmup: called as warmup(servable) after a load; an exception fails
        the load.
      on_unload: called with a servable once it is no longer served.
    """

    def __init__(self, models: list,
                 warmup: Optional[Callable[[Servable], None]] = None,
                 on_unload: Optional[Callable[[Servable], None]] = None,
                 allow_version_labels_for_unavailable_models: bool = False,
                 max_num_load_retries: int = 0,
                 load_retry_interval_micros: int = 0,
                 saved_model_tags: tuple = ("serve",),
                 session_config=None):
        self.allow_version_labels_for_unavailable_models = (
            allow_version_labels_for_unavailable_models)
        self._max_num_load_retries = max(0, max_num_load_retries)
        self._retry_interval = max(0, load_retry_interval_micros) / 1e6
        self._tags = tuple(saved_model_tags)
        self._session_config = session_config
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._config_lock = threading.Lock()
        self._models = {m.name: _Model(m) for m in models}
        self._warmup = warmup
        self._on_unload = on_unload
        self._stop = threading.Event()
        self._thread = None

    # -- configuration ------------------------------------------------------
    def set_models(self, models: list) -> None:
        """Replaces the model list; removed models are unloaded (their
        versions stay listed, END)."""
        with self._lock:
            new = {m.name: m for m in models}
            removed = [m for n, m in self._models.items()
                       if n not in new and not m.removed]
            for name, config in new.items():
                if name in self._models:
                    self._models[name].config = config
                    self._models[name].removed = False
                else:
                    self._models[name] = _Model(config)
            for model in removed:
                model.removed = True
        for model in removed:
            for record in list(model.records.values()):
                if record.state == AVAILABLE:
                    self._unload(model, record)

    def platforms(self) -> dict:
        """{name: platform} of the models in the current config."""
        with self._lock:
            return {n: m.config.platform for n, m in self._models.items()
                    if not m.removed}

    def check_labels(self, models: list) -> None:
        """ServerCore::UpdateModelVersionLabelMap's rule, before a config is
        applied: a label points at an AVAILABLE version, unless
        --allow_version_labels_for_unavailable_models (and the label is new
        or keeps its version).  Raises ConfigError (FAILED_PRECONDITION)."""
        with self._lock:
            for config in models:
                model = self._models.get(config.name)
                records = model.records if model else {}
                old_labels = ({} if model is None or model.removed
                              else model.config.label_map)
                for label, version in config.labels:
                    if self.allow_version_labels_for_unavailable_models:
                        existing = old_labels.get(label)
                        if existing is None or existing == version:
                            continue
                    record = records.get(version)
                    if record is None or record.state != AVAILABLE:
                        raise ConfigError(
                            f"Request to assign label to version {version} of "
                            f"model {config.name}, which is not currently "
                            f"available for inference",
                            code="FAILED_PRECONDITION")

    def apply_config(self, models: list) -> None:
        """Checks labels, switches to `models`, loads what they aspire to
        (synchronously), as ServerCore::ReloadConfig does.

        Raises ConfigError with TF Serving's code and message; UNKNOWN when a
        newly added model has no available version after its loads.
        """
        with self._config_lock:      # ServerCore's config_mu_
            self._apply_config(models)

    def reload_config_list(self, config_list) -> None:
        """ServerCore::ReloadConfig for a ModelConfigList proto: validated
        against the current config, then applied (see apply_config)."""
        with self._config_lock:
            config_lib.validate_model_config_list(config_list,
                                                  self.platforms())
            self._apply_config(config_lib.models_from_config_list(config_list))

    def _apply_config(self, models: list) -> None:
        with self._lock:
            before = {n for n, m in self._models.items() if not m.removed}
        self.check_labels(models)
        self.set_models(models)
        self.poll_once()
        added = [m.name for m in models if m.name not in before]
        self._check_available(added)

    def check_initial_load(self) -> None:
        """ConnectSourcesWithFastInitialLoad's check after the first load:
        UNKNOWN if a model has versions that failed and none available."""
        with self._lock:
            names = [n for n, m in self._models.items() if not m.removed]
        self._check_available(names, what="servable")

    def _check_available(self, names: list, what: str = "model") -> None:
        failed = []
        with self._lock:
            for name in names:
                model = self._models[name]
                if any(r.state == AVAILABLE for r in model.records.values()):
                    continue
                failed.extend((name, r) for _, r in sorted(
                    model.records.items(), reverse=True)
                    if r.error is not None)
        if failed:
            entries = "".join(
                f"{{{{name: {name} version: {r.version}}} due to error: "
                f"{r.error.code.name}: {r.error.message}}}, "
                for name, r in failed)
            raise ConfigError(f"{len(failed)} {what}(s) did not become "
                              f"available: {{{entries}}}", code="UNKNOWN")

    # -- polling ------------------------------------------------------------
    def poll_once(self) -> None:
        """Brings every model's served versions in line with its base path."""
        with self._poll_lock:
            with self._lock:
                models = [m for m in self._models.values() if not m.removed]
            for model in models:
                try:
                    self._poll_model(model)
                except Exception:  # noqa: BLE001 - polling must go on
                    logger.exception("Polling model %s failed",
                                     model.config.name)

    def _poll_model(self, model: _Model) -> None:
        config = model.config
        on_disk = list_versions(config.model_base_path, model.ignored_names)
        if not on_disk and not os.path.isdir(config.model_base_path):
            logger.warning("File system storage path source: base path %s "
                           "for servable %s does not exist",
                           config.model_base_path, config.name)
        elif not on_disk:
            logger.debug("No versions of servable %s found under base path "
                         "%s. Did you forget to name your leaf directory as a "
                         "number (eg. '/1/')?", config.name,
                         config.model_base_path)
        aspired = config.policy.select(on_disk)
        for version in sorted(aspired, reverse=True):
            if self._stop.is_set():
                return
            path = on_disk[version]
            record = model.records.get(version)
            if record is not None and record.state != END:
                continue
            if record is not None and record.error is not None:
                if record.fingerprint == version_fingerprint(path):
                    continue        # failed before and unchanged on disk
            self._load(model, version, path)
        with self._lock:
            aspired_available = any(
                model.records.get(v) is not None
                and model.records[v].state == AVAILABLE for v in aspired)
            to_unload = [r for v, r in model.records.items()
                         if r.state == AVAILABLE and v not in aspired
                         and (aspired_available or not aspired)]
        for record in to_unload:
            self._unload(model, record)

    def _load(self, model: _Model, version: int, path: str) -> None:
        name = model.config.name
        record = VersionRecord(version=version, path=path,
                               fingerprint=version_fingerprint(path))
        with self._lock:
            model.records[version] = record
            record.state = LOADING
        logger.info("Loading servable version {name: %s version: %d} from %s",
                    name, version, path)
        description = f"Loading servable: {{name: {name} version: {version}}}"
        tries = 0
        while True:
            if tries > 0:
                # util/retrier.cc Retry, as LoaderHarness::Load uses it.
                if self._stop.wait(self._retry_interval):
                    break
                logger.info("Retrying of %s retry: %d", description, tries)
            try:
                servable = Servable(name, version, path, tags=self._tags,
                                    session_config=self._session_config)
                if self._warmup is not None:
                    self._warmup(servable)
                error = None
            except Exception as e:  # noqa: BLE001 - a failed load is reported
                error = errors.from_exception(e)
                logger.error("%s failed: %s", description, error)
            tries += 1
            if error is None or tries >= self._max_num_load_retries + 1:
                break
        if tries == self._max_num_load_retries + 1 and error is not None \
                and self._max_num_load_retries:
            logger.info("Retrying of %s exhausted max_num_load_retries: %d",
                        description, self._max_num_load_retries)
        if error is not None:
            with self._lock:
                record.state = END
                record.error = error
            logger.error("Failed to load servable version {name: %s version: "
                         "%d} from %s: %s", name, version, path, error)
            return
        with self._lock:
            record.servable = servable
            record.state = AVAILABLE
        logger.info("Successfully loaded servable version {name: %s version: "
                    "%d}", name, version)

    def _unload(self, model: _Model, record: VersionRecord) -> None:
        with self._lock:
            servable = record.servable
            record.state = UNLOADING
            record.servable = None
        if servable is not None and self._on_unload is not None:
            try:
                self._on_unload(servable)
            except Exception:  # noqa: BLE001
                logger.exception("Unloading %s version %d failed",
                                 servable.name, servable.version)
        with self._lock:
            record.state = END
            record.error = None
        logger.info("Unloaded servable version {name: %s version: %d}",
                    model.config.name, record.version)

    def start(self, poll_wait_seconds: float) -> None:
        """Polls once now; then, if poll_wait_seconds > 0, every that often.

        A negative value disables polling entirely, as in TF Serving.
        """
        if poll_wait_seconds < 0:
            return
        self.poll_once()
        if poll_wait_seconds > 0:
            self._thread = threading.Thread(
                target=self._poll_loop, args=(poll_wait_seconds,),
                name="model-poller", daemon=True)
            self._thread.start()

    def _poll_loop(self, wait: float) -> None:
        while not self._stop.wait(wait):
            self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        with self._lock:
            models = list(self._models.values())
        for model in models:
            for record in list(model.records.values()):
                if record.state == AVAILABLE:
                    self._unload(model, record)

    # -- lookup -------------------------------------------------------------
    def resolve(self, model_spec) -> Servable:
        """The servable a ModelSpec asks for, or TF Serving's error."""
        name = model_spec.name
        if not name:
            raise errors.invalid_argument("ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        with self._lock:
            model = self._models.get(name)
            if model is not None and model.removed:
                model = None        # its labels and versions are gone
            if choice == "version_label":
                label = model_spec.version_label
                version = model.config.label_map.get(label) if model else None
                if version is None:
                    raise errors.invalid_argument(
                        f"Unrecognized servable version label: {label}")
                request = f"Specific({name}, {version})"
            elif choice == "version":
                version = int(model_spec.version.value)
                request = f"Specific({name}, {version})"
            else:
                version = None
                request = f"Latest({name})"
            if model is not None:
                if version is None:
                    available = [v for v, r in model.records.items()
                                 if r.state == AVAILABLE]
                    if available:
                        return model.records[max(available)].servable
                else:
                    record = model.records.get(version)
                    if record is not None and record.state == AVAILABLE:
                        return record.servable
        raise errors.not_found(f"Servable not found for request: {request}")

    def version_states(self, name: str, version: Optional[int] = None) -> list:
        """[(version, state, error)] newest first, as GetModelStatus lists."""
        with self._lock:
            model = self._models.get(name)
            records = dict(model.records) if model else {}
            if version is not None:
                record = records.get(version)
                if record is None:
                    raise errors.not_found(
                        f"Could not find version {version} of model {name}")
                return [(record.version, record.state, record.error)]
            if not records:
                raise errors.not_found(
                    f"Could not find any versions of model {name}")
            return [(r.version, r.state, r.error)
                    for _, r in sorted(records.items(), reverse=True)]

    def available_servables(self) -> list:
        with self._lock:
            return [r.servable for m in self._models.values()
                    for r in m.records.values() if r.state == AVAILABLE]
