"""The sampler's decision order and its guarantees, on real requests and the real pattern engine."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.sampling.annotate import PATTERN_ID, SAMPLE_RATE, TEMPLATE, take_prior_weight
from lipservice_proxy.sampling.decision import Decision, Reason
from lipservice_proxy.sampling.policy import Policy, parse_policy
from lipservice_proxy.sampling.rates import PROTECTED, RateKind, RateSource
from lipservice_proxy.sampling.reference import Record, ReferenceSampler
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.severity import ERROR, INFO

NO_FIRST = {"first_per_window": {"count": 0}}


def policy(**fields: Any) -> Policy:
    return Policy.model_validate({**NO_FIRST, **fields})


def request(
    records: list[dict[str, Any]], service: str = "api", resource: dict[str, str] | None = None
) -> Any:
    message = ExportLogsServiceRequest()
    resource_logs = message.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = service
    for key, value in (resource or {}).items():
        resource_logs.resource.attributes.add(key=key).value.string_value = value
    scope = resource_logs.scope_logs.add()
    for spec in records:
        record = scope.log_records.add()
        record.body.string_value = spec.get("body", "GET /health 200")
        record.severity_number = spec.get("severity_number", 0)
        record.severity_text = spec.get("severity_text", "")
        if "trace_id" in spec:
            record.trace_id = spec["trace_id"]
        for key, value in spec.get("attributes", {}).items():
            record.attributes.add(key=key).value.string_value = value
    return message


def kept_records(message: Any) -> list[LogRecord]:
    return [r for rl in message.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def weight(record: LogRecord) -> float:
    (value,) = [a.value.double_value for a in record.attributes if a.key == SAMPLE_RATE]
    return value


def run(
    sampler: Sampler, records: list[dict[str, Any]], now: float = 1000.0, **kwargs: Any
) -> tuple[Any, Any]:
    message = request(records, **kwargs)
    outcome = sampler.process(message, message.SerializeToString(), now)
    return message, outcome


@pytest.mark.parametrize(
    ("number", "text", "body", "expected"),
    [
        (9, "", "boom error", "INFO"),
        (17, "", "", "ERROR"),
        (24, "", "", "FATAL"),
        (1, "", "", "TRACE"),
        (0, "warning", "", "WARN"),
        (0, "WARNING", "", "WARN"),
        (0, "err", "", "ERROR"),
        (0, "Critical", "", "FATAL"),
        (0, "panic", "", "FATAL"),
        (0, "emerg", "", "FATAL"),
        (0, "", "Traceback (most recent call last):", "ERROR"),
        (0, "", "NullPointerException thrown", "INFO"),  # whole words only
        (0, "", "java.lang.IllegalStateException: an exception occurred", "ERROR"),
        (0, "", "all good", "INFO"),
        (0, "combo", "disk error on sda", "ERROR"),  # unknown text: fall back to the body
    ],
)
def test_severity_rules(number: int, text: str, body: str, expected: str) -> None:
    sampler = Sampler(PatternEngine(), policy())
    _, outcome = run(sampler, [{"body": body, "severity_number": number, "severity_text": text}])
    ((_, _, severity),) = outcome.patterns  # the severity the sampler decided the record under
    assert severity == expected


def test_errors_always_kept_whatever_the_rates() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.0}, patterns=[]))
    message, outcome = run(
        sampler, [{"body": f"db timeout on shard {i}", "severity_number": 17} for i in range(50)]
    )
    assert outcome.kept == 50 and len(kept_records(message)) == 50
    assert all(weight(r) == 1.0 for r in kept_records(message))
    (tally,) = outcome.patterns.values()
    assert tally.reasons == {Reason.SEVERITY: 50}


def test_pattern_rules_never_touch_errors_even_below_the_keep_threshold() -> None:
    engine = PatternEngine()
    pattern = engine.add("db timeout on shard 1")
    rules = [{"id": pattern.id, "rate": 0.0}]
    sampler = Sampler(engine, policy(patterns=rules), always_keep_min_severity="FATAL")
    _, outcome = run(
        sampler, [{"body": f"db timeout on shard {i}", "severity_number": 17} for i in range(20)]
    )
    assert outcome.kept == 20


def test_systematic_counter_keeps_every_kth_and_weights_add_up() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.2}))
    records = [{"body": f"user {i} logged in", "severity_number": 9} for i in range(1000)]
    message, _outcome = run(sampler, records)
    kept = kept_records(message)
    assert len(kept) == 200
    assert all(weight(r) == pytest.approx(5.0) for r in kept)
    assert sum(weight(r) for r in kept) == pytest.approx(1000)
    # evenly spaced: every 5th record, not clumps
    indexes = [int(r.body.string_value.split()[1]) for r in kept]
    assert {b - a for a, b in itertools.pairwise(indexes)} == {5}


@pytest.mark.parametrize("count", [100, 101, 102, 103, 104, 137, 999])
def test_weighted_count_is_within_half_an_interval(count: int) -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.2}))
    _, outcome = run(sampler, [{"body": f"user {i} logged in", "severity_number": 9} for i in range(count)])
    (tally,) = outcome.patterns.values()
    assert abs(tally.weight - count) <= 2.5  # half of 1/rate


def test_first_per_window_keeps_each_pattern_then_samples() -> None:
    sampler = Sampler(PatternEngine(), Policy.model_validate({"severity_rates": {"INFO": 0.0}}))
    records = [{"body": f"cache miss for key k{i}", "severity_number": 9} for i in range(10)]
    _, first = run(sampler, records, now=60.5)
    _, same_window = run(sampler, records, now=119.0)
    _, next_window = run(sampler, records, now=120.0)
    assert (first.kept, same_window.kept, next_window.kept) == (1, 0, 1)
    (tally,) = first.patterns.values()
    assert tally.reasons == {Reason.FIRST: 1, Reason.DROPPED: 9}


def test_first_records_are_the_first_in_the_request_whatever_their_severity() -> None:
    """The first-N allowance is per pattern, not per severity: it goes to the earliest records."""
    sampler = Sampler(
        PatternEngine(),
        Policy.model_validate(
            {"severity_rates": {"INFO": 0.0, "WARN": 0.0}, "first_per_window": {"count": 3}}
        ),
    )
    severities = [9, 13, 13, 9, 9, 13, 17, 9]  # INFO WARN WARN INFO INFO WARN ERROR INFO
    records = [{"body": f"retry {i} for job j{i}", "severity_number": n} for i, n in enumerate(severities)]
    message, outcome = run(sampler, records)
    kept = [int(r.body.string_value.split()[1]) for r in kept_records(message)]
    assert sorted(kept) == [0, 1, 2, 6]  # the first three, and the ERROR by severity
    reasons = {severity: tally.reasons for (_, _, severity), tally in outcome.patterns.items()}
    assert reasons == {
        "INFO": {Reason.FIRST: 1, Reason.DROPPED: 3},
        "WARN": {Reason.FIRST: 2, Reason.DROPPED: 1},
        "ERROR": {Reason.SEVERITY: 1},
    }
    _, later = run(sampler, records, now=1001.0)  # same window: the allowance is spent
    assert later.kept == 1


def test_trace_coin_is_consistent_and_nested() -> None:
    rng = random.Random(7)
    trace_ids = [rng.randbytes(16) for _ in range(20_000)]
    kept_at = {}
    for rate in (0.1, 0.25, 0.5, 1.0):
        sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": rate}))
        records = [{"body": "request served", "severity_number": 9, "trace_id": t} for t in trace_ids]
        message, _ = run(sampler, records)
        kept_at[rate] = {record.trace_id for record in kept_records(message)}
    assert kept_at[0.1] <= kept_at[0.25] <= kept_at[0.5] <= kept_at[1.0]  # a higher rate keeps a superset
    assert len(kept_at[0.25]) / len(trace_ids) == pytest.approx(0.25, abs=0.02)
    assert len(kept_at[1.0]) == len(trace_ids)


def test_all_logs_of_a_trace_share_the_decision_across_patterns_and_services() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.3}))
    rng = random.Random(3)
    traces = [rng.randbytes(16) for _ in range(300)]
    decisions: dict[bytes, set[bool]] = {}
    for service, body in (
        ("api", "request {} served"),
        ("db", "query {} took 3 ms"),
        ("api", "cache {} warmed"),
    ):
        records = [
            {"body": body.format(i), "severity_number": 9, "trace_id": t} for i, t in enumerate(traces)
        ]
        message, _ = run(sampler, records, service=service)
        kept = {r.trace_id for r in kept_records(message)}
        for trace in traces:
            decisions.setdefault(trace, set()).add(trace in kept)
    assert all(len(d) == 1 for d in decisions.values())
    assert 0.2 < sum(True in d for d in decisions.values()) / len(traces) < 0.4


def test_decision_order_exemptions_boosts_services_and_pattern_rules() -> None:
    engine = PatternEngine()
    noisy = engine.add("GET /health 200 in 3 ms")
    rules = parse_policy(
        f"""
