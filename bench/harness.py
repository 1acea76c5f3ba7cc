"""One benchmark run: sink, target (the proxy or the floor) and load generator as three processes.

`run_target` starts the sink, then the target pointed at it, then `bench.loadgen` with the target's
pid to measure; while the load runs it samples the target's resident memory every second (and starts
py-spy when the window opens, if asked); after the load it waits for what the target forwarded to
reach the sink and checks the counts, reads the proxy's own metrics, and stops everything.
Every process binds 127.0.0.1 port 0 and announces its ports on stderr; every wait has a deadline.
"""

from __future__ import annotations

import collections
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.otelcol import free_port, otelcol_binary, otlp_receivers
from tests.support.waiting import wait_until

from .proctree import load_average, sample_tree
from .profiling import start_profile, summarise
from .sink import read_counts
from .workloads import Workload

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
DELIVERY_TIMEOUT = 30.0
MIB = 1024 * 1024
PROXY_METRICS = (
    "lipservice_log_records_received_total",
    "lipservice_log_records_kept_total",
    "lipservice_log_records_dropped_total",
    "lipservice_log_tail_records_total",
    "lipservice_patterns_active",
    "lipservice_export_queue_records",
)
Target = Literal["proxy", "floor", "otelcol"]
OTELCOL_SENT = "otelcol_exporter_sent_log_records*"
OTELCOL_METRICS = ("otelcol_receiver_accepted_log_records*", OTELCOL_SENT)
OTELCOL_READY = "Everything is ready"


class BenchError(Exception):
    """A run could not be carried out (a process failed to start, the load generator failed)."""


