"""Grouping accuracy on the shared Loghub sample, with floors per system just below what the engine
reaches, so that a regression fails here. Three measures (LogPAI's GA, Loghub-2.0's FGA):

- GA of the ids as first stamped: one online pass, the id `add` returned when the line arrived
  (what the sampler stamps on a record);
- GA and FGA once learned: the ids of a second pass over the same lines.

The eight systems are development systems: the engine has one configuration and no rule written
for one system's vocabulary, so a floor raised here must come from a rule that holds for logs in
general (bench/README.md has the figures on eight systems the engine was not developed on).
"""

from __future__ import annotations

import pytest

from lipservice_proxy.patterns import PatternEngine
from tests.support.loghub import available_systems, f1_grouping_accuracy, grouping_accuracy, iter_lines

# measured (stamped GA, learned GA, learned FGA): Apache 1/1/1, BGL .985/.994/.975, HDFS 1/1/1,
# Hadoop .988/.988/.961, HealthApp 1/1/1, Linux .875/.935/.944, OpenSSH .436/1/1, Proxifier 1/1/1;
# means .910/.990/.985
FLOORS = {
    "Apache": (0.99, 0.99, 0.99),
    "BGL": (0.97, 0.98, 0.96),
    "HDFS": (0.99, 0.99, 0.99),
    "Hadoop": (0.97, 0.97, 0.95),
    "HealthApp": (0.99, 0.99, 0.99),
    "Linux": (0.86, 0.92, 0.93),
    "OpenSSH": (0.42, 0.99, 0.99),
    "Proxifier": (0.99, 0.99, 0.99),
}
MEAN_FLOORS = (0.90, 0.98, 0.97)


def scores(system: str) -> tuple[float, float, float]:
    lines = list(iter_lines(system))
    bodies = [line.content for line in lines]
    truth = [line.event_id for line in lines]
    engine = PatternEngine()
    stamped = [pattern.id for pattern in engine.add_many(bodies)]
    learned = [pattern.id for pattern in engine.add_many(bodies)]
    return (
        grouping_accuracy(stamped, truth),
        grouping_accuracy(learned, truth),
        f1_grouping_accuracy(learned, truth),
    )


@pytest.mark.loghub
def test_grouping_accuracy_per_system() -> None:
    systems = available_systems()
    reached = {system: scores(system) for system in systems}
    below = {
        system: tuple(round(value, 3) for value in values)
        for system, values in reached.items()
        if any(
            value < floor for value, floor in zip(values, FLOORS.get(system, (0.8, 0.8, 0.8)), strict=True)
        )
    }
    assert not below, f"accuracy (stamped GA, learned GA, learned FGA) under its floor: {below}"
    if set(FLOORS) <= set(reached):
        for measure, floor in enumerate(MEAN_FLOORS):
            assert sum(reached[s][measure] for s in FLOORS) / len(FLOORS) >= floor


def test_grouping_accuracy_counts_exact_groups_only() -> None:
    assert grouping_accuracy(["a", "a", "b"], ["x", "x", "y"]) == 1.0
    assert grouping_accuracy(["a", "a", "a"], ["x", "x", "y"]) == 0.0
    assert grouping_accuracy(["a", "b", "c"], ["x", "x", "y"]) == pytest.approx(1 / 3)


def test_f1_grouping_accuracy_counts_groups_not_lines() -> None:
    assert f1_grouping_accuracy(["a", "a", "b"], ["x", "x", "y"]) == 1.0
    # one right group (x, 100 lines) of two predicted and three true: precision 1/2, recall 1/3
    assert f1_grouping_accuracy(["a"] * 100 + ["b", "b"], ["x"] * 100 + ["y", "z"]) == pytest.approx(0.4)
    assert f1_grouping_accuracy(["a", "a"], ["x", "y"]) == 0.0
