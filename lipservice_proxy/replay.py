"""`replay`: what a policy would keep and drop, using the proxy's own engine and sampler.

Input, one record per line, detected line by line: plain text (the body; severity inferred from
it), JSON lines (`body`, `severity` or `level`, `service`, `timestamp`, `trace_id`), or the debug
exporter's OTLP/JSON output (a line with `resourceLogs`). Records go through `Sampler.process` in
batches grouped by second of log time, exactly as requests go through the running proxy. The
kept records' `lipservice.sample_rate` weights are summed back into estimated counts, and their
`lipservice.count` values, with the summary records of the tails at the end, into exact ones.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs, SeverityNumber

from .otlp.json_codec import json_to_message
from .patterns import PatternEngine
from .sampling.counting import Tail
from .sampling.decision import BatchOutcome, PatternTally
from .sampling.policy import Policy
from .sampling.sampler import UNKNOWN_SERVICE, Sampler, service_name
from .sampling.severity import SEVERITY_NAMES
from .sampling.window import window_start

if TYPE_CHECKING:
    from .pipeline import BatchObserver

MAX_BATCH = 512
DEFAULT_RATE = 1000.0


@dataclass(slots=True)
class InputRecord:
    record: LogRecord
    service: str
    timestamp: float | None


def _timestamp(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return number / 1e9 if number > 1e14 else number / 1e3 if number > 1e11 else number
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def parse_line(line: str) -> list[InputRecord]:
    """One input line -> records (an OTLP/JSON line may hold many, a blank line none)."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return []
    if text.lstrip().startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            if "resourceLogs" in data or "resource_logs" in data:
                return _from_otlp_json(text)
            return [_from_json_line(data)]
    return [InputRecord(LogRecord(body=AnyValue(string_value=text)), UNKNOWN_SERVICE, None)]


def _from_json_line(data: dict[str, object]) -> InputRecord:
    body = data.get("body", data.get("message", data.get("msg", "")))
    text = body if isinstance(body, str) else orjson.dumps(body).decode()
    record = LogRecord(body=AnyValue(string_value=text))
    severity = data.get("severity", data.get("level"))
    if isinstance(severity, int) and not isinstance(severity, bool) and 0 < severity <= 24:
        record.severity_number = SeverityNumber.ValueType(severity)
    elif isinstance(severity, str):
        record.severity_text = severity
    trace_id = data.get("trace_id", data.get("traceId"))
    if isinstance(trace_id, str) and len(trace_id) == 32:
        with contextlib.suppress(ValueError):  # not hex: the record simply has no trace id
            record.trace_id = bytes.fromhex(trace_id)
    service = data.get("service", data.get("service.name"))
    return InputRecord(
        record,
        service if isinstance(service, str) and service else UNKNOWN_SERVICE,
        _timestamp(data.get("timestamp", data.get("time"))),
    )


