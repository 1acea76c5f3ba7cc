"""The admin status page and its data: the timeline ring, policy history, reasons, and the page itself,
rendered by a real headless Chromium against a running proxy (the screenshot lands in var/screenshots/)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from lipservice_proxy.admin import policy_history, policy_summary
from lipservice_proxy.analysis.writer import PolicyWriter
from lipservice_proxy.sampling.decision import BatchOutcome
from lipservice_proxy.sampling.policy import PatternRule, Policy
from lipservice_proxy.status_page import render_status_page
from lipservice_proxy.timeline import Bucket, Timeline

from .support.proxy import ProxyThread, http_get, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import SinkThread
from .support.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "var" / "screenshots"
XSS_BODY = 'order failed <script>document.title="pwned"</script> "><img src=x id=injected onerror=alert(1)>'
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def outcome(kept: int, dropped: int, *, rejected: int = 0, size: int = 0) -> BatchOutcome:
    result = BatchOutcome(received=kept + dropped + rejected, kept=kept, rejected=rejected)
    result.bytes["svc"] = [size, size * kept // max(kept + dropped, 1)]
    return result


# ---- the timeline ring ----


def test_timeline_buckets_counts_by_step_and_fills_idle_steps_with_zeros() -> None:
    timeline = Timeline(step=5.0, capacity=10)
    timeline.observe(outcome(3, 7, size=100), now=1000.0)
    timeline.observe(outcome(1, 1, rejected=2), now=1004.9)
    timeline.observe(outcome(5, 0), now=1020.0)
    points = timeline.points(now=1021.0, min_buckets=1)
    assert [p.start for p in points] == [1000.0, 1005.0, 1010.0, 1015.0, 1020.0]
    assert [(p.kept, p.dropped, p.rejected) for p in points] == [(4, 8, 2), *[(0, 0, 0)] * 3, (5, 0, 0)]
    assert points[0].received == 14 and points[0].bytes_received == 100 and points[0].bytes_kept == 30
    totals = timeline.totals()
    assert (totals.kept, totals.dropped, totals.received) == (9, 8, 19)


def test_timeline_holds_at_most_capacity_buckets_whatever_the_traffic() -> None:
    timeline = Timeline(step=1.0, capacity=60)
    for second in range(10_000):
        timeline.observe(outcome(1, 1), now=float(second))
    assert len(timeline._totals) == 60
    points = timeline.points(now=9_999.5)
    assert len(points) == 60 and points[0].start == 9_940.0 and points[-1].start == 9_999.0
    assert timeline.totals().received == 120  # only what the ring holds
    assert len(timeline.points(now=20_000.0)) == 60  # long idle: still one hour of (empty) steps
    assert all(p.received == 0 for p in timeline.points(now=20_000.0))


def test_a_clock_that_steps_back_adds_to_the_newest_bucket() -> None:
    timeline = Timeline(step=5.0, capacity=10)
    timeline.observe(outcome(1, 0), now=100.0)
    timeline.observe(outcome(2, 0), now=50.0)
    assert [(b.start, b.kept) for b in timeline._totals] == [(100.0, 3)]


# ---- policy history and reasons ----


def test_policy_history_lists_archived_versions_newest_first(tmp_path: Path) -> None:
    writer = PolicyWriter(tmp_path / "generated.yaml", keep=5)
    for version in (3, 4, 5):
        writer.write(
            Policy(
                version=version,
                generated_by="heuristic",
                generated_at=datetime(2026, 11, 20, 10, version, tzinfo=UTC),
                reasoning=f"pass {version}: health checks are 61% of volume",
            )
        )
    history = policy_history(writer.history_dir)
    assert [h["version"] for h in history] == [4, 3]  # version 5 is the file in force, not history
    assert history[0]["generated_by"] == "heuristic"
    assert history[0]["generated_at"] == "2026-11-20T10:04:00Z"
    assert history[0]["reasoning"] == "pass 4: health checks are 61% of volume"
    assert policy_history(tmp_path / "missing") == []


def test_policy_summary_reads_a_large_policy_quickly_and_reports_broken_files(tmp_path: Path) -> None:
    rules = [PatternRule(id=f"{i:016x}", template=f"GET /item/{i} <*>", rate=0.5) for i in range(5000)]
    path = tmp_path / "big.yaml"
    PolicyWriter(path, keep=0).write(Policy(version=9, generated_by="llm:gpt-4o-mini", patterns=rules))
    started = time.perf_counter()
    summary = policy_summary(path)
    elapsed = time.perf_counter() - started
    assert summary == {"file": "big.yaml", "version": 9, "generated_by": "llm:gpt-4o-mini"}
    assert elapsed < 2.0, f"{elapsed:.2f}s for the head of a 5000-rule policy"
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(b"version: 3\nreasoning: [unclosed\n")
    assert policy_summary(broken)["error"].startswith("unreadable")


# ---- the page ----


def render(patterns: list[dict[str, Any]], points: list[Bucket] | None = None) -> str:
    return render_status_page(
        ready=True,
        policy_view={"current": Policy(reasoning="<b>bold</b> claim").model_dump(mode="json"), "source": "x"},
        patterns_view={"patterns": patterns, "total_patterns": len(patterns)},
        points=points or [Bucket(0.0)],
        totals=Bucket(0.0, kept=1, dropped=3, bytes_received=4096, bytes_kept=1024),
        step=5.0,
        now=0.0,
    )


def test_everything_from_logs_and_policies_is_escaped() -> None:
    page = render(
        [{"id": '"><script>x</script>', "template": XSS_BODY, "service": "<svc>", "rule": "severity"}]
    )
    assert "<script" not in page and "<img" not in page and "<svc>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; claim" in page


def test_the_chart_is_stacked_kept_under_dropped_and_scaled_to_the_peak() -> None:
    points = [Bucket(0.0, kept=10, dropped=30), Bucket(5.0), Bucket(10.0, kept=20, dropped=0)]
    page = render([], points)
    chart = re.search(r"<svg id=\"kept-dropped-chart\".*?</svg>", page)
    assert chart is not None
    kept = re.search(r'class="kept"[^>]*points="([^"]+)"', chart.group(0))
    dropped = re.search(r'class="dropped"[^>]*points="([^"]+)"', chart.group(0))
    assert kept and dropped
    kept_tops = [float(pair.split(",")[1]) for pair in kept.group(1).split()[:6]]
    # top of the plot is y=10, bottom y=158: bucket 0 kept 10 of peak 40, bucket 1 empty, bucket 2 kept 20
    assert kept_tops[0] == pytest.approx(10 + 148 * 0.75, abs=0.1)
    assert kept_tops[2] == pytest.approx(158, abs=0.1)
    assert kept_tops[4] == pytest.approx(10 + 148 * 0.5, abs=0.1)
    assert ">40<" in chart.group(0)  # the peak label
    assert "No log records yet." in page


# ---- the running proxy, through a real browser ----


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (scripts/setup.sh test installs the Debian package)")
    return path


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


@pytest.fixture
def busy_proxy(tmp_path: Path) -> Iterator[ProxyThread]:
    policy_file = tmp_path / "policy.yaml"
    writer = PolicyWriter(policy_file, keep=5)
    writer.write(Policy(version=1, generated_by="heuristic", reasoning="first pass"))
    writer.write(
        Policy(
            version=2,
            generated_by="llm:gpt-4o-mini",
            reasoning="health checks are most of the volume",
            patterns=[PatternRule(id="0" * 16, template="GET /health <NUM>", rate=0.05, reason="probe")],
        )
    )
    records = [{"body": f"GET /health {i}", "severity": "INFO"} for i in range(400)]
    records += [{"body": f"user {i} logged in", "severity": "INFO"} for i in range(150)]
    records += [{"body": XSS_BODY, "severity": "WARN"} for _ in range(20)]
    with SinkThread() as sink:
        config = {  # written as the analysis loop writes, so its history/ is the one shown
            "analysis": {"policy_file": str(policy_file)},
            "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
        }
        with ProxyThread(config) as proxy:
            with sdk_logger(proxy.grpc_endpoint, service="shop") as logger:
                emit(logger, records)
            wait_until(
                lambda: proxy.call(lambda: proxy.running.timeline.totals().received) >= len(records),
                what="every record counted",
            )
            yield proxy


def test_the_status_page_in_headless_chromium(
    busy_proxy: ProxyThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = busy_proxy.admin_url + "/"
    assert http_get(url)[0] == 200
    dom = run_chromium(tmp_path, "--dump-dom", url).stdout
    assert "<title>lipservice-proxy status</title>" in dom  # the injected script did not run
    assert 'id="injected"' not in dom and "<img" not in dom
    rows = re.findall(r"<code class=\"template\">(.*?)</code>", dom)
    assert "GET /health &lt;NUM&gt;" in rows and "user &lt;NUM&gt; logged in" in rows
    assert any("document.title=" in row and "&lt;script&gt;" in row for row in rows)
    assert "<td>probe</td>" in dom  # the rule's reason
    assert "health checks are most of the volume" in dom
    history = re.search(r"<table id=\"policy-history\">(.*?)</table>", dom, re.S)
    assert history and "first pass" in history.group(1)
    assert re.search(r'<polygon class="kept"[^>]*points="[0-9., ]+"', dom)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "status_page.png"
    shot.unlink(missing_ok=True)
    run_chromium(tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1400)
    with capsys.disabled():
        print(f"\nstatus page screenshot: {shot}")


def test_the_page_and_the_api_tell_the_same_story(busy_proxy: ProxyThread) -> None:
    status, body = http_get(busy_proxy.admin_url + "/api/v1/patterns?limit=10")
    assert status == 200
    patterns = {p["template"]: p for p in orjson.loads(body)["patterns"]}
    health = patterns["GET /health <NUM>"]
    assert health["received"] == 400 and health["rule"] == "pattern" and health["reason"] == "probe"
    assert health["rate"] == 0.05 and 0 < health["kept"] < 400
    assert {"id", "template", "counts", "kept", "rate", "reason", "anomaly"} <= set(health)
    status, body = http_get(busy_proxy.admin_url + "/api/v1/policy")
    policy = orjson.loads(body)
    assert policy["current"]["version"] == 2
    assert [h["version"] for h in policy["history"]] == [1]
    status, page = http_get(busy_proxy.admin_url + "/")
    assert f">{health['kept']:,}<".encode() in page


def test_the_page_answers_with_a_policy_that_forbids_scripts(busy_proxy: ProxyThread) -> None:
    import urllib.request

    with urllib.request.urlopen(busy_proxy.admin_url + "/", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
