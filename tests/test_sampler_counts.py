"""Exact counts: lipservice.count on kept records, open tails, summary records, and bad input."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.replay import format_table, read_records, replay
from lipservice_proxy.sampling.annotate import COUNT, PATTERN_ID, SAMPLE_RATE, SUMMARY, TEMPLATE
from lipservice_proxy.sampling.counting import MAX_COUNT, summaries
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.severity import DEBUG, INFO

from .support.loghub import iter_lines
from .test_sampler import kept_records, policy, request, run


def count(record: LogRecord) -> int:
    (value,) = [a.value.int_value for a in record.attributes if a.key == COUNT]
    return value


def counted(messages: list[Any]) -> int:
    return sum(count(record) for message in messages for record in kept_records(message))


def lines(n: int, start: int = 0, severity: int = 9) -> list[dict[str, Any]]:
    return [{"body": f"user {i} logged in", "severity_number": severity} for i in range(start, start + n)]


def test_a_kept_record_counts_itself_and_the_drops_before_it() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.25}))
    message, outcome = run(sampler, lines(10))
    # the credit starts at one half: records 1, 5 and 9 are kept
    assert [(r.body.string_value, count(r)) for r in kept_records(message)] == [
        ("user 1 logged in", 2),
        ("user 5 logged in", 4),
        ("user 9 logged in", 4),
    ]
    (tally,) = outcome.patterns.values()
    assert (tally.counted, sampler.unaccounted) == (10, 0)


def test_the_tail_is_carried_onto_the_next_kept_record_of_its_key() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.25, "DEBUG": 0.25}))
    first, _ = run(sampler, lines(7))  # kept: 1 (2), 5 (4); the tail: 6
    assert (counted([first]), sampler.unaccounted) == (6, 1)
    debug, _ = run(sampler, lines(4, severity=5))  # another key, its own tail: the INFO tail stays
    assert (counted([debug]), sampler.unaccounted) == (2, 1 + 2)
    second, _ = run(sampler, lines(5, start=7))
    assert [count(r) for r in kept_records(second)] == [4]  # 7 and 8 dropped, 9 kept: 1 + 2 + the tail
    assert (counted([first, debug, second]), sampler.unaccounted) == (6 + 2 + 4, 2 + 2)


def test_tails_leave_as_summaries_at_the_end_of_their_window_or_on_shutdown() -> None:
    sampler = Sampler(
        PatternEngine(),
        Policy.model_validate(
            {"severity_rates": {"INFO": 0.0}, "first_per_window": {"count": 1, "window": 60}}
        ),
    )
    message, _ = run(
        sampler, lines(5), now=61.0, resource={"host.name": "web-1"}
    )  # the first is kept, four wait
    assert (counted([message]), sampler.unaccounted) == (1, 4)
    assert sampler.close_tails(119.9) == []  # the window [60, 120) is not over
    (tail,) = sampler.close_tails(120.0)
    assert (tail.service, tail.level, tail.count, tail.template) == ("api", INFO, 4, "user <NUM> logged in")
    assert sampler.unaccounted == 0 and sampler.close_tails(1e9, everything=True) == []

    run(sampler, lines(3), now=130.0, resource={"host.name": "web-1"})  # a new window: one kept, two wait
    (tail,) = sampler.close_tails(131.0, everything=True)  # shutdown closes every tail
    assert tail.count == 2

    batch = summaries([tail], 131.0)
    (resource_logs,) = batch.request.resource_logs
    resource = {a.key: a.value.string_value for a in resource_logs.resource.attributes}
    assert resource == {"service.name": "api", "host.name": "web-1"}
    (record,) = resource_logs.scope_logs[0].log_records
    attributes = {a.key: a.value for a in record.attributes}
    assert (record.body.string_value, record.severity_text, record.severity_number) == (
        "user <NUM> logged in",
        "INFO",
        9,
    )
    assert attributes[COUNT].int_value == 2 and attributes[SUMMARY].bool_value
    assert attributes[TEMPLATE].string_value == "user <NUM> logged in"
    assert attributes[PATTERN_ID].string_value == tail.pattern_id and SAMPLE_RATE not in attributes
    assert (batch.records, batch.count, record.time_unix_nano) == (1, 2, 131_000_000_000)


def test_dry_run_forwards_everything_and_counts_only_the_would_be_kept() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.25}), dry_run=True)
    message, outcome = run(sampler, lines(10))
    forwarded = kept_records(message)
    assert len(forwarded) == outcome.forwarded == 10
    assert [count(r) for r in forwarded].count(0) == 7  # the would-be drops stand for nothing
    assert sum(count(r) for r in forwarded) == 10 and sampler.unaccounted == 0
    sampler.process(request(lines(2, start=10)), b"", 1000.0)  # two would-be drops wait as a tail
    assert sum(tail.count for tail in sampler.close_tails(0, everything=True)) == 2


def test_a_count_past_the_int64_bound_is_split_and_none_is_lost() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.5}))
    run(sampler, lines(2))  # kept, dropped: the key has a state with a tail of 1
    ((state, _),) = [(s, s.tails) for by in sampler._states.values() for s in by.values()]
    state.tails[INFO] = MAX_COUNT + 5  # as if 2**63 + 4 records had been dropped
    sampler.unaccounted = MAX_COUNT + 5
    message, _ = run(sampler, lines(4, start=2))  # kept, dropped, kept, dropped
    # the first carries what fits; the next the 6 over the bound, the drop before it and itself
    assert [count(r) for r in kept_records(message)] == [MAX_COUNT, 8]
    assert sampler.unaccounted == 1
    state.tails[INFO] = 2 * MAX_COUNT + 1
    sampler.unaccounted = 2 * MAX_COUNT + 1
    tails = sampler.close_tails(0, everything=True)
    batch = summaries(tails, 0)
    counts = [count(r) for r in batch.request.resource_logs[0].scope_logs[0].log_records]
    assert counts == [MAX_COUNT, MAX_COUNT, 1] and batch.count == 2 * MAX_COUNT + 1
    ExportLogsServiceRequest.FromString(batch.request.SerializeToString())  # every count fits int64


def test_an_evicted_pattern_sends_its_tail_first() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.0, "DEBUG": 0.0}), max_states=2)
    run(sampler, lines(3), now=1.0)  # all dropped: a tail of 3
    run(sampler, [{"body": f"disk {i} full", "severity_number": 5} for i in range(2)], now=2.0)
    assert sampler.unaccounted == 5
    run(sampler, [{"body": "cache warmed in 3 ms", "severity_number": 5}], now=3.0)  # third state: evict
    assert sampler.unaccounted == 6  # forgotten states' tails still wait for their summaries
    closed = sampler.close_tails(3.5)  # their windows are not over: only the evicted tail leaves
    assert [(t.template, t.count) for t in closed] == [("user <NUM> logged in", 3)]
    assert sum(t.count for t in sampler.close_tails(3.5, everything=True)) == 3


def test_a_policy_swap_mid_window_keeps_the_tails() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.0}))
    run(sampler, lines(4), now=10.0)
    sampler.set_policy(policy(severity_rates={"INFO": 1.0}))
    message, _ = run(sampler, lines(2, start=4), now=11.0)
    assert [count(r) for r in kept_records(message)] == [5, 1] and sampler.unaccounted == 0


def test_a_clock_jumping_back_loses_no_count() -> None:
    window = {"count": 1, "window": 60}
    sampler = Sampler(
        PatternEngine(), Policy.model_validate({"severity_rates": {"DEBUG": 0.0}, "first_per_window": window})
    )
    debug = lines(3, severity=5)
    first, _ = run(sampler, debug, now=1000.0)  # one first, two wait
    back, _ = run(sampler, debug, now=500.0)  # the clock went back: a new window, one first
    assert [count(r) for r in kept_records(back)] == [3]  # the two waiting ones come with it
    (tail,) = sampler.close_tails(10.0)  # before the window the tail opened in: it leaves at once
    assert (tail.level, tail.count) == (DEBUG, 2)
    assert counted([first, back]) + tail.count == 6


def test_counts_add_up_per_key_across_services_levels_and_trace_ids() -> None:
    sampler = Sampler(PatternEngine(), Policy())  # the default policy, first-per-window included
    totals: Counter[tuple[str, str]] = Counter()
    sent: Counter[tuple[str, str]] = Counter()
    for second in range(5):
        for service in ("api", "db"):
            records = [
                {
                    "body": f"{kind} {i} done",
                    "severity_number": number,
                    **({"trace_id": bytes([i % 251]) * 16} if i % 3 == 0 else {}),
                }
                for i in range(60)
                for kind, number in (("job", 1), ("query", 5), ("task", 9), ("step", 13))
            ]
            message, _ = run(sampler, records, now=100.0 * second, service=service)
            for record in kept_records(message):
                totals[(service, record.body.string_value.split()[0])] += count(record)
            for spec in records:
                sent[(service, spec["body"].split()[0])] += 1
    for tail in sampler.close_tails(1e9, everything=True):
        totals[(tail.service, tail.template.split()[0])] += tail.count
    assert totals == sent


def test_replay_reports_exact_counts_next_to_the_estimates() -> None:
    lines_ = [
        orjson.dumps({"body": line.content, "severity": line.level or "INFO"}).decode()
        for line in iter_lines("OpenSSH")
    ]
    report = replay(read_records(lines_), Policy(), total=20_000, rate=500.0).as_dict(top=10**6)
    tallies = [report["total"], *report["severities"].values(), *report["patterns"]]
    assert all(tally["counted"] == tally["seen"] for tally in tallies)
    assert any(tally["estimated"] != tally["seen"] for tally in tallies)  # the estimates are estimates
    total_row = next(row for row in format_table(report, "replay").splitlines() if row.startswith("total "))
    assert total_row.endswith(f"{report['total']['seen']:>10}")
