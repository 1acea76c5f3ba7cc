"""`run --workers N`: N sampler processes share the receiver ports; the parent is their analyzer.

The parent process
- reserves the receiver ports before anything else: it binds each configured endpoint with
  SO_REUSEPORT and never listens, so port 0 becomes one concrete port every worker binds too, and a
  port in use fails the start at once. The kernel spreads incoming connections over the workers;
- runs an `Analyzer` in-process: the PolicyService on a private loopback port, the analysis loop,
  and the one admin endpoint, whose /metrics sums every process (../metricsdir.py);
- starts each worker as `lipservice-proxy run [-c CONFIG] --worker-index I` with overrides in its
  environment: the shared ports, no admin, the analyzer's address, a sampler id `<host>/w<I>`, a
  short report interval (the analyzer is on the same host), 1/N of the memory limit, and per-worker
  files: a disk queue directory and the pattern state file cannot be shared between processes, so
  worker I gets `<name>.w<I>` (the same I after a restart, so a replacement replays its queue);
- announces ready once every worker has reported to the analyzer (its receivers listen by then);
- restarts a worker that exits, after a backoff (1 s doubling to 30 s; reset after a minute up);
- on SIGTERM passes SIGTERM on, waits for the workers to drain their queues, stops, exits 0, or 3 when
  a worker dropped acknowledged records at the deadline (their shared counter says how many).
A worker stops by itself when the parent dies (Linux: PR_SET_PDEATHSIG, see `die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess

from ..admin import json_response
from ..backoff import Backoff
from ..config import ProxyConfig, RetrySettings, host_port
from ..errors import ConfigError, LipserviceError
from ..lifecycle import ROLLBACK_SECONDS, Deadline, Lifecycle
from ..listen import listen_error
from ..metricsdir import MULTIPROCESS_DIR_ENV
from .analyzer import Analyzer
from .client import default_sampler_id

log = logging.getLogger(__name__)

MAX_WORKERS = 64
START_TIMEOUT = 60.0  # for every worker to report in
STOP_MARGIN = 5.0  # beyond the drain time, before a worker that will not stop is killed
WORKER_REPORT_INTERVAL = 1.0
POLL_INTERVAL = 0.2  # how often a running worker's exit is looked for
WAIT_STEP = 0.05  # polling step while workers start or stop
RESTART_BACKOFF = RetrySettings(initial_interval=1.0, max_interval=30.0, multiplier=2.0)
STABLE_AFTER = 60.0  # a worker up this long has its restart backoff reset
PR_SET_PDEATHSIG = 1
EXIT_USAGE = 2  # a worker's exit status for an invalid config (cli.py)


def die_with_parent() -> None:
    """In a worker: ask Linux to SIGTERM this process when its parent dies, so no worker outlives a
    killed supervisor (and run_until_signalled stops it cleanly). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_path(path: Path, index: int) -> Path:
    """`queue/otlp` -> `queue/otlp.w0`, `state.json` -> `state.w0.json`: one of each per worker."""
    return path.with_name(f"{path.stem}.w{index}{path.suffix}")


