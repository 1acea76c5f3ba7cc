"""`lipservice-proxy demo`: the first five minutes. A proxy starts in-process on loopback ports, the
real OpenTelemetry SDK replays a generated web-shop workload (lipservice_proxy/data/) into it over
OTLP/gRPC, a progress bar shows the records arriving, and a summary tells what the policy kept and
dropped per severity, the top patterns with their rates and the bytes saved.

The demo has no upstream: kept records are counted, then discarded. `--serve` keeps the proxy up
afterwards so the status page and the admin API can be explored.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TextIO

import yaml

from .config import SEVERITY_NAMES, ProxyConfig
from .errors import InputError
from .sampling.rates import RateSource

WORKLOAD = files("lipservice_proxy") / "data" / "demo_workload.yaml"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
FILLERS: dict[str, Callable[[random.Random], str]] = {
    "ms": lambda rng: str(rng.randint(1, 900)),
    "id": lambda rng: str(rng.randint(1000, 99_999)),
    "ip": lambda rng: f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
    "hex": lambda rng: f"{rng.getrandbits(48):012x}",
    "user": lambda rng: rng.choice(USERS),
    "seconds": lambda rng: str(rng.choice((300, 600, 900, 1800, 3600))),
    "port": lambda rng: str(rng.randint(1024, 65535)),
    "bytes": lambda rng: str(rng.randint(200, 20_000)),
    "count": lambda rng: str(rng.randint(1, 40)),
    "amount": lambda rng: f"{rng.uniform(5, 500):.2f}",
    "octet": lambda rng: str(rng.randint(1, 254)),
}
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Message:
    service: str
    severity: str
    body: str  # with {kind} fields
    weight: float


def load_workload(text: str) -> list[Message]:
    data = yaml.safe_load(text)
    messages = [
        Message(service, entry["severity"], entry["body"], float(entry["weight"]))
        for service, entries in data["services"].items()
        for entry in entries
    ]
    for message in messages:
        unknown = set(_FIELD.findall(message.body)) - set(FILLERS)
        if unknown or message.severity not in SEVERITY_NAMES:
            raise InputError(f"demo workload: bad entry {message}")
    return messages


def generate(messages: list[Message], count: int, seed: int) -> Iterator[tuple[str, str, str]]:
    """(service, severity, body) for `count` records, deterministic for a seed."""
    rng = random.Random(seed)
    for message in rng.choices(messages, weights=[m.weight for m in messages], k=count):
        body = _FIELD.sub(lambda match: FILLERS[match.group(1)](rng), message.body)
        yield message.service, message.severity, body


def replay(endpoint: str, records: list[tuple[str, str, str]]) -> None:
    """Send the records with the OpenTelemetry SDK (batch processor, OTLP/gRPC exporter), one logger
    provider per service as real applications have, and flush."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    providers: dict[str, LoggerProvider] = {}
    for service in sorted({service for service, _, _ in records}):
        provider = LoggerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPLogExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=10)
        # the queue holds the whole replay: the SDK drops what does not fit, and the demo counts all
        provider.add_log_record_processor(
            BatchLogRecordProcessor(
                exporter, max_queue_size=max(len(records), 2048), schedule_delay_millis=50
            )
        )
        providers[service] = provider
    loggers = {service: provider.get_logger("lipservice.demo") for service, provider in providers.items()}
    for service, severity, body in records:
        number = getattr(SeverityNumber, severity)
        loggers[service].emit(LogRecord(body=body, severity_number=number, severity_text=severity))
    for provider in providers.values():
        provider.force_flush(30_000)
        provider.shutdown()


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; elsewhere only the final line is written."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self._total, self._stream, self._width = total, stream, width
        self._started = time.monotonic()
        self._live = stream.isatty()

    def _line(self, done: int) -> str:
        filled = self._width * done // max(self._total, 1)
        rate = done / max(time.monotonic() - self._started, 1e-6)
        bar = "#" * filled + "-" * (self._width - filled)
        return f"  [{bar}] {done:>9,}/{self._total:,} records  {rate:>8,.0f}/s"

    def update(self, done: int) -> None:
        if self._live:
            self._stream.write("\r" + self._line(done))
            self._stream.flush()

    def finish(self, done: int) -> None:
        self._stream.write(("\r" if self._live else "") + self._line(done) + "\n")
        self._stream.flush()


@dataclass(slots=True)
class Summary:
    records: int
    services: int
    policy: str
    severities: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (received, kept)
    bytes_received: int = 0
    bytes_kept: int = 0
    patterns: list[dict[str, Any]] = field(default_factory=list)
    first_per_window: str = ""
    seconds: float = 0.0


