"""Benchmark of the pattern engine: grouping accuracy, throughput and memory.

    python bench/patterns.py            # full run (a few minutes)
    python bench/patterns.py --quick    # smaller streams, one timing run

1. Per Loghub system (../shared/loghub, Content column of *_structured.csv): grouping accuracy
   (LogPAI's GA: a line counts when its predicted group is exactly its true group) with each line's
   pattern resolved to the template it ended in, the same with the id handed out at that moment
   ("online"), predicted vs true group counts, and lines/s of a fresh engine (best of 3 runs).
2. Lines/s on an engine warmed with the Loghub lines, for streams in which 95% of lines repeat an
   earlier shape (same text up to digits) and 5% are new shapes: either known statements whose
   numbers have other lengths, or new statements (random words, so each one is mined).
3. Memory: N distinct random lines through one engine with the default caps; resident memory
   growth (VmRSS from /proc/self/status) and the template count against its cap.
Rates are lines per second of CPU time of this process (time.process_time), so other load on the
machine slows them less than wall time would; treat them as noisy all the same.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.patterns.masking import digit_shape
from tests.support.loghub import (
    available_systems,
    group_count,
    grouping_accuracy,
    iter_lines,
)

_DIGITS = re.compile(r"\d+")


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def best_of(runs: int, work: Callable[[], float]) -> float:
    return min(work() for _ in range(runs))


def accuracy_table(runs: int) -> list[str]:
    systems = available_systems()
    if not systems:
        return ["no Loghub systems found next to the repository (../shared/loghub)"]
    rows = [f"{'system':<11}{'lines':>6}{'GA':>7}{'online':>8}{'groups':>8}{'true':>6}{'lines/s':>11}"]
    total_ga = total_online = total_seconds = 0.0
    total_lines = 0
    for system in systems:
        labelled = list(iter_lines(system))
        bodies = [line.content for line in labelled]
        truth = [line.event_id for line in labelled]
        engine = PatternEngine()
        online = [engine.add(body).id for body in bodies]
        final = [resolved.id if (resolved := engine.resolve(i)) else i for i in online]

        def cold(bodies: list[str] = bodies) -> float:
            fresh = PatternEngine()
            start = time.process_time()
            for body in bodies:
                fresh.add(body)
            return time.process_time() - start

        seconds = best_of(runs, cold)
        ga, ga_online = grouping_accuracy(final, truth), grouping_accuracy(online, truth)
        total_ga += ga
        total_online += ga_online
        total_seconds += seconds
        total_lines += len(bodies)
        rows.append(
            f"{system:<11}{len(bodies):>6}{ga:>7.3f}{ga_online:>8.3f}{group_count(final):>8}"
            f"{group_count(truth):>6}{len(bodies) / seconds:>11,.0f}"
        )
    rows.append(
        f"{'mean':<11}{total_lines:>6}{total_ga / len(systems):>7.3f}{total_online / len(systems):>8.3f}"
        f"{'':>8}{'':>6}{total_lines / total_seconds:>11,.0f}"
    )
    return rows


def _other_lengths(body: str, rng: random.Random) -> str:
    return _DIGITS.sub(lambda m: m.group() + str(rng.randrange(10)) * rng.randint(1, 8), body)


def _same_shape(body: str, rng: random.Random) -> str:
    return _DIGITS.sub(lambda m: "".join(rng.choice(string.digits) for _ in m.group()), body)


def repeated_shapes(total: int, runs: int) -> list[str]:
    rng = random.Random(3)
    corpus = [line.content for system in available_systems() for line in iter_lines(system)]
    if not corpus:
        return ["no Loghub lines to build the stream from"]
    with_numbers = [body for body in corpus if _DIGITS.search(body)]
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(50_000)]

    def known_statement() -> str:
        # a statement seen before, with numbers of other lengths
        return _other_lengths(rng.choice(with_numbers), rng)

    def new_statement() -> str:
        return " ".join(rng.choices(vocabulary, k=rng.randint(4, 12)))

    def stream_of(novel: Callable[[], str]) -> tuple[list[str], float]:
        seen = {digit_shape(body) for body in corpus}
        stream: list[str] = []
        repeats = 0
        for _ in range(total):
            body = None
            if rng.random() < 0.05:
                for _ in range(100):  # bounded: a shape not seen before
                    candidate = novel()
                    if digit_shape(candidate) not in seen:
                        body = candidate
                        break
            if body is None:
                body = _same_shape(rng.choice(corpus), rng)
                repeats += 1
            stream.append(body)
            seen.add(digit_shape(body))
        return stream, repeats / total

    def timed(lines: list[str]) -> float:
        def run() -> float:
            engine = PatternEngine()
            for body in corpus:
                engine.add(body)
            add = engine.add
            start = time.process_time()
            for body in lines:
                add(body)
            return time.process_time() - start

        return total / best_of(runs, run)

    rows = []
    for label, novel in (
        ("known statements with new number lengths", known_statement),
        ("new statements", new_statement),
    ):
        stream, repeated = stream_of(novel)
        rows.append(
            f"{total:,} lines, {repeated:.1%} repeating an earlier shape, the rest {label}: "
            f"{timed(stream):,.0f} lines/s"
        )
    rows.append(
        f"{total:,} lines, 100% repeating: {timed([rng.choice(corpus) for _ in range(total)]):,.0f} lines/s"
    )
    return rows


def random_lines(total: int) -> list[str]:
    rng = random.Random(11)
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(100_000)]
    engine = PatternEngine()
    gc.collect()
    before = rss_mib()
    seconds = 0.0
    done = 0
    while done < total:
        batch = [
            " ".join(rng.choices(vocabulary, k=rng.randint(4, 14))) + f" #{done + i}"
            for i in range(min(10_000, total - done))
        ]
        start = time.process_time()
        for body in batch:
            engine.add(body)
        seconds += time.process_time() - start
        done += len(batch)
    del batch
    gc.collect()
    stats = engine.stats()
    return [
        f"{total:,} distinct random lines: {total / seconds:,.0f} lines/s",
        f"resident memory growth: {rss_mib() - before:.1f} MiB",
        f"templates {stats.templates:,} (cap {engine.max_templates:,}), "
        f"cache entries {stats.cache_entries:,} (cap {engine.cache_size:,}), "
        f"evictions: {stats.template_evictions:,} templates, "
        f"{stats.cache_evictions:,} cache entries",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller streams and a single timing run")
    parser.add_argument("--memory-only", type=int, metavar="LINES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        print("\n".join(random_lines(args.memory_only)))
        return
    runs = 1 if args.quick else 3
    print("== grouping accuracy and cold throughput per Loghub system")
    print("\n".join(accuracy_table(runs)))
    print("\n== warm engine, repeated shapes")
    print("\n".join(repeated_shapes(200_000 if args.quick else 1_000_000, runs)))
    print("\n== memory under distinct random lines (a fresh process, so earlier sections do not skew RSS)")
    sys.stdout.flush()
    lines = 200_000 if args.quick else 1_000_000
    subprocess.run([sys.executable, __file__, "--memory-only", str(lines)], check=True, timeout=3600)


if __name__ == "__main__":
    main()
