"""The logs pipeline between receivers and exporters: admit, decide, count, queue.

Receivers parse each request exactly once and hand the message (with its raw bytes, for cheap
substring checks) to `LogsPipeline.consume`. The sampler splices the kept records' own bytes,
annotated, into the request to forward (or, where it cannot, edits the message in place and the
result is serialised once); that is offered to every exporter queue. The client is answered as
soon as every queue holds it (a disk queue: durably); when any queue or the memory limiter says no,
nothing has been decided or counted and the client gets a retryable refusal.

Drops not yet counted by a kept record's `lipservice.count` (the sampler's open tails) leave as
summary records through the same queues: `send_summaries`, called periodically and at shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from .errors import Backpressure
from .exporters.queue import Fanout
from .sampling.counting import Tail, summaries
from .sampling.decision import BatchOutcome
from .telemetry import Telemetry

log = logging.getLogger(__name__)


class BatchSampler(Protocol):
    def process(
        self,
        request: ExportLogsServiceRequest,
        raw: bytes,
        now: float,
        wire_size: int | None = None,
        *,
        splice: bool = False,
    ) -> BatchOutcome:
        """Decide every record of `request`, editing it in place, or with `splice` returning the
        forwarded request's encoding in the outcome's `wire` when it can; return the tallies."""
        ...

    def close_tails(self, now: float, *, everything: bool = False) -> list[Tail]:
        """Close the open tails due for a summary record (all of them with `everything`)."""
        ...

    @property
    def unaccounted(self) -> int:
        """Dropped records in open tails."""
        ...


class Admission(Protocol):
    def check(self) -> None:
        """Raise Backpressure when the process may not take more data now."""
        ...


class BatchObserver(Protocol):
    def observe(self, outcome: BatchOutcome, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    rejected_records: int = 0
    message: str = ""


class LogsPipeline:
    def __init__(
        self,
        sampler: BatchSampler,
        fanout: Fanout,
        telemetry: Telemetry,
        *,
        admission: Admission | None = None,
        observers: list[BatchObserver] | None = None,
        clock: Callable[[], float] = time.time,
        summaries: bool = True,
    ) -> None:
        self._sampler = sampler
        self._fanout = fanout
        self._telemetry = telemetry
        self._admission = admission
        self._observers = observers or []
        self._clock = clock
        self._summaries = summaries
        self._unsent: list[Tail] = []  # closed tails whose summaries no queue took yet

    def add_observer(self, observer: BatchObserver) -> None:
        self._observers.append(observer)

    async def consume(
        self, request: ExportLogsServiceRequest, raw: bytes, wire_size: int | None = None
    ) -> ConsumeResult:
        """Decide, count and queue one request; return once every queue holds it (on disk, for a disk
        queue). Raises Backpressure before deciding anything when a queue or memory is full, PayloadTooLarge
        when the request could never fit a queue."""
        if self._admission is not None:
            self._admission.check()
        records = sum(
            len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs
        )
        self._fanout.check_room(records, len(raw))
        now = self._clock()
        outcome = self._sampler.process(request, raw, now, wire_size, splice=True)
        self._telemetry.observe_outcome(outcome)
        for observer in self._observers:
            observer.observe(outcome, now)
        self._telemetry.records_unaccounted.set(self.unaccounted)
        if outcome.forwarded:
            wire = outcome.wire if outcome.wire is not None else request.SerializeToString()
            await self._fanout.put(wire, outcome.forwarded)
        return ConsumeResult(outcome.rejected, outcome.rejection_message)

    @property
    def unaccounted(self) -> int:
        return self._sampler.unaccounted + sum(tail.count for tail in self._unsent)

    async def send_summaries(self, *, everything: bool = False) -> int:
        """Queue the summary records of the tails due now (every open tail with `everything`, as at
        shutdown) to every exporter; return the records they account for. Summaries skip the
        room check: refusing them would lose counts. Tails no queue took wait for the next call."""
        if not self._summaries:
            return 0
        now = self._clock()
        tails, self._unsent = self._unsent + self._sampler.close_tails(now, everything=everything), []
        accounted = 0
        if tails:
            batch = summaries(tails, now)
            try:
                await self._fanout.put(batch.request.SerializeToString(), batch.records)
                self._telemetry.summary_records.inc(batch.records)
                accounted = batch.count
            except Backpressure as exc:
                self._unsent = tails
                log.warning("summary records not queued, retrying with the next ones: %s", exc)
        self._telemetry.records_unaccounted.set(self.unaccounted)
        return accounted
