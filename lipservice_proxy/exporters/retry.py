"""Deadline-bounded exponential backoff with jitter, honouring server hints, stopping at shutdown.

The schedule is pure (`Backoff`); `call_with_retry` is the thin async shell around it. A server hint
(HTTP Retry-After, gRPC RetryInfo) replaces the computed delay. The loop ends when the attempt
succeeds, the error is permanent, the next wait would pass `max_elapsed`, or `stop` is set; in the
last case the last retryable error is re-raised so a persistent queue keeps the batch.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..config import RetrySettings
from ..errors import ExportError, PermanentExportError

T = TypeVar("T")


class RetriesExhausted(PermanentExportError):
    """The retry deadline passed; the batch is given up and counted as failed."""


class Backoff:
    """The next wait: exponential from `initial_interval` up to `max_interval`, with +/- jitter."""

    def __init__(self, settings: RetrySettings, rng: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._rng = rng
        self._interval = settings.initial_interval

    def next_delay(self, hint: float | None = None) -> float:
        interval = self._interval
        self._interval = min(interval * self._settings.multiplier, self._settings.max_interval)
        if hint is not None:
            return max(0.0, hint)
        spread = self._settings.randomization_factor * interval
        return max(0.0, interval - spread + 2 * spread * self._rng())


async def call_with_retry(
    attempt: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    *,
    stop: asyncio.Event,
    on_retry: Callable[[ExportError, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `attempt` until it succeeds, fails permanently, runs out of time, or `stop` is set."""
    deadline = clock() + settings.max_elapsed
    backoff = Backoff(settings)
    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt()
        except ExportError as exc:
            if not exc.retryable:
                raise
            if not settings.enabled:
                raise RetriesExhausted(f"retry disabled: {exc}") from exc
            if stop.is_set():
                raise
            delay = backoff.next_delay(exc.retry_after)
            if clock() + delay > deadline:
                raise RetriesExhausted(
                    f"gave up after {attempts} attempts in {settings.max_elapsed:g}s: {exc}"
                ) from exc
            if on_retry is not None:
                on_retry(exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                continue
            raise
