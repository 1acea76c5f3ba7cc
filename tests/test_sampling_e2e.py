"""The sampler inside the running proxy: agreement with `replay`, and policy hot reload."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from lipservice_proxy.replay import read_records, replay
from lipservice_proxy.sampling.annotate import PATTERN_ID, SAMPLE_RATE
from lipservice_proxy.sampling.policy import load_policy

from .support.loghub import iter_lines
from .support.proxy import ProxyThread, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import SinkThread
from .support.waiting import wait_until

# One window for the whole test, so wall-clock time in the proxy and log time in replay agree.
POLICY = "version: 3\nfirst_per_window: {count: 1, window: 10000h}\n"


@pytest.fixture
def sink() -> Any:
    with SinkThread() as running:
        yield running


def test_sink_agrees_with_replay_on_the_same_input(tmp_path: Path, sink: SinkThread) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(POLICY)
    lines = list(iter_lines("HDFS"))
    config = {
        "sampler": {"policy_file": str(policy_path)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config) as proxy:
        with sdk_logger(proxy.grpc_endpoint, service="hdfs") as logger:
            emit(logger, ({"body": line.content, "severity": line.level} for line in lines))
        wait_until(
            lambda: (
                proxy.metric("lipservice_log_records_received_total", {"service": "hdfs", "severity": "INFO"})
                + proxy.metric(
                    "lipservice_log_records_received_total", {"service": "hdfs", "severity": "WARN"}
                )
                == len(lines)
            )
        )
        kept = proxy.metric(
            "lipservice_log_records_kept_total", {"service": "hdfs", "severity": "INFO"}
        ) + proxy.metric("lipservice_log_records_kept_total", {"service": "hdfs", "severity": "WARN"})
        received = sink.wait_for_records(int(kept))

    at_sink: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for entry in received:
        attributes = {a.key: a.value for a in entry.record.attributes}
        tally = at_sink[attributes[PATTERN_ID].string_value]
        tally[0] += 1
        tally[1] += attributes[SAMPLE_RATE].double_value

    json_lines = [
        orjson.dumps({"body": line.content, "severity": line.level, "service": "hdfs"}).decode()
        for line in lines
    ]
    report = replay(read_records(json_lines), load_policy(policy_path)).as_dict(top=10**6)
    expected = {p["id"]: [p["kept"], p["estimated"]] for p in report["patterns"] if p["kept"]}
    assert {k: [v[0], round(v[1], 2)] for k, v in at_sink.items()} == expected
    assert sum(v[0] for v in at_sink.values()) == report["total"]["kept"] < len(lines) / 2
    assert sum(v[1] for v in at_sink.values()) == pytest.approx(len(lines), rel=0.01)


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # same-second edits still count


def test_hot_reload_takes_effect_and_a_broken_edit_keeps_the_old_policy(
    tmp_path: Path, sink: SinkThread
) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text("version: 1\nfirst_per_window: {count: 0}\nseverity_rates: {INFO: 1.0}\n")
    config = {
        "sampler": {"policy_file": str(policy_path), "reload_interval": "50ms"},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }

    def send(logger: Any, tag: str) -> None:
        emit(logger, ({"body": f"{tag} job {i} finished", "severity": "INFO"} for i in range(100)))

    def kept() -> float:
        return proxy.metric("lipservice_log_records_kept_total", {"service": "checkout", "severity": "INFO"})

    with ProxyThread(config) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            send(logger, "first")
        wait_until(lambda: kept() == 100)

        _rewrite(policy_path, "version: 2\nfirst_per_window: {count: 0}\nseverity_rates: {INFO: 0.1}\n")
        wait_until(lambda: proxy.metric("lipservice_policy_version") == 2, what="the reload")
        with sdk_logger(proxy.grpc_endpoint) as logger:
            send(logger, "second")
        wait_until(
            lambda: (
                proxy.metric(
                    "lipservice_log_records_received_total", {"service": "checkout", "severity": "INFO"}
                )
                == 200
            )
        )
        assert kept() == 110

        _rewrite(policy_path, "version: 3\nseverity_rates: {INFO: 7}\n")
        wait_until(lambda: proxy.metric("lipservice_policy_reloads_total", {"outcome": "error"}) == 1)
        assert proxy.metric("lipservice_policy_version") == 2
        with sdk_logger(proxy.grpc_endpoint) as logger:
            send(logger, "third")
        wait_until(
            lambda: (
                proxy.metric(
                    "lipservice_log_records_received_total", {"service": "checkout", "severity": "INFO"}
                )
                == 300
            )
        )
        assert kept() == 120  # still 1 in 10: the last good policy
        assert proxy.running.sampler.policy.version == 2
