"""Pattern stats (rolling counts, EMA baselines, bounded memory) and anomaly detection."""

from __future__ import annotations

import math

import orjson
import pytest

from lipservice_proxy.analysis.anomalies import ERROR_SURGE, NEW_PATTERN, SPIKE, Thresholds, detect, surprise
from lipservice_proxy.analysis.stats import Ema, PatternStats, pattern_volumes, state_document
from lipservice_proxy.sampling.decision import BatchOutcome, PatternTally

INTERVAL = 300.0


def outcome(counts: dict[tuple[str, str, str], int], kept_ratio: float = 0.5) -> BatchOutcome:
    batch = BatchOutcome()
    for (service, pattern_id, severity), received in counts.items():
        batch.patterns[(service, pattern_id, severity)] = PatternTally(
            template=f"template of {pattern_id} <NUM>",
            received=received,
            kept=int(received * kept_ratio),
            bytes=received * 100,
            bytes_kept=int(received * kept_ratio) * 100,
        )
    return batch


def steady(
    stats: PatternStats, intervals: int, counts: dict[tuple[str, str, str], int], start: float = 0.0
) -> float:
    """Feed the same counts for `intervals` intervals (in ten batches each); return the time reached."""
    now = start
    for _ in range(intervals):
        for step in range(10):
            stats.observe(outcome({k: v // 10 for k, v in counts.items()}), now + step * INTERVAL / 10)
        now += INTERVAL
        stats.roll(now)
    return now


def test_observe_accumulates_counts_by_severity_bytes_and_first_last_seen() -> None:
    stats = PatternStats()
    stats.observe(outcome({("web", "p1", "INFO"): 10, ("web", "p1", "ERROR"): 2}), 100.0)
    stats.observe(outcome({("web", "p1", "INFO"): 5}), 160.0)
    (entry,) = list(stats.entries())
    assert entry.counts[2] == 15 and entry.counts[4] == 2
    assert entry.received == 17
    assert entry.bytes == 1700
    assert entry.kept == 5 + 1 + 2
    assert (entry.first_seen, entry.last_seen) == (100.0, 160.0)

    snapshot = stats.roll(400.0)
    (window,) = snapshot.patterns
    assert window.received == 17 and window.protected == 2 and window.sampleable == 15
    assert snapshot.duration == 300.0
    assert window.baseline_intervals == 0  # the baseline before this interval: none yet
    assert entry.rate.mean == pytest.approx(17 / 300.0)
    assert stats.roll(700.0).patterns == ()  # the interval counts were reset; totals stay
    assert entry.received == 17


def test_records_observed_between_closing_an_interval_and_its_snapshot_count_in_the_next() -> None:
    """The analysis loop closes the interval on the event loop and builds the snapshot in a thread,
    while batches keep arriving: those belong to the next interval, not to the closed one."""
    stats = PatternStats()
    stats.observe(outcome({("web", "p1", "INFO"): 10}), 100.0)
    closed = stats.close_interval(400.0)
    stats.observe(outcome({("web", "p1", "INFO"): 4, ("web", "p2", "WARN"): 3}), 401.0)
    snapshot = closed.snapshot()
    assert [(w.pattern_id, w.received) for w in snapshot.patterns] == [("p1", 10)]
    assert snapshot.services[0].received == 10
    later = stats.roll(700.0)
    assert sorted((w.pattern_id, w.received) for w in later.patterns) == [("p1", 4), ("p2", 3)]
    (p1,) = [w for w in later.patterns if w.pattern_id == "p1"]
    assert p1.baseline == pytest.approx(10 / 300.0)  # the closed interval went into the baseline


def test_ema_tracks_mean_and_variance() -> None:
    ema = Ema()
    for value in [10.0] * 30:
        ema.update(value)
    assert ema.mean == pytest.approx(10.0) and ema.std == pytest.approx(0.0)
    for value in [5.0, 15.0] * 30:
        ema.update(value)
    assert 8.0 < ema.mean < 12.0
    assert 3.0 < ema.std < 7.0


def test_memory_is_bounded_by_evicting_the_least_recently_seen() -> None:
    stats = PatternStats(max_patterns=100)
    for index in range(1000):
        stats.observe(outcome({("svc", f"p{index}", "INFO"): 1}), float(index))
    assert len(stats) <= 100
    assert stats.evicted >= 900
    remembered = {entry.pattern_id for entry in stats.entries()}
    assert "p999" in remembered and "p0" not in remembered
    stats.roll(2000.0)  # the service baselines stay bounded with their patterns
    assert len(stats) <= 100


def test_pattern_volumes_sum_services_busiest_first() -> None:
    stats = PatternStats()
    stats.observe(outcome({("a", "x", "INFO"): 5, ("b", "x", "INFO"): 7, ("a", "y", "WARN"): 20}), 0.0)
    volumes = pattern_volumes(stats.roll(60.0))
    assert [v.pattern_id for v in volumes] == ["y", "x"]
    assert volumes[1].received == 12 and volumes[1].services == ("a", "b")


def test_surprise_uses_at_least_poisson_noise() -> None:
    expected, z = surprise(130, 1.0, 0.0, 100.0)  # a steady baseline has no variance of its own
    assert expected == 100.0
    assert z == pytest.approx(3.0)


def test_a_spike_fires_but_a_tiny_pattern_does_not() -> None:
    stats = PatternStats()
    base = {("web", "busy", "INFO"): 3000, ("web", "tiny", "INFO"): 2}
    now = steady(stats, 3, base)
    stats.observe(outcome({("web", "busy", "INFO"): 3000 * 5, ("web", "tiny", "INFO"): 10}), now + 1)
    anomalies = detect(stats.roll(now + INTERVAL))
    assert [(a.kind, a.pattern_ids) for a in anomalies] == [(SPIKE, ("busy",))]
    spike = anomalies[0]
    assert spike.count == 15000 and spike.expected == pytest.approx(3000, rel=0.01)
    assert spike.score > 4


def test_a_modest_rise_is_not_a_spike() -> None:
    stats = PatternStats()
    now = steady(stats, 3, {("web", "busy", "INFO"): 3000})
    stats.observe(outcome({("web", "busy", "INFO"): 6000}), now + 1)  # x2: under the ratio floor
    assert detect(stats.roll(now + INTERVAL)) == []


def test_spikes_need_a_baseline_of_a_few_intervals() -> None:
    stats = PatternStats()
    stats.observe(outcome({("web", "p", "INFO"): 10}), 0.0)
    stats.roll(INTERVAL)
    stats.observe(outcome({("web", "p", "INFO"): 10_000}), INTERVAL + 1)
    assert detect(stats.roll(2 * INTERVAL), Thresholds(min_baseline_intervals=2)) == []


def test_new_patterns_are_news_only_after_the_first_interval() -> None:
    stats = PatternStats()
    stats.observe(outcome({("web", "old", "INFO"): 100}), 0.0)
    assert detect(stats.roll(INTERVAL)) == []  # at start-up everything is new, and none is news
    stats.observe(outcome({("web", "old", "INFO"): 100, ("web", "fresh", "ERROR"): 3}), INTERVAL + 1)
    anomalies = detect(stats.roll(2 * INTERVAL))
    assert [(a.kind, a.pattern_ids) for a in anomalies] == [(NEW_PATTERN, ("fresh",))]
    assert math.isinf(anomalies[0].score) and "3 of them ERROR+" in anomalies[0].message
    stats.observe(outcome({("web", "fresh", "ERROR"): 3}), 2 * INTERVAL + 1)
    assert detect(stats.roll(3 * INTERVAL)) == []  # new once


def test_an_error_surge_boosts_the_services_busiest_patterns() -> None:
    stats = PatternStats()
    base = {("pay", "ok", "INFO"): 1000, ("pay", "err", "ERROR"): 10, ("web", "w", "INFO"): 1000}
    now = steady(stats, 3, base)
    stats.observe(
        outcome({("pay", "ok", "INFO"): 1000, ("pay", "err", "ERROR"): 200, ("web", "w", "INFO"): 1000}), now
    )
    anomalies = detect(stats.roll(now + INTERVAL), Thresholds(max_patterns_per_anomaly=1))
    surges = [a for a in anomalies if a.kind == ERROR_SURGE]
    assert [(a.service, a.pattern_ids, a.count) for a in surges] == [("pay", ("ok",), 200)]
    assert [a.kind for a in anomalies] == [SPIKE, ERROR_SURGE]  # the error pattern itself spiked too


def test_new_patterns_per_pass_are_capped_errors_first() -> None:
    stats = PatternStats()
    stats.observe(outcome({("web", "old", "INFO"): 1}), 0.0)
    stats.roll(INTERVAL)
    burst = {("web", f"n{i}", "INFO"): 5 for i in range(50)}
    burst[("web", "n-err", "ERROR")] = 1
    stats.observe(outcome(burst), INTERVAL + 1)
    anomalies = detect(stats.roll(2 * INTERVAL), Thresholds(max_new_patterns=10))
    assert len(anomalies) == 10
    assert anomalies[0].pattern_ids == ("n-err",)


def test_a_template_that_only_generalises_a_known_one_is_not_news() -> None:
    stats = PatternStats()
    known = BatchOutcome()
    known.patterns[("web", "alice", "INFO")] = PatternTally("User alice logged in from <IP>", 10, 5, 100, 50)
    stats.observe(known, 0.0)
    stats.roll(INTERVAL)
    later = BatchOutcome()
    later.patterns[("web", "any", "INFO")] = PatternTally("User <*> logged in from <IP>", 10, 5, 100, 50)
    later.patterns[("web", "out", "INFO")] = PatternTally("User <*> logged out from <IP>", 10, 5, 100, 50)
    later.patterns[("db", "any", "INFO")] = PatternTally("User <*> logged in from <IP>", 10, 5, 100, 50)
    stats.observe(later, INTERVAL + 1)
    snapshot = stats.roll(2 * INTERVAL)
    known_templates = [("web", "User alice logged in from <IP>")]
    flagged = {(a.service, a.pattern_ids) for a in detect(snapshot, known=known_templates)}
    # another statement, and the same statement in another service, are news; the generalisation is not
    assert flagged == {("web", ("out",)), ("db", ("any",))}


def test_state_round_trips_patterns_and_baselines() -> None:
    stats = PatternStats()
    steady(stats, 3, {("web", "p1", "INFO"): 100, ("web", "p2", "ERROR"): 10})
    document = state_document(*stats.state())
    restored = PatternStats()
    assert restored.restore(orjson.loads(orjson.dumps(document))) == 2
    before = {(e.service, e.pattern_id): (e.counts, e.rate.mean, e.rate.samples) for e in stats.entries()}
    after = {(e.service, e.pattern_id): (e.counts, e.rate.mean, e.rate.samples) for e in restored.entries()}
    assert after == before
    restored.observe(outcome({("web", "p3", "INFO"): 5, ("web", "p1", "INFO"): 10}), 4 * INTERVAL)
    assert [a.pattern_ids for a in detect(restored.roll(5 * INTERVAL))] == [("p3",)]  # only the unknown
