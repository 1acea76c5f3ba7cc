"""The shared Loghub-2k samples: list the systems, read their labelled lines, score a grouping.

The files live in `../shared/loghub/<System>/<System>_2k.log_structured.csv` next to the repo;
each row's `Content` is a log body and `EventId` its true template. Tests and benchmarks find
them relative to the repository root only, so the repo can move.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

LOGHUB_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "loghub"


class LoghubLine(NamedTuple):
    content: str
    event_id: str
    level: str | None


def structured_csv(system: str) -> Path:
    return LOGHUB_DIR / system / f"{system}_2k.log_structured.csv"


def available_systems() -> list[str]:
    """Systems with a structured CSV, sorted by name (empty when the shared folder is absent)."""
    if not LOGHUB_DIR.is_dir():
        return []
    return sorted(p.name for p in LOGHUB_DIR.iterdir() if structured_csv(p.name).is_file())


def iter_lines(system: str) -> Iterator[LoghubLine]:
    """(content, event_id, level or None) per labelled line, in file order."""
    with structured_csv(system).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield LoghubLine(row["Content"], row["EventId"], row.get("Level") or None)


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """LogPAI's grouping accuracy: the share of lines whose predicted group holds exactly the lines
    of their true group (no more, no fewer)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labelled lines")
    if not truth:
        return 1.0
    predicted_groups: dict[Hashable, list[int]] = defaultdict(list)
    true_groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, (guess, label) in enumerate(zip(predicted, truth, strict=True)):
        predicted_groups[guess].append(index)
        true_groups[label].append(index)
    correct = 0
    for members in predicted_groups.values():
        label = truth[members[0]]
        if true_groups[label] == members:
            correct += len(members)
    return correct / len(truth)


def group_count(labels: Sequence[Hashable]) -> int:
    return len(set(labels))
