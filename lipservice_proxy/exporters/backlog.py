"""Where accepted payloads wait for an exporter: in memory, or on disk (`persistent.DiskBacklog`).

A backlog admits (`check_room`, `append`), hands out batches in order (`take`) and forgets a batch
when its send is over (`release`). A batch taken and never released (shutdown interrupted its send)
is still the backlog's: `close` reports it as left over, which in memory means lost and on disk
means kept for the next start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from ..errors import Backpressure, PayloadTooLarge


@dataclass(slots=True, eq=False)
class Batch:
    """Payloads sent as one request; protobuf concatenation is a merge, so joining them is the request."""

    payloads: list[bytes]
    records: int
    nbytes: int

    def join(self) -> bytes:
        return self.payloads[0] if len(self.payloads) == 1 else b"".join(self.payloads)


class Backlog(Protocol):
    durable: bool  # whether what is left at close survives a restart

    @property
    def records(self) -> int:
        """Records accepted and not yet released (waiting or in a batch being sent)."""
        ...

    @property
    def nbytes(self) -> int: ...

    @property
    def waiting_records(self) -> int:
        """Records not yet taken into a batch."""
        ...

    @property
    def waiting_bytes(self) -> int: ...

    def check_room(self, records: int, nbytes: int) -> None:
        """Raise Backpressure unless a payload of at most `records` records and about `nbytes` bytes fits
        now, PayloadTooLarge when it could never fit."""
        ...

    def append(self, payload: bytes, records: int) -> Awaitable[None] | None:
        """Accept a payload; the awaitable, when there is one, completes once the payload is durable."""
        ...

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        """The oldest waiting payloads, up to the limits (at least one payload), or None."""
        ...

    def release(self, batch: Batch) -> None:
        """The batch's send is over (sent, rejected or given up): forget it."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> int:
        """Stop; return how many records were left (waiting or taken and not released)."""
        ...


class MemoryBacklog:
    """A bounded FIFO of payloads. Admission keeps within `max_records` exactly (a request is admitted
    with all its records, before sampling drops any) and within `max_bytes` as far as the request's
    size tells (the sampler's annotations add a little). A request larger than the whole budget could
    never fit: it is refused for good (PayloadTooLarge), not asked to retry forever."""

    durable = False

    def __init__(self, name: str, max_records: int, max_bytes: int) -> None:
        self._name = name
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._waiting: deque[tuple[bytes, int]] = deque()
        self.waiting_records = self.waiting_bytes = 0
        self.records = self.nbytes = 0

    def check_room(self, records: int, nbytes: int) -> None:
        if records > self._max_records or nbytes > self._max_bytes:
            raise PayloadTooLarge(
                f"a request of {records} records and {nbytes} bytes can never fit the queue of exporter "
                f"{self._name} (queue.max_records {self._max_records}, queue.max_bytes {self._max_bytes}); "
                "send smaller requests"
            )
        if self.records + records > self._max_records or self.nbytes + nbytes > self._max_bytes:
            raise Backpressure(
                f"exporter {self._name}: queue full ({self.records} records, {self.nbytes} bytes queued)"
            )

    def append(self, payload: bytes, records: int) -> None:
        self._waiting.append((payload, records))
        self.waiting_records += records
        self.waiting_bytes += len(payload)
        self.records += records
        self.nbytes += len(payload)

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        payloads: list[bytes] = []
        records = nbytes = 0
        waiting = self._waiting
        while waiting:
            payload, count = waiting[0]
            if payloads and (records + count > max_records or nbytes + len(payload) > max_bytes):
                break
            waiting.popleft()
            payloads.append(payload)
            records += count
            nbytes += len(payload)
        self.waiting_records -= records
        self.waiting_bytes -= nbytes
        return Batch(payloads, records, nbytes) if payloads else None

    def release(self, batch: Batch) -> None:
        self.records -= batch.records
        self.nbytes -= batch.nbytes

    async def open(self) -> None:
        """Nothing to load: a memory backlog starts empty."""

    async def close(self) -> int:
        left = self.records
        self._waiting.clear()
        self.waiting_records = self.waiting_bytes = self.records = self.nbytes = 0
        return left