class Child:
    """A child process that announces its ports in a JSON line on stderr (as the proxy does), or, given
    its `ports` and a `ready_marker`, one whose ports were chosen for it (the Collector)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        stdout: IO[bytes] | int,
        ports: dict[str, int] | None = None,
        ready_marker: str | None = None,
    ) -> None:
        self.name = name
        self.process = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
        self.ports: dict[str, int] = {}
        self._chosen_ports = ports or {}
        self._ready_marker = ready_marker
        self.log_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.log_lines = 0
        threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True).start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log_tail.append(line)
            self.log_lines += 1
            if self._ready_marker is not None:
                if not self.ports and self._ready_marker in line:
                    self.ports = self._chosen_ports
            elif not self.ports and line.startswith("{"):
                try:
                    ports = orjson.loads(line).get("ports")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(ports, dict):
                    self.ports = ports

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> Child:
        try:
            wait_until(
                lambda: self.ports or self.process.poll() is not None,
                START_TIMEOUT,
                interval=0.05,
                what=f"the {self.name}'s ready line",
            )
        except AssertionError as exc:
            self.stop()
            raise BenchError(str(exc)) from None
        if not self.ports:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}: " + " | ".join(self.log_tail)
            )
        return self

    def endpoint(self, port: str) -> str:
        return f"127.0.0.1:{self.ports[port]}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(STOP_TIMEOUT)


@dataclass(frozen=True)
class RunSettings:
    streams: int = 16
    connections: int = 4
    warmup: float = 3.0
    duration: float = 10.0
    max_requests: int = 1_000_000
    rate: float | None = None  # records/s (open loop); None: as fast as the target answers
    workers: int | None = None  # passed to `lipservice-proxy run --workers N` when set
    profile: Path | None = None  # write py-spy's collapsed stacks of the window here (proxy only)
    keep_ratio: float | None = None  # the Collector's sampling ratio (the proxy's, measured before it)


def proxy_config(sink: str, policy: Path) -> dict[str, Any]:
    return {
        "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
        "admin": {"endpoint": "127.0.0.1:0"},
        "exporters": [{"type": "otlp_grpc", "endpoint": f"http://{sink}", "compression": "none"}],
        "sampler": {"policy_file": str(policy)},
        # "info", not "warning": the ready line carrying the ports is an info line. Nothing on the hot
        # path logs at info; the run reports how many log lines the target wrote.
        "logging": {"level": "info"},
    }


def start_proxy(workdir: Path, sink: str, workers: int | None) -> Child:
    # The analysis loop may rewrite the policy file it was started with: give it a copy.
    policy = workdir / "policy.yaml"
    shutil.copyfile(DEFAULT_POLICY, policy)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config(sink, policy)))
    argv = [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", str(config)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    with (workdir / "proxy-stdout.log").open("wb") as stdout:
        return Child("proxy", argv, workdir, stdout).wait_ready()


def start_floor(sink: str) -> Child:
    argv = [sys.executable, "-m", "bench.floor", "--upstream", sink]
    return Child("floor", argv, REPO, subprocess.DEVNULL).wait_ready()


def start_otelcol(workdir: Path, sink: str, keep_ratio: float) -> Child:
    """The OpenTelemetry Collector (scripts/build-otelcol.sh) doing what a Collector user does to cut log
    volume: probabilistic sampling at the proxy's keep ratio, then batching, toward the same sink."""
    try:
        binary = otelcol_binary()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    ports = {"grpc": free_port(), "http": free_port(), "admin": free_port()}
    config = {
        "receivers": otlp_receivers(ports["grpc"], ports["http"]),
        "processors": {
            "probabilistic_sampler": {
                "mode": "hash_seed",
                "hash_seed": 22,
                "sampling_percentage": round(keep_ratio * 100, 4),
                "attribute_source": "record",
                "from_attribute": "log.record.uid",
            },
            "batch": {},
        },
        "exporters": {"otlp_grpc": {"endpoint": sink, "tls": {"insecure": True}, "compression": "none"}},
        "service": {
            "pipelines": {
                "logs": {
                    "receivers": ["otlp"],
                    "processors": ["probabilistic_sampler", "batch"],
                    "exporters": ["otlp_grpc"],
                }
            },
            "telemetry": {
                "logs": {"level": "info"},
                "metrics": {
                    "level": "normal",
                    "readers": [
                        {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": ports["admin"]}}}}
                    ],
                },
            },
        },
    }
    path = workdir / "otelcol.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [str(binary), "--config", str(path)]
    return Child("otelcol", argv, workdir, subprocess.DEVNULL, ports, OTELCOL_READY).wait_ready()


def scrape_metrics(admin: str, names: tuple[str, ...] = PROXY_METRICS) -> dict[str, float]:
    """Sums of the named samples at an admin endpoint's /metrics (prefix match with a trailing "*")."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    sums = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name in names:
                if sample.name == name or (name.endswith("*") and sample.name.startswith(name[:-1])):
                    sums[name] += sample.value
    return sums


def loadgen_argv(target: Child, workload: Workload, pool: Path, settings: RunSettings) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--pool",
        str(pool),
        "--target",
        target.endpoint(workload.protocol),
        "--protocol",
        workload.protocol,
        "--encoding",
        workload.encoding,
        "--streams",
        str(settings.streams),
        "--connections",
        str(settings.connections),
        "--warmup",
        str(settings.warmup),
        "--duration",
        str(settings.duration),
        "--max-requests",
        str(settings.max_requests),
        "--measure-pid",
        str(target.pid),
    ]
    if settings.rate is not None:
        argv += ["--rate", str(settings.rate)]
    return argv


def _read_lines(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class LoadSession:
    """The load generator process, watched: its stdout events, the target's memory once a second, and
    the sink's CPU over the window (the sink shares the cores with what is measured)."""

    def __init__(self, argv: list[str], target: Child, sink: Child, settings: RunSettings, log: Path) -> None:
        self._target = target
        self._sink = sink
        self._settings = settings
        self._log = log
        with log.open("wb") as stderr:
            self._process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        assert self._process.stdout is not None
        threading.Thread(target=_read_lines, args=(self._process.stdout, self._lines), daemon=True).start()
        self.rss_timeline: list[tuple[float, float]] = []  # (seconds since start, MiB), once a minute
        self.max_sampled_rss = 0
        self.sink_cpu_seconds = 0.0
        self.profiler: subprocess.Popen[bytes] | None = None

    def run(self) -> dict[str, Any]:
        settings = self._settings
        started = time.monotonic()
        deadline = started + settings.warmup + settings.duration + START_TIMEOUT + STOP_TIMEOUT
        next_sample = started
        while time.monotonic() < deadline:
            if time.monotonic() >= next_sample:
                self._sample_memory(time.monotonic() - started)
                next_sample += 1.0
            try:
                line = self._lines.get(timeout=max(0.0, next_sample - time.monotonic()))
            except queue.Empty:
                continue
            if line is None:
                break
            event = orjson.loads(line)
            if event.get("event") == "window-open":
                self.sink_cpu_seconds = -sample_tree(self._sink.pid).cpu_seconds
                if settings.profile is not None:
                    self.profiler = start_profile(self._target.pid, settings.duration, settings.profile)
            elif event.get("event") == "report":
                self.sink_cpu_seconds += sample_tree(self._sink.pid).cpu_seconds
                self._sample_memory(time.monotonic() - started, force=True)
                self._process.wait(STOP_TIMEOUT)
                return event
        self.close()
        errors = self._log.read_text(errors="replace")[-2000:]
        raise BenchError(f"the load generator gave no report (exit {self._process.returncode}): {errors}")

    def _sample_memory(self, elapsed: float, force: bool = False) -> None:
        rss = sample_tree(self._target.pid).rss_bytes
        self.max_sampled_rss = max(self.max_sampled_rss, rss)
        if force or not self.rss_timeline or elapsed - self.rss_timeline[-1][0] >= 60:
            self.rss_timeline.append((round(elapsed), round(rss / MIB, 1)))

    def close(self) -> None:
        for process in (self._process, self.profiler):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(STOP_TIMEOUT)


def profile_summary(session: LoadSession, output: Path) -> dict[str, Any]:
    if session.profiler is None:
        return {"error": "the window never opened"}
    try:
        _, errors = session.profiler.communicate(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        session.profiler.kill()
        _, errors = session.profiler.communicate(timeout=STOP_TIMEOUT)
    if not output.is_file():
        return {"error": errors.decode(errors="replace").strip()[-500:]}
    return {"file": str(output), **summarise(output.read_text()).as_dict()}


def delivery_check(target: Target, child: Child, sink: Child, acked_records: int) -> dict[str, Any]:
    """Wait until the sink holds everything the target forwarded; report the counts either way."""
    figures: dict[str, Any] = {}

    def settled() -> bool:
        counts = read_counts(sink.endpoint("grpc"))
        figures["sink_records"] = counts.records
        if target == "floor":
            expected = acked_records
        elif target == "otelcol":
            metrics = scrape_metrics(child.endpoint("admin"), OTELCOL_METRICS)
            figures["otelcol_metrics"] = metrics
            expected = int(metrics[OTELCOL_SENT])
        else:
            metrics = scrape_metrics(child.endpoint("admin"))
            figures["proxy_metrics"] = metrics
            # kept records, and the summary records of tails closed at a window's end
            expected = int(metrics["lipservice_log_records_kept_total"])
            expected += int(metrics.get("lipservice_log_tail_records_total", 0))
        figures["expected_records"] = expected
        return counts.records >= expected

    try:
        wait_until(settled, DELIVERY_TIMEOUT, interval=0.2, what="the forwarded records at the sink")
        figures["delivered"] = figures["sink_records"] == figures["expected_records"]
    except AssertionError:
        figures["delivered"] = False
    return figures


def start_target(target: Target, workdir: Path, sink: str, settings: RunSettings) -> Child:
    if target == "proxy":
        return start_proxy(workdir, sink, settings.workers)
    if target == "otelcol":
        assert settings.keep_ratio is not None, "the Collector samples at the proxy's keep ratio"
        return start_otelcol(workdir, sink, settings.keep_ratio)
    return start_floor(sink)


def run_target(
    target: Target, workload: Workload, pool: Path, settings: RunSettings, workdir: Path
) -> dict[str, Any]:
    """One measured run of the proxy, the floor or the Collector; returns its figures as a dict."""
    sink = Child("sink", [sys.executable, "-m", "bench.sink"], REPO, subprocess.DEVNULL).wait_ready()
    child: Child | None = None
    try:
        sink_endpoint = sink.endpoint("grpc")
        child = start_target(target, workdir, sink_endpoint, settings)
        load = {"loadavg_before": load_average()}
        argv = loadgen_argv(child, workload, pool, settings)
        session = LoadSession(argv, child, sink, settings, workdir / f"loadgen-{target}.log")
        try:
            figures = session.run()
            profile = profile_summary(session, settings.profile) if settings.profile else None
        finally:
            session.close()
        load["loadavg_after"] = load_average()
        end = sample_tree(child.pid)
        figures.pop("event", None)
        figures |= {
            "target": target,
            "workload": workload.name,
            "workers": settings.workers,
            "max_sampled_rss_mib": round(session.max_sampled_rss / MIB, 1),
            "rss_end_mib": round(end.rss_bytes / MIB, 1),
            "peak_rss_mib": round(end.peak_rss_bytes / MIB, 1),
            "root_peak_rss_mib": round(end.root_peak_rss_bytes / MIB, 1),
            "rss_timeline_mib": session.rss_timeline,
            "sink_cpu_share": round(session.sink_cpu_seconds / figures["window_s"], 3),
            "target_log_lines": child.log_lines,
            **load,
            **delivery_check(target, child, sink, figures["acked_records_total"]),
        }
        if profile is not None:
            figures["profile"] = profile
        return figures
    finally:
        if child is not None:
            child.stop()
        sink.stop()
