"""The pure parts of fleet mode: a sampler's report window, the messages both ways with their bounds,
the analyzer's published policy, and the policy store's remote source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lipservice_proxy.config import MIB
from lipservice_proxy.errors import BadRequest, PolicyError
from lipservice_proxy.fleet import policy_pb2 as pb
from lipservice_proxy.fleet.feed import PolicyFeed
from lipservice_proxy.fleet.reports import ReportWindow
from lipservice_proxy.fleet.wire import (
    MAX_TEMPLATE,
    read_snapshot,
    report_message,
    report_outcome,
    snapshot_message,
)
from lipservice_proxy.sampling.boosts import Boost
from lipservice_proxy.sampling.decision import BatchOutcome, PatternTally
from lipservice_proxy.sampling.policy import PatternRule, Policy
from lipservice_proxy.sampling.severity import SEVERITY_NAMES
from lipservice_proxy.sampling.store import PolicyStore
from lipservice_proxy.telemetry import Telemetry


def outcome(*tallies: tuple[str, str, str, int, int, str]) -> BatchOutcome:
    """(service, pattern id, severity, received, kept, template) -> one batch's outcome."""
    batch = BatchOutcome()
    for service, pattern_id, severity, received, kept, template in tallies:
        batch.patterns[(service, pattern_id, severity)] = PatternTally(
            template, received, kept, bytes=10 * received, bytes_kept=10 * kept
        )
    return batch


def levels(**counts: int) -> list[int]:
    return [counts.get(name, 0) for name in SEVERITY_NAMES]


# ---- the window ----


def test_the_window_adds_batches_up_per_service_and_pattern() -> None:
    window = ReportWindow(max_patterns=10, now=100.0)
    window.observe(
        outcome(("api", "a1", "INFO", 5, 1, "GET <*>"), ("api", "a1", "ERROR", 2, 2, "GET <*>")), 101
    )
    window.observe(
        outcome(("api", "a1", "INFO", 3, 1, "GET <*>"), ("db", "a1", "INFO", 4, 0, "GET <*>")), 102
    )
    closed = window.take(110.0)
    assert (closed.start, closed.end) == (100.0, 110.0)
    named = {key: (entry.received, entry.kept, entry.bytes) for key, entry in closed.patterns}
    assert named == {
        ("api", "a1"): (levels(INFO=8, ERROR=2), levels(INFO=2, ERROR=2), 100),
        ("db", "a1"): (levels(INFO=4), levels(), 40),
    }
    assert [key for key, _ in closed.patterns] == [("api", "a1"), ("db", "a1")]  # busiest first
    assert window.take(120.0).patterns == [] and window.start == 120.0


def test_the_window_is_bounded_and_its_totals_stay_exact() -> None:
    window = ReportWindow(max_patterns=2, now=0.0, max_keys=3)
    window.observe(outcome(*((f"s{i}", f"p{i}", "INFO", 10 * (i + 1), i, f"t{i}") for i in range(5))), 1)
    assert len(window) == 3  # p3 and p4 went straight to `other`
    closed = window.take(2.0)
    assert [key for key, _ in closed.patterns] == [("s2", "p2"), ("s1", "p1")]
    assert closed.other_received == levels(INFO=10 + 40 + 50)  # p0 (beyond the top 2), p3, p4
    assert closed.other_kept == levels(INFO=0 + 3 + 4)
    assert closed.records == sum(10 * (i + 1) for i in range(5))


# ---- reports ----


