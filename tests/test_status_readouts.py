"""The status page's read-outs (readouts.py): projected costs from `admin.price_per_gib`, the per-service
breakdown, each pattern's kept and dropped records per minute of the last hour, and the last hour's
anomalies with their boosts. The timeline's bounded per-minute history on its own, then
`/api/v1/summary` of a real proxy on loopback fed real OTLP/HTTP requests (exact counts and bytes
where the policy makes them exact), then the page in headless Chromium (screenshot in var/screenshots/).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.analysis.anomalies import NEW_PATTERN
from lipservice_proxy.config import ProxyConfig
from lipservice_proxy.fleet.analyzer import Analyzer
from lipservice_proxy.pattern_view import iso_time
from lipservice_proxy.readouts import GIB, cost_projection
from lipservice_proxy.sampling.decision import BatchOutcome, PatternTally
from lipservice_proxy.service import Proxy
from lipservice_proxy.status_page import render_status_page
from lipservice_proxy.timeline import OTHER_SERVICES, Bucket, Timeline

from .support.proxy import loopback_config
from .support.sink import OtlpSink
from .support.waiting import async_wait_until
from .test_analysis_llm import logs_request, run
from .test_fleet_service import analyzer_config, received_by, running, sampler_config, write_policy
from .test_status_page import SCREENSHOTS, XSS_BODY, run_chromium


def batch(*tallies: tuple[str, str, str, int, int], size: dict[str, list[int]] | None = None) -> BatchOutcome:
    """An outcome of (service, pattern id, severity, received, kept) tallies."""
    outcome = BatchOutcome()
    for service, pattern_id, severity, received, kept in tallies:
        outcome.patterns[(service, pattern_id, severity)] = PatternTally(
            f"template {pattern_id}", received=received, kept=kept
        )
        totals = outcome.records.setdefault((service, severity), [0, 0])  # as the sampler sums them
        totals[0] += received
        totals[1] += kept
        outcome.received += received
        outcome.kept += kept
    outcome.bytes.update(size or {})
    return outcome


# ---- the timeline's per-minute history ----


def test_each_pattern_gets_its_kept_and_dropped_records_per_minute() -> None:
    timeline = Timeline()
    timeline.observe(batch(("web", "a", "INFO", 10, 2), ("web", "a", "WARN", 4, 4)), now=6_000.0)
    timeline.observe(batch(("web", "a", "INFO", 5, 1), ("db", "b", "ERROR", 3, 3)), now=6_059.0)
    timeline.observe(batch(("web", "a", "INFO", 7, 0)), now=6_125.0)
    starts, series = timeline.pattern_volume(now=6_130.0)
    assert len(starts) == 60 and starts[-1] == 6_120.0 and starts[-3] == 6_000.0
    web = series[("web", "a")]
    assert (web.kept[-3:], web.dropped[-3:]) == ([7, 0, 0], [12, 0, 7])
    assert sum(web.kept) == 7 and sum(web.dropped) == 19
    assert series[("db", "b")].kept[-3] == 3
    assert list(series) == [("web", "a"), ("db", "b")]  # busiest first
    _, limited = timeline.pattern_volume(now=6_130.0, limit=1)
    assert list(limited) == [("web", "a")]
    _, asked = timeline.pattern_volume(now=6_130.0, keys=[("db", "b"), ("web", "never")])
    assert list(asked) == [("db", "b")]
    _, later = timeline.pattern_volume(now=6_130.0 + 3_600.0)
    assert later == {}  # an hour later every minute held is out of the window


def test_services_sum_counts_and_bytes_over_the_last_hour_only() -> None:
    timeline = Timeline()
    timeline.observe(batch(("web", "a", "INFO", 10, 2), size={"web": [1000, 300]}), now=0.0)
    timeline.observe(batch(("web", "b", "ERROR", 1, 1), size={"web": [50, 50]}), now=3_000.0)
    timeline.observe(batch(("db", "c", "INFO", 4, 4), size={"db": [400, 400]}), now=3_500.0)
    assert timeline.services(now=3_500.0) == {"web": [11, 3, 1050, 350], "db": [4, 4, 400, 400]}
    # at 3,700 s the minute of t=0 is more than 60 minutes back
    assert timeline.services(now=3_700.0) == {"web": [1, 1, 50, 50], "db": [4, 4, 400, 400]}
    assert timeline.totals(now=3_700.0).received == 5 and timeline.totals().received == 15


def test_the_history_is_bounded_and_what_overflows_is_still_counted() -> None:
    timeline = Timeline(max_patterns=2, max_services=2)
    for minute in range(200):
        timeline.observe(
            batch(
                *((f"svc{i}", f"p{i}", "INFO", 2, 1) for i in range(5)),
                size={f"svc{i}": [10, 5] for i in range(5)},
            ),
            now=minute * 60.0,
        )
    assert len(timeline._volume) == 60 and len(timeline._totals) == 200
    assert all(len(m.patterns) == 2 and len(m.services) == 3 for m in timeline._volume)
    _, series = timeline.pattern_volume(now=199 * 60.0, limit=10)
    assert set(series) == {("svc0", "p0"), ("svc1", "p1")}
    assert timeline.untracked(now=199 * 60.0) == (3 * 60, 3 * 60)
    services = timeline.services(now=199 * 60.0)
    assert services[OTHER_SERVICES] == [6 * 60, 3 * 60, 30 * 60, 15 * 60]
    assert sum(s[0] for s in services.values()) == 10 * 60  # every record of the hour, somewhere


def test_cost_is_projected_per_day_and_per_30_day_month() -> None:
    totals = Bucket(0.0, kept=1, dropped=1, bytes_received=GIB, bytes_kept=GIB // 4)
    cost = cost_projection(totals, window=3_600.0, price_per_gib=0.5)
    assert cost["gib_per_day"] == {"received": 24.0, "kept": 6.0, "saved": 18.0}
    assert cost["per_day"] == {"received": 12.0, "kept": 3.0, "saved": 9.0}
    assert cost["per_month"] == {"received": 360.0, "kept": 90.0, "saved": 270.0}


def test_the_read_outs_escape_what_comes_from_logs() -> None:
    summary: dict[str, Any] = {
        "cost": None,
        "services": [
            {
                "service": "<svc>",
                "received": 2,
                "kept": 1,
                "dropped": 1,
                "keep_ratio": 0.5,
                "bytes_received": 10,
                "bytes_kept": 5,
                "bytes_saved": 5,
            }
        ],
        "anomalies": [
            {"kind": "spike", "service": "<svc>", "patterns": ["a"], "message": XSS_BODY, "boost": None}
        ],
    }
    page = render_status_page(
        ready=True,
        policy_view={"current": {}},
        patterns_view={"patterns": []},
        points=[Bucket(0.0)],
        totals=Bucket(0.0),
        step=5.0,
        summary=summary,
    )
    assert "<svc>" not in page and "<script" not in page and "<img" not in page
    assert "id='cost'" not in page  # no price configured: no cost section
    assert "declined" in page and "50.0%" in page


def test_the_page_lists_the_newest_anomalies_and_points_to_the_rest() -> None:
    anomalies = [
        {"kind": "spike", "service": "web", "patterns": [f"p{i}", "q", "r", "s"], "message": f"m{i}"}
        | {"boost": {"rate": 1.0, "until": "later", "running": i % 2 == 0}}
        for i in range(60)
    ]
    page = render_status_page(
        ready=True,
        policy_view={"current": {}},
        patterns_view={"patterns": []},
        points=[Bucket(0.0)],
        totals=Bucket(0.0),
        step=5.0,
        summary={"anomalies": anomalies},
    )
    table = re.search(r"<table id='anomalies'>(.*?)</table>", page)
    assert table is not None and table.group(1).count("<tr>") == 1 + 50
    assert "(last hour: 60)" in page and "10 older ones" in page
    assert "p0, q, r and 1 more" in page and "(no longer running)" in page


# ---- a real proxy ----

OPERATOR_POLICY = {  # exact outcomes: web's INFO all dropped, billing's all kept, ERROR always kept
    "version": 1,
    "generated_by": "manual",
    "severity_rates": {"INFO": 0.0, "WARN": 0.0},
    "first_per_window": {"count": 0},
    "services": {"billing": {"severity_rates": {"INFO": 1.0}}},
}


@asynccontextmanager
async def console_proxy(tmp_path: Path, **admin: Any) -> AsyncIterator[Proxy]:
    policy_file = tmp_path / "operator.yaml"
    policy_file.write_text(yaml.safe_dump(OPERATOR_POLICY))
    config = loopback_config(
        {
            "admin": admin,
            "sampler": {"policy_file": str(policy_file)},
            "exporters": [{"type": "debug", "stream": "stderr"}],
            # on, but no pass runs unless the test asks for one (so the policy stays the operator's)
            "analysis": {"enabled": True, "interval": "1h", "policy_file": str(tmp_path / "generated.yaml")},
        }
    )
    proxy = Proxy(ProxyConfig.model_validate(config), environ={})
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop(drain_seconds=2.0)


async def post(proxy: Proxy, request: ExportLogsServiceRequest) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{proxy.ports['http']}/v1/logs",
            data=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def admin_get(proxy: Proxy | Analyzer, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{proxy.ports['admin']}{path}") as response,
    ):
        return response.status, await response.read()


async def summary(proxy: Proxy | Analyzer, query: str = "") -> dict[str, Any]:
    status, body = await admin_get(proxy, "/api/v1/summary" + query)
    assert status == 200, body
    result: dict[str, Any] = orjson.loads(body)
    return result


WEB_INFO = [(f"GET /health {i}", "INFO") for i in range(300)]
WEB_ERRORS = [(f"db timeout after {i} ms", "ERROR") for i in range(5)]
BILLING = [(f"invoice {i} paid", "INFO") for i in range(40)]


def test_the_summary_counts_services_bytes_and_costs_exactly(tmp_path: Path) -> None:
    web = logs_request(WEB_INFO + WEB_ERRORS, service="web")
    billing = logs_request(BILLING, service="billing")
    web_kept = logs_request(WEB_ERRORS, service="web").resource_logs[0].ByteSize()  # what is left of it
    billing_kept = billing.resource_logs[0].ByteSize()

    async def scenario() -> None:
        async with console_proxy(tmp_path, price_per_gib=2.5) as proxy:
            started = time.time()
            await post(proxy, web)
            await post(proxy, billing)
            view = await summary(proxy)
            finished = time.time()

        totals = view["totals"]
        received = web.ByteSize() + billing.ByteSize()
        assert (totals["received"], totals["kept"], totals["dropped"]) == (345, 45, 300)
        assert (totals["bytes_received"], totals["bytes_kept"]) == (received, web_kept + billing_kept)
        by_service = {row["service"]: row for row in view["services"]}
        assert by_service["web"] == {
            "service": "web",
            "received": 305,
            "kept": 5,
            "dropped": 300,
            "keep_ratio": 5 / 305,
            "bytes_received": web.ByteSize(),
            "bytes_kept": web_kept,
            "bytes_saved": web.ByteSize() - web_kept,
        }
        assert by_service["billing"]["keep_ratio"] == 1.0
        # a one-resource request counts its wire size in (the request's few bytes of framing too)
        assert by_service["billing"]["bytes_received"] == billing.ByteSize()
        assert by_service["billing"]["bytes_kept"] == billing_kept == billing.ByteSize() - 3
        assert [row["service"] for row in view["services"]] == ["web", "billing"]  # most bytes first

        window = view["window"]["seconds"]
        assert 5.0 <= window <= finished - started + 5.0  # from the first step (5 s wide) to now
        cost = view["cost"]
        assert cost["window_seconds"] == window and cost["price_per_gib"] == 2.5
        per_day = 86_400 / window * 2.5 / GIB
        assert cost["per_day"]["received"] == pytest.approx(received * per_day, rel=1e-12)
        assert cost["per_day"]["kept"] == pytest.approx((web_kept + billing_kept) * per_day, rel=1e-12)
        assert cost["per_day"]["saved"] == pytest.approx((received - web_kept - billing_kept) * per_day)
        assert cost["per_month"]["saved"] == pytest.approx(cost["per_day"]["saved"] * 30)

    run(scenario)


def test_pattern_volume_matches_the_patterns_api(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console_proxy(tmp_path) as proxy:
            await post(proxy, logs_request(WEB_INFO + WEB_ERRORS, service="web"))
            await post(proxy, logs_request(BILLING, service="billing"))
            view = await summary(proxy, "?patterns=2")
            status, body = await admin_get(proxy, "/api/v1/patterns")
            assert status == 200
            assert (await admin_get(proxy, "/api/v1/summary?patterns=many"))[0] == 400

        assert view["cost"] is None  # no price configured
        volume = view["pattern_volume"]
        assert volume["step_seconds"] == 60.0 and volume["untracked"] == {"kept": 0, "dropped": 0}
        patterns = {(p["service"], p["id"]): p for p in orjson.loads(body)["patterns"]}
        assert len(volume["patterns"]) == 2  # the two busiest of three
        for row in volume["patterns"]:
            assert len(row["kept"]) == len(row["dropped"]) == 60
            api = patterns[(row["service"], row["id"])]
            assert (sum(row["kept"]), sum(row["kept"]) + sum(row["dropped"])) == (
                api["kept"],
                api["received"],
            )
        busiest = volume["patterns"][0]
        assert busiest["service"] == "web" and sum(busiest["dropped"]) == 300 and sum(busiest["kept"]) == 0

    run(scenario)


def test_the_last_hours_anomalies_come_with_their_boosts(tmp_path: Path) -> None:
    news = [("kernel watchdog tripped on spindle motor controller", "WARN")] * 3

    async def scenario() -> None:
        async with console_proxy(tmp_path) as proxy:
            assert proxy.analysis is not None
            await post(proxy, logs_request(WEB_INFO, service="web"))
            first = await proxy.analysis.run_once(time.time())
            assert first.anomalies == ()  # at start-up every pattern is new, and none is news
            await post(proxy, logs_request(WEB_INFO, service="web"))
            await post(proxy, logs_request(news, service="linux"))
            flagged_at = time.time()
            second = await proxy.analysis.run_once(flagged_at)
            assert [a.kind for a in second.anomalies] == [NEW_PATTERN]
            view = await summary(proxy)
            status, page = await admin_get(proxy, "/")
            assert status == 200
            assert proxy.analysis.recent_anomalies_view(window=0.0) == []  # older than no time at all

        [anomaly] = view["anomalies"]
        pattern_id = second.anomalies[0].pattern_ids[0]
        assert (anomaly["kind"], anomaly["service"], anomaly["patterns"]) == (
            NEW_PATTERN,
            "linux",
            [pattern_id],
        )
        assert anomaly["detected_at"] == iso_time(flagged_at) and anomaly["count"] == 3
        # the policy's anomaly_boost: rate 1.0 for new_pattern_duration (60 s)
        assert anomaly["boost"] == {"rate": 1.0, "until": iso_time(flagged_at + 60.0), "running": True}
        table = re.search(rb"<table id='anomalies'>(.*?)</table>", page, re.S)
        assert table is not None and b"new_pattern" in table.group(1) and b"linux" in table.group(1)
        assert b"(running)" in table.group(1) and pattern_id.encode() in table.group(1)

    run(scenario)


def test_a_fleets_analyzer_breaks_the_samplers_reports_down_by_service(tmp_path: Path) -> None:
    write_policy(tmp_path / "analyzer" / "operator.yaml", 2)

    async def scenario() -> None:
        async with (
            OtlpSink() as sink,
            running(Analyzer(analyzer_config(tmp_path / "analyzer"))) as analyzer,
        ):
            config = sampler_config(tmp_path, analyzer.ports["fleet"], sink, "s1")
            async with running(Proxy(config, role="sampler")) as sampler:
                await post(sampler, logs_request(WEB_INFO + WEB_ERRORS, service="web"))
                await post(sampler, logs_request(BILLING, service="billing"))
                await async_wait_until(lambda: received_by(analyzer) == 345, what="the sampler's report")
                local, fleet = await summary(sampler), await summary(analyzer)

        def counts(view: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
            return {
                row["service"]: (row["received"], row["kept"], row["dropped"]) for row in view["services"]
            }

        assert counts(fleet) == counts(local) and counts(local)["web"][0] == 305
        assert sum(row["bytes_received"] for row in local["services"]) > 0
        assert all(row["bytes_received"] == 0 for row in fleet["services"])  # reports carry no sizes
        assert fleet["anomalies"] == [] and local["anomalies"] == []

    run(scenario)


# ---- the page, through a real browser ----


def test_the_read_outs_in_headless_chromium(tmp_path: Path) -> None:
    news = [("kernel watchdog tripped on spindle motor controller", "ERROR")] * 3

    async def scenario() -> None:
        async with console_proxy(tmp_path, price_per_gib=0.45) as proxy:
            assert proxy.analysis is not None
            await post(proxy, logs_request(WEB_INFO + WEB_ERRORS, service="web"))
            await post(proxy, logs_request(BILLING, service="billing"))
            await proxy.analysis.run_once(time.time())
            await post(proxy, logs_request(WEB_INFO, service="web"))
            await post(proxy, logs_request(news, service="kernel"))
            await proxy.analysis.run_once(time.time())
            url = f"http://127.0.0.1:{proxy.ports['admin']}/"
            dom = (await asyncio.to_thread(run_chromium, tmp_path, "--dump-dom", url)).stdout
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOTS / "status_page_readouts.png"
            shot.unlink(missing_ok=True)
            await asyncio.to_thread(
                run_chromium, tmp_path, "--window-size=1280,2200", f"--screenshot={shot}", url
            )

        cost = re.search(r"<table id=\"cost\">(.*?)</table>", dom, re.S)
        assert cost is not None and "per month" in cost.group(1) and "saved" in cost.group(1)
        assert "at 0.45 per GiB" in dom
        services = re.search(r"<table id=\"services\">(.*?)</table>", dom, re.S)
        assert services is not None and "billing" in services.group(1) and "100.0%" in services.group(1)
        anomalies = re.search(r"<table id=\"anomalies\">(.*?)</table>", dom, re.S)
        assert (
            anomalies is not None and "new_pattern" in anomalies.group(1) and "kernel" in anomalies.group(1)
        )
        patterns = re.search(r"<table id=\"patterns\">(.*?)</table>", dom, re.S)
        assert patterns is not None
        rows = patterns.group(1).count("<tr>") - 1
        assert rows >= 3 and patterns.group(1).count('<svg class="spark"') == rows
        assert re.search(r'<svg class="spark"[^>]*>.*?<polygon class="dropped"[^>]*points="[0-9., ]+"', dom)
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1280, 2200)
        print(f"\nstatus page read-outs screenshot: {shot}")

    run(scenario)
