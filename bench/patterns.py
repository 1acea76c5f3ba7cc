"""Benchmark of the pattern engine: grouping accuracy as stamped and once learned, id stability,
cross-replica agreement, throughput and the flood of all-new lines.

    python -m bench.patterns            # full run (a few minutes)
    python -m bench.patterns --quick    # one timing run, smaller streams and flood

The eight Loghub-2k systems in ../shared/loghub are the *development* systems: the engine has one
configuration for every log (no per-system setting), so each system's figures are also what it
would score left out of tuning, as long as no rule was written for its vocabulary.

1. Per system and as the mean (one fresh engine per system, lines in file order):
   - `GA@1`: LogPAI's grouping accuracy of the ids as first stamped: the id `add` returned when the
     line arrived, in one online pass (what the sampler stamps, what `lipservice-proxy patterns` prints);
   - `GA`, `GA*`, `FGA`, `FGA*`: grouping accuracy and Loghub-2.0's F1 grouping accuracy once learned
     (the ids of a second pass over the same lines), against the original labels and (*) against
     the corrected labels of Loghub-2.0;
   - `stable`: the share of lines whose first id is still their id at the end (`resolve(first)`
     returns a pattern with that very id: it was neither merged away nor forgotten);
   - `replica`: two engines, the same lines in two orders (file order, and a seeded shuffle); after
     both have seen every line, the share of lines that both stamp with the same id;
   - cold lines/s (a fresh engine, first pass) and warm lines/s (the second pass), CPU time of one
     core, best of 3.
2. Warm engine (the Loghub lines learned), 1,000,000-line streams where 95% repeat an earlier shape
   and 5% are new: known statements with other number lengths, or new statements.
3. Flood: N distinct random lines (default 1,000,000) through one engine with the default caps, in a
   fresh process: lines/s, lines whose mining was shed, resident memory growth (VmRSS).
Rates are lines per second of this process's CPU time (time.process_time), so other load on the
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.patterns.masking import digit_shape
from tests.support import loghub
from tests.support.loghub import (
    available_systems,
    f1_grouping_accuracy,
    group_count,
    grouping_accuracy,
    iter_lines,
    structured_csv,
)

REPO = Path(__file__).resolve().parents[1]
DEVELOPMENT_SYSTEMS = loghub.LOGHUB_DIR
_DIGITS = re.compile(r"\d+")


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def best_of(runs: int, work: Callable[[], float]) -> float:
    return min(work() for _ in range(runs))


class SystemScore(NamedTuple):
    lines: int
    stamped_ga: float
    ga: float
    ga_corrected: float
    fga: float
    fga_corrected: float
    stable: float
    replica: float
    groups: int
    true_groups: int
    cold: float  # lines/s
    warm: float


def stamped_and_learned(bodies: Sequence[str]) -> tuple[PatternEngine, list[str], list[str]]:
    """A fresh engine's ids for each body as first stamped, and in a second pass once learned."""
    engine = PatternEngine()
    stamped = [pattern.id for pattern in engine.add_many(bodies)]
    learned = [pattern.id for pattern in engine.add_many(bodies)]
    return engine, stamped, learned


def id_stability(engine: PatternEngine, stamped: Sequence[str]) -> float:
    kept = 0
    for pattern_id in stamped:
        current = engine.resolve(pattern_id)
        kept += current is not None and current.id == pattern_id
    return kept / len(stamped)


def replica_agreement(bodies: Sequence[str], seed: int = 7) -> float:
    order = list(range(len(bodies)))
    random.Random(seed).shuffle(order)
    first, second = PatternEngine(), PatternEngine()
    first.add_many(bodies)
    second.add_many([bodies[i] for i in order])
    same = sum(a.id == b.id for a, b in zip(first.add_many(bodies), second.add_many(bodies), strict=True))
    return same / len(bodies)


