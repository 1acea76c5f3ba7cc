"""A loghub system replayed through a running proxy, then a burst and a new error pattern.

Each analysis interval is one pass over HDFS's 2,000 lines (five "minutes" of 400 lines). After
three quiet intervals, one pattern runs at 20x for one of the five minutes and an unseen ERROR
pattern appears. The pass that closes that interval must flag both, boost both in the running
sampler, count them in `lipservice_anomalies_total` and show them in `/api/v1/patterns`. Passes run
at a controlled clock (the interval end times), so nothing waits for the interval timer.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .test_analysis_llm import admin_json, loghub_batch, metric, run, running_proxy, send

INTERVAL = 300.0
MINUTE_LINES = 400
NEW_ERROR = "DataNode volume /data/disk7 failed: read-only file system, giving up on block blk_<NUM>"


async def anomaly_counts(port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "lipservice_anomalies":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["kind"]] = sample.value
    return counts


def test_a_burst_and_a_new_error_pattern_are_detected_boosted_and_shown(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_proxy(tmp_path, {"interval": "5m"}) as proxy:
            lines = loghub_batch("HDFS", 2000)
            start = time.time()
            for number in range(1, 4):
                await send(proxy, lines)
                quiet = await proxy.analysis.run_once(start + number * INTERVAL)
                assert quiet.anomalies == ()  # a steady replay raises nothing

            # a pattern with a few records a minute: x20 must stand out, and tiny ones must not fire
            candidates = sorted(
                (
                    e
                    for e in proxy.stats.entries()
                    if 10 <= e.last_interval <= 100 and e.counts[2] == e.received
                ),
                key=lambda e: (e.last_interval, e.pattern_id),
            )
            bursting = candidates[0]
            bursting_lines = [line for line in lines if proxy.engine.match(line[0]).id == bursting.pattern_id]
            per_minute = max(1, len(bursting_lines) // 5)

            await send(proxy, lines[: 4 * MINUTE_LINES])  # four ordinary minutes
            await send(proxy, lines[4 * MINUTE_LINES :])  # the fifth minute, with the burst on top
            await send(proxy, (bursting_lines * 20)[: 19 * per_minute])
            await send(proxy, [(NEW_ERROR.replace("<NUM>", str(n)), "ERROR") for n in range(6)])
            result = await proxy.analysis.run_once(start + 4 * INTERVAL)

            new_error = proxy.engine.match(NEW_ERROR.replace("<NUM>", "1"))
            assert new_error is not None
            found = {(a.kind, pid) for a in result.anomalies for pid in a.pattern_ids}
            assert ("spike", bursting.pattern_id) in found
            assert ("new_pattern", new_error.id) in found
            assert {kind for kind, _ in found} <= {"spike", "new_pattern"}

            boosts = {b.pattern_id: b for b in proxy.sampler.boosts.active(time.time())}
            assert boosts[bursting.pattern_id].rate == 1.0
            assert boosts[bursting.pattern_id].reason.startswith("spike")
            assert boosts[new_error.id].reason.startswith("new_pattern")

            counts = await anomaly_counts(proxy.ports["admin"])
            assert counts["spike"] >= 1 and counts["new_pattern"] >= 1

            view = await admin_json(proxy, "/api/v1/patterns?limit=1000")
            by_id = {p["id"]: p for p in view["patterns"]}
            assert by_id[bursting.pattern_id]["anomaly"] is True
            assert by_id[bursting.pattern_id]["anomaly_kind"] == "spike"
            assert (by_id[bursting.pattern_id]["rate"], by_id[bursting.pattern_id]["rule"]) == (1.0, "boost")
            assert by_id[new_error.id]["anomaly_kind"] == "new_pattern"
            assert by_id[new_error.id]["counts"] == {"ERROR": 6}
            assert {a["kind"] for a in view["anomalies"]} == {"spike", "new_pattern"}
            assert {b["pattern_id"] for b in view["boosts"]} >= {bursting.pattern_id, new_error.id}

            # the boost applies at once: every record of the bursting pattern is kept now
            before = metric(proxy, "lipservice_log_records_kept_total", service="hdfs", severity="INFO")
            await send(proxy, bursting_lines * 3)
            after = metric(proxy, "lipservice_log_records_kept_total", service="hdfs", severity="INFO")
            assert after - before == 3 * len(bursting_lines)

    run(scenario)
