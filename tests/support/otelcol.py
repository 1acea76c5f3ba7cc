"""The real OpenTelemetry Collector as a peer: built by scripts/build-otelcol.sh (tools/otelcol/manifest.yaml)
into a cache folder outside the repository, run here as a child process on loopback ports.

    with OtelcolProcess(config, workdir) as collector:   # config: the Collector's own YAML, as a dict
        ...

The Collector cannot report the ports it bound, so `free_port()` picks them; a port taken in between
makes the Collector exit at start, which `start()` reports with its last log lines.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "Everything is ready"


@cache
def otelcol_binary() -> Path:
    """The Collector's binary: built on first use (minutes), then taken from the cache."""
    result = subprocess.run(
        [str(REPO / "scripts" / "build-otelcol.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-otelcol.sh failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def otlp_receivers(grpc_port: int, http_port: int) -> dict[str, Any]:
    """A `receivers:` section with the otlp receiver on both protocols, on loopback."""
    return {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                "http": {"endpoint": f"127.0.0.1:{http_port}"},
            }
        }
    }


def quiet_service(pipelines: Mapping[str, Any]) -> dict[str, Any]:
    """A `service:` section whose own telemetry binds nothing (its default metrics port is 8888)."""
    return {
        "pipelines": dict(pipelines),
        "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info", "encoding": "json"}},
    }


class OtelcolProcess:
    """`otelcol-peer --config FILE` as a child process. Use as a context manager."""

    def __init__(self, config: Mapping[str, Any], workdir: Path) -> None:
        self.config_path = workdir / "otelcol.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))
        self._workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_lines: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 60.0) -> OtelcolProcess:
        self.process = subprocess.Popen(
            [str(otelcol_binary()), "--config", str(self.config_path)],
            cwd=self._workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read_logs, daemon=True).start()
        wait_until(
            lambda: self._ready.is_set() or self.process.poll() is not None,
            timeout,
            what="the Collector's ready line",
        )
        if not self._ready.is_set():
            raise AssertionError(
                f"the Collector exited with {self.process.returncode}: {self.log_lines[-8:]}"
            )
        return self

    def _read_logs(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log_lines.append(line)
            if READY_LINE in line:
                self._ready.set()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: the Collector flushes its pipelines (the file exporter included) before it exits."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)

    def __enter__(self) -> OtelcolProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
