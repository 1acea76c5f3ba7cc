"""A restarted analyzer remembers what it knew: its known patterns and baselines, from the state
file it writes beside the generated policy, so no known pattern is news after a restart.

Before the restart the proxy sees four Loghub systems over two passes. After it (a new Proxy on the
same config, the pattern engine starting cold as it does without `patterns.state_file`), one
system arrives per pass: each system's patterns reach the stats after the first pass of the new
process, so a forgetful analyzer would flag every one of them as new and boost it. A line of a
kind never seen is still news.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from lipservice_proxy.analysis.anomalies import NEW_PATTERN
from lipservice_proxy.analysis.state import FORMAT, state_path

from .test_analysis_llm import loghub_batch, metric, run, running_proxy, send

SYSTEMS = ("HDFS", "OpenSSH", "Hadoop", "HealthApp")


def test_a_restart_flags_no_known_pattern_as_new(tmp_path: Path) -> None:
    systems = SYSTEMS

    async def scenario() -> None:
        start = time.time()
        async with running_proxy(tmp_path, {"interval": "5m"}) as proxy:
            for number in range(2):
                for system in systems:
                    await send(proxy, loghub_batch(system, 1000), service=system.lower())
                await proxy.analysis.run_once(start + number)
            known = {(e.service, e.pattern_id) for e in proxy.stats.entries()}
        path = state_path(tmp_path / "generated" / "policy.yaml")
        document = orjson.loads(path.read_bytes())
        assert document["format"] == FORMAT and len(document["patterns"]) == len(known) > 50

        async with running_proxy(tmp_path, {"interval": "5m"}) as proxy:
            assert {(e.service, e.pattern_id) for e in proxy.stats.entries()} == known
            flagged = []
            for number, system in enumerate(systems, 2):
                await send(proxy, loghub_batch(system, 1000), service=system.lower())
                result = await proxy.analysis.run_once(start + number)
                flagged += [a for a in result.anomalies if a.kind == NEW_PATTERN]
            assert flagged == []
            assert metric(proxy, "lipservice_anomalies_total", kind=NEW_PATTERN) == 0

            await send(
                proxy, [("kernel watchdog tripped on spindle motor controller", "WARN")], service="linux"
            )
            result = await proxy.analysis.run_once(start + 10)
            assert [a.kind for a in result.anomalies] == [NEW_PATTERN]  # still news

    run(scenario)


def test_an_unreadable_state_file_is_logged_and_ignored(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = state_path(tmp_path / "generated" / "policy.yaml")
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"format": "lipservice-analysis-state", "version": 1, "patterns": [[1, 2]]')

    async def scenario() -> None:
        async with running_proxy(tmp_path, {"interval": "5m"}) as proxy:
            assert len(proxy.stats) == 0
            await send(proxy, loghub_batch("HDFS", 200))
            await proxy.analysis.run_once(time.time())
        assert len(orjson.loads(path.read_bytes())["patterns"]) > 0  # replaced by good state

    run(scenario)
    assert "unreadable" in caplog.text


def test_a_loop_that_is_off_neither_restores_nor_writes_state(tmp_path: Path) -> None:
    """With `analysis.enabled: false` (the demo's setting) the stats start empty and stay this run's."""

    async def scenario() -> None:
        async with running_proxy(tmp_path, {"interval": "5m"}) as proxy:
            await send(proxy, loghub_batch("HDFS", 500))
        path = state_path(tmp_path / "generated" / "policy.yaml")
        written = path.read_bytes()  # the loop that was on saved its state at shutdown
        async with running_proxy(tmp_path, {"enabled": False}) as proxy:
            await send(proxy, loghub_batch("HDFS", 500))
            assert sum(entry.received for entry in proxy.stats.entries()) == 500
        assert path.read_bytes() == written

    run(scenario)
