"""Server-side batching: concurrent requests merged into one model call.

Modelled on TF Serving's shared batch scheduler and batching session:

* one queue per (model version, signature); all queues share a pool of
  ``num_batch_threads`` batch threads;
* a batch closes when it holds ``max_batch_size`` rows, or when its oldest
  request has waited ``batch_timeout_micros`` and a batch thread is free
  (while every thread is busy the open batch keeps filling);
* a batch is padded up to the next of ``allowed_batch_sizes`` by repeating
  its first row, run once, and its outputs are split back by row;
* a request larger than ``max_batch_size`` is refused (INVALID_ARGUMENT),
  or, with ``enable_large_batch_splitting``, split into pieces;
* a full queue (``max_enqueued_batches`` batches waiting) answers
  UNAVAILABLE, so callers can back off.

Only requests whose non-batch dimensions agree are merged; others wait for
a later batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from typing import Callable, Mapping

import numpy as np

from serving import errors
from serving.config import BatchingParameters
from serving.metrics import Metrics

logger = logging.getLogger(__name__)


class _Task:
    __slots__ = ("inputs", "size", "future", "enqueued", "shape_key")

    def __init__(self, inputs: dict, size: int):
        self.inputs = inputs
        self.size = size
        self.future = concurrent.futures.Future()
        self.enqueued = time.monotonic()
        self.shape_key = tuple(sorted(
            (k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))


class BatchThreads:
    """The batch threads shared by every queue of one server."""

    def __init__(self, num_threads: int):
        self.num_threads = num_threads
        self._slots = threading.Semaphore(num_threads)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=num_threads, thread_name_prefix="batch")

    def acquire(self, timeout: float) -> bool:
        return self._slots.acquire(timeout=timeout)

    def release(self) -> None:
        self._slots.release()

    def run(self, fn, *args) -> None:
        """Runs fn(*args) on a batch thread; the caller holds a slot."""
        def wrapped():
            try:
                fn(*args)
            finally:
                self.release()
        self._pool.submit(wrapped)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def row_count(inputs: Mapping[str, np.ndarray]) -> int:
    """The batch size of a request: dimension 0, equal across inputs."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise errors.invalid_argument(
                "Batching session Run() input tensors must have at least one "
                "dimension")
        sizes.add(int(array.shape[0]))
    if len(sizes) > 1:
        raise errors.invalid_argument(
            f"Batching session Run() input tensors must have equal "
            f"0th-dimension size; got sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 0


class BatchQueue:
    """Merges requests for one signature of one model version."""

    def __init__(self, run: Callable[[dict], dict], options: BatchingParameters,
                 threads: BatchThreads, metrics: Metrics, labels: dict):
        self._run = run
        self._options = options
        self._threads = threads
        self._metrics = metrics
        self._labels = labels
        self._cond = threading.Condition()
        self._tasks = collections.deque()
        self._queued_rows = 0
        self._stopping = False
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, daemon=True,
            name=f"batcher-{labels.get('model')}-{labels.get('signature')}")
        self._dispatcher.start()

    # -- submitting ---------------------------------------------------------
    def submit(self, inputs: Mapping[str, np.ndarray]) -> dict:
        """Runs `inputs` as part of a batch; blocks; returns all outputs."""
        size = row_count(inputs)
        limit = self._options.execution_batch_size
        if size > self._options.max_batch_size and not (
                self._options.enable_large_batch_splitting):
            raise errors.invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self._options.max_batch_size}")
        if size > limit:
            pieces = [{k: v[i:i + limit] for k, v in inputs.items()}
                      for i in range(0, size, limit)]
            futures = [self._enqueue(p, int(next(iter(p.values())).shape[0]))
                       for p in pieces]
            parts = [f.result() for f in futures]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._enqueue(dict(inputs), size).result()

    def _enqueue(self, inputs: dict, size: int) -> concurrent.futures.Future:
        task = _Task(inputs, size)
        with self._cond:
            if self._stopping:
                raise errors.unavailable("The batch scheduler is shutting down")
            capacity = self._options.max_enqueued_batches * self._options.max_batch_size
            if self._queued_rows + size > capacity:
                raise errors.unavailable(
                    "The batch scheduling queue to which this task was "
                    "submitted is full")
            self._tasks.append(task)
            self._queued_rows += size
            self._cond.notify_all()
        return task.future

    # -- forming batches ----------------------------------------------------
    def _dispatch_loop(self) -> None:
        timeout = self._options.batch_timeout_micros / 1e6
        limit = self._options.execution_batch_size
        while True:
            with self._cond:
                while not self._tasks and not self._stopping:
                    self._cond.wait()
                if not self._tasks:
                    return
                deadline = self._tasks[0].enqueued + timeout
                while (not self._stopping
                       and self._ready_rows(limit) < limit):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            # Wait for a free batch thread; the batch keeps filling meanwhile.
            while not self._threads.acquire(timeout=0.5):
                pass
            with self._cond:
                batch = self._take(limit)
            if batch:
                self._threads.run(self._process, batch)
            else:
                self._threads.release()

    def _ready_rows(self, limit: int) -> int:
        key = self._tasks[0].shape_key
        rows = 0
        for task in self._tasks:
            if task.shape_key == key:
                if rows + task.size > limit:
                    return limit
                rows += task.size
        return rows

    def _take(self, limit: int) -> list:
        if not self._tasks:
            return []
        key = self._tasks[0].shape_key
        batch, rest, rows = [], collections.deque(), 0
        while self._tasks:
            task = self._tasks.popleft()
            if task.shape_key == key and rows + task.size <= limit:
                batch.append(task)
                rows += task.size
            else:
                rest.append(task)
                if rows >= limit:
                    break
        rest.extend(self._tasks)
        self._tasks = rest
        self._queued_rows -= rows
        return batch

    # -- running ------------------------------------------------------------
    def _process(self, batch: list) -> None:
        rows = sum(t.size for t in batch)
        padded = rows
        for allowed in self._options.allowed_batch_sizes:
            if allowed >= rows:
                padded = allowed
                break
        try:
            if len(batch) == 1 and padded == rows:
                merged = batch[0].inputs
            else:
                merged = {}
                for key in batch[0].inputs:
                    parts = [t.inputs[key] for t in batch]
                    if padded > rows:
                        first = parts[0][:1]
                        parts.append(np.repeat(first, padded - rows, axis=0))
                    merged[key] = np.concatenate(parts, axis=0)
            outputs = self._run(merged)
            for name, value in outputs.items():
                if np.ndim(value) == 0:
                    raise errors.failed_precondition(
                        f"Batched output tensor '{name}' has 0 dimensions")
                if value.shape[0] != padded:
                    raise errors.failed_precondition(
                        f"Batched output tensor's 0th dimension does not equal "
                        f"the sum of the 0th dimension sizes of the input "
                        f"tensors (output '{name}': {value.shape[0]} != "
                        f"{padded})")
            offset = 0
            for task in batch:
                task.future.set_result(
                    {k: v[offset:offset + task.size] for k, v in outputs.items()})
                offset += task.size
        except Exception as e:  # noqa: BLE001 - every waiting request gets it
            error = errors.from_exception(e)
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(error)
        finally:
            m, labels = self._metrics, self._labels
            m.add("tfp_vae_serving_batches_total", 1, **labels)
            m.add("tfp_vae_serving_batched_requests_total", len(batch), **labels)
            m.add("tfp_vae_serving_batched_rows_total", rows, **labels)
            m.add("tfp_vae_serving_padding_rows_total", padded - rows, **labels)
            if len(batch) > 1:
                m.add("tfp_vae_serving_merged_batches_total", 1, **labels)
            m.set_max("tfp_vae_serving_max_requests_per_batch", len(batch),
                      **labels)
            logger.debug("batch for %s: %d requests, %d rows, padded to %d",
                         labels, len(batch), rows, padded)

    def stop(self) -> None:
        """Runs what is queued, then stops the dispatcher."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._dispatcher.join(timeout=60)


class Batcher:
    """All batch queues of a server, created on first use."""

    def __init__(self, options: BatchingParameters, metrics: Metrics):
        self.options = options
        self._metrics = metrics
        self._threads = BatchThreads(options.num_batch_threads)
        self._queues = {}
        self._lock = threading.Lock()

    def submit(self, servable, signature_name: str, inputs: dict) -> dict:
        key = (id(servable), servable.name, servable.version, signature_name)
        if getattr(servable, "batching_released", False):
            # Unloaded while this request was on its way: run it alone.
            return servable.run(signature_name, inputs)
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = BatchQueue(
                    lambda merged, s=servable, n=signature_name: s.run(n, merged),
                    self.options, self._threads, self._metrics,
                    {"model": servable.name, "version": servable.version,
                     "signature": signature_name})
                self._queues[key] = queue
        return queue.submit(inputs)

    def release(self, servable) -> None:
        """Stops the queues of an unloaded version (after they drain)."""
        servable.batching_released = True
        with self._lock:
            keys = [k for k in self._queues if k[0] == id(servable)]
            queues = [self._queues.pop(k) for k in keys]
        for q in queues:
            q.stop()

    def shutdown(self) -> None:
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for q in queues:
            q.stop()
        self._threads.shutdown()

