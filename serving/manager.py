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
from serving.config import ModelSpecConfig
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


def list_versions(model_base_path: str) -> dict:
    """{version: path} for the integer-named directories under model_base_path."""
    try:
        names = os.listdir(model_base_path)
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(model_base_path, name)
        if os.path.isdir(path):
            found[int(name)] = path
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
                 on_unload: Optional[Callable[[Servable], None]] = None):
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._models = {m.name: _Model(m) for m in models}
        self._warmup = warmup
        self._on_unload = on_unload
        self._stop = threading.Event()
        self._thread = None

    # -- configuration ------------------------------------------------------
    def set_models(self, models: list) -> None:
        """Replaces the model list; removed models are unloaded."""
        with self._lock:
            new = {m.name: m for m in models}
            removed = [self._models[n] for n in self._models if n not in new]
            for name, config in new.items():
                if name in self._models:
                    self._models[name].config = config
                else:
                    self._models[name] = _Model(config)
            for model in removed:
                del self._models[model.config.name]
        for model in removed:
            for record in list(model.records.values()):
                if record.state == AVAILABLE:
                    self._unload(model, record)

    # -- polling ------------------------------------------------------------
    def poll_once(self) -> None:
        """Brings every model's served versions in line with its base path."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                try:
                    self._poll_model(model)
                except Exception:  # noqa: BLE001 - polling must go on
                    logger.exception("Polling model %s failed",
                                     model.config.name)

    def _poll_model(self, model: _Model) -> None:
        config = model.config
        on_disk = list_versions(config.model_base_path)
        if not on_disk and not os.path.isdir(config.model_base_path):
            logger.warning("File system storage path source: base path %s "
                           "for servable %s does not exist",
                           config.model_base_path, config.name)
        elif not on_disk:
            logger.debug("No versions of servable %s found under base path %s",
                         config.name, config.model_base_path)
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
        try:
            servable = Servable(name, version, path)
            if self._warmup is not None:
                self._warmup(servable)
        except Exception as e:  # noqa: BLE001 - a failed load is reported
            error = errors.from_exception(e)
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
