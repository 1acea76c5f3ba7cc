"""Proposals (`analysis.mode: propose`): a real proxy records them instead of writing its policy; the
admin API and the status page's forms apply or reject them; applying goes through the guardrails
and writes the policy as the loop does; the projected keep ratio is what the sampler then keeps."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from lipservice_proxy.analysis.projection import project
from lipservice_proxy.analysis.proposals import ProposalBook, proposals_path
from lipservice_proxy.analysis.stats import PatternWindow
from lipservice_proxy.cli import main
from lipservice_proxy.config import ProxyConfig
from lipservice_proxy.fleet.analyzer import Analyzer
from lipservice_proxy.sampling.policy import FirstPerWindow, PatternRule, Policy
from lipservice_proxy.service import Proxy

from .support.fake_llm import FakeLlm
from .support.loghub import available_systems
from .support.otlp_samples import SEVERITY_NUMBERS, attribute, loghub_lines
from .support.proxy import ProxyThread, loopback_config, sink_exporter
from .support.sink import OtlpSink, SinkThread
from .support.waiting import async_wait_until, wait_until
from .test_analysis_llm import MODEL, halve_every_pattern, llm_settings, loghub_batch, running_proxy
from .test_analysis_llm import send as send_lines

SYSTEMS = ("HDFS", "Apache", "Proxifier", "OpenSSH")  # few templates each: first-per-window stays small
TOKEN = "s3cret-admin-token"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
needs_loghub = pytest.mark.skipif(
    not set(SYSTEMS) <= set(available_systems()), reason="needs the shared loghub files"
)


def stream(repeat: int = 2, per_request: int = 500) -> list[bytes]:
    """The Loghub lines of SYSTEMS, one service each, `repeat` times over, without trace ids (the
    sampler's systematic coin), as OTLP/protobuf request bodies."""
    records: list[tuple[str, str, str]] = []
    for _ in range(repeat):
        for system in SYSTEMS:
            records += [
                (system.lower(), line.content, (line.level or "INFO").upper())
                for line in loghub_lines(system)
            ]
    bodies = []
    for start in range(0, len(records), per_request):
        request = ExportLogsServiceRequest()
        scopes: dict[str, Any] = {}
        for service, content, level in records[start : start + per_request]:
            if service not in scopes:
                resource_logs = request.resource_logs.add()
                resource_logs.resource.attributes.append(attribute("service.name", service))
                scopes[service] = resource_logs.scope_logs.add()
            record = scopes[service].log_records.add(
                severity_number=SEVERITY_NUMBERS.get(level, 9),  # type: ignore[arg-type]
                severity_text=level,
                body=AnyValue(string_value=content),
            )
            record.time_unix_nano = time.time_ns()
        bodies.append(request.SerializeToString())
    return bodies


def post(url: str, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers or {}))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def get_json(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def totals(proxy: ProxyThread) -> tuple[int, int]:
    bucket = proxy.call(lambda: proxy.running.timeline.totals())
    return bucket.received, bucket.kept


def send(proxy: ProxyThread, bodies: list[bytes]) -> int:
    """Send `bodies`, wait until the proxy counted them; the records received in all."""
    before = totals(proxy)[0]
    for body in bodies:
        status, _, _ = post(proxy.http_url + "/v1/logs", body, {"Content-Type": "application/x-protobuf"})
        assert status == 200
    sent = sum(len(rl.scope_logs[0].log_records) for b in bodies for rl in _parsed(b).resource_logs)
    wait_until(lambda: totals(proxy)[0] >= before + sent, timeout=60, what="every record counted")
    return sent


def _parsed(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    return request


def analyse(proxy: ProxyThread) -> Any:
    loop = proxy.running.analysis
    assert loop is not None
    return proxy._run(loop.run_once(time.time()), timeout=120)


def config(tmp_path: Path, sink: SinkThread, **admin: Any) -> dict[str, Any]:
    operator = tmp_path / "operator.yaml"
    if not operator.exists():
        operator.write_text(yaml.safe_dump({"version": 1, "generated_by": "manual"}))
    return {
        "sampler": {"policy_file": str(operator)},
        "analysis": {
            "enabled": True,
            "mode": "propose",
            "interval": "1h",  # passes run when the test says
            "target_keep_ratio": 0.1,
            "policy_file": str(tmp_path / "generated.yaml"),
        },
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
        "admin": {"endpoint": "127.0.0.1:0", **admin},
    }


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.fixture
def proposing(tmp_path: Path, sink: SinkThread) -> Iterator[ProxyThread]:
    with ProxyThread(config(tmp_path, sink)) as proxy:
        send(proxy, stream(repeat=1))
        assert analyse(proxy).message.startswith("proposed ")
        yield proxy


def proposals(proxy: ProxyThread, headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    status, body = get_json(proxy.admin_url + "/api/v1/proposals", headers)
    assert status == 200, body
    return body["proposals"]


def policy(proxy: ProxyThread) -> dict[str, Any]:
    status, body = get_json(proxy.admin_url + "/api/v1/policy")
    assert status == 200
    return body["current"]


# ---- the projection, pure ----


def window(pattern_id: str, counts: tuple[int, ...], nbytes: int, service: str = "svc") -> PatternWindow:
    return PatternWindow(service, pattern_id, f"template {pattern_id}", counts, 0, nbytes, 0.0, 0.0, 0, False)


def test_the_projection_keeps_errors_firsts_and_the_rate_of_the_rest() -> None:
    candidate = Policy(
        severity_rates={"TRACE": 0.0, "DEBUG": 0.0, "INFO": 0.5, "WARN": 1.0},
        patterns=[PatternRule(id="a", rate=0.1)],
        first_per_window=FirstPerWindow(count=2, window=60),
    )
    windows = [
        window("a", (0, 0, 1002, 0, 10, 0), 10_120),  # 2 firsts, then 1000 at 0.1, 10 ERROR
        window("b", (0, 100, 0, 0, 0, 0), 1_000),  # 2 firsts, then 98 at DEBUG's 0.0
        window("c", (0, 0, 0, 0, 0, 5), 500),  # FATAL only
    ]
    projected = project(candidate, windows, duration=120.0)  # two windows: up to 4 firsts each
    assert projected.received == (0, 100, 1002, 0, 10, 5)
    assert projected.kept == pytest.approx((0, 4, 4 + 99.8, 0, 10, 5))
    assert projected.records_kept == pytest.approx(122.8)
    assert projected.first_per_window == 8
    kept_bytes = 10_120 * (4 + 99.8 + 10) / 1012 + 1_000 * 4 / 100 + 500
    assert projected.bytes_saved_ratio == pytest.approx(1 - kept_bytes / 11_620)
    view = projected.as_dict()
    assert view["error_and_above_kept"] == 15 and view["per_severity"]["INFO"] == {
        "received": 1002,
        "kept": 104,
    }


def test_the_throughput_cap_bounds_the_projection() -> None:
    capped = Policy(
        severity_rates={"INFO": 1.0}, max_per_pattern_per_second=1.0, first_per_window=FirstPerWindow(count=0)
    )
    projected = project(capped, [window("a", (0, 0, 1000, 0, 0, 0), 1000)], duration=100.0)
    assert projected.records_kept == pytest.approx(100.0)


def test_an_unreadable_proposals_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = proposals_path(tmp_path / "generated.yaml")
    path.write_bytes(b"{not json")
    assert ProposalBook(path).all() == []
    assert "unreadable" in caplog.text


# ---- the API ----


@needs_loghub
def test_propose_mode_records_a_proposal_and_leaves_the_policy_in_force(
    proposing: ProxyThread, tmp_path: Path
) -> None:
    [proposal] = proposals(proposing)
    assert proposal["status"] == "open" and proposal["id"].startswith("prop-")
    assert proposal["generated_by"] == "heuristic" and "Guardrails:" in proposal["reasoning"]
    assert {"records_received", "records_kept", "keep_ratio", "bytes_saved_ratio"} <= set(
        proposal["projected"]
    )
    assert proposal["projected"]["records_received"] == 8000
    assert proposal["projected"]["keep_ratio"] < proposal["in_force"]["keep_ratio"]
    assert 0 < proposal["projected"]["bytes_saved_ratio"] < 1
    assert (
        proposal["projected"]["error_and_above_kept"]
        == proposal["projected"]["per_severity"]["ERROR"]["received"]
    )
    change = proposal["changes"][0]
    assert set(change) == {"pattern_id", "template", "from_rate", "to_rate", "reason"}
    assert all(c["from_rate"] != c["to_rate"] for c in proposal["changes"])
    assert policy(proposing)["version"] == 1  # the operator's, untouched
    assert not (tmp_path / "generated.yaml").exists()
    assert proposing.metric("lipservice_analysis_runs_total", {"outcome": "heuristic"}) == 1


@needs_loghub
def test_apply_writes_the_policy_through_the_guardrails_and_names_who(
    proposing: ProxyThread, tmp_path: Path
) -> None:
    [proposal] = proposals(proposing)
    url = f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}/apply"
    status, body, _ = post(url, orjson.dumps({"by": "alice"}), {"Content-Type": "application/json"})
    assert status == 200, body
    applied = orjson.loads(body)["proposal"]
    assert applied["status"] == "applied" and applied["decided_by"] == "alice (API)"
    assert applied["policy_version"] == 2
    current = policy(proposing)
    assert current["version"] == 2 and current["generated_by"] == "heuristic"
    assert current["reasoning"].startswith(
        f"Proposal {proposal['id']} of {proposal['created_at']}, applied by alice (API) at "
    )
    rates = {rule["id"]: rule["rate"] for rule in current["patterns"]}
    assert all(rates[c["pattern_id"]] == c["to_rate"] for c in proposal["changes"])
    assert (tmp_path / "generated.yaml").exists()
    assert post(url, b"")[0] == 409  # applied: no longer open
    assert proposals(proposing)[0]["status"] == "applied"
    assert proposing.metric("lipservice_proposals_total", {"event": "applied"}) == 1


@needs_loghub
def test_reject_leaves_the_policy_and_closes_the_proposal(proposing: ProxyThread) -> None:
    [proposal] = proposals(proposing)
    base = f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}"
    status, body, _ = post(base + "/reject", b"")
    assert status == 200 and orjson.loads(body)["proposal"]["decided_by"] == "admin (API)"
    assert proposals(proposing)[0]["status"] == "rejected"
    assert proposing.metric("lipservice_proposals_total", {"event": "rejected"}) == 1
    assert post(base + "/apply", b"")[0] == 409
    assert post(base + "/reject", b"")[0] == 409
    assert policy(proposing)["version"] == 1


@needs_loghub
def test_a_new_proposal_supersedes_the_open_one(proposing: ProxyThread) -> None:
    [first] = proposals(proposing)
    send(proposing, stream(repeat=1))
    assert analyse(proposing).message.startswith("proposed ")
    second, older = proposals(proposing)
    assert older["id"] == first["id"] and older["status"] == "superseded"
    assert older["decided_by"] == second["id"]
    assert second["status"] == "open"
    assert proposing.metric("lipservice_proposals_total", {"event": "proposed"}) == 2
    assert proposing.metric("lipservice_proposals_total", {"event": "superseded"}) == 1
    assert post(f"{proposing.admin_url}/api/v1/proposals/{first['id']}/apply", b"")[0] == 409


@needs_loghub
def test_a_stale_id_is_404_and_a_bad_body_400(proposing: ProxyThread) -> None:
    status, body, _ = post(proposing.admin_url + "/api/v1/proposals/prop-000000000000/apply", b"")
    assert status == 404 and "no proposal" in orjson.loads(body)["error"]
    assert get_json(proposing.admin_url + "/api/v1/proposals/prop-000000000000")[0] == 404
    [proposal] = proposals(proposing)
    assert post(f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}/apply", b"{oops")[0] == 400
    assert proposals(proposing)[0]["status"] == "open"


@needs_loghub
def test_a_policy_that_cannot_be_written_is_a_retryable_503_and_the_proposal_stays_open(
    proposing: ProxyThread, tmp_path: Path
) -> None:
    (tmp_path / "generated.yaml").mkdir()  # the policy file's place is taken: no write can succeed
    [proposal] = proposals(proposing)
    status, body, _ = post(f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}/apply", b"")
    answer = orjson.loads(body)
    assert status == 503 and answer["retryable"] is True and "stays open" in answer["error"]
    assert proposals(proposing)[0]["status"] == "open" and policy(proposing)["version"] == 1
    (tmp_path / "generated.yaml").rmdir()
    assert post(f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}/apply", b"")[0] == 200


@needs_loghub
def test_a_guardrail_still_holds_when_a_proposal_is_applied(proposing: ProxyThread) -> None:
    [proposal] = proposals(proposing)
    lowered = next(c for c in proposal["changes"] if c["to_rate"] < c["from_rate"])
    # an anomaly boost starts on that pattern after the proposal was made: it must not be lowered now
    proposing.call(
        proposing.running.sampler.boosts.boost, lowered["pattern_id"], 1.0, time.time() + 600, "spike (test)"
    )
    status, body, _ = post(f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}/apply", b"")
    assert status == 200, body
    rules = {rule["id"]: rule for rule in policy(proposing)["patterns"]}
    assert rules[lowered["pattern_id"]]["rate"] == lowered["from_rate"]
    assert "held: its anomaly boost is active" in rules[lowered["pattern_id"]]["reason"]
    assert policy(proposing)["severity_rates"]["ERROR"] == 1.0


@needs_loghub
def test_proposals_survive_a_restart(tmp_path: Path, sink: SinkThread) -> None:
    with ProxyThread(config(tmp_path, sink)) as proxy:
        send(proxy, stream(repeat=1))
        analyse(proxy)
        [before] = proposals(proxy)
    with ProxyThread(config(tmp_path, sink)) as proxy:
        assert proposals(proxy) == [before]
        status, body, _ = post(f"{proxy.admin_url}/api/v1/proposals/{before['id']}/apply", b"")
        assert status == 200, body
        assert policy(proxy)["version"] == 2


# ---- the status page's forms ----


def form_post(
    proxy: ProxyThread, proposal_id: str, action: str, headers: Mapping[str, str], **fields: str
) -> tuple[int, bytes, Any]:
    body = urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    return post(f"{proxy.admin_url}/proposals/{proposal_id}/{action}", body, headers)


@needs_loghub
def test_a_forged_cross_origin_form_post_is_refused(proposing: ProxyThread) -> None:
    [proposal] = proposals(proposing)
    for forged in (
        {"Origin": "http://evil.example"},
        {"Referer": "http://evil.example/page"},
        {},
        {"Origin": "null"},
    ):
        status, body, _ = form_post(proposing, proposal["id"], "apply", forged)
        assert status == 403, (forged, body)
    # a plain form of another site can target the API too: browsers say where it came from
    api = f"{proposing.admin_url}/api/v1/proposals/{proposal['id']}/apply"
    assert post(api, b"", {"Origin": "http://evil.example"})[0] == 403
    assert proposals(proposing)[0]["status"] == "open" and policy(proposing)["version"] == 1
    status, _, headers = form_post(proposing, proposal["id"], "apply", {"Origin": proposing.admin_url})
    assert status == 303 and headers["Location"] == "/"
    assert proposals(proposing)[0]["decided_by"] == "admin (status page)"
    assert policy(proposing)["version"] == 2


@needs_loghub
def test_the_page_shows_the_open_proposal_with_its_forms(proposing: ProxyThread) -> None:
    [proposal] = proposals(proposing)
    with urllib.request.urlopen(proposing.admin_url + "/", timeout=10) as response:
        page = response.read().decode()
        csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert f"id='proposal-{proposal['id']}'" in page
    assert f"action='/proposals/{proposal['id']}/apply'" in page and "<script" not in page
    assert f"{100 * proposal['projected']['keep_ratio']:.1f}%" in page
    assert "name='token'" not in page  # no admin token configured
    assert "http-equiv='refresh'" not in page  # not under a person reading the proposal


@needs_loghub
def test_the_admin_token_guards_the_api_and_the_forms(tmp_path: Path, sink: SinkThread) -> None:
    admin = {"auth": {"bearer_token_env": "ADMIN_TOKEN"}}
    with ProxyThread(config(tmp_path, sink, **admin), environ={"ADMIN_TOKEN": TOKEN}) as proxy:
        send(proxy, stream(repeat=1))
        analyse(proxy)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert get_json(proxy.admin_url + "/api/v1/proposals")[0] == 401
        [proposal] = proposals(proxy, bearer)
        api = f"{proxy.admin_url}/api/v1/proposals/{proposal['id']}"
        assert post(api + "/reject", b"")[0] == 401
        assert post(api + "/reject", b"", {"Authorization": "Bearer wrong"})[0] == 401
        same_origin = {"Origin": proxy.admin_url}
        assert form_post(proxy, proposal["id"], "reject", same_origin)[0] == 401
        assert form_post(proxy, proposal["id"], "reject", same_origin, token="wrong")[0] == 401
        assert proposals(proxy, bearer)[0]["status"] == "open"
        with urllib.request.urlopen(urllib.request.Request(proxy.admin_url + "/", headers=bearer)) as page:
            assert "name='token'" in page.read().decode()
        status, _, _ = form_post(proxy, proposal["id"], "reject", same_origin, token=TOKEN)
        assert status == 303
        assert proposals(proxy, bearer)[0]["status"] == "rejected"


# ---- the projection against the sampler ----


@needs_loghub
def test_the_projected_keep_ratio_is_what_the_sampler_then_keeps(tmp_path: Path, sink: SinkThread) -> None:
    bodies = stream(repeat=3)
    with ProxyThread(config(tmp_path, sink)) as proxy:
        sent = send(proxy, bodies)
        first_ratio = totals(proxy)[1] / sent
        assert analyse(proxy).message.startswith("proposed ")
        [proposal] = proposals(proxy)
        assert proposal["projected"]["records_received"] == sent
        # the same arithmetic over the policy in force gives what it kept of the first replay
        assert abs(proposal["in_force"]["keep_ratio"] - first_ratio) <= 0.02, (
            proposal["in_force"],
            first_ratio,
        )
        status, body, _ = post(f"{proxy.admin_url}/api/v1/proposals/{proposal['id']}/apply", b"")
        assert status == 200, body
        assert proxy.call(lambda: proxy.running.sampler.policy.version) == 2
        received, kept = totals(proxy)
        send(proxy, bodies)  # the same stream again, under the applied policy
        received_after, kept_after = totals(proxy)
    actual = (kept_after - kept) / (received_after - received)
    projected = proposal["projected"]["keep_ratio"]
    assert abs(actual - projected) <= 0.02, (actual, projected, proposal["in_force"]["keep_ratio"])


# ---- the CLI ----


def cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "proposals", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@needs_loghub
def test_the_cli_lists_shows_and_applies_against_a_running_proxy(tmp_path: Path, sink: SinkThread) -> None:
    admin = {"auth": {"bearer_token_env": "ADMIN_TOKEN"}}
    with ProxyThread(config(tmp_path, sink, **admin), environ={"ADMIN_TOKEN": TOKEN}) as proxy:
        send(proxy, stream(repeat=1))
        analyse(proxy)
        url = ["--admin", proxy.admin_url]
        refused = cli("list", *url)
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
        token = ["--token-env", "CLI_TOKEN"]
        env = {"CLI_TOKEN": TOKEN}
        listed = cli("list", *url, *token, env=env)
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split()[:4] == ["ID", "STATUS", "CREATED", "BY"]
        proposal_id = row.split()[0]
        assert row.split()[1:2] == ["open"]
        shown = cli("show", proposal_id, *url, *token, env=env)
        assert shown.returncode == 0 and orjson.loads(shown.stdout)["id"] == proposal_id
        applied = cli("apply", proposal_id, *url, *token, "--by", "bob", env=env)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == f"{proposal_id} applied by bob (API): policy version 2 written"
        again = cli("reject", proposal_id, *url, *token, env=env)
        assert again.returncode == 1 and "HTTP 409" in again.stderr and "applied, not open" in again.stderr
        stale = cli("apply", "prop-000000000000", *url, *token, env=env)
        assert stale.returncode == 1 and "HTTP 404" in stale.stderr
        assert cli("list", *url, *token, env=env).stdout == "no proposals\n"
        everything = orjson.loads(cli("list", "--all", "--format", "json", *url, *token, env=env).stdout)
        assert [p["status"] for p in everything["proposals"]] == ["applied"]


# ---- the status page in a real browser ----


@needs_loghub
def test_a_person_applies_a_proposal_in_headless_chromium(tmp_path: Path, sink: SinkThread) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/setup.sh test installs the Debian package)")
    settings = config(tmp_path, sink)
    settings["analysis"]["interval"] = "1s"  # the loop's own timer makes the proposal
    with ProxyThread(settings) as proxy:
        send(proxy, stream(repeat=1))
        # Two passes without records after the last one arrived: the second closed its interval after
        # the first was counted, so no record is left for a later pass, and the proposal on the page
        # is the last one.
        quiet = proxy.metric("lipservice_analysis_runs_total", {"outcome": "skipped"})
        wait_until(
            lambda: (
                proxy.metric("lipservice_analysis_runs_total", {"outcome": "skipped"}) >= quiet + 2
                and proposals(proxy)
            ),
            timeout=60,
            what="a proposal, then two quiet passes",
        )
        [proposal] = [p for p in proposals(proxy) if p["status"] == "open"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.goto(proxy.admin_url + "/")
                card = page.locator(f"#proposal-{proposal['id']}")
                card.wait_for(timeout=10_000)
                saved = card.locator(".projected-bytes-saved").inner_text()
                kept = card.locator(".projected-keep-ratio").inner_text()
                assert saved == f"{100 * proposal['projected']['bytes_saved_ratio']:.1f}%"
                assert kept == f"{100 * proposal['projected']['keep_ratio']:.1f}%"
                assert float(saved.rstrip("%")) > 0
                version = page.locator("#policy tr", has_text="version").locator("td")
                assert version.inner_text() == "1"
                card.screenshot(path=str(SCREENSHOTS / "proposal.png"))
                with page.expect_navigation():
                    card.locator("button.apply").click()
                assert page.url == proxy.admin_url + "/"
                assert version.inner_text() == "2"
                assert page.locator(".proposal").count() == 0
                page.screenshot(path=str(SCREENSHOTS / "proposal_applied.png"), full_page=True)
            finally:
                browser.close()
        assert policy(proxy)["version"] == 2
        assert proposals(proxy)[0]["decided_by"] == "admin (status page)"
    assert (SCREENSHOTS / "proposal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- fleet mode ----


@needs_loghub
def test_in_a_fleet_the_analyzer_holds_the_proposals_and_samplers_get_only_applied_policies(
    tmp_path: Path,
) -> None:
    (tmp_path / "operator.yaml").write_text("version: 2\ngenerated_by: manual\n")
    analyzer_settings = ProxyConfig.model_validate(
        loopback_config(
            {
                "fleet": {"listen": "127.0.0.1:0"},
                "sampler": {"policy_file": str(tmp_path / "operator.yaml"), "reload_interval": "50ms"},
                "analysis": {
                    "enabled": True,
                    "mode": "propose",
                    "interval": "1h",
                    "policy_file": str(tmp_path / "generated.yaml"),
                },
            }
        )
    )

    async def scenario() -> None:
        async with OtlpSink() as sink:
            analyzer = Analyzer(analyzer_settings)
            await analyzer.start()
            try:
                sampler = Proxy(
                    ProxyConfig.model_validate(
                        loopback_config(
                            {
                                "fleet": {
                                    "analyzer": f"127.0.0.1:{analyzer.ports['fleet']}",
                                    "sampler_id": "s1",
                                    "report_interval": "100ms",
                                },
                                "exporters": [sink_exporter(sink.grpc_endpoint)],
                            }
                        )
                    ),
                    role="sampler",
                )
                await sampler.start()
                try:
                    await _fleet_scenario(analyzer, sampler)
                finally:
                    await sampler.shutdown(drain_seconds=2.0)
            finally:
                await analyzer.shutdown(drain_seconds=2.0)

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))


async def _fleet_scenario(analyzer: Analyzer, sampler: Proxy) -> None:
    await async_wait_until(lambda: sampler.sampler.policy.version == 2, what="the analyzer's policy")
    async with aiohttp.ClientSession() as session:
        for body in stream(repeat=1):
            url = f"http://127.0.0.1:{sampler.ports['http']}/v1/logs"
            async with session.post(
                url, data=body, headers={"Content-Type": "application/x-protobuf"}
            ) as answer:
                assert answer.status == 200
        await async_wait_until(
            lambda: sum(e.received for e in analyzer.stats.entries()) == 8000, timeout=30, what="the reports"
        )
        assert (await analyzer.analysis.run_once(time.time())).message.startswith("proposed ")
        sampler_admin = f"http://127.0.0.1:{sampler.ports['admin']}/api/v1/proposals"
        async with session.get(sampler_admin) as answer:
            assert answer.status == 404 and "analyzer" in (await answer.json())["error"]
        analyzer_admin = f"http://127.0.0.1:{analyzer.ports['admin']}/api/v1/proposals"
        async with session.get(analyzer_admin) as answer:
            answer_body = await answer.json()
            assert answer.status == 200, answer_body
            [proposal] = answer_body["proposals"]
        assert sampler.sampler.policy.version == 2  # proposed, not published
        async with session.post(f"{analyzer_admin}/{proposal['id']}/apply") as answer:
            assert answer.status == 200, await answer.text()
        await async_wait_until(lambda: sampler.sampler.policy.version == 3, what="the applied policy")
        rates = {rule.id: rule.rate for rule in sampler.sampler.policy.patterns}
        assert all(rates[c["pattern_id"]] == c["to_rate"] for c in proposal["changes"])


# ---- an LLM's proposal ----


def test_an_llm_proposal_names_its_model_and_its_severity_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeLlm(halve_every_pattern) as llm:
            analysis = {
                "enabled": True,
                "mode": "propose",
                "interval": "1h",
                "llm": llm_settings(llm.base_url),
            }
            async with running_proxy(tmp_path, analysis) as proxy:
                assert proxy.analysis is not None
                await send_lines(proxy, loghub_batch())
                result = await proxy.analysis.run_once(time.time())
                assert (result.outcome, result.written) == ("llm", False)
                [proposal] = [p.as_dict() for p in proxy.analysis.proposals.all()]
                assert proposal["generated_by"] == f"llm:{MODEL}"
                assert proposal["reasoning"].startswith("halve the noise")
                assert {"severity": "INFO", "from_rate": 0.2, "to_rate": 0.1} in proposal["severity_changes"]
                assert proxy.sampler.policy.version == 1
                applied = await proxy.analysis.apply_proposal(proposal["id"], "carol (API)")
                assert applied.policy_version == 2
                assert proxy.sampler.policy.generated_by == f"llm:{MODEL}"
                assert proxy.sampler.policy.severity_rates["INFO"] == 0.1
                assert proxy.sampler.policy.reasoning is not None
                assert "applied by carol (API)" in proxy.sampler.policy.reasoning.splitlines()[0]

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))


@needs_loghub
def test_offline_analyze_writes_its_policy_whatever_the_mode(tmp_path: Path) -> None:
    logs = tmp_path / "hdfs.log"
    logs.write_text("\n".join(line.content for line in loghub_lines("HDFS")) + "\n")
    settings = tmp_path / "config.yaml"
    settings.write_text(yaml.safe_dump({"analysis": {"mode": "propose"}}))
    output = tmp_path / "out" / "policy.yaml"
    assert main(["analyze", str(logs), "-c", str(settings), "-o", str(output)]) == 0
    assert output.exists() and not proposals_path(output).exists()
