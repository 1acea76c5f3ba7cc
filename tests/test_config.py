"""Config loading: defaults, env overrides, and one clear message per problem (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lipservice_proxy.config import load_config, parse_duration
from lipservice_proxy.errors import ConfigError


def test_defaults_match_the_design(tmp_path: Path) -> None:
    config = load_config(None, environ={})
    assert config.receivers.grpc.endpoint == "127.0.0.1:4317"
    assert config.receivers.http.endpoint == "127.0.0.1:4318"
    assert config.admin.endpoint == "127.0.0.1:8888"
    assert config.sampler.policy_file == Path("policies/default.yaml")
    assert [e.type for e in config.exporters] == ["debug"]
    assert config.analysis.interval == 300


def test_design_example_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """
receivers:
  grpc: {endpoint: "127.0.0.1:4317", max_recv_msg_size_mib: 4}
  http: {endpoint: "127.0.0.1:4318", max_request_body_mib: 20}
  auth: {bearer_token_env: LIPSERVICE_TOKEN}
sampler:
  policy_file: policies/default.yaml
  always_keep_min_severity: error
  dry_run: false
exporters:
  - {type: otlp_grpc, endpoint: "collector:4317", headers: {}, compression: gzip}
  - {type: otlp_http, endpoint: "https://backend/v1/logs", encoding: protobuf}
  - {type: posthog, host: "https://us.i.posthog.com", api_key_env: POSTHOG_API_KEY}
  - type: debug
    retry: {initial_interval: 200ms, max_interval: 5s, max_elapsed: 1m}
    queue: {max_records: 10}
passthrough: {traces: "collector:4317", metrics: "collector:4317"}
analysis:
  enabled: true
  interval: 5m
  llm: {model: gpt-4o-mini, base_url: null, api_key_env: OPENAI_API_KEY, timeout: 30s}
admin: {endpoint: "127.0.0.1:8888"}
"""
    )
    config = load_config(path, environ={})
    assert config.sampler.always_keep_min_severity == "ERROR"
    assert [e.name for e in config.exporters] == ["otlp_grpc", "otlp_http", "posthog", "debug"]
    debug = config.exporters[3]
    assert (debug.retry.initial_interval, debug.retry.max_interval, debug.retry.max_elapsed) == (
        0.2,
        5.0,
        60.0,
    )
    assert config.analysis.llm is not None and config.analysis.llm.timeout == 30.0


def test_env_overrides_nested_keys_and_list_items(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("exporters:\n  - {type: otlp_grpc, endpoint: 'a:1'}\n")
    config = load_config(
        path,
        environ={
            "LIPSERVICE_SAMPLER__DRY_RUN": "true",
            "LIPSERVICE_RECEIVERS__GRPC__ENDPOINT": "0.0.0.0:14317",
            "LIPSERVICE_EXPORTERS__0__ENDPOINT": "b:2",
            "LIPSERVICE_ANALYSIS__INTERVAL": "90s",
            "LIPSERVICE_TOKEN": "a secret, not an override",
        },
    )
    assert config.sampler.dry_run is True
    assert config.receivers.grpc.endpoint == "0.0.0.0:14317"
    assert config.exporters[0].endpoint == "b:2"  # type: ignore[union-attr]
    assert config.analysis.interval == 90.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("receivers: {grpc: {endpont: 'x:1'}}", "receivers.grpc.endpont: unknown key"),
        (
            "receivers: {grpc: {max_recv_msg_size_mib: -1}}",
            "receivers.grpc.max_recv_msg_size_mib: Input should be",
        ),
        ("receivers: {http: {endpoint: 'nohost'}}", "receivers.http.endpoint: 'nohost' is not host:port"),
        (
            "exporters: [{type: kafka}]",
            "exporters[0]: type must be one of otlp_grpc, otlp_http, posthog, debug (got",
        ),
        ("exporters: [debug]", "exporters[0]: must be a mapping with a type, one of otlp_grpc"),
        ("exporters: [{type: otlp_grpc}]", "exporters[0].endpoint: Field required"),
        ("exporters: [{type: otlp_http, endpoint: 'backend:4318'}]", "exporters[0].endpoint: must be a URL"),
        ("analysis: {interval: 5 minutes}", "analysis.interval: '5 minutes' is not a duration"),
        ("sampler: {always_keep_min_severity: LOUD}", "sampler.always_keep_min_severity: Input should be"),
        (
            "exporters: [{type: debug, retry: {initial_interval: 10s, max_interval: 1s}}]",
            "initial_interval must not",
        ),
        ("- just\n- a list", "the top level must be a mapping"),
        ("receivers: {grpc: [unclosed", "invalid YAML at line"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_run_with_invalid_config_exits_2_with_one_message_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("receivers: {grpc: {max_recv_msg_size_mib: zero}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "receivers.grpc.max_recv_msg_size_mib" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("30s", 30), ("5m", 300), ("1h30m", 5400), (12, 12.0), ("1.5", 1.5), ("2d", 172800)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "1x", True, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("receivers: {grpc: {handshake_timeout: 0s}}", "receivers.grpc.handshake_timeout"),
        ("receivers: {http: {header_timeout: 0s}}", "receivers.http.header_timeout"),
        ("receivers: {http: {idle_timeout: 0s}}", "receivers.http.idle_timeout"),
        ("exporters: [{type: debug, queue: {fsync_interval: 0s}}]", "exporters[0].queue.fsync_interval"),
        ("analysis: {interval: 0s}", "analysis.interval"),
        ("fleet: {report_interval: 0s}", "fleet.report_interval"),
        ("fleet: {reconnect_interval: 0s}", "fleet.reconnect_interval"),
        ("memory_limiter: {check_interval: 0s}", "memory_limiter.check_interval"),
        ("sampler: {reload_interval: 0s}", "sampler.reload_interval"),
        ("patterns: {save_interval: 0s}", "patterns.save_interval"),
        ("receivers: {http: {read_timeout: 0s}}", "receivers.http.read_timeout"),
        ("exporters: [{type: debug, timeout: 0s}]", "exporters[0].timeout"),
        ("exporters: [{type: debug, retry: {initial_interval: 0s}}]", "exporters[0].retry.initial_interval"),
        ("passthrough: {timeout: 0s}", "passthrough.timeout"),
        ("analysis: {llm: {timeout: 0s}}", "analysis.llm.timeout"),
        ("fleet: {max_reconnect_interval: 0s}", "fleet.max_reconnect_interval"),
    ],
)
def test_intervals_and_timeouts_must_be_positive(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value) == f"{path}: {key}: must be positive (got '0s')"
