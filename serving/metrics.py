"""Counters and gauges of the local server, in Prometheus text format.

The REST port serves them when --monitoring_config_file enables Prometheus,
at its path (TF Serving's default ``/monitoring/prometheus/metrics``); tests
and benchmarks read them there or through `Metrics.value` in process.
"""

from __future__ import annotations

import threading
from collections import defaultdict

# Metric name -> (type, help).
_HELP = {
    ":tensorflow:serving:request_count": (
        "counter", "Number of requests, by model, API and status."),
    "tfp_vae_serving_inflight_requests": (
        "gauge", "Requests received and not yet answered."),
    "tfp_vae_serving_batches_total": (
        "counter", "Batches run by the server-side batcher."),
    "tfp_vae_serving_batched_requests_total": (
        "counter", "Requests that went through the batcher."),
    "tfp_vae_serving_batched_rows_total": (
        "counter", "Rows of real data in batches."),
    "tfp_vae_serving_padding_rows_total": (
        "counter", "Rows added to reach an allowed batch size."),
    "tfp_vae_serving_merged_batches_total": (
        "counter", "Batches that merged more than one request."),
    "tfp_vae_serving_max_requests_per_batch": (
        "gauge", "Most requests merged into one batch so far."),
}


def _label_text(labels: tuple) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace(
        "\n", "\\n")


class Metrics:
    """A small thread-safe registry: name + labels -> number."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values = defaultdict(float)
        self._keys = {}      # (name, labels as given) -> series key

    def _key(self, name: str, labels: dict) -> tuple:
        raw = (name, *labels.items())
        key = self._keys.get(raw)
        if key is None:
            key = name, tuple(sorted((k, str(v)) for k, v in labels.items()))
            # Bounded (labels come from requests); str values only, as 1 and
            # True would share an entry but not a text.
            if len(self._keys) < 10000 and all(
                    type(v) is str for v in labels.values()):
                self._keys[raw] = key
        return key

    def add(self, name: str, amount: float = 1.0, **labels) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._values[key] += amount

    def set_max(self, name: str, value: float, **labels) -> None:
        key = self._key(name, labels)
        with self._lock:
            if value > self._values.get(key, float("-inf")):
                self._values[key] = value

    def value(self, name: str, **labels) -> float:
        """Sum over every series of `name` whose labels include `labels`."""
        want = {k: str(v) for k, v in labels.items()}
        total = 0.0
        with self._lock:
            for (n, series), v in self._values.items():
                if n == name and want.items() <= dict(series).items():
                    total += v
        return total

    def max(self, name: str, **labels) -> float:
        want = {k: str(v) for k, v in labels.items()}
        best = 0.0
        with self._lock:
            for (n, series), v in self._values.items():
                if n == name and want.items() <= dict(series).items():
                    best = max(best, v)
        return best

    def prometheus_text(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines = []
        seen = set()
        for (name, labels), value in items:
            if name not in seen:
                seen.add(name)
                kind, help_text = _HELP.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
            number = int(value) if float(value).is_integer() else value
            lines.append(f"{name}{_label_text(labels)} {number}")
        return "\n".join(lines) + "\n"