def score_system(system: str, runs: int) -> SystemScore:
    labelled = list(iter_lines(system))
    bodies = [line.content for line in labelled]
    truth = [line.event_id for line in labelled]
    # a folder of other systems may have no corrected labels: score the originals twice then
    relabelled = structured_csv(system, corrected=True).is_file()
    corrected = [line.event_id for line in iter_lines(system, corrected=relabelled)]
    engine, stamped, learned = stamped_and_learned(bodies)

    def timed_pass(second: bool) -> float:
        fresh = PatternEngine()
        if second:
            fresh.add_many(bodies)
        start = time.process_time()
        for body in bodies:
            fresh.add(body)
        return time.process_time() - start

    return SystemScore(
        lines=len(bodies),
        stamped_ga=grouping_accuracy(stamped, truth),
        ga=grouping_accuracy(learned, truth),
        ga_corrected=grouping_accuracy(learned, corrected),
        fga=f1_grouping_accuracy(learned, truth),
        fga_corrected=f1_grouping_accuracy(learned, corrected),
        stable=id_stability(engine, stamped),
        replica=replica_agreement(bodies),
        groups=group_count(learned),
        true_groups=group_count(truth),
        cold=len(bodies) / best_of(runs, lambda: timed_pass(False)),
        warm=len(bodies) / best_of(runs, lambda: timed_pass(True)),
    )


_COLUMNS = ("GA@1", "GA", "GA*", "FGA", "FGA*", "stable", "replica")


def accuracy_table(runs: int) -> list[str]:
    systems = available_systems()
    if not systems:
        return ["no Loghub systems found next to the repository (../shared/loghub)"]
    header = f"{'system':<11}" + "".join(f"{name:>8}" for name in _COLUMNS)
    rows = [header + f"{'groups':>8}{'true':>6}{'cold/s':>10}{'warm/s':>11}"]
    scores = []
    for system in systems:
        score = score_system(system, runs)
        scores.append(score)
        rows.append(
            f"{system:<11}"
            + "".join(f"{value:>8.3f}" for value in score[1:8])
            + f"{score.groups:>8}{score.true_groups:>6}{score.cold:>10,.0f}{score.warm:>11,.0f}"
        )
    count = len(scores)
    means = [sum(score[i] for score in scores) / count for i in range(1, 8)]
    total = sum(score.lines for score in scores)
    cold = total / sum(score.lines / score.cold for score in scores)
    warm = total / sum(score.lines / score.warm for score in scores)
    rows.append(
        f"{'mean':<11}"
        + "".join(f"{value:>8.3f}" for value in means)
        + f"{'':>14}{cold:>10,.0f}{warm:>11,.0f}"
    )
    rows.append(
        "GA@1: ids as first stamped; GA/FGA: once learned (second pass); *: Loghub-2.0 corrected labels."
    )
    if loghub.LOGHUB_DIR == DEVELOPMENT_SYSTEMS:
        rows.append("These are the development systems: one configuration, no per-system setting.")
    else:
        rows.append(f"Systems from {loghub.LOGHUB_DIR}, scored with the one configuration.")
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
            engine.add_many(corpus)
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


def flood(total: int) -> list[str]:
    """`total` distinct lines of random words, each line new, one at a time through `add`."""
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
        add = engine.add
        start = time.process_time()
        for body in batch:
            add(body)
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
        f"evictions: {stats.template_evictions:,} templates, {stats.cache_evictions:,} cache entries",
        f"lines not mined (flood shedding): {getattr(stats, 'shed_lines', 0):,}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.patterns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one timing run, smaller streams and flood")
    parser.add_argument("--accuracy-only", action="store_true", help="only the per-system table")
    parser.add_argument(
        "--loghub",
        type=Path,
        metavar="DIR",
        help="score the systems in DIR (<System>/<System>_2k.log_structured.csv) instead of ../shared/loghub",
    )
    parser.add_argument("--flood-only", type=int, metavar="LINES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loghub is not None:
        loghub.LOGHUB_DIR = args.loghub.resolve()
    if args.flood_only:
        print("\n".join(flood(args.flood_only)))
        return
    runs = 1 if args.quick else 3
    print("== per Loghub system: accuracy as stamped and once learned, id stability, lines/s")
    print("\n".join(accuracy_table(runs)))
    sys.stdout.flush()
    if args.accuracy_only:
        return
    print("\n== warm engine, repeated shapes")
    print("\n".join(repeated_shapes(200_000 if args.quick else 1_000_000, runs)))
    print("\n== flood of distinct random lines (a fresh process, so earlier sections do not skew RSS)")
    sys.stdout.flush()
    lines = 200_000 if args.quick else 1_000_000
    command = [sys.executable, "-m", "bench.patterns", "--flood-only", str(lines)]
    subprocess.run(command, check=True, timeout=3600, cwd=REPO)


if __name__ == "__main__":
    main()
