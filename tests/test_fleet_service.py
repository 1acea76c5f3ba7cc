"""An analyzer and samplers in one event loop, over real gRPC on loopback: the policy and the boosts
reach every sampler, reports add up on the analyzer, an absent analyzer costs reports (counted) but
never the policy, and bad input or a missing token gets a clear refusal."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import ProxyConfig, RetrySettings, load_config
from lipservice_proxy.errors import ConfigError
from lipservice_proxy.exporters.retry import Backoff
from lipservice_proxy.fleet import client as fleet_client
from lipservice_proxy.fleet import policy_pb2 as pb
from lipservice_proxy.fleet.analyzer import Analyzer
from lipservice_proxy.fleet.client import reconnect_delay
from lipservice_proxy.fleet.server import REPORT_METHOD, WATCH_METHOD
from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.service import Proxy

from .support.otlp_samples import log_request
from .support.proxy import loopback_config
from .support.sink import OtlpSink
from .support.waiting import async_wait_until

S = TypeVar("S", Analyzer, Proxy)
FAST = {"report_interval": "100ms", "reconnect_interval": "50ms", "max_reconnect_interval": "200ms"}


def write_policy(path: Path, version: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"version: {version}\ngenerated_by: manual\n")
    return path


def analyzer_config(directory: Path, *, port: int = 0, **fleet: Any) -> ProxyConfig:
    return ProxyConfig.model_validate(
        loopback_config(
            {
                "fleet": {"listen": f"127.0.0.1:{port}", **fleet},
                "sampler": {"policy_file": str(directory / "operator.yaml"), "reload_interval": "50ms"},
                "analysis": {"policy_file": str(directory / "generated.yaml")},
            }
        )
    )


def sampler_config(
    directory: Path, analyzer_port: int, sink: OtlpSink, sampler_id: str, **fleet: Any
) -> ProxyConfig:
    directory = directory / sampler_id
    write_policy(directory / "operator.yaml", 1)
    return ProxyConfig.model_validate(
        loopback_config(
            {
                "fleet": {
                    "analyzer": f"127.0.0.1:{analyzer_port}",
                    "sampler_id": sampler_id,
                    **FAST,
                    **fleet,
                },
                "sampler": {"policy_file": str(directory / "operator.yaml")},
                "exporters": [{"type": "otlp_grpc", "endpoint": f"http://{sink.grpc_endpoint}"}],
            }
        )
    )


@asynccontextmanager
async def running(service: S) -> AsyncIterator[S]:
    await service.start()
    try:
        yield service
    finally:
        await service.stop(drain_seconds=2.0)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


async def send(proxy: Proxy, records: int, seed: int = 0) -> None:
    await post(proxy, log_request("HDFS", records, seed=seed).SerializeToString())


async def send_lines(proxy: Proxy, bodies: list[str]) -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for body in bodies:
        records.add(severity_text="INFO", severity_number=9).body.string_value = body
    await post(proxy, request.SerializeToString())


async def post(proxy: Proxy, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{proxy.ports['http']}/v1/logs",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


def received_by(analyzer: Analyzer) -> int:
    return sum(entry.received for entry in analyzer.stats.entries())


def metric(of: Analyzer | Proxy, name: str, **labels: str) -> float:
    return of.telemetry.registry.get_sample_value(name, labels) or 0.0


def total(of: Analyzer | Proxy, name: str) -> float:
    """A metric summed over all its label values."""
    return sum(
        s.value for family in of.telemetry.registry.collect() for s in family.samples if s.name == name
    )


def test_policy_and_boosts_reach_every_sampler_and_reports_add_up(tmp_path: Path) -> None:
    operator = write_policy(tmp_path / "analyzer" / "operator.yaml", 2)

    async def scenario() -> None:
        async with (
            OtlpSink() as sink,
            running(Analyzer(analyzer_config(tmp_path / "analyzer"))) as analyzer,
        ):
            port = analyzer.ports["fleet"]
            async with (
                running(Proxy(sampler_config(tmp_path, port, sink, "s1"), role="sampler")) as s1,
                running(Proxy(sampler_config(tmp_path, port, sink, "s2"), role="sampler")) as s2,
            ):
                for sampler in (s1, s2):  # the analyzer's policy beats the local v1 before any record
                    assert sampler.sampler.policy.version == 2
                    assert sampler.policy_store.source == f"analyzer 127.0.0.1:{port}"
                    assert sampler.policy_view()["fleet"]["connected"] is True
                assert metric(analyzer, "lipservice_fleet_samplers") == 2

                await send(s1, 300, seed=1)
                await send(s2, 200, seed=2)
                await send_lines(s2, ["checkout 7 finished in 42 ms", "checkout 9 finished in 8 ms"])
                await async_wait_until(lambda: received_by(analyzer) == 502, what="both samplers' reports")
                # a template only s2 learned reaches the analyzer under the id its first line mints anywhere
                (only_s2,) = [e for e in analyzer.stats.entries() if e.template.startswith("checkout")]
                minted = PatternEngine().add("checkout 7 finished in 42 ms").id
                assert only_s2.pattern_id == minted and only_s2.received == 2
                roster = {entry["sampler_id"]: entry for entry in analyzer.fleet_view()["samplers"]}
                assert {
                    k: (v["records"], v["connected"], v["policy_version"]) for k, v in roster.items()
                } == {
                    "s1": (300, True, 2),
                    "s2": (202, True, 2),
                }
                kept = sum(total(s, "lipservice_log_records_kept_total") for s in (s1, s2))
                assert sum(entry.kept for entry in analyzer.stats.entries()) == kept
                assert metric(analyzer, "lipservice_fleet_reported_records_total", kind="pattern") == 502

                boosted = next(iter(analyzer.stats.entries())).pattern_id
                analyzer.feed.boosts.boost(boosted, 1.0, time.time() + 60, "spike: test")
                await async_wait_until(
                    lambda: all(s.sampler.boosts.rate(boosted, time.time()) == 1.0 for s in (s1, s2)),
                    what="the boost on every sampler",
                )

                write_policy(operator, 3)
                await async_wait_until(
                    lambda: [s.sampler.policy.version for s in (s1, s2)] == [3, 3],
                    what="version 3 everywhere",
                )
                assert metric(s1, "lipservice_policy_version") == 3

    run(scenario)


def test_without_the_analyzer_samplers_keep_its_policy_and_resend_the_reports_it_missed(
    tmp_path: Path,
) -> None:
    write_policy(tmp_path / "analyzer" / "operator.yaml", 4)

    async def scenario() -> None:
        async with OtlpSink() as sink:
            first = Analyzer(analyzer_config(tmp_path / "analyzer"))
            await first.start()
            port = first.ports["fleet"]
            async with running(Proxy(sampler_config(tmp_path, port, sink, "s1"), role="sampler")) as sampler:
                assert sampler.sampler.policy.version == 4
                await first.stop(drain_seconds=1.0)
                await async_wait_until(lambda: sampler.fleet is not None and not sampler.fleet.connected)
                assert metric(sampler, "lipservice_fleet_connected") == 0

                await send(sampler, 100)
                await sink.wait_for_records(1)
                await async_wait_until(
                    lambda: sampler.fleet is not None and sampler.fleet.status()["reports_pending"] >= 2,
                    what="reports kept for resending while the channel backs off",
                )
                assert sampler.sampler.policy.version == 4  # the last policy received, not the local v1

                async with running(Analyzer(analyzer_config(tmp_path / "analyzer", port=port))) as second:
                    await async_wait_until(lambda: sampler.fleet is not None and sampler.fleet.connected)
                    await send(sampler, 50, seed=3)
                    # the 100 records reported while the analyzer was away arrive too
                    await async_wait_until(
                        lambda: received_by(second) == 150, what="the new analyzer's stats"
                    )
                    assert sampler.fleet is not None and sampler.fleet.status()["reports_pending"] == 0
                    assert metric(sampler, "lipservice_fleet_reports_sent_total", outcome="failed") == 0
                    roster = {entry["sampler_id"]: entry for entry in second.fleet_view()["samplers"]}
                    assert roster["s1"]["missed_reports"] == 0

    run(scenario)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_reports_pending_past_the_bound_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_client, "MAX_PENDING_REPORTS", 3)

    async def scenario() -> None:
        async with OtlpSink() as sink:
            port = unused_port()  # no analyzer there: every report fails
            async with running(Proxy(sampler_config(tmp_path, port, sink, "s1"), role="sampler")) as sampler:
                await send(sampler, 100)
                await async_wait_until(
                    lambda: metric(sampler, "lipservice_fleet_reports_sent_total", outcome="failed") >= 2,
                    what="the oldest pending reports dropped and counted",
                )
                assert sampler.fleet is not None and sampler.fleet.status()["reports_pending"] <= 3

    run(scenario)


def test_reconnect_jitter_never_waits_past_the_maximum() -> None:
    settings = RetrySettings(initial_interval=0.5, max_interval=10.0, multiplier=2.0)
    highest = Backoff(settings, rng=lambda: 0.999)  # the top of the jitter range, every time
    waits = [reconnect_delay(highest, 10.0) for _ in range(12)]
    assert max(waits) == 10.0 and waits[0] > 0.5  # jittered up, but capped


def test_admin_views_of_a_sampler_and_the_analyzer(tmp_path: Path) -> None:
    write_policy(tmp_path / "analyzer" / "operator.yaml", 2)

    async def get(service: Analyzer | Proxy, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{service.ports['admin']}{path}") as response,
        ):
            return response.status, await response.text()

    async def scenario() -> None:
        async with (
            OtlpSink() as sink,
            running(Analyzer(analyzer_config(tmp_path / "analyzer"))) as analyzer,
            running(
                Proxy(
                    sampler_config(tmp_path, analyzer.ports["fleet"], sink, "s1", report_interval="1h"),
                    role="sampler",
                )
            ) as sampler,
        ):
            await async_wait_until(lambda: "s1" in analyzer.book, what="the sampler's first report")
            await send(sampler, 300)
            view = sampler.patterns_view(5)  # its open window: nothing reported yet
            assert view["total_patterns"] > 5 and view["fleet"]["sampler_id"] == "s1"
            for pattern in view["patterns"]:
                rates, sources = sampler.sampler.resolve(
                    pattern["service"], pattern["id"], pattern["template"]
                )
                level = max(
                    range(4), key=lambda n: pattern["counts"].get(["TRACE", "DEBUG", "INFO", "WARN"][n], 0)
                )
                assert (pattern["rate"], pattern["rule"]) == (rates[level], sources[level].label)
            assert sum(p["received"] for p in sampler.patterns_view(1000)["patterns"]) == 300
            # a boost from the analyzer shows as what it is: the pattern kept at the boost's rate
            boosted = view["patterns"][0]["id"]
            analyzer.feed.boosts.boost(boosted, 1.0, time.time() + 60, "spike: test")
            await async_wait_until(
                lambda: sampler.sampler.boosts.rate(boosted, time.time()) == 1.0,
                what="the boost on the sampler",
            )
            shown = next(p for p in sampler.patterns_view(5)["patterns"] if p["id"] == boosted)
            assert (shown["rate"], shown["rule"]) == (1.0, "boost")
            assert [b["pattern_id"] for b in sampler.patterns_view(5)["boosts"]] == [boosted]
            for service in (sampler, analyzer):
                status, page = await get(service, "/")
                assert status == 200 and "Policy in force" in page
            status, fleet = await get(analyzer, "/api/v1/fleet")
            assert status == 200 and '"sampler_id":"s1"' in fleet

    run(scenario)


@pytest.mark.parametrize("wrong", [None, "not-it"], ids=["no-token", "wrong-token"])
def test_the_analyzer_requires_its_token_when_it_has_one(tmp_path: Path, wrong: str | None) -> None:
    write_policy(tmp_path / "analyzer" / "operator.yaml", 2)
    auth = {"auth": {"bearer_token_env": "FLEET_TOKEN"}}

    async def scenario() -> None:
        config = analyzer_config(tmp_path / "analyzer", **auth)
        async with (
            OtlpSink() as sink,
            running(Analyzer(config, environ={"FLEET_TOKEN": "s3cret"})) as analyzer,
        ):
            port = analyzer.ports["fleet"]
            good = Proxy(
                sampler_config(tmp_path, port, sink, "good", **auth),
                role="sampler",
                environ={"FLEET_TOKEN": "s3cret"},
            )
            bad_auth = auth if wrong else {}
            bad = Proxy(
                sampler_config(tmp_path, port, sink, "bad", **bad_auth),
                role="sampler",
                environ={"FLEET_TOKEN": wrong or ""},
            )
            async with running(good), running(bad):
                assert good.sampler.policy.version == 2 and bad.sampler.policy.version == 1
                assert bad.fleet is not None and bad.fleet.last_error.startswith("UNAUTHENTICATED")
                await async_wait_until(
                    lambda: metric(bad, "lipservice_fleet_reports_sent_total", outcome="failed") >= 1
                )
                assert (
                    metric(analyzer, "lipservice_fleet_reports_received_total", outcome="unauthenticated")
                    >= 1
                )
                assert "good" in analyzer.book and "bad" not in analyzer.book

    run(scenario)


async def raw_call(port: int, method: str, body: bytes, *, stream: bool = False) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            if stream:
                async for _ in channel.unary_stream(method)(body, timeout=5):
                    pass
            else:
                await channel.unary_unary(method)(body, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error
    raise AssertionError(f"{method} accepted {body!r}")


def test_bad_messages_get_invalid_argument_naming_the_problem(tmp_path: Path) -> None:
    write_policy(tmp_path / "operator.yaml", 1)
    bad_counts = pb.ReportPatternsRequest(
        sampler_id="s1",
        patterns=[pb.PatternCount(service="a", pattern_id="p1", counts=pb.SeverityCounts(received=[1, 2]))],
    )

    async def scenario() -> None:
        async with running(Analyzer(analyzer_config(tmp_path))) as analyzer:
            port = analyzer.ports["fleet"]
            errors = [
                await raw_call(port, REPORT_METHOD, b"\xff\xff garbage"),
                await raw_call(port, REPORT_METHOD, bad_counts.SerializeToString()),
                await raw_call(port, WATCH_METHOD, b"\xff\xff garbage", stream=True),
            ]
            assert [e.code() for e in errors] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
            assert errors[0].details().startswith("not a lipservice.v1.ReportPatternsRequest")
            assert errors[1].details().startswith("patterns[0]: received and kept need 6 counts each (TRACE,")
            assert errors[2].details().startswith("not a lipservice.v1.WatchPolicyRequest")
            assert metric(analyzer, "lipservice_fleet_reports_received_total", outcome="invalid") == 2
            assert len(analyzer.stats) == 0

    run(scenario)


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        ({"analyzer": "no-port"}, "fleet.analyzer: 'no-port' is not host:port"),
        (
            {"reconnect_interval": "5s", "max_reconnect_interval": "1s"},
            "must not exceed max_reconnect_interval",
        ),
        ({"report_interval": 0}, "fleet.report_interval: must be positive"),
        (
            {"max_patterns_per_report": 0},
            "fleet.max_patterns_per_report: Input should be greater than or equal to 1",
        ),
    ],
)
def test_fleet_settings_are_validated(tmp_path: Path, fleet: Mapping[str, Any], message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"fleet": dict(fleet)}))
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_a_sampler_without_an_analyzer_address_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("fleet.analyzer: a sampler needs the analyzer's host:port")
    ):
        Proxy(ProxyConfig.model_validate(loopback_config({})), role="sampler")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--workers", "2", "--role", "analyzer"],
            "cannot be combined with --role sampler or --role analyzer",
        ),
        (["--role", "sampler"], "fleet.analyzer: a sampler needs the analyzer's host:port"),
        (["--workers", "0"], "must be a positive integer"),
    ],
)
def test_run_refuses_bad_role_and_worker_arguments(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(loopback_config({})))
    result = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", "config.yaml", *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
