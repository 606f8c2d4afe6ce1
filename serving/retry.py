"""The one retry loop: bounded attempts, exponential backoff, a deadline.

Every caller that retries a refused request goes through `call_with_retries`:
the gRPC and REST clients (UNAVAILABLE, within the call's deadline) and the
batch generation job (its transient codes, `--max-retries` times). Nothing
underneath retries again -- the gRPC channel has no retry policy -- so one
refusal costs at most ``policy.max_retries + 1`` attempts in all.

The rule: attempt, and on a retryable `ServingError` wait ``initial_backoff``
seconds (doubling each time, at most ``max_backoff``) and attempt again, until
an attempt succeeds, the error is not retryable, ``max_retries`` retries have
been made, the next wait would pass the deadline, or ``stop`` is set. Then the
last error is raised unchanged.

TensorFlow-free (the REST client uses it).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Optional

import grpc

from serving.errors import ServingError


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Which codes are retried, how often, and how long to wait in between."""

    max_retries: int = 4
    retryable: frozenset = frozenset({grpc.StatusCode.UNAVAILABLE})
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self):
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0; got {self.max_retries}")
        if not 0 <= self.initial_backoff <= self.max_backoff:
            raise ValueError(f"backoff must satisfy 0 <= initial ({self.initial_backoff})"
                             f" <= max ({self.max_backoff})")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def delays(self):
        """The waits before retry 1, 2, ..., max_retries."""
        delay = self.initial_backoff
        for _ in range(self.max_retries):
            yield delay
            delay = min(delay * 2, self.max_backoff)


NO_RETRIES = RetryPolicy(max_retries=0)


def call_with_retries(fn: Callable[[Optional[float]], object], policy: RetryPolicy, *,
                      deadline: Optional[float] = None,
                      stop: Optional[threading.Event] = None,
                      on_retry: Optional[Callable[[ServingError, int, float], None]] = None):
    """Returns ``fn(timeout)``, retrying it as `policy` says (module docstring).

    ``deadline`` is a `time.monotonic()` instant or None; ``fn`` gets the seconds
    left before it (None without a deadline) as the timeout of its attempt.
    ``on_retry(error, next_attempt, delay)`` is called before each wait.
    """
    delays = policy.delays()
    attempt = 1
    while True:
        timeout = None if deadline is None else deadline - time.monotonic()
        try:
            return fn(timeout)
        except ServingError as error:
            if error.code not in policy.retryable:
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(error, attempt, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                time.sleep(delay)
