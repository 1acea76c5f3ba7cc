"""Cold start with the analysis loop on: what share of records is kept once the loop has settled.

    .venv/bin/python -m bench.coldstart [--rate 50 --seconds 150] [--interval 10] [--systems A B C D]

Four Loghub systems the proxy has never seen (one service each, interleaved) are replayed at a
fixed rate through the real parts of a standalone proxy: the pattern engine, the sampler with the
shipped default policy, the stats, and the analysis loop (heuristic, guardrails, anomaly boosts
within `anomaly_boost.max_share`, the policy written and reloaded through the policy store). The
clock is virtual: each second of the stream is one request, and a pass runs every `interval`
seconds of it, so 150 s of stream take a few seconds of wall clock. Prints the keep ratio over
the whole run and over its last third, the share kept by boosts, and ERROR+ kept / received.
tests/test_analysis_coldstart.py runs the same replay, shortened, and asserts the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.analysis.loop import AnalysisLoop
from lipservice_proxy.analysis.stats import PatternStats
from lipservice_proxy.config import AnalysisConfig
from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.sampling.decision import BatchOutcome
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.store import PolicyStore
from lipservice_proxy.telemetry import Telemetry

from .workloads import SEVERITY_TEXTS, Line, loghub_lines

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = REPOSITORY / "policies" / "default.yaml"
DEFAULT_SYSTEMS = ("Apache", "Hadoop", "HealthApp", "OpenSSH")
ERROR_SEVERITY = 17


@dataclass(frozen=True)
class Second:
    received: int
    kept: int
    errors: int
    errors_kept: int
    boosted: int  # kept because of a boost


@dataclass(frozen=True)
class ColdStart:
    rate: int
    seconds: int
    interval: float
    passes: int
    timeline: tuple[Second, ...]

    def keep_ratio(self, start: int = 0) -> float:
        window = self.timeline[start:]
        return sum(s.kept for s in window) / max(1, sum(s.received for s in window))

    @property
    def last_third(self) -> float:
        return self.keep_ratio(self.seconds - self.seconds // 3)

    @property
    def boost_share(self) -> float:
        return sum(s.boosted for s in self.timeline) / max(1, sum(s.received for s in self.timeline))

    @property
    def errors(self) -> tuple[int, int]:
        return sum(s.errors_kept for s in self.timeline), sum(s.errors for s in self.timeline)


def request_of(lines: Sequence[tuple[str, Line]]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    by_service: dict[str, list[Line]] = {}
    for service, line in lines:
        by_service.setdefault(service, []).append(line)
    for service, records in by_service.items():
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = service
        log_records = resource_logs.scope_logs.add().log_records
        for line in records:
            record = log_records.add(
                severity_number=line.severity,  # type: ignore[arg-type]
                severity_text=SEVERITY_TEXTS[line.severity],
            )
            record.body.string_value = line.body
    return request


async def replay_cold_start(
    workdir: Path,
    *,
    rate: int,
    seconds: int,
    interval: float = 10.0,
    systems: Sequence[str] = DEFAULT_SYSTEMS,
    start: float = 1_700_000_000.0,
) -> ColdStart:
    corpus = loghub_lines()
    streams = [itertools.cycle([(system.lower(), line) for line in corpus[system]]) for system in systems]
    stream = (next(s) for s in itertools.cycle(streams))
    telemetry = Telemetry()
    generated = workdir / "generated.yaml"
    store = PolicyStore([DEFAULT_POLICY, generated], Policy(), telemetry)
    sampler = Sampler(PatternEngine(), store.load_initial())
    store.subscribe(sampler.set_policy)
    stats = PatternStats()
    now = start
    loop = AnalysisLoop(
        AnalysisConfig(interval=interval, policy_file=generated),
        stats=stats,
        sampler=sampler,
        store=store,
        telemetry=telemetry,
        policy_path=generated,
        clock=lambda: now,
    )
    timeline: list[Second] = []
    passes = 0
    next_pass = start + interval
    for second in range(seconds):
        now = start + second
        if now >= next_pass:
            await loop.run_once(now)
            passes += 1
            next_pass += interval
        outcome = sampler.process(request_of([next(stream) for _ in range(rate)]), b"", now)
        stats.observe(outcome, now)
        errors = [t for (_, _, severity), t in outcome.patterns.items() if severity in ("ERROR", "FATAL")]
        timeline.append(
            Second(
                outcome.received,
                outcome.kept,
                sum(t.received for t in errors),
                sum(t.kept for t in errors),
                sum(outcome_boosted(outcome, sampler, now)),
            )
        )
    await loop.shutdown()
    return ColdStart(rate, seconds, interval, passes, tuple(timeline))


def outcome_boosted(outcome: BatchOutcome, sampler: Sampler, now: float) -> list[int]:
    """Records of this second kept because of a boost: sampled (below ERROR) records of boosted patterns,
    minus what the pattern's own rate would have kept (an estimate: the rate times the records)."""
    counted = []
    for (service, pattern_id, severity), tally in outcome.patterns.items():
        if severity in ("ERROR", "FATAL"):
            continue
        boost = sampler.boosts.rate(pattern_id, now)
        if boost is None:
            continue
        rates, _ = sampler.resolve(service, pattern_id, tally.template)
        level = ("TRACE", "DEBUG", "INFO", "WARN").index(severity)
        counted.append(max(0, round(tally.kept - rates[level] * tally.received)))
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--seconds", type=int, nargs="+", default=[150, 90])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--systems", nargs=4, default=list(DEFAULT_SYSTEMS))
    args = parser.parse_args()
    for rate, seconds in zip(args.rate, args.seconds, strict=True):
        with tempfile.TemporaryDirectory() as workdir:
            result = asyncio.run(
                replay_cold_start(
                    Path(workdir), rate=rate, seconds=seconds, interval=args.interval, systems=args.systems
                )
            )
        kept, errors = result.errors
        print(
            f"{rate} records/s for {seconds} s, a pass every {args.interval:g} s ({result.passes} passes), "
            f"{' '.join(args.systems)}: kept {result.keep_ratio():.1%} overall, "
            f"{result.last_third:.1%} over the last third; boosts kept {result.boost_share:.1%} of records; "
            f"ERROR+ kept {kept}/{errors}"
        )


if __name__ == "__main__":
    main()