def test_a_report_round_trips_into_what_pattern_stats_observes() -> None:
    window = ReportWindow(max_patterns=1, now=5.0)
    window.observe(outcome(("api", "a1", "INFO", 6, 2, "GET <*>"), ("api", "a1", "WARN", 4, 4, "GET <*>")), 6)
    window.observe(outcome(("api", "b2", "DEBUG", 3, 0, "ping")), 6)
    request = report_message(
        window.take(15.0), sampler_id="node-1", sequence=7, policy_version=3, max_bytes=MIB
    )
    request = pb.ReportPatternsRequest.FromString(request.SerializeToString())
    report = report_outcome(request)
    assert (report.sampler_id, report.sequence, report.policy_version) == ("node-1", 7, 3)
    assert (report.pattern_records, report.other_records) == (10, 3)
    tallies = report.outcome.patterns
    assert set(tallies) == {("api", "a1", "INFO"), ("api", "a1", "WARN")}
    info, warn = tallies[("api", "a1", "INFO")], tallies[("api", "a1", "WARN")]
    assert (info.template, info.received, info.kept, warn.received, warn.kept) == ("GET <*>", 6, 2, 4, 4)
    assert (info.bytes + warn.bytes, info.bytes_kept + warn.bytes_kept) == (100, 60)  # all on one level
    assert (report.outcome.received, report.outcome.kept, report.outcome.dropped) == (13, 6, 7)
    assert request.window_end_unix_nano - request.window_start_unix_nano == 10 * 10**9


def test_a_pattern_the_analyzer_would_refuse_is_counted_under_other() -> None:
    window = ReportWindow(max_patterns=10, now=0.0)
    window.observe(
        outcome(("api", "long", "INFO", 2, 1, "x" * (MAX_TEMPLATE + 1)), ("api", "ok", "INFO", 1, 1, "y")), 1
    )
    report = report_outcome(
        report_message(window.take(1.0), sampler_id="s", sequence=0, policy_version=1, max_bytes=MIB)
    )
    assert set(report.outcome.patterns) == {("api", "ok", "INFO")}
    assert (report.pattern_records, report.other_records) == (1, 2)


def test_a_report_stays_within_its_size_budget() -> None:
    window = ReportWindow(max_patterns=100, now=0.0)
    window.observe(outcome(*(("api", f"p{i}", "INFO", 100 - i, 0, "t" * 1000) for i in range(20))), 1)
    request = report_message(window.take(1.0), sampler_id="s", sequence=0, policy_version=1, max_bytes=5000)
    assert [p.pattern_id for p in request.patterns] == ["p0", "p1", "p2", "p3"]  # the busiest that fit
    assert request.ByteSize() <= 5000
    assert sum(request.other.received) == sum(100 - i for i in range(4, 20))


def good_request() -> pb.ReportPatternsRequest:
    return pb.ReportPatternsRequest(
        sampler_id="node-1",
        window_start_unix_nano=1,
        window_end_unix_nano=2,
        patterns=[
            pb.PatternCount(
                service="api",
                pattern_id="a1",
                template="GET <*>",
                counts=pb.SeverityCounts(received=levels(INFO=3), kept=levels(INFO=1)),
                bytes=30,
                bytes_kept=10,
            )
        ],
    )


def broken(field: str, value: object) -> pb.ReportPatternsRequest:
    request = good_request()
    target = request.patterns[0] if field in ("pattern_id", "bytes_kept") else request
    if field == "received":
        del request.patterns[0].counts.received[-1]
    elif field == "kept":
        request.patterns[0].counts.kept[2] = 4
    else:
        setattr(target, field, value)
    return request


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sampler_id", "", "sampler_id must have 1 to 253 characters"),
        ("window_end_unix_nano", 0, "window_end_unix_nano is before window_start_unix_nano"),
        ("pattern_id", "a/1", "patterns[0]: needs a pattern_id of 1-64 characters"),
        ("bytes_kept", 31, "patterns[0]: bytes_kept exceeds bytes"),
        ("received", None, "patterns[0]: received and kept need 6 counts each"),
        ("kept", None, "patterns[0]: kept exceeds received"),
    ],
)
def test_a_bad_report_is_refused_naming_the_problem(field: str, value: object, message: str) -> None:
    assert report_outcome(good_request()).pattern_records == 3
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        report_outcome(broken(field, value))


# ---- policy snapshots ----

POLICY = Policy(
    version=4,
    generated_by="llm:test",
    severity_rates={"TRACE": 0.0, "DEBUG": 0.01, "INFO": 0.1, "WARN": 0.4, "ERROR": 1.0, "FATAL": 1.0},
    patterns=[PatternRule(id="a1", template="GET <*>", rate=0.05, reason="noise")],
)


