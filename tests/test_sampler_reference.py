"""Property: the batched sampler and the per-record reference agree on every decision and count.

Random streams of requests (two services, four patterns, every level, some trace ids, some
exempt records, a clock that may jump back) under random policies (rates, first-per-window,
windows, throughput caps, a service override, an anomaly boost), swapped between requests, go
through `Sampler.process` and `ReferenceSampler.decide` record by record. Both must keep the same
records at the same rates with the same `lipservice.count`, close the same tails at the same
times, and, once every tail is closed, add up to exactly the records sent per key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.sampling.annotate import COUNT, PATTERN_ID, SAMPLE_RATE
from lipservice_proxy.sampling.boosts import BoostTable
from lipservice_proxy.sampling.counting import SEVERITY_NUMBERS
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.reference import Record, ReferenceSampler
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.severity import SEVERITY_NAMES

SHAPES = ("alpha job {} finished", "beta cache {} missed", "gamma user {} logged in", "delta disk {} full")
SERVICES = ("api", "db")
RATES = (0.0, 0.01, 0.1, 0.25, 1 / 3, 0.5, 1.0)
TRACES = [bytes([n]) * 9 + bytes([n * 7 % 256, 3, n, 200, 17, n, 5]) for n in range(1, 40)]


@st.composite
def policies(draw: Any) -> Policy:
    rates = {name: draw(st.sampled_from(RATES)) for name in SEVERITY_NAMES[:4]}
    spec: dict[str, Any] = {
        "severity_rates": rates,
        "first_per_window": {"count": draw(st.integers(0, 3)), "window": draw(st.sampled_from([1, 5, 60]))},
        "max_per_pattern_per_second": draw(st.sampled_from([None, 2.0, 50.0])),
        "exemptions": [{"attribute": "audit", "equals": "true"}],
    }
    if draw(st.booleans()):
        spec["services"] = {"db": {"severity_rates": {"INFO": draw(st.sampled_from(RATES))}}}
    return Policy.model_validate(spec)


@dataclass(frozen=True)
class Spec:
    service: int
    shape: int
    level: int
    trace: int | None
    exempt: bool


specs = st.builds(
    Spec,
    service=st.integers(0, 1),
    shape=st.sampled_from([0, 0, 1, 2, 3]),
    level=st.sampled_from([2, 2, 2, 1, 0, 3, 4, 5]),  # INFO most: long runs of one key
    trace=st.one_of(st.none(), st.integers(0, len(TRACES) - 1)),
    exempt=st.integers(0, 9).map(lambda n: n == 0),
)
steps = st.tuples(
    st.sampled_from([0.0, 0.3, 1.0, 4.0, 70.0, -30.0]),  # the clock's step before the request
    st.lists(st.tuples(specs, st.integers(1, 15)), max_size=10),  # runs of one key
    st.one_of(st.none(), policies()),  # a policy swap before the request
    st.booleans(),  # close the due tails after the request
)


def learned_engine() -> tuple[PatternEngine, list[tuple[str, str]]]:
    engine = PatternEngine()
    patterns = [engine.add_many([shape.format(n) for n in (1, 22, 333)])[-1] for shape in SHAPES]
    return engine, [(pattern.id, pattern.template) for pattern in patterns]


def as_request(batch: list[tuple[int, Spec]]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for service_index, service in enumerate(SERVICES):
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = service
        records = resource_logs.scope_logs.add().log_records
        for seq, spec in batch:
            if spec.service != service_index:
                continue
            record = records.add(severity_number=SEVERITY_NUMBERS[spec.level])  # type: ignore[arg-type]
            record.body.string_value = SHAPES[spec.shape].format(seq)
            if spec.trace is not None:
                record.trace_id = TRACES[spec.trace]
            record.attributes.add(key="seq").value.int_value = seq
            if spec.exempt:
                record.attributes.add(key="audit").value.string_value = "true"
    return request


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first_policy=policies(),
    stream=st.lists(steps, min_size=1, max_size=10),
    keep_min=st.sampled_from(["WARN", "ERROR", "FATAL"]),
    boost=st.sampled_from([None, 0.0, 0.5, 1.0]),
    dry_run=st.booleans(),
)
def test_the_sampler_and_the_reference_agree(
    first_policy: Policy, stream: list[Any], keep_min: str, boost: float | None, dry_run: bool
) -> None:
    engine, patterns = learned_engine()
    boosts, reference_boosts = BoostTable(), BoostTable()
    if boost is not None:  # on the first pattern, for the first 5 seconds of the stream
        for table in (boosts, reference_boosts):
            table.boost(patterns[0][0], boost, until=1000.0 + 5.0, reason="test")
    sampler = Sampler(engine, first_policy, always_keep_min_severity=keep_min, dry_run=dry_run, boosts=boosts)
    reference = ReferenceSampler(first_policy, always_keep_min_severity=keep_min, boosts=reference_boosts)
    now, seq = 1000.0, 0
    sent: Counter[tuple[str, str, int]] = Counter()
    counted: Counter[tuple[str, str, int]] = Counter()

    for step, runs, new_policy, close in stream:
        now += step
        batch_specs = [
            Spec(
                spec.service,
                spec.shape,
                spec.level,
                None if spec.trace is None else (spec.trace + k) % 39,
                spec.exempt,
            )
            for spec, length in runs
            for k in range(length)
        ]
        if new_policy is not None:
            sampler.set_policy(new_policy)
            reference.set_policy(new_policy)
        batch = list(enumerate(batch_specs, start=seq))
        seq += len(batch)
        request = as_request(batch)
        sampler.process(request, request.SerializeToString(), now)

        forwarded = {}
        for resource_logs in request.resource_logs:
            for record in resource_logs.scope_logs[0].log_records:
                attributes = {a.key: a.value for a in record.attributes}
                forwarded[attributes["seq"].int_value] = attributes
        expected = {}
        for service_index in range(len(SERVICES)):  # in the request's order: service by service
            for index, spec in batch:
                if spec.service != service_index:
                    continue
                pattern_id, template = patterns[spec.shape]
                trace_id = TRACES[spec.trace] if spec.trace is not None else b""
                record = Record(
                    SERVICES[service_index], pattern_id, template, spec.level, trace_id, spec.exempt
                )
                expected[index] = reference.decide(record, now)
                sent[(record.service, pattern_id, spec.level)] += 1

        for index, decision in expected.items():
            attributes = forwarded.get(index)
            kept = attributes is not None and attributes[COUNT].int_value > 0
            assert kept == decision.keep, (index, decision)
            if dry_run:
                assert attributes is not None
            if kept:
                assert attributes is not None
                assert attributes[COUNT].int_value == decision.count, (index, decision)
                assert attributes[SAMPLE_RATE].double_value == 1.0 / decision.rate
                assert attributes[PATTERN_ID].string_value == decision.pattern_id
                spec = batch[index - batch[0][0]][1]
                counted[(SERVICES[spec.service], decision.pattern_id, spec.level)] += decision.count
        assert sampler.unaccounted == reference.unaccounted

        if close:
            closed = {(t.service, t.pattern_id, t.level): t.count for t in sampler.close_tails(now)}
            assert closed == reference.close_tails(now)
            counted.update(closed)

    closed = {(t.service, t.pattern_id, t.level): t.count for t in sampler.close_tails(now, everything=True)}
    assert closed == reference.close_tails(now, everything=True)
    counted.update(closed)
    assert counted == sent
    assert sampler.unaccounted == 0
