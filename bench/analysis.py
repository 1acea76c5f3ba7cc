"""Benchmark of the analysis loop: its cost on the hot path, one pass, and `analyze` end to end.

    .venv/bin/python bench/analysis.py [--patterns 2000 10000]

Prints: the stats observer's cost per request (the only part on the hot path), one `run_once`
pass (roll, anomalies, clustering, heuristic, guardrails, atomic write) for N patterns with the
longest the event loop went without running a ready callback meanwhile (what an Export call
arriving during the pass can wait), and the
offline analyze over the shared loghub files cycled to 100,000 records with the savings its policy
gets when replayed. The proxy's garbage-collector settings apply (`settle_heap`), as in the proxy:
a full collection holds the GIL, and with the default thresholds one lands inside most passes.
Figures are noisy on a shared machine; run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from lipservice_proxy.analysis.loop import AnalysisLoop
from lipservice_proxy.analysis.offline import analyze_records
from lipservice_proxy.analysis.stats import PatternStats
from lipservice_proxy.config import AnalysisConfig
from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.replay import read_records, replay
from lipservice_proxy.sampling.decision import BatchOutcome, PatternTally
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.service import settle_heap
from lipservice_proxy.telemetry import Telemetry

LOGHUB = Path(__file__).resolve().parents[1].parent / "shared" / "loghub"
SEVERITIES = ("INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR")


VOCABULARY = [
    "".join(random.Random(i).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3 + i % 6))
    for i in range(600)
]


def synthetic_template(number: int) -> str:
    """Distinct templates; about a third are near-duplicates of a neighbour (one word differs)."""
    rng = random.Random(number - number % 3 if number % 3 == 1 else number)
    words = [rng.choice(VOCABULARY) for _ in range(rng.randrange(5, 11))]
    if number % 3 == 1:
        words[-1] = VOCABULARY[number % len(VOCABULARY)]
    return " ".join(words) + " from <IP> took <DURATION>"


def synthetic_outcome(patterns: int, offset: int, per_batch: int = 40) -> BatchOutcome:
    outcome = BatchOutcome()
    for index in range(per_batch):
        number = (offset * per_batch + index) % patterns
        severity = SEVERITIES[number % len(SEVERITIES)]
        outcome.patterns[(f"svc-{number % 5}", f"{number:016x}", severity)] = PatternTally(
            template=synthetic_template(number),
            received=10 + number % 50,
            kept=1,
            bytes=2000,
            bytes_kept=200,
        )
    return outcome


def bench_observe(patterns: int) -> None:
    stats = PatternStats()
    outcomes = [synthetic_outcome(patterns, i) for i in range(2000)]
    started = time.perf_counter()
    for index, outcome in enumerate(outcomes):
        stats.observe(outcome, float(index))
    elapsed = time.perf_counter() - started
    print(
        f"observe: {elapsed / len(outcomes) * 1e6:.1f} us per request of 40 pattern tallies",
    )


class StallProbe:
    """Ticks every millisecond on the event loop and keeps the longest lateness of a tick."""

    TICK = 0.001

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.longest = max(self.longest, time.perf_counter() - started - self.TICK)

    def __enter__(self) -> StallProbe:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def bench_pass(patterns: int) -> None:
    stats = PatternStats()
    sampler = Sampler(PatternEngine(), Policy())
    config = AnalysisConfig()
    timings = []
    stalls = []
    with tempfile.TemporaryDirectory() as directory:
        loop = AnalysisLoop(
            config,
            stats=stats,
            sampler=sampler,
            store=None,
            telemetry=Telemetry(),
            policy_path=Path(directory) / "policy.yaml",
        )
        for interval in range(3):
            for index in range(patterns // 40 + 1):
                stats.observe(synthetic_outcome(patterns, index), interval * 300.0 + index * 0.01)
            started = time.perf_counter()
            with StallProbe() as probe:
                await asyncio.sleep(0)  # let the probe start ticking
                result = await loop.run_once((interval + 1) * 300.0)
            timings.append(time.perf_counter() - started)
            stalls.append(probe.longest)
    print(
        f"run_once with {patterns} patterns: median {statistics.median(timings) * 1000:.0f} ms, "
        f"longest event-loop stall {statistics.median(stalls) * 1000:.1f} ms (median of passes) "
        f"({result.families} families, {result.noise} singletons, outcome {result.outcome})"
    )


async def bench_analyze(system: str) -> None:
    source = LOGHUB / system / f"{system}_2k.log"
    if not source.is_file():
        print(f"analyze {system}: {source} missing, skipped")
        return
    records = read_records(source.read_text(encoding="utf-8", errors="replace").splitlines())
    started = time.perf_counter()
    result = await analyze_records(records, Policy(), AnalysisConfig(), output=None, total=100_000)
    elapsed = time.perf_counter() - started
    assert result.policy is not None
    report = replay(records, result.policy, total=100_000).as_dict(top=10_000)
    total = report["total"]
    missing = sum(1 for p in report["patterns"] if p["windows_without_kept"])  # type: ignore[union-attr]
    print(
        f"analyze {system} x100,000: {elapsed:.2f} s, replayed savings {total['savings_records']:.1%} "  # type: ignore[index]
        f"of records, {total['savings_bytes']:.1%} of bytes, patterns missing a window: {missing}"  # type: ignore[index]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, nargs="+", default=[2000, 10000])
    args = parser.parse_args()
    settle_heap()
    bench_observe(max(args.patterns))
    for patterns in args.patterns:
        asyncio.run(bench_pass(patterns))
    for system in ("HDFS", "OpenSSH"):
        asyncio.run(bench_analyze(system))


if __name__ == "__main__":
    main()
