"""The clustering child: the same answer as in-process clustering, and never started when it would
not fit under the container's memory limit (read from real cgroup v1 and v2 file layouts)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lipservice_proxy.analysis.clustering import (
    CHILD_MEMORY_BYTES,
    ClusteringSkipped,
    cluster_in_child,
    cluster_templates,
)
from lipservice_proxy.analysis.loop import RunResult
from lipservice_proxy.analysis.offline import analyze_records
from lipservice_proxy.config import AnalysisConfig
from lipservice_proxy.memlimit import cgroup_headroom
from lipservice_proxy.replay import InputRecord
from lipservice_proxy.sampling.policy import Policy

MIB = 1024 * 1024
SSH = [
    "Accepted password for <*> from <IP> port <NUM> ssh2",
    "Accepted publickey for <*> from <IP> port <NUM> ssh2",
    "Failed password for invalid user <*> from <IP> port <NUM> ssh2",
    "Failed password for <*> from <IP> port <NUM> ssh2",
    "Connection closed by <IP> [preauth]",
]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "headroom"),
    [
        (  # the working set: usage minus inactive file cache, as the kubelet counts it
            {
                "memory.max": f"{256 * MIB}\n",
                "memory.current": f"{200 * MIB}\n",
                "memory.stat": f"anon {150 * MIB}\nfile {50 * MIB}\ninactive_file {20 * MIB}\n",
            },
            256 * MIB - (200 - 20) * MIB,
        ),
        (
            {
                "memory/memory.limit_in_bytes": f"{512 * MIB}\n",
                "memory/memory.usage_in_bytes": f"{300 * MIB}\n",
                "memory/memory.stat": f"inactive_file 0\ntotal_inactive_file {40 * MIB}\n",
            },
            512 * MIB - (300 - 40) * MIB,
        ),
    ],
    ids=["v2", "v1"],
)
def test_headroom_is_the_limit_minus_the_working_set(
    tmp_path: Path, files: dict[str, str], headroom: int
) -> None:
    assert cgroup_headroom(write(tmp_path, files)) == headroom


@pytest.mark.parametrize(
    "files",
    [
        {"memory.max": "max\n", "memory.current": "1000\n", "memory.stat": "inactive_file 0\n"},
        {
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/memory.usage_in_bytes": "1000\n",
            "memory/memory.stat": "total_inactive_file 0\n",
        },
        {"memory.max": "not a number\n", "memory.current": "1000\n", "memory.stat": ""},
        {},
    ],
    ids=["v2-unlimited", "v1-unlimited", "garbage", "no-cgroup"],
)
def test_no_limit_means_no_headroom_figure(tmp_path: Path, files: dict[str, str]) -> None:
    assert cgroup_headroom(write(tmp_path, files)) is None


def test_child_answers_as_in_process_clustering() -> None:
    assert asyncio.run(cluster_in_child(SSH, headroom=None)) == cluster_templates(SSH)
    assert asyncio.run(cluster_in_child(SSH, headroom=CHILD_MEMORY_BYTES)) == cluster_templates(SSH)


def test_child_is_not_started_without_room_for_it() -> None:
    with pytest.raises(ClusteringSkipped, match=r"clustering skipped: 100 MiB left"):
        asyncio.run(cluster_in_child(SSH, headroom=100 * MIB))


def test_analysis_pass_without_room_treats_every_template_as_its_own_family(
    caplog: pytest.LogCaptureFixture,
) -> None:
    statements = (
        "Connection from 10.0.{n}.7 port {port} closed by remote host after session timeout for user root",
        "Connection from 10.0.{n}.7 port {port} reset by remote host after session timeout for user root",
        "Disk quota exceeded on volume {n} while writing block {port}",
    )
    records = [
        InputRecord(
            record=LogRecord(body=AnyValue(string_value=text.format(n=n, port=4000 + n)), severity_number=9),
            service="app",
            timestamp=float(n),
        )
        for n in range(40)
        for text in statements
    ]

    def run(headroom: int | None) -> RunResult:
        return asyncio.run(
            analyze_records(
                records, Policy(), AnalysisConfig(), output=None, memory_headroom=lambda: headroom
            )
        )

    roomy = run(None)
    assert (roomy.families, roomy.noise) == (2, 1)  # the two connection statements are one family
    with caplog.at_level(logging.WARNING, logger="lipservice_proxy.analysis.loop"):
        tight = run(100 * MIB)
    assert tight.outcome == roomy.outcome and tight.policy is not None
    assert tight.families == tight.noise == 3  # singletons: every template its own family
    assert any("clustering skipped: 100 MiB left" in r.getMessage() for r in caplog.records)
