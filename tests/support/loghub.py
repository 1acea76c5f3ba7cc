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


def structured_csv(system: str, corrected: bool = False) -> Path:
    """The labelled lines; `corrected` picks the Loghub-2.0 relabelling of the same lines."""
    suffix = "_corrected" if corrected else ""
    return LOGHUB_DIR / system / f"{system}_2k.log_structured{suffix}.csv"


def available_systems() -> list[str]:
    """Systems with a structured CSV, sorted by name (empty when the shared folder is absent)."""
    if not LOGHUB_DIR.is_dir():
        return []
    return sorted(p.name for p in LOGHUB_DIR.iterdir() if structured_csv(p.name).is_file())


def iter_lines(system: str, corrected: bool = False) -> Iterator[LoghubLine]:
    """(content, event_id, level or None) per labelled line, in file order."""
    with structured_csv(system, corrected).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield LoghubLine(row["Content"], row["EventId"], row.get("Level") or None)


def _exact_groups(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[int, int, int, int]:
    """(lines in exactly right groups, exactly right groups, predicted groups, true groups)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labelled lines")
    predicted_groups: dict[Hashable, list[int]] = defaultdict(list)
    true_groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, (guess, label) in enumerate(zip(predicted, truth, strict=True)):
        predicted_groups[guess].append(index)
        true_groups[label].append(index)
    lines = groups = 0
    for members in predicted_groups.values():
        if true_groups[truth[members[0]]] == members:
            lines += len(members)
            groups += 1
    return lines, groups, len(predicted_groups), len(true_groups)


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """LogPAI's grouping accuracy: the share of lines whose predicted group holds exactly the lines
    of their true group (no more, no fewer)."""
    if not truth and not predicted:
        return 1.0
    lines, _, _, _ = _exact_groups(predicted, truth)
    return lines / len(truth)


def f1_grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Loghub-2.0's FGA: the F1 of exactly right groups, counted per group rather than per line
    (precision over the predicted groups, recall over the true ones), so rare templates weigh as
    much as frequent ones."""
    if not truth and not predicted:
        return 1.0
    _, right, guessed, true = _exact_groups(predicted, truth)
    if right == 0:
        return 0.0
    precision, recall = right / guessed, right / true
    return 2 * precision * recall / (precision + recall)


def group_count(labels: Sequence[Hashable]) -> int:
    return len(set(labels))