def _per_severity(samples: Iterable[Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for sample in samples:
        if sample.name.endswith("_total"):
            severity = sample.labels["severity"]
            totals[severity] = totals.get(severity, 0) + int(sample.value)
    return totals


def _sum(samples: Iterable[Any]) -> int:
    return int(sum(sample.value for sample in samples if sample.name.endswith("_total")))


def format_summary(summary: Summary) -> str:
    received_total = sum(r for r, _ in summary.severities.values())
    kept_total = sum(k for _, k in summary.severities.values())

    def row(name: str, received: int, kept: int) -> str:
        share = f"{100 * kept / received:.1f}%" if received else "-"
        return f"  {name:<9}{received:>10,}{kept:>10,}{received - kept:>10,}{share:>9}"

    lines = [
        f"lipservice-proxy demo: {summary.records:,} log records from {summary.services} services, sent by "
        f"the OpenTelemetry SDK over OTLP/gRPC in {summary.seconds:.1f}s; policy: {summary.policy}",
        "",
        f"  {'severity':<9}{'received':>10}{'kept':>10}{'dropped':>10}{'kept %':>9}",
    ]
    lines += [row(name, *summary.severities[name]) for name in SEVERITY_NAMES if name in summary.severities]
    lines += [row("total", received_total, kept_total), "", "  top patterns"]
    lines.append(f"  {'received':>9}{'kept':>8}{'rate':>7}  {'rule':<22}template")
    for pattern in summary.patterns:
        template = pattern["template"] if len(pattern["template"]) <= 70 else pattern["template"][:67] + "..."
        rule = pattern["rule"]  # a policy rule's or a boost's own reason is worth showing
        why = f"{rule}: {pattern['reason']}" if RateSource.parse(rule).has_own_reason else rule
        why = why if len(why) <= 21 else why[:18] + "..."
        lines.append(
            f"  {pattern['received']:>9,}{pattern['kept']:>8,}{pattern['rate']:>7.3g}  {why:<22}{template}"
        )
    saved = summary.bytes_received - summary.bytes_kept
    share = 100 * saved / summary.bytes_received if summary.bytes_received else 0.0
    received_kib, kept_kib = summary.bytes_received / 1024, summary.bytes_kept / 1024
    lines += [
        f"  (and every pattern keeps its first {summary.first_per_window} whatever its rate)",
        "",
        f"  bytes: {received_kib:,.1f} KiB received, {kept_kib:,.1f} KiB kept, "
        f"{saved / 1024:,.1f} KiB saved ({share:.1f}%)",
    ]
    return "\n".join(lines)


def demo_config(policy: Path | None) -> ProxyConfig:
    sampler: dict[str, Any] = {}
    analysis: dict[str, Any] = {"enabled": False}  # a steady policy: the demo shows what it does
    if policy is not None:
        sampler["policy_file"] = analysis["policy_file"] = str(policy)
    return ProxyConfig.model_validate(
        {
            "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"enabled": False}},
            "admin": {"endpoint": "127.0.0.1:0"},
            "exporters": [],
            "sampler": sampler,
            "analysis": analysis,
        }
    )


async def run_demo(
    *,
    records: int,
    seed: int,
    top: int,
    policy: Path | None,
    serve: bool,
    out: TextIO = sys.stdout,
    progress: TextIO = sys.stderr,
    environ: Mapping[str, str] | None = None,
) -> Summary:
    from .service import Proxy

    workload = generate(load_workload(WORKLOAD.read_text(encoding="utf-8")), records, seed)
    batch = list(workload)
    proxy = Proxy(demo_config(policy), environ={} if environ is None else environ)
    await proxy.start()
    try:
        bar = ProgressBar(len(batch), progress)
        started = time.monotonic()
        sender = asyncio.create_task(asyncio.to_thread(replay, f"127.0.0.1:{proxy.ports['grpc']}", batch))
        deadline = started + 60 + len(batch) / 1000
        while time.monotonic() < deadline:  # a redraw every 100 ms; the loop ends with the records
            received = proxy.timeline.totals().received
            bar.update(received)
            if sender.done() and (received >= len(batch) or sender.exception() is not None):
                break
            await asyncio.sleep(0.1)
        await sender  # re-raises a failed replay
        bar.finish(proxy.timeline.totals().received)
        summary = summarise(proxy, len(batch), top, time.monotonic() - started)
        out.write(format_summary(summary) + "\n")
        if serve:
            out.write(f"\n  status page: http://127.0.0.1:{proxy.ports['admin']}/  (Ctrl-C to stop)\n")
            out.flush()
            await until_signalled()
        return summary
    finally:
        await proxy.stop(drain_seconds=2.0)


async def until_signalled() -> None:
    """Wait for SIGINT or SIGTERM (handled here, so the proxy stops cleanly either way)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def summarise(proxy: Any, records: int, top: int, seconds: float) -> Summary:
    telemetry = proxy.telemetry
    policy = proxy.sampler.policy
    source = proxy.policy_view()["source"]
    received = _per_severity(telemetry.records_received.collect()[0].samples)
    kept = _per_severity(telemetry.records_kept.collect()[0].samples)
    services = {s.labels["service"] for s in telemetry.bytes_received.collect()[0].samples}
    view = proxy.patterns_view(top)
    return Summary(
        records=records,
        services=len(services),
        policy=f"{source} (version {policy.version}, {policy.generated_by})",
        severities={name: (received[name], kept.get(name, 0)) for name in received},
        bytes_received=_sum(telemetry.bytes_received.collect()[0].samples),
        bytes_kept=_sum(telemetry.bytes_kept.collect()[0].samples),
        patterns=view["patterns"],
        first_per_window=f"{policy.first_per_window.count} per {policy.first_per_window.window:g}s",
        seconds=seconds,
    )
