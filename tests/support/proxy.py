"""Run the real proxy for tests: in-process on a background thread, or as a subprocess.

`ProxyThread` builds `Proxy` from a config dict (ports 0 on 127.0.0.1 unless given) and runs it on
its own event loop, so sync tests can drive it with the OpenTelemetry SDK exporters while reading
its internals (telemetry, sampler). `ProxyProcess` runs `lipservice-proxy run -c FILE [ARGS]` (such
as `--role analyzer` or `--workers 2`) and learns the bound ports from its "ready" log line, for
signal, exit-code, kill and multi-process tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lipservice_proxy.config import ProxyConfig
from lipservice_proxy.service import Proxy

from .waiting import wait_until

LOOPBACK_DEFAULTS: dict[str, Any] = {
    "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
    "admin": {"endpoint": "127.0.0.1:0"},
    "analysis": {"enabled": False},
}


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def loopback_config(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return merged(LOOPBACK_DEFAULTS, overrides)


def sink_exporter(endpoint: str, **settings: Any) -> dict[str, Any]:
    """An otlp_grpc exporter toward a test sink, with quick batching and retries."""
    return {
        "type": "otlp_grpc",
        "endpoint": f"http://{endpoint}",
        "queue": {"batch": {"timeout": "10ms"}},
        "retry": {"initial_interval": "50ms", "max_interval": "500ms", "max_elapsed": "30s"},
        **settings,
    }


def http_get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class ProxyThread:
    """The proxy on a background event loop. Use as a context manager."""

    def __init__(self, config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
        self.config = ProxyConfig.model_validate(loopback_config(config))
        self._environ = dict(os.environ if environ is None else environ)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy-under-test", daemon=True)
        self.proxy: Proxy | None = None

    def _run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> ProxyThread:
        self._thread.start()

        async def build_and_start() -> Proxy:
            proxy = Proxy(self.config, environ=self._environ)
            await proxy.start()
            return proxy

        self.proxy = self._run(build_and_start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, drain_seconds: float = 10.0) -> None:
        if self.proxy is not None:
            self._run(self.proxy.shutdown(drain_seconds), timeout=drain_seconds + 20)
            self.proxy = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def call(self, function: Any, *args: Any) -> Any:
        """Run a plain function on the proxy's loop (its objects are not thread-safe)."""

        async def call() -> Any:
            return function(*args)

        return self._run(call())

    @property
    def running(self) -> Proxy:
        assert self.proxy is not None
        return self.proxy

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.running.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.running.ports['http']}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.running.ports['admin']}"

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        value = self.call(self.running.telemetry.registry.get_sample_value, name, dict(labels or {}))
        return value or 0.0

    def metrics_text(self) -> str:
        status, body = http_get(self.admin_url + "/metrics")
        assert status == 200
        return body.decode()


class ProxyProcess:
    """`lipservice-proxy run -c FILE` as a child process, with its ports read from the ready line."""

    def __init__(
        self,
        config: Mapping[str, Any],
        workdir: Path,
        environ: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self._args = list(args)
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(loopback_config(config)))
        self._environ = {**os.environ, **(environ or {})}
        self._workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_lines: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", str(self.config_path), *self._args],
            cwd=self._workdir,
            env=self._environ,
            stdout=(self._workdir / "stdout.log").open("wb"),
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        wait_until(
            lambda: self.ports or self.process.poll() is not None, timeout, what="the proxy's ready line"
        )
        if not self.ports:
            raise AssertionError(f"proxy exited with {self.process.returncode}: {self.log_lines[-5:]}")
        return self

    def _read_logs(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                entry = {"msg": raw.decode(errors="replace").rstrip()}
            self.log_lines.append(entry)
            if entry.get("msg") == "lipservice-proxy ready":
                self.ports = entry["ports"]

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """A sample of the proxy's /metrics (0 when absent), as ProxyThread.metric reads its registry."""
        status, body = http_get(self.admin_url + "/metrics")
        assert status == 200
        wanted = dict(labels or {})
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                    return float(sample.value)
        return 0.0

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