def reserve_port(endpoint: str, key: str) -> tuple[socket.socket, str]:
    """Bind `endpoint` with SO_REUSEPORT without listening; returns the socket and host:concrete port."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers needs SO_REUSEPORT, which this platform lacks; run one process")
    host, port = host_port(endpoint)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"{key} {endpoint}: cannot resolve: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise listen_error(key, endpoint, exc) from None
    return sock, f"{endpoint.rsplit(':', 1)[0]}:{sock.getsockname()[1]}"


def worker_environment(
    config: ProxyConfig,
    index: int,
    workers: int,
    *,
    endpoints: Mapping[str, str],
    analyzer: str,
    sampler_id: str,
) -> dict[str, str]:
    """The LIPSERVICE_* overrides that make worker `index` of `workers` (values JSON-quoted: YAML
    reads them back as the exact strings and numbers)."""
    overrides: dict[str, Any] = {
        "ADMIN__ENABLED": False,
        "FLEET__ANALYZER": analyzer,
        "FLEET__SAMPLER_ID": sampler_id,
        "FLEET__REPORT_INTERVAL": min(config.fleet.report_interval, WORKER_REPORT_INTERVAL),
        "MEMORY_LIMITER__LIMIT_MIB": config.memory_limiter.limit_mib / workers,
        "MEMORY_LIMITER__SPIKE_LIMIT_MIB": config.memory_limiter.spike_limit_mib / workers,
    }
    for receiver, endpoint in endpoints.items():
        overrides[f"RECEIVERS__{receiver.upper()}__ENDPOINT"] = endpoint
    if config.patterns.state_file is not None:
        overrides["PATTERNS__STATE_FILE"] = str(worker_path(config.patterns.state_file, index))
    for position, exporter in enumerate(config.exporters):
        if exporter.queue.directory is not None:
            overrides[f"EXPORTERS__{position}__QUEUE__DIRECTORY"] = str(
                worker_path(exporter.queue.directory, index)
            )
    return {f"LIPSERVICE_{key}": json.dumps(value) for key, value in overrides.items()}


@dataclass
class Worker:
    index: int
    sampler_id: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def exited(self, stop: asyncio.Event) -> int | None:
        """The exit status once the process ends, or None when `stop` is set first."""
        assert self.process is not None
        while (code := self.process.poll()) is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL)
            if stop.is_set():
                return None
        return code

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sampler_id": self.sampler_id,
            "pid": self.process.pid if self.process else None,
            "alive": self.alive,
            "restarts": self.restarts,
        }


class Supervisor:
    def __init__(
        self,
        config: ProxyConfig,
        workers: int,
        *,
        config_path: Path | None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}")
        if MULTIPROCESS_DIR_ENV not in environ:
            raise ConfigError("--workers needs multiprocess metrics (metricsdir.enable_multiprocess_metrics)")
        self._config = config
        self._environ = dict(environ)
        self._argv = [sys.executable, "-m", "lipservice_proxy.cli", "run"]
        if config_path is not None:
            self._argv += ["-c", str(config_path)]
        base = config.fleet.sampler_id or default_sampler_id()
        self.workers = [Worker(index, f"{base}/w{index}") for index in range(workers)]
        self.analyzer = Analyzer(
            config,
            environ=environ,
            listen="127.0.0.1:0",
            extra_routes=[web.get("/api/v1/workers", self._workers_route)],
            readiness=self._workers_up,
        )
        self._reservations: list[socket.socket] = []
        self._endpoints: dict[str, str] = {}
        self.lifecycle = Lifecycle("supervisor")
        steps = self.lifecycle
        steps.add("receiver ports", start=self._reserve_ports, shutdown=lambda _: self._release_ports())
        steps.add("analyzer", start=self.analyzer.start, shutdown=lambda d: self.analyzer.shutdown(d.seconds))
        steps.add("workers", start=self._start_workers, shutdown=self._stop_workers)
        steps.add("supervision", start=self._supervise_workers, shutdown=lambda _: steps.tasks.shutdown())

    # ---- lifecycle ----

    async def start(self) -> None:
        await self.lifecycle.start()

    async def shutdown(self, drain_seconds: float = 10.0) -> int:
        """SIGTERM every worker, give them `drain_seconds` (and a margin) to drain, then stop the analyzer.
        Returns how many acknowledged records the workers dropped at shutdown (each logged its own)."""
        await self.lifecycle.shutdown(Deadline.after(drain_seconds))
        return self._dropped_at_shutdown()

    async def _reserve_ports(self) -> None:
        receivers = self._config.receivers
        for name, receiver in (("grpc", receivers.grpc), ("http", receivers.http)):
            if receiver.enabled:
                sock, endpoint = reserve_port(receiver.endpoint, f"receivers.{name}.endpoint")
                self._reservations.append(sock)
                self._endpoints[name] = endpoint

    async def _release_ports(self) -> None:
        for sock in self._reservations:
            sock.close()
        self._reservations.clear()

    async def _start_workers(self) -> None:
        """Start every worker and wait for each to report; on failure, stop the ones that started."""
        try:
            for worker in self.workers:
                self._spawn(worker)
            await self._wait_for_workers()
        except BaseException:
            await self._stop_workers(Deadline.after(ROLLBACK_SECONDS))
            raise

    async def _supervise_workers(self) -> None:
        for worker in self.workers:
            self.lifecycle.tasks.spawn(self._supervise(worker), f"worker-{worker.index}")

    async def _stop_workers(self, deadline: Deadline) -> None:
        running = [w.process for w in self.workers if w.alive and w.process is not None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for _ in range(int((deadline.seconds + STOP_MARGIN) / WAIT_STEP)):
            if all(process.poll() is not None for process in running):
                break
            await asyncio.sleep(WAIT_STEP)
        for process in running:
            if process.poll() is None:
                log.error("worker pid %d did not stop within %gs; killing it", process.pid, deadline.seconds)
                process.kill()
                process.wait(STOP_MARGIN)
            self._forget_process(process.pid)

    def _dropped_at_shutdown(self) -> int:
        """The workers' `lipservice_export_shutdown_dropped_records_total`, summed from the shared
        metrics directory, where a worker's counters outlive it."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._environ[MULTIPROCESS_DIR_ENV])  # type: ignore[no-untyped-call]  # prometheus_client
        return int(
            sum(
                sample.value
                for family in registry.collect()
                for sample in family.samples
                if sample.name == "lipservice_export_shutdown_dropped_records_total"
            )
        )

    def _workers_up(self) -> bool:
        return self.lifecycle.running and any(w.alive for w in self.workers)

    @property
    def ports(self) -> dict[str, int]:
        return {
            "grpc": int(self._endpoints["grpc"].rsplit(":", 1)[1]) if "grpc" in self._endpoints else 0,
            "http": int(self._endpoints["http"].rsplit(":", 1)[1]) if "http" in self._endpoints else 0,
            "admin": self.analyzer.ports["admin"],
        }

    # ---- workers ----

    def _spawn(self, worker: Worker) -> None:
        environment = {
            **self._environ,
            **worker_environment(
                self._config,
                worker.index,
                len(self.workers),
                endpoints=self._endpoints,
                analyzer=f"127.0.0.1:{self.analyzer.ports['fleet']}",
                sampler_id=worker.sampler_id,
            ),
        }
        # close_fds=False lets subprocess use posix_spawn: no fork, so gRPC's fork handlers (which
        # complain while its threads are busy) never run. Nothing leaks: every descriptor the parent
        # holds is close-on-exec (Python's since PEP 446, gRPC's own). Spawned from the event loop's
        # thread, which lives as long as the process: PR_SET_PDEATHSIG follows the spawning thread.
        worker.process = subprocess.Popen(
            [*self._argv, "--worker-index", str(worker.index)],
            env=environment,
            stdin=subprocess.DEVNULL,
            close_fds=False,
        )
        worker.started = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    async def _wait_for_workers(self) -> None:
        for _ in range(int(START_TIMEOUT / WAIT_STEP)):
            if all(worker.sampler_id in self.analyzer.book for worker in self.workers):
                return
            for worker in self.workers:
                if not worker.alive:
                    code = worker.process.poll() if worker.process else None
                    message = f"worker {worker.index} exited with status {code} while starting (see its log)"
                    raise ConfigError(message) if code == EXIT_USAGE else LipserviceError(message)
            await asyncio.sleep(WAIT_STEP)
        raise LipserviceError(f"the workers did not all start within {START_TIMEOUT:g}s")

    async def _supervise(self, worker: Worker) -> None:
        backoff = Backoff(RESTART_BACKOFF)
        stopping = self.lifecycle.tasks.stopping
        while (code := await worker.exited(stopping)) is not None:
            assert worker.process is not None
            self._forget_process(worker.process.pid)
            if time.monotonic() - worker.started > STABLE_AFTER:
                backoff = Backoff(RESTART_BACKOFF)
            delay = backoff.next_delay()
            log.error(
                "worker %d (pid %d) exited with status %s; restarting in %.1fs",
                worker.index,
                worker.process.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            if stopping.is_set():
                return
            worker.restarts += 1
            self.analyzer.telemetry.worker_restarts.inc()
            self._spawn(worker)

    def _forget_process(self, pid: int) -> None:
        """Drop a dead process's live gauges from the sums (its counters stay: they still count)."""
        multiprocess.mark_process_dead(pid, self._environ[MULTIPROCESS_DIR_ENV])  # type: ignore[no-untyped-call]  # prometheus_client

    async def _workers_route(self, request: web.Request) -> web.Response:
        return json_response({"workers": [worker.as_dict() for worker in self.workers]})
