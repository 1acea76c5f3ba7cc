"""What the analyzer publishes to its samplers: the policy in force and the active anomaly boosts.

The policy is serialised once per change; every watcher's snapshot is built when it is sent, so a
boost carries the seconds it has left at that moment. A change bumps `revision` and wakes every
watcher, which then sends the latest state (changes that come while a watcher is sending are
coalesced into one snapshot). `close` ends every watch, so the server stops without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from ..sampling.boosts import BoostTable
from ..sampling.policy import Policy
from . import policy_pb2 as pb
from .wire import snapshot_message

log = logging.getLogger(__name__)


class PublishedBoosts(BoostTable):
    """The analyzer's boost table: every boost the analysis loop adds is published at once."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def boost(self, pattern_id: str, rate: float, until: float, reason: str) -> None:
        super().boost(pattern_id, rate, until, reason)
        self._on_change()


class PolicyFeed:
    def __init__(self, policy: Policy, *, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        self.boosts = PublishedBoosts(self._changed)
        self.revision = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._policy_json = b""
        self.version = 0
        self.publish(policy)

    def publish(self, policy: Policy) -> None:
        """Make `policy` the one every watcher gets (a PolicyStore listener)."""
        data = policy.model_dump_json().encode()
        if len(data) > self._max_bytes:
            log.error(
                "policy version %d is %d bytes, over the fleet message limit of %d (fleet.max_message_mib);"
                " samplers keep version %d",
                policy.version,
                len(data),
                self._max_bytes,
                self.version,
            )
            return
        self._policy_json, self.version = data, policy.version
        self._changed()

    def _changed(self) -> None:
        self.revision += 1
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def snapshot(self) -> pb.PolicySnapshot:
        now = self._clock()
        return snapshot_message(
            self._policy_json, self.version, self.boosts.active(now), now=now, revision=self.revision
        )

    async def updates(self) -> AsyncIterator[pb.PolicySnapshot]:
        """The current snapshot, then one after each change, until `close`."""
        while not self._closed:
            wake = self._wake
            yield self.snapshot()
            await wake.wait()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
