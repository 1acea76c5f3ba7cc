"""Fleet mode as processes: one analyzer and three samplers on loopback, a scripted LLM behind them.

Traffic is split across the samplers; the analyzer sees the sum, runs one analysis with one LLM
call for all of them, and every sampler applies the resulting policy version within seconds. With
the analyzer killed, the samplers keep sampling (and exporting) with that policy; when it comes
back on the same port they reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support.fake_llm import FakeLlm, Reply, answer, user_document
from .support.otlp_samples import log_request
from .support.proxy import ProxyProcess, http_get, sink_exporter
from .support.sink import SinkThread
from .support.waiting import wait_until

SAMPLERS = 3
RECORDS_EACH = 600
ANALYSIS_INTERVAL = 15  # seconds: time for the samplers to connect and the traffic to be reported
APPLY_WITHIN = 10.0  # seconds from the analyzer's new policy to every sampler's
MODEL = "fleet-model"


class LlmThread:
    """The scripted OpenAI-compatible server on a background event loop."""

    def __init__(self) -> None:
        self.llm = FakeLlm(self._halve_every_pattern)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-llm", daemon=True)

    @staticmethod
    def _halve_every_pattern(request: dict[str, Any]) -> Reply:
        families = user_document(request)["families"]
        rates = {p["id"]: p["current_rate"] / 2 for f in families for p in f["patterns"]}
        return Reply(answer(rates, {"TRACE": 0.01, "DEBUG": 0.05, "INFO": 0.1, "WARN": 0.4}, "fleet-wide"))

    def __enter__(self) -> FakeLlm:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.llm.start(), self._loop).result(10)
        return self.llm

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.llm.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(process: ProxyProcess, path: str) -> Any:
    status, body = http_get(process.admin_url + path)
    assert status == 200, body
    return orjson.loads(body)


def metrics(process: ProxyProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(process.admin_url + "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def post_logs(process: ProxyProcess, records: int, seed: int) -> None:
    import urllib.request

    body = log_request("HDFS", records, seed=seed).SerializeToString()
    request = urllib.request.Request(
        process.http_url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def fleet_state(sampler: ProxyProcess) -> tuple[int, bool]:
    view = get_json(sampler, "/api/v1/policy")
    return view["current"]["version"], view["fleet"]["connected"]


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


def test_one_analyzer_three_samplers_one_llm_call_one_policy(tmp_path: Path, sink: SinkThread) -> None:
    operator = tmp_path / "operator.yaml"
    operator.write_text("version: 1\ngenerated_by: manual\n")
    port = free_port()
    with LlmThread() as llm:
        analyzer_config = {
            "fleet": {"listen": f"127.0.0.1:{port}"},
            "sampler": {"policy_file": str(operator)},
            "analysis": {
                "enabled": True,
                "interval": f"{ANALYSIS_INTERVAL}s",
                "policy_file": str(tmp_path / "analyzer" / "generated.yaml"),
                "llm": {"model": MODEL, "base_url": llm.base_url, "timeout": "10s", "max_retries": 0},
            },
        }

        def analyzer_process() -> ProxyProcess:
            (tmp_path / "analyzer").mkdir(exist_ok=True)
            return ProxyProcess(
                analyzer_config,
                tmp_path / "analyzer",
                {"OPENAI_API_KEY": "sk-test"},
                args=["--role", "analyzer"],
            )

        samplers = []
        for index in range(SAMPLERS):
            workdir = tmp_path / f"sampler-{index}"
            workdir.mkdir()
            config = {
                "fleet": {
                    "analyzer": f"127.0.0.1:{port}",
                    "sampler_id": f"node-{index}",
                    "report_interval": "1s",
                    "reconnect_interval": "100ms",
                    "max_reconnect_interval": "1s",
                },
                "sampler": {"policy_file": str(operator)},
                "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
            }
            samplers.append(ProxyProcess(config, workdir, args=["--role", "sampler"]))

        # The samplers first (they start on the local policy while nobody answers), so that the
        # analysis interval only has to cover connecting and reporting, not three start-ups.
        with ThreadPoolExecutor(SAMPLERS) as pool:
            list(pool.map(lambda process: process.start(), samplers))
        analyzer = analyzer_process().start()
        try:
            wait_until(lambda: all(fleet_state(s)[1] for s in samplers), 15, what="every sampler connected")
            for index, sampler in enumerate(samplers):
                post_logs(sampler, RECORDS_EACH, seed=index)

            def fleet_records() -> int:
                patterns = get_json(analyzer, "/api/v1/patterns?limit=10000")["patterns"]
                return sum(p["received"] for p in patterns)

            wait_until(lambda: fleet_records() == SAMPLERS * RECORDS_EACH, 15, what="the fleet's reports")
            assert get_json(analyzer, "/api/v1/patterns")["last_run"] is None, (
                "analysis ran before the reports"
            )
            roster = get_json(analyzer, "/api/v1/fleet")["samplers"]
            assert {s["sampler_id"]: s["records"] for s in roster} == {
                f"node-{i}": RECORDS_EACH for i in range(SAMPLERS)
            }

            wait_until(
                lambda: get_json(analyzer, "/api/v1/policy")["current"]["version"] == 2,
                ANALYSIS_INTERVAL + 30,
                what="the analyzer's first policy",
            )
            written = time.monotonic()
            wait_until(
                lambda: all(fleet_state(s)[0] == 2 for s in samplers),
                APPLY_WITHIN,
                what="version 2 on every sampler",
            )
            applied_after = time.monotonic() - written

            fleet_policy = get_json(analyzer, "/api/v1/policy")["current"]
            assert fleet_policy["generated_by"] == f"llm:{MODEL}" and fleet_policy["patterns"]
            for sampler in samplers:
                assert get_json(sampler, "/api/v1/policy")["current"] == fleet_policy
            (request,) = llm.requests  # one call for the whole fleet
            assert user_document(request)["volume_target"]["records"] == SAMPLERS * RECORDS_EACH
            analyzer_metrics = metrics(analyzer)
            assert analyzer_metrics[("lipservice_analysis_runs_total", (("outcome", "llm"),))] == 1
            assert analyzer_metrics[("lipservice_llm_requests_total", (("outcome", "success"),))] == 1
            assert analyzer_metrics[("lipservice_fleet_samplers", ())] == SAMPLERS
            assert applied_after < APPLY_WITHIN

            analyzer.kill()
            wait_until(lambda: not any(fleet_state(s)[1] for s in samplers), 10, what="samplers see it gone")
            exported = sink.sink.log_record_count
            for index, sampler in enumerate(samplers):
                post_logs(sampler, RECORDS_EACH, seed=10 + index)
            wait_until(lambda: sink.sink.log_record_count > exported, what="records still exported")
            for sampler in samplers:
                wait_until(
                    lambda s=sampler: get_json(s, "/api/v1/policy")["fleet"]["reports_pending"] > 0,
                    what="reports kept for resending",
                )
                assert fleet_state(sampler) == (2, False)  # the last policy stays in force
                assert metrics(sampler)[("lipservice_policy_version", ())] == 2

            analyzer = analyzer_process().start()  # the same port, the same policy files
            wait_until(lambda: all(fleet_state(s) == (2, True) for s in samplers), 15, what="reconnected")
            wait_until(
                lambda: (
                    sum(s["connected"] for s in get_json(analyzer, "/api/v1/fleet")["samplers"]) == SAMPLERS
                ),
                what="the analyzer sees every sampler again",
            )
            assert get_json(analyzer, "/api/v1/policy")["current"] == fleet_policy
        finally:
            exits = [
                process.terminate() for process in (*samplers, analyzer) if process.process.poll() is None
            ]
        assert exits == [0] * (SAMPLERS + 1)