first_per_window: {{count: 0}}
severity_rates: {{INFO: 0.5}}
patterns: [{{id: "{noisy.id}", rate: 0.0, reason: probe}}]
exemptions:
  - {{attribute: audit, equals: "true"}}
  - {{service: billing}}
  - {{attribute: route, matches: "^/pay"}}
services: {{checkout: {{severity_rates: {{INFO: 1.0}}}}}}
"""
    )
    sampler = Sampler(engine, rules)
    probe = {"body": "GET /health 200 in 7 ms", "severity_number": 9}

    _, outcome = run(sampler, [probe] * 10)
    assert outcome.kept == 0  # the pattern rule (0.0) beats the severity rate (0.5)
    _, outcome = run(sampler, [{**probe, "attributes": {"audit": "true"}}] * 10)
    assert outcome.kept == 10 and next(iter(outcome.patterns.values())).reasons == {Reason.EXEMPT: 10}
    _, outcome = run(sampler, [{**probe, "attributes": {"route": "/pay/42"}}] * 3)
    assert outcome.kept == 3
    _, outcome = run(sampler, [probe] * 10, service="billing")
    assert outcome.kept == 10
    _, outcome = run(sampler, [probe] * 10, resource={"audit": "true"})
    assert outcome.kept == 10  # resource attributes exempt too
    _, outcome = run(sampler, [probe] * 10, service="checkout")
    assert outcome.kept == 10  # the service override comes first

    sampler.boosts.boost(noisy.id, 1.0, until=2000.0, reason="spike")
    _, outcome = run(sampler, [probe] * 10, now=1500.0)
    assert outcome.kept == 10 and next(iter(outcome.patterns.values())).reasons == {Reason.BOOST: 10}
    _, outcome = run(sampler, [probe] * 10, now=2001.0)
    assert outcome.kept == 0  # the boost expired


def test_rules_match_by_template_when_the_id_is_unknown() -> None:
    engine = PatternEngine()
    template = engine.add("session 17 expired").template
    sampler = Sampler(
        engine, policy(patterns=[{"id": "0000000000000000", "template": template, "rate": 0.0}])
    )
    _, outcome = run(sampler, [{"body": f"session {i} expired", "severity_number": 9} for i in range(5)])
    assert outcome.kept == 0


def test_throughput_cap_lowers_the_rate() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 1.0}, max_per_pattern_per_second=10))
    kept = 0
    for second in range(20):
        _, outcome = run(
            sampler, [{"body": f"tick {i}", "severity_number": 9} for i in range(100)], now=second
        )
        if second >= 5:
            kept += outcome.kept
    assert kept / 15 == pytest.approx(10, rel=0.25)


def test_policy_swap_takes_effect_on_the_next_batch() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 1.0}))
    records = [{"body": f"job {i} done", "severity_number": 9} for i in range(100)]
    assert run(sampler, records)[1].kept == 100
    sampler.set_policy(policy(severity_rates={"INFO": 0.1}))
    assert run(sampler, records)[1].kept == 10


def test_kept_records_are_annotated_and_incoming_weights_multiply() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.5}))
    records = [{"body": f"order {i} paid", "severity_number": 9} for i in range(4)]
    message = request(records)
    for record in kept_records(message):  # as if an earlier proxy had kept them at 1/4
        record.attributes.add(key=SAMPLE_RATE).value.double_value = 4.0
        record.attributes.add(key=PATTERN_ID).value.string_value = "stale"
    sampler.process(message, message.SerializeToString(), 1000.0)
    kept = kept_records(message)
    assert len(kept) == 2
    for record in kept:
        keys = [a.key for a in record.attributes]
        assert keys.count(SAMPLE_RATE) == keys.count(PATTERN_ID) == keys.count(TEMPLATE) == 1
        assert weight(record) == 8.0
        assert (
            next(a.value.string_value for a in record.attributes if a.key == TEMPLATE) == "order <NUM> paid"
        )


def test_dry_run_forwards_everything_with_zero_weight_on_would_be_drops() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.25}), dry_run=True)
    message, outcome = run(sampler, [{"body": f"poll {i} empty", "severity_number": 9} for i in range(100)])
    forwarded = kept_records(message)
    assert len(forwarded) == outcome.forwarded == 100
    assert outcome.kept == 25
    weights = [weight(r) for r in forwarded]
    assert weights.count(0.0) == 75 and sum(weights) == pytest.approx(100)


def test_invalid_ids_are_rejected_not_forwarded() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 1.0}))
    message, outcome = run(sampler, [{"body": "a", "trace_id": b"\x01" * 3}, {"body": "b"}])
    assert outcome.rejected == 1 and "trace_id" in outcome.rejection_message
    assert [r.body.string_value for r in kept_records(message)] == ["b"]


def test_fully_dropped_scopes_and_resources_are_removed() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.0}))
    message, outcome = run(sampler, [{"body": f"noise {i}", "severity_number": 9} for i in range(10)])
    assert outcome.kept == 0 and outcome.forwarded == 0
    assert len(message.resource_logs) == 0


def test_reference_explains_one_record_at_a_time() -> None:
    reference = ReferenceSampler(policy(severity_rates={"INFO": 0.5}))
    payment = Record("shop", "p1", "payment <NUM> captured", INFO)
    decisions = [reference.decide(payment, 1000.0) for _ in range(4)]
    assert [(d.keep, d.count) for d in decisions] == [(True, 1), (False, 0), (True, 2), (False, 0)]
    assert decisions[2] == Decision(
        True, 0.5, Reason.SAMPLED, "p1", "payment <NUM> captured", RateSource(RateKind.SEVERITY), 2
    )
    assert decisions[1] == Decision(
        False, 0.5, Reason.DROPPED, "p1", "payment <NUM> captured", RateSource(RateKind.SEVERITY)
    )
    assert reference.unaccounted == 1  # the last drop waits for the next kept record
    failed = reference.decide(Record("shop", "p2", "payment <NUM> failed", ERROR), 1000.0)
    assert (failed.reason, failed.rule, failed.count) == (Reason.SEVERITY, PROTECTED, 1)


def test_non_string_bodies_get_patterns_too() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 1.0}))
    message = request([])
    records = message.resource_logs[0].scope_logs[0].log_records
    structured = records.add(severity_number=9)
    entry = structured.body.kvlist_value.values.add(key="msg")
    entry.value.string_value = "user 5 signed up"
    records.add(severity_number=9).body.bytes_value = b"\x00\x01\x02"
    records.add(severity_number=9)  # no body at all
    outcome = sampler.process(message, b"", 1000.0)
    assert outcome.kept == 3 and len(outcome.patterns) == 3


def test_bytes_in_and_kept_are_measured_before_annotation() -> None:
    sampler = Sampler(PatternEngine(), policy(severity_rates={"INFO": 0.5}))
    message = request([{"body": f"upload {i} done", "severity_number": 9} for i in range(10)])
    raw = message.SerializeToString()
    outcome = sampler.process(message, raw, 1000.0, wire_size=len(raw))
    unannotated = ExportLogsServiceRequest()
    unannotated.CopyFrom(message)
    for record in kept_records(unannotated):
        take_prior_weight(record)  # strips the proxy's attributes
    assert outcome.bytes["api"] == [len(raw), unannotated.resource_logs[0].ByteSize()]

    two = request([{"body": "a 1", "severity_number": 17}], service="x")
    two.resource_logs.extend(request([{"body": "b 2", "severity_number": 17}], service="y").resource_logs)
    sizes = [resource_logs.ByteSize() for resource_logs in two.resource_logs]
    outcome = sampler.process(two, two.SerializeToString(), 1000.0, wire_size=two.ByteSize())
    assert outcome.bytes == {"x": [sizes[0], sizes[0]], "y": [sizes[1], sizes[1]]}  # ERRORs: all kept
