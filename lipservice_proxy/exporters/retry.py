"""Deadline-bounded exponential backoff with jitter, honouring server hints, stopping at shutdown.

The schedule is pure (`backoff.Backoff`); `call_with_retry` is the thin async shell around it. A
server hint (HTTP Retry-After, gRPC RetryInfo) bounds the wait from below: the wait is the larger of the
computed backoff and the hint, so `Retry-After: 0` cannot turn the loop into a tight one. The loop ends when
the attempt succeeds, the error is permanent, the next wait would pass `max_elapsed`, or `stop` is set;
in the last case the last retryable error is re-raised so a persistent queue keeps the batch.

While waiting, `reconnected` (the exporter's) may end the wait early: a connection that was down is
back, so the retry goes at once and the backoff starts again from `initial_interval`.

A hint that reaches past `max_elapsed` (PostHog answers over-quota with 429 and `Retry-After: 900`)
ends the loop at once with `HintBeyondBudget`, which says so, unless the caller keeps its data on disk
(`outlast_hints`): then the loop waits as asked and starts a fresh `max_elapsed` after the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..backoff import Backoff
from ..config import RetrySettings
from ..errors import ExportError, PermanentExportError

T = TypeVar("T")


class RetriesExhausted(PermanentExportError):
    """The retry deadline passed; the batch is given up and counted as failed."""


class HintBeyondBudget(RetriesExhausted):
    """The server asked for a wait longer than what is left of `max_elapsed`."""


async def call_with_retry(
    attempt: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    *,
    stop: asyncio.Event,
    on_retry: Callable[[ExportError, float], None] | None = None,
    outlast_hints: bool = False,
    reconnected: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `attempt` until it succeeds, fails permanently, runs out of time, or `stop` is set.

    `outlast_hints`: wait for a server hint even past `max_elapsed` (the caller's data is safe on disk).
    `reconnected`: returns when a lost connection is back, which ends a wait early."""
    started = clock()
    deadline = started + settings.max_elapsed
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
            now = clock()
            delay = backoff.next_delay(exc.retry_after)
            if now + delay > deadline:
                hinted = exc.retry_after is not None and exc.retry_after >= delay
                if not hinted:
                    raise RetriesExhausted(
                        f"gave up after {attempts} attempts in {now - started:.1f}s "
                        f"(retry.max_elapsed {settings.max_elapsed:g}s): {exc}"
                    ) from exc
                if not outlast_hints:
                    raise HintBeyondBudget(
                        f"upstream asked to wait {delay:g}s before retrying, more than the "
                        f"{max(0.0, deadline - now):.1f}s left of retry.max_elapsed "
                        f"({settings.max_elapsed:g}s), after {attempts} attempts: {exc}"
                    ) from exc
                deadline = now + delay + settings.max_elapsed  # the server's wait does not use up the budget
            if on_retry is not None:
                on_retry(exc, delay)
            woken = await _pause(delay, stop, None if exc.retry_after is not None else reconnected)
            if stop.is_set():
                raise
            if woken:
                backoff = Backoff(settings)


async def _pause(
    delay: float, stop: asyncio.Event, reconnected: Callable[[], Awaitable[None]] | None
) -> bool:
    """Wait `delay` seconds or until `stop` is set; True when `reconnected` returned first. A `reconnected`
    that fails is no signal: the wait goes on."""
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    stopped = asyncio.ensure_future(stop.wait())
    waiters = {stopped} if reconnected is None else {stopped, asyncio.ensure_future(reconnected())}
    try:
        while (left := end - loop.time()) > 0:
            done, _ = await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not done or stopped in done:
                return False
            for waiter in done:
                if not waiter.cancelled() and waiter.exception() is None:
                    return True
                waiters.discard(waiter)
        return False
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
