"""Exact counts through the running proxy: what the sink sums is what was sent, to the record."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lipservice_proxy.sampling.annotate import COUNT, PATTERN_ID, SAMPLE_RATE, SUMMARY

from .support.loghub import iter_lines
from .support.proxy import ProxyProcess, ProxyThread, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import LogEntry, SinkThread
from .support.waiting import wait_until

CYCLED_LEVELS = ("TRACE", "DEBUG", "INFO")  # OpenSSH has no level column: spread it over the low rates


@pytest.fixture
def sink() -> Any:
    with SinkThread() as running:
        yield running


def workload() -> dict[str, list[dict[str, str]]]:
    """Two services, every record with a body and a level: HDFS with its own, OpenSSH cycled."""
    hdfs = [{"body": line.content, "severity": line.level or "INFO"} for line in iter_lines("HDFS")]
    openssh = [
        {"body": line.content, "severity": CYCLED_LEVELS[index % 3]}
        for index, line in enumerate(iter_lines("OpenSSH"))
    ]
    return {"hdfs": hdfs, "openssh": openssh}


def scraped(admin_url: str) -> list[Any]:
    with urllib.request.urlopen(admin_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_sum(samples: list[Any], name: str) -> float:
    return sum(sample.value for sample in samples if sample.name == name)


def attributes(entry: LogEntry) -> dict[str, Any]:
    return {a.key: a.value for a in entry.record.attributes}


def service(entry: LogEntry) -> str:
    return next(a.value.string_value for a in entry.resource.attributes if a.key == "service.name")


def counts_at_sink(entries: list[LogEntry]) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Sums of lipservice.count per (service, severity) and per (service, pattern id)."""
    by_severity: Counter[tuple[str, str]] = Counter()
    by_pattern: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        values = attributes(entry)
        count = values[COUNT].int_value
        by_severity[(service(entry), entry.record.severity_text)] += count
        by_pattern[(service(entry), values[PATTERN_ID].string_value)] += count
    return by_severity, by_pattern


def test_counts_at_the_sink_add_up_exactly_after_sigterm(tmp_path: Path, sink: SinkThread) -> None:
    policy_path = tmp_path / "policy.yaml"  # the default rates; one window, so tails wait for shutdown
    policy_path.write_text("version: 2\nfirst_per_window: {count: 1, window: 10000h}\n")
    config = {
        "sampler": {"policy_file": str(policy_path)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    records = workload()
    sent = Counter((name, spec["severity"]) for name, specs in records.items() for spec in specs)
    total = sum(sent.values())

    with ProxyProcess(config, tmp_path) as proxy:
        for name, specs in records.items():
            with sdk_logger(proxy.grpc_endpoint, service=name) as logger:
                emit(logger, specs)
        wait_until(
            lambda: metric_sum(scraped(proxy.admin_url), "lipservice_log_records_received_total") == total,
            30,
            what="every record at the proxy",
        )
        samples = scraped(proxy.admin_url)
        kept = metric_sum(samples, "lipservice_log_records_kept_total")
        open_tails = metric_sum(samples, "lipservice_log_records_unaccounted")
        received_per_pattern = Counter()
        for sample in samples:
            if sample.name == "lipservice_pattern_records_total":
                received_per_pattern[(sample.labels["service"], sample.labels["pattern"])] += int(
                    sample.value
                )
        before = sink.wait_for_records(int(kept), timeout=30)
        # before shutdown the sums fall short by exactly the open tails /metrics shows
        assert sum(counts_at_sink(before)[0].values()) + open_tails == total
        assert 0 < open_tails < total and kept < total / 2
        assert proxy.terminate() == 0

    entries = sink.sink.log_records()
    summaries = [entry for entry in entries if SUMMARY in attributes(entry)]
    assert len(entries) == kept + len(summaries)
    assert sum(attributes(entry)[COUNT].int_value for entry in summaries) == open_tails
    assert all(SAMPLE_RATE not in attributes(entry) for entry in summaries)
    by_severity, by_pattern = counts_at_sink(entries)
    assert by_severity == sent
    assert "other" not in {pattern for _, pattern in received_per_pattern}
    assert by_pattern == received_per_pattern
    # the estimates they replace are off where rates are low
    estimated: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        if SAMPLE_RATE in attributes(entry):
            estimated[(service(entry), entry.record.severity_text)] += attributes(entry)[
                SAMPLE_RATE
            ].double_value
    assert estimated[("openssh", "TRACE")] != sent[("openssh", "TRACE")]


def test_summaries_leave_when_their_window_ends_without_a_shutdown(tmp_path: Path, sink: SinkThread) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(
        "version: 2\nseverity_rates: {INFO: 0.1}\nfirst_per_window: {count: 0, window: 1s}\n"
    )
    config = {
        "sampler": {"policy_file": str(policy_path)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config) as proxy:
        with sdk_logger(proxy.grpc_endpoint, service="jobs") as logger:
            emit(logger, ({"body": f"job {i} finished", "severity": "INFO"} for i in range(97)))

        def counted() -> int:
            return sum(attributes(entry)[COUNT].int_value for entry in sink.sink.log_records())

        wait_until(lambda: counted() == 97, 15, what="every record counted at the sink")
        wait_until(lambda: proxy.metric("lipservice_log_records_unaccounted") == 0, 5, what="no open tail")
        summaries = sum(SUMMARY in attributes(entry) for entry in sink.sink.log_records())
        assert summaries > 0
        # what the sink holds besides the kept records, as the benchmark's delivery check expects it
        assert proxy.metric("lipservice_log_tail_records_total") == summaries
        kept = metric_sum(scraped(proxy.admin_url), "lipservice_log_records_kept_total")
        assert kept + summaries == len(sink.sink.log_records())


def test_with_summaries_off_the_tail_is_reported_at_shutdown(tmp_path: Path, sink: SinkThread) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(
        "version: 2\nseverity_rates: {INFO: 0.1}\nfirst_per_window: {count: 0, window: 1s}\n"
    )
    config = {
        "sampler": {"policy_file": str(policy_path), "summaries": False},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, service="jobs") as logger:
            emit(logger, ({"body": f"job {i} finished", "severity": "INFO"} for i in range(97)))
        wait_until(
            lambda: metric_sum(scraped(proxy.admin_url), "lipservice_log_records_received_total") == 97,
            15,
            what="every record at the proxy",
        )
        samples = scraped(proxy.admin_url)
        kept = metric_sum(samples, "lipservice_log_records_kept_total")
        open_tail = metric_sum(samples, "lipservice_log_records_unaccounted")
        sink.wait_for_records(int(kept))
        assert proxy.terminate() == 0
    entries = sink.sink.log_records()
    assert all(SUMMARY not in attributes(entry) for entry in entries) and len(entries) == kept
    assert sum(attributes(entry)[COUNT].int_value for entry in entries) + open_tail == 97 and open_tail > 0
    message = f"{open_tail:g} dropped records left without a lipservice.count (sampler.summaries is off)"
    assert any(line.get("msg") == message for line in proxy.log_lines)
