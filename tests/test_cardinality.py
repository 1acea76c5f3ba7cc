"""Unbounded label values cannot grow the proxy: 1,000,000 distinct patterns, services and attribute
values through the real pipeline keep memory and the number of Prometheus series bounded, with
everything past the top N counted as "other"."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import ProxyConfig
from lipservice_proxy.sampling.decision import BatchOutcome, PatternTally
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.service import Proxy, settle_heap
from lipservice_proxy.telemetry import OTHER, Telemetry

RECORDS = 1_000_000  # about 100 s of CPU: `pytest -m "not slow"` skips it
BATCH = 2_000
MIB = 1 << 20


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / MIB


def series_by_family(telemetry: Telemetry) -> Counter[str]:
    """Exposed series per metric family (a counter's `_created` twin not counted)."""
    return Counter(
        family.name
        for family in telemetry.registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    )


def test_pattern_series_are_bounded_as_pairs_not_as_a_cross_product() -> None:
    telemetry = Telemetry(max_services=10, max_patterns=20)
    outcome = BatchOutcome()
    for service in range(101):
        for pattern in range(100):
            key = (f"svc-{service}", f"{pattern:016x}", "INFO")
            outcome.patterns[key] = PatternTally(
                "t", received=2, kept=1, reasons={"sampled": 1, "dropped": 1}
            )
    # the labelled children are kept between batches: the second and third must add to the same series
    for _ in range(3):
        telemetry.observe_outcome(outcome)
    series = telemetry.pattern_records.collect()[0].samples
    labels = {(s.labels["service"], s.labels["pattern"]) for s in series if s.name.endswith("_total")}
    assert len(labels) <= 20 + 10 + 1  # named pairs, plus one "other" per service label
    assert (OTHER, OTHER) in labels
    total = sum(s.value for s in series if s.name.endswith("_total"))
    assert total == 3 * 101 * 100 * 2  # bounded, and still adds up


@contextmanager
def settled_heap() -> Iterator[None]:
    """The collector settings `run` applies once started (service.settle_heap), undone afterwards."""
    thresholds = gc.get_threshold()
    settle_heap()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def distinct_request(start: int, count: int) -> ExportLogsServiceRequest:
    """`count` records, each with its own service, its own pattern and its own attribute value."""
    request = ExportLogsServiceRequest()
    for index in range(start, start + count):
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = f"svc-{index}"
        record = resource_logs.scope_logs.add().log_records.add()
        record.severity_number = 9  # type: ignore[assignment]
        # a map body is patterned by its key set: a new key is a new pattern, without mining cost
        record.body.kvlist_value.values.add(key=f"field_{index:x}").value.int_value = index
        record.attributes.add(key="tenant").value.string_value = f"tenant-{index}"
    return request


@pytest.mark.slow
def test_a_million_distinct_patterns_services_and_values_keep_memory_and_series_bounded() -> None:
    config = ProxyConfig.model_validate(
        {
            "receivers": {"grpc": {"enabled": False}, "http": {"enabled": False}},
            "admin": {"enabled": False},
            "analysis": {"enabled": False},
            "memory_limiter": {"enabled": False},  # the test measures memory; it must not be refused
            "exporters": [],
            "sampler": {"policy_file": "/nonexistent/policy.yaml"},
        }
    )
    proxy = Proxy(config)
    # exempt one tenant out of a million distinct values: the exemption walk runs on every record
    exempt = {"attribute": "tenant", "equals": "tenant-7"}
    proxy.sampler.set_policy(
        Policy.model_validate({**proxy.sampler.policy.model_dump(), "exemptions": [exempt]})
    )
    quarter = RECORDS // 4  # every cap is reached by then: growth after it would be a leak
    memory: dict[str, float] = {}

    async def drive() -> None:
        for start in range(0, RECORDS, BATCH):
            request = distinct_request(start, min(BATCH, RECORDS - start))
            await proxy.pipeline.consume(request, request.SerializeToString())
            if start + BATCH >= quarter and "quarter" not in memory:
                memory["quarter"] = resident_mib()
        memory["end"] = resident_mib()

    with settled_heap():
        asyncio.run(drive())
    growth = memory["end"] - memory["quarter"]
    families = series_by_family(proxy.telemetry)
    print(
        f"\n{RECORDS:,} distinct patterns/services/values: RSS {memory['quarter']:.0f} MiB after "
        f"{quarter:,}, {memory['end']:.0f} MiB after {RECORDS:,}; "
        f"{sum(families.values())} series in all; {dict(families.most_common(4))}"
    )
    assert proxy.timeline.totals().received == RECORDS
    assert growth < 64, f"resident memory grew {growth:.0f} MiB after the first quarter"

    telemetry = proxy.telemetry
    services, patterns = telemetry.services._capacity, telemetry.patterns._capacity
    assert families["lipservice_log_records_received"] <= (services + 1) * 6
    assert families["lipservice_log_bytes_received"] <= services + 1
    assert families["lipservice_pattern_records"] <= (patterns + services + 1) * 6
    assert sum(families.values()) < 5_000
    exposition = proxy.metrics_text()
    assert b'service="other"' in exposition and b'pattern="other"' in exposition

    # and every structure that remembers patterns, services or values stayed within its cap
    assert proxy.sampler._n_states <= 100_000 + BATCH  # halved once a batch leaves it past max_states
    assert len(proxy.stats) <= 20_000
    engine = proxy.engine.stats()
    assert engine.templates <= config.patterns.max_templates
    assert engine.cache_entries <= config.patterns.cache_size
    timeline = proxy.timeline
    assert len(timeline._totals) <= timeline.capacity and len(timeline._volume) <= timeline._volume.capacity
    assert all(len(minute.patterns) <= timeline.max_patterns for minute in timeline._volume)
    assert all(len(minute.services) <= timeline.max_services + 1 for minute in timeline._volume)
