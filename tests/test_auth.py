"""Bearer-token auth on both receivers and the admin API (token from env or file), and no secret in
the proxy's own logs, ever: a real proxy process at debug level, with failing upstreams to make it talk."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.auth import BearerAuthenticator
from lipservice_proxy.config import BearerAuth, load_config
from lipservice_proxy.errors import ConfigError

from .support.otlp_samples import log_request
from .support.proxy import ProxyProcess, ProxyThread, http_get, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import SinkThread
from .support.waiting import wait_until

TOKEN = "s3cr3t-receiver-token-7c1f"
ADMIN_TOKEN = "s3cr3t-admin-token-90ab"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


# ---- the authenticator ----


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),  # the scheme is case-insensitive (RFC 7235)
        (f"  Bearer   {TOKEN}  ", True),
        (f"Bearer {TOKEN}".encode(), True),
        (None, False),
        ("", False),
        (TOKEN, False),
        (f"Basic {TOKEN}", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN.upper()}", False),
        ("Bearer ", False),
        (b"Bearer \xff\xfe", False),
    ],
)
def test_only_the_exact_token_is_accepted(header: str | bytes | None, accepted: bool) -> None:
    assert BearerAuthenticator(TOKEN).accepts(header) is accepted


def test_the_token_comes_from_an_environment_variable_or_a_file(tmp_path: Path) -> None:
    from_env = BearerAuthenticator.from_config(BearerAuth(bearer_token_env="MY_TOKEN"), {"MY_TOKEN": TOKEN})
    assert from_env is not None and from_env.accepts(f"Bearer {TOKEN}")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` and editors leave it
    from_file = BearerAuthenticator.from_config(BearerAuth(bearer_token_file=token_file), {})
    assert from_file is not None and from_file.accepts(f"Bearer {TOKEN}")
    assert BearerAuthenticator.from_config(None, {}) is None


def test_missing_tokens_are_clear_config_errors_that_never_echo_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MY_TOKEN is unset or empty"):
        BearerAuthenticator.from_config(BearerAuth(bearer_token_env="MY_TOKEN"), {"MY_TOKEN": "  "})
    with pytest.raises(ConfigError, match="cannot read bearer_token_file"):
        BearerAuthenticator.from_config(BearerAuth(bearer_token_file=tmp_path / "absent"), {})
    binary = tmp_path / "binary-token"
    binary.write_bytes(b"\xff" + TOKEN.encode())
    with pytest.raises(ConfigError) as error:
        BearerAuthenticator.from_config(BearerAuth(bearer_token_file=binary), {})
    assert TOKEN not in str(error.value)
    config = tmp_path / "config.yaml"
    config.write_text("receivers: {auth: {bearer_token_env: A, bearer_token_file: /x}}\n")
    with pytest.raises(ConfigError, match="not both"):
        load_config(config, {})


# ---- the running proxy ----


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.fixture(scope="module")
def guarded(sink: SinkThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    admin_token_file = tmp_path_factory.mktemp("secrets") / "admin-token"
    admin_token_file.write_text(ADMIN_TOKEN)
    config = {
        "receivers": {"auth": {"bearer_token_env": "LIPSERVICE_TOKEN"}},
        "admin": {"auth": {"bearer_token_file": str(admin_token_file)}},
        "sampler": {"policy_file": str(tmp_path_factory.mktemp("policy") / "absent.yaml")},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config, environ={"LIPSERVICE_TOKEN": TOKEN}) as proxy:
        yield proxy


def post_logs(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url + "/v1/logs",
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-protobuf", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def grpc_export(endpoint: str, body: bytes, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(LOGS_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(body, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def received(proxy: ProxyThread) -> int:
    return int(proxy.call(lambda: proxy.running.timeline.totals().received))


def test_http_receiver_refuses_missing_or_wrong_tokens(guarded: ProxyThread) -> None:
    body = log_request(records=5, services=1).SerializeToString()
    before = received(guarded)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, answer = post_logs(guarded.http_url, body, headers)
        assert status == 401
        assert status_pb2.Status.FromString(answer).message == "missing or invalid bearer token"
    assert received(guarded) == before  # nothing unauthenticated reached the sampler
    assert (
        guarded.metric(
            "lipservice_receiver_requests_total", {"protocol": "http", "outcome": "unauthenticated"}
        )
        >= 3
    )
    status, _ = post_logs(guarded.http_url, body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    wait_until(lambda: received(guarded) > before, what="the authenticated request counted")


def test_grpc_receiver_refuses_missing_or_wrong_tokens(guarded: ProxyThread) -> None:
    body = log_request(records=5, services=1).SerializeToString()
    endpoint = guarded.grpc_endpoint
    assert grpc_export(endpoint, body, ()) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(endpoint, body, (("authorization", "Bearer nope"),)) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(endpoint, body, (("authorization", f"Bearer {TOKEN}"),)) == grpc.StatusCode.OK


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_clients_with_the_token_get_through_to_the_sink(
    guarded: ProxyThread, sink: SinkThread, protocol: str
) -> None:
    sink.sink.reset()
    endpoint = guarded.grpc_endpoint if protocol == "grpc" else guarded.http_url
    marker = f"auth-{protocol}"
    with sdk_logger(endpoint, protocol=protocol, headers={"authorization": f"Bearer {TOKEN}"}) as logger:
        emit(logger, [{"body": f"{marker} error {i}", "severity": "ERROR"} for i in range(20)])
    records = sink.wait_for_records(20)
    assert sum(entry.record.body.string_value.startswith(marker) for entry in records) == 20


@pytest.mark.parametrize("path", ["/", "/metrics", "/api/v1/policy", "/api/v1/patterns", "/api/v1/summary"])
def test_admin_pages_need_the_admin_token_but_probes_do_not(guarded: ProxyThread, path: str) -> None:
    url = guarded.admin_url + path
    assert http_get(url)[0] == 401
    assert http_get(url, {"Authorization": f"Bearer {TOKEN}"})[0] == 401  # the receivers' token is not it
    assert http_get(url, {"Authorization": f"Bearer {ADMIN_TOKEN}"})[0] == 200
    for probe in ("/healthz", "/readyz"):
        assert http_get(guarded.admin_url + probe)[0] == 200


def test_an_unreadable_token_file_stops_the_proxy_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"admin: {{auth: {{bearer_token_file: {tmp_path / 'absent'}}}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot read bearer_token_file" in result.stderr and "Traceback" not in result.stderr


# ---- secrets never reach the logs ----

SECRETS = {
    "LIPSERVICE_TOKEN": "recv-tok-1f2e3d4c5b6a",
    "POSTHOG_API_KEY": "phc_posthogkey8a7b6c5d4e3f",
    "OPENAI_API_KEY": "sk-openai-0a1b2c3d4e5f6a7b",
}
UPSTREAM_SECRET = "upstream-bearer-9f8e7d6c"
GUESSED_TOKEN = "attacker-guess-5a4b3c2d"


def test_no_secret_appears_in_any_log_line_even_at_debug(sink: SinkThread, tmp_path: Path) -> None:
    sink.sink.reset()
    sink.sink.fail_grpc(grpc.StatusCode.UNAVAILABLE, times=3)  # retries, logged
    config: dict[str, Any] = {
        "logging": {"level": "debug"},
        "receivers": {"auth": {"bearer_token_env": "LIPSERVICE_TOKEN"}},
        "exporters": [
            sink_exporter(sink.sink.grpc_endpoint, headers={"authorization": f"Bearer {UPSTREAM_SECRET}"}),
            {  # nothing listens there: connection errors, logged
                "type": "posthog",
                "host": "http://127.0.0.1:9",
                "retry": {"initial_interval": "50ms", "max_interval": "100ms", "max_elapsed": "1s"},
            },
        ],
        "analysis": {
            "enabled": True,
            "interval": "200ms",
            "llm": {"base_url": "http://127.0.0.1:9/v1", "timeout": "1s", "max_retries": 0},
        },
    }
    token = SECRETS["LIPSERVICE_TOKEN"]
    with ProxyProcess(config, tmp_path, environ=SECRETS) as proxy:
        good = {"Authorization": f"Bearer {token}"}
        assert post_logs(proxy.http_url, b"\x0a\x02\xff", good)[0] == 400  # malformed, logged or not
        assert post_logs(proxy.http_url, b"", {"Authorization": f"Bearer {GUESSED_TOKEN}"})[0] == 401
        grpc_export(proxy.grpc_endpoint, b"", (("authorization", f"Bearer {GUESSED_TOKEN}"),))
        request = ExportLogsServiceRequest.FromString(log_request(records=50, services=2).SerializeToString())
        assert post_logs(proxy.http_url, request.SerializeToString(), good)[0] == 200
        wait_until(lambda: sink.sink.log_record_count > 0, timeout=30, what="delivery after the retries")
        wait_until(
            lambda: any("llm" in str(line).lower() or "analysis" in str(line) for line in proxy.log_lines),
            timeout=30,
            what="the analysis loop's attempt to reach the LLM logged",
        )
        assert proxy.terminate() == 0
    lines = [orjson.dumps(line).decode() for line in proxy.log_lines]
    assert len(lines) > 5 and all(line.startswith("{") for line in lines)
    for secret in [*SECRETS.values(), UPSTREAM_SECRET, GUESSED_TOKEN]:
        leaked = [line for line in lines if secret in line]
        assert not leaked, f"{secret!r} leaked into the logs: {leaked[:3]}"
