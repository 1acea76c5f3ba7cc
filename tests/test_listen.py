"""A listen address that is taken stops the proxy with one line naming its key, exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support.proxy import loopback_config


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def run_proxy(config: dict[str, object], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (workdir / "config.yaml").write_text(yaml.safe_dump(loopback_config(config)))
    return subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", "config.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def nested(dotted_key: str, value: object) -> dict[str, object]:
    """{"a": {"b": value}} for "a.b"."""
    for part in reversed(dotted_key.split(".")):
        value = {part: value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("key", ["receivers.grpc.endpoint", "receivers.http.endpoint", "admin.endpoint"])
def test_a_port_in_use_is_one_line_naming_the_key(tmp_path: Path, taken_port: int, key: str) -> None:
    result = run_proxy(nested(key, f"127.0.0.1:{taken_port}"), tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"lipservice-proxy: {key}: 127.0.0.1:{taken_port} is already in use"
    assert all(line.startswith('{"ts"') for line in lines[:-1])  # the rest are the proxy's own log lines


def test_the_fleet_listen_port_in_use_is_one_line_naming_the_key(tmp_path: Path, taken_port: int) -> None:
    result = run_proxy({"fleet": {"listen": f"127.0.0.1:{taken_port}"}}, tmp_path, "--role", "analyzer")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"lipservice-proxy: fleet.listen: 127.0.0.1:{taken_port} is already in use"
    )