def _from_otlp_json(text: str) -> list[InputRecord]:
    request = json_to_message(text.encode(), ExportLogsServiceRequest)
    records = []
    for resource_logs in request.resource_logs:
        service = service_name(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                # a debug-exporter line was sampled already: its weight multiplies into the new one
                stamp = record.time_unix_nano or record.observed_time_unix_nano
                records.append(InputRecord(record, service, stamp / 1e9 if stamp else None))
    return records


def read_records(lines: Iterable[str]) -> list[InputRecord]:
    return [record for line in lines for record in parse_line(line)]


def timeline(
    records: list[InputRecord], total: int | None, rate: float | None
) -> Iterator[tuple[float, InputRecord]]:
    """(log time, record): cycled to `total` records at `rate` per second, or the input's own times."""
    if not records:
        return
    count = total if total is not None else len(records)
    use_own_times = rate is None and all(r.timestamp is not None for r in records) and total is None
    step = 1.0 / (rate or DEFAULT_RATE)
    start = 1_700_000_000.0  # a fixed epoch second, so windows are the same on every run
    for index, record in enumerate(itertools.islice(itertools.cycle(records), count)):
        own_time = record.timestamp if use_own_times else None
        yield (start + index * step if own_time is None else own_time), record


class CountsJson(TypedDict):
    """What every line of the report counts: records seen, kept, dropped, and the estimate from kept."""

    seen: int
    kept: int
    dropped: int
    estimated: float
    estimate_error: float
    counted: int


class TallyJson(CountsJson):
    windows: int
    windows_without_kept: int


class PatternJson(TallyJson):
    id: str
    template: str


class TotalJson(CountsJson):
    savings_records: float
    bytes_seen: int
    bytes_kept: int
    savings_bytes: float


class ReportJson(TypedDict):
    """`ReplayReport.as_dict()`: what `replay --json` prints."""

    total: TotalJson
    severities: dict[str, TallyJson]
    patterns: list[PatternJson]
    pattern_count: int


@dataclass(slots=True)
class Tally:
    template: str = ""
    seen: int = 0
    kept: int = 0
    estimated: float = 0.0
    counted: int = 0  # lipservice.count summed over kept and summary records
    windows_seen: set[float] = field(default_factory=set)
    windows_kept: set[float] = field(default_factory=set)

    def add(self, tally: PatternTally, window: float) -> None:
        self.seen += tally.received
        self.kept += tally.kept
        self.estimated += tally.weight
        self.counted += tally.counted
        self.windows_seen.add(window)
        if tally.kept:
            self.windows_kept.add(window)

    def as_dict(self) -> TallyJson:
        error = (self.estimated - self.seen) / self.seen if self.seen else 0.0
        return {
            "seen": self.seen,
            "kept": self.kept,
            "dropped": self.seen - self.kept,
            "estimated": round(self.estimated, 2),
            "estimate_error": round(error, 6),
            "counted": self.counted,
            "windows": len(self.windows_seen),
            "windows_without_kept": len(self.windows_seen - self.windows_kept),
        }


@dataclass
class ReplayReport:
    total: Tally = field(default_factory=Tally)
    severities: dict[str, Tally] = field(default_factory=dict)
    patterns: dict[str, Tally] = field(default_factory=dict)
    bytes_seen: int = 0
    bytes_kept: int = 0

    def add(self, outcome: BatchOutcome, window: float) -> None:
        for seen, kept in outcome.bytes.values():
            self.bytes_seen += seen
            self.bytes_kept += kept
        for (_service, pattern_id, severity), tally in outcome.patterns.items():
            self.total.add(tally, window)
            self.severities.setdefault(severity, Tally()).add(tally, window)
            self.patterns.setdefault(pattern_id, Tally(template=tally.template)).add(tally, window)

    def add_summary(self, tail: Tail) -> None:
        """A summary record's count (the tail it closes) goes to the exact counts only."""
        for tally in (
            self.total,
            self.severities.setdefault(SEVERITY_NAMES[tail.level], Tally()),
            self.patterns.setdefault(tail.pattern_id, Tally(template=tail.template)),
        ):
            tally.counted += tail.count

    def as_dict(self, top: int) -> ReportJson:
        tally = self.total.as_dict()
        seen, kept = self.total.seen, self.total.kept
        total: TotalJson = {
            "seen": tally["seen"],
            "kept": tally["kept"],
            "dropped": tally["dropped"],
            "estimated": tally["estimated"],
            "estimate_error": tally["estimate_error"],
            "counted": tally["counted"],
            "savings_records": round(1 - kept / seen, 6) if seen else 0.0,
            "bytes_seen": self.bytes_seen,
            "bytes_kept": self.bytes_kept,
            "savings_bytes": round(1 - self.bytes_kept / self.bytes_seen, 6) if self.bytes_seen else 0.0,
        }
        ranked = sorted(self.patterns.items(), key=lambda item: (-item[1].seen, item[0]))
        return {
            "total": total,
            "severities": {
                name: self.severities[name].as_dict() for name in SEVERITY_NAMES if name in self.severities
            },
            "patterns": [
                {"id": pattern_id, "template": tally.template, **tally.as_dict()}
                for pattern_id, tally in ranked[:top]
            ],
            "pattern_count": len(self.patterns),
        }


def replay(
    records: list[InputRecord],
    policy: Policy,
    *,
    total: int | None = None,
    rate: float | None = None,
    always_keep_min_severity: str = "ERROR",
    engine: PatternEngine | None = None,
    observers: Sequence[BatchObserver] = (),
) -> ReplayReport:
    """Run the records through a fresh sampler, batched per second of log time, and tally the outcomes.

    Each batch's outcome also goes to `observers`, as the pipeline hands it to the analysis stats."""
    sampler = Sampler(engine or PatternEngine(), policy, always_keep_min_severity=always_keep_min_severity)
    window = policy.first_per_window.window
    report = ReplayReport()
    batch: list[InputRecord] = []
    batch_second = 0.0

    def flush() -> None:
        request = ExportLogsServiceRequest()
        scopes: dict[str, ScopeLogs] = {}
        for item in batch:
            scope = scopes.get(item.service)
            if scope is None:
                resource_logs = request.resource_logs.add()
                resource_logs.resource.attributes.add(key="service.name").value.string_value = item.service
                scope = scopes[item.service] = resource_logs.scope_logs.add()
            scope.log_records.append(item.record)
        outcome = sampler.process(request, b"", batch_second)
        report.add(outcome, window_start(batch_second, window))
        for observer in observers:
            observer.observe(outcome, batch_second)
        batch.clear()

    for timestamp, record in timeline(records, total, rate):
        second = math.floor(timestamp)
        if batch and (len(batch) >= MAX_BATCH or second != batch_second):
            flush()
        if not batch:
            batch_second = second
        batch.append(record)
    if batch:
        flush()
    for tail in sampler.close_tails(batch_second, everything=True):  # as at the proxy's shutdown
        report.add_summary(tail)
    return report


def format_table(report: ReportJson, source: str) -> str:
    """A human-readable summary of `ReplayReport.as_dict()`."""
    total = report["total"]
    lines = [f"replay of {total['seen']} records through {source}", ""]
    header = (
        f"{'':10} {'seen':>10} {'kept':>9} {'dropped':>10} {'estimated':>12} {'error':>8} {'counted':>10}"
    )

    def row(name: str, tally: TallyJson | TotalJson | PatternJson) -> str:
        return (
            f"{name:10} {tally['seen']:>10} {tally['kept']:>9} {tally['dropped']:>10} "
            f"{tally['estimated']:>12.1f} {tally['estimate_error'] * 100:>7.2f}% {tally['counted']:>10}"
        )

    lines.append(header)
    for name, tally in report["severities"].items():
        lines.append(row(name, tally))
    lines.append(row("total", total))
    lines.append("")
    lines.append(
        f"savings: {total['savings_records'] * 100:.1f}% of records, "
        f"{total['savings_bytes'] * 100:.1f}% of bytes ({report['pattern_count']} patterns)"
    )
    lines.append("")
    lines.append(
        f"{'pattern':16} {'seen':>8} {'kept':>7} {'estimated':>10} {'error':>8} {'counted':>8}  template"
    )
    for pattern in report["patterns"]:
        template = pattern["template"]
        template = template if len(template) <= 80 else template[:77] + "..."
        lines.append(
            f"{pattern['id']:16} {pattern['seen']:>8} {pattern['kept']:>7} {pattern['estimated']:>10.1f} "
            f"{pattern['estimate_error'] * 100:>7.2f}% {pattern['counted']:>8}  {template}"
        )
    return "\n".join(lines)
