"""Exponential backoff with jitter: the wait schedule every retry or reconnect loop uses.

Pure (no clock, no sleeping): the exporters' retry loop (`exporters/retry.py`), the fleet client's
reconnects and the worker supervisor's restarts each ask it for the next wait and do their own waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .config import RetrySettings


class Backoff:
    """The next wait: exponential from `initial_interval` up to `max_interval`, with +/- jitter, and never
    shorter than the server's hint."""

    def __init__(self, settings: RetrySettings, rng: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self._rng = rng
        self._interval = settings.initial_interval

    def next_delay(self, hint: float | None = None) -> float:
        interval = self._interval
        self._interval = min(interval * self._settings.multiplier, self._settings.max_interval)
        spread = self._settings.randomization_factor * interval
        computed = max(0.0, interval - spread + 2 * spread * self._rng())
        return computed if hint is None else max(computed, hint)