def test_a_snapshot_carries_the_policy_and_relative_boost_deadlines() -> None:
    boosts = [Boost("a1", 1.0, 700.0, "spike: 40x"), Boost("b2", 0.5, 90.0, "over")]
    message = snapshot_message(POLICY.model_dump_json().encode(), 4, boosts, now=100.0, revision=9)
    message = pb.PolicySnapshot.FromString(message.SerializeToString())
    assert (message.version, message.revision, message.boosts[0].remaining_seconds) == (4, 9, 600.0)
    policy, received = read_snapshot(message, "analyzer x", now=5000.0)  # another host's clock
    assert policy == POLICY
    assert received == [Boost("a1", 1.0, 5600.0, "spike: 40x")]  # the expired one is not applied


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policy_json": b"{not json"}, "analyzer x: "),
        (
            {"policy_json": POLICY.model_dump_json().replace('"ERROR":1.0', '"ERROR":0.5').encode()},
            "ERROR must be 1.0",
        ),
        ({"version": 5}, "version 5 but the policy says 4"),
        ({"boosts": [pb.Boost(pattern_id="a1", rate=2.0, remaining_seconds=5)]}, r"boosts\[0\] needs"),
    ],
    ids=["not-json", "error-rate-lowered", "version-mismatch", "bad-boost"],
)
def test_a_bad_snapshot_is_refused_naming_the_problem(change: dict[str, object], message: str) -> None:
    snapshot = pb.PolicySnapshot(version=4, policy_json=POLICY.model_dump_json().encode(), revision=1)
    for field, value in change.items():
        if field == "boosts":
            snapshot.boosts.extend(value)  # type: ignore[arg-type]
        else:
            setattr(snapshot, field, value)
    with pytest.raises(PolicyError, match=message):
        read_snapshot(snapshot, "analyzer x", now=0.0)


def test_the_feed_publishes_changes_and_refuses_a_policy_over_the_message_limit() -> None:
    feed = PolicyFeed(POLICY, max_bytes=2000, clock=lambda: 100.0)
    assert (feed.version, feed.revision) == (4, 1)
    feed.boosts.boost("a1", 1.0, 160.0, "spike")
    snapshot = feed.snapshot()
    assert (snapshot.revision, [(b.pattern_id, b.remaining_seconds) for b in snapshot.boosts]) == (
        2,
        [("a1", 60.0)],
    )
    huge = POLICY.model_copy(
        update={"version": 5, "patterns": [PatternRule(id=f"p{i}", rate=0.5) for i in range(200)]}
    )
    feed.publish(huge)
    assert (feed.version, feed.revision) == (4, 2)  # samplers keep the last policy that fits
    feed.publish(POLICY.model_copy(update={"version": 6}))
    assert (feed.snapshot().version, feed.revision) == (6, 3)


# ---- the store's remote source ----


def test_the_store_takes_the_analyzers_policy_by_version_and_keeps_it_while_it_is_away(
    tmp_path: Path,
) -> None:
    operator = tmp_path / "operator.yaml"
    operator.write_text("version: 3\n")
    telemetry = Telemetry()
    store = PolicyStore([operator], Policy(), telemetry)
    applied: list[int] = []
    store.subscribe(lambda policy: applied.append(policy.version))
    assert store.load_initial().version == 3

    assert store.offer(POLICY.model_copy(update={"version": 3}), "analyzer a:1") is False  # a tie: the file
    assert store.source == operator
    assert store.offer(POLICY.model_copy(update={"version": 7}), "analyzer a:1") is True
    assert (store.current.version, store.source) == (7, "analyzer a:1")
    assert store.offer(POLICY.model_copy(update={"version": 7}), "analyzer a:1") is False  # nothing new
    # an analyzer that came back with less (a lost data volume) is still the analyzer's word
    assert store.offer(POLICY.model_copy(update={"version": 5}), "analyzer a:1") is True
    operator.write_text("version: 9\n")
    os.utime(operator, ns=(1, 1))  # a new mtime even on a coarse clock
    assert store.poll() is True and store.source == operator  # the operator bumps past it
    assert applied == [3, 7, 5, 9]
    assert telemetry.registry.get_sample_value("lipservice_policy_version") == 9
