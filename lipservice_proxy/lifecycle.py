"""One lifecycle for the proxy, the fleet analyzer and the worker supervisor.

A service adds its steps in start-up order: each step may start something and may shut it down.
`start` runs the starts in order; `shutdown` runs the shutdowns of the steps that started in reverse
order, all under one deadline, so what was opened first (exporters) is closed last and what was
opened last (receivers) is closed first. A start that fails shuts down the steps already started
(a failing step cleans up after itself) before the error goes on, so no port or file stays open.
Background tasks belong to one `TaskGroup`, which a service adds as a step where its tasks must end.

Components share one pair of verbs: `start()` and `shutdown(...)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ROLLBACK_SECONDS = 2.0  # the deadline for shutting down what started when a later step fails


@dataclass(frozen=True, slots=True)
class Deadline:
    """A shutdown's time budget: `seconds` in all, ending at `at` (time.monotonic())."""

    seconds: float
    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(seconds, time.monotonic() + seconds)

    def share(self, fraction: float, cap: float) -> float:
        """A part of the whole budget for one step (a receiver's grace, the last fleet report)."""
        return min(cap, self.seconds * fraction)


class TaskGroup:
    """The background tasks of one service: `stopping` is set, then every task is cancelled and awaited."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def shutdown(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


Start = Callable[[], Awaitable[object]]
Shutdown = Callable[[Deadline], Awaitable[int | None]]


@dataclass(slots=True)
class _Step:
    name: str
    start: Start | None
    shutdown: Shutdown | None


class Lifecycle:
    """Ordered start, reverse shutdown under one deadline, one task group. `running` is true between
    a complete start and the beginning of the shutdown (what /readyz reports)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner  # for the log lines: proxy, analyzer, supervisor
        self.tasks = TaskGroup()
        self.running = False
        self._steps: list[_Step] = []
        self._started: list[_Step] = []

    def add(self, name: str, *, start: Start | None = None, shutdown: Shutdown | None = None) -> None:
        """The next step: `start` runs after every earlier step's, `shutdown` before theirs. A shutdown
        returns how many acknowledged records it dropped, or None when it holds none."""
        self._steps.append(_Step(name, start, shutdown))

    async def start(self) -> None:
        for step in self._steps:
            try:
                if step.start is not None:
                    await step.start()
            except BaseException:
                log.debug("%s: starting %s failed; shutting down what started", self.owner, step.name)
                await self.shutdown(Deadline.after(ROLLBACK_SECONDS))
                raise
            self._started.append(step)
        self.running = True

    async def shutdown(self, deadline: Deadline) -> int:
        """Shut the started steps down, last first; returns the acknowledged records they dropped. A step
        whose shutdown fails is logged and the others still run: one broken part must not keep the
        queues from draining."""
        self.running = False
        dropped = 0
        while self._started:
            step = self._started.pop()
            if step.shutdown is None:
                continue
            try:
                dropped += await step.shutdown(deadline) or 0
            except Exception:
                log.exception("%s: shutting down %s failed", self.owner, step.name)
        return dropped
