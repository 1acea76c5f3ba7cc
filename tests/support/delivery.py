"""Delivery tests' tools: requests whose records carry a unique `seq`, reading the seqs a sink got, and
a steady gRPC client that retries refused requests and remembers which records were acknowledged."""

from __future__ import annotations

import collections
import contextlib
import resource
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from lipservice_proxy.config import OtlpGrpcExporterConfig
from lipservice_proxy.exporters.otlp_grpc import OtlpGrpcExporter
from lipservice_proxy.telemetry import Telemetry

from .loghub import LOGHUB_DIR
from .sink import LogEntry, OtlpSink

SEQ = "test.seq"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
KEEP_ALL_POLICY = "version: 1\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"


def _bodies() -> list[str]:
    """Real log lines (HDFS) when the shared samples are there, else a few synthetic ones."""
    path = LOGHUB_DIR / "HDFS" / "HDFS_2k.log"
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[:500]
    return [f"block blk_{n} replicated to 10.0.0.{n % 250}:50010" for n in range(500)]


BODIES = _bodies()


def logs_request(seqs: Iterable[int], service: str = "delivery") -> ExportLogsServiceRequest:
    """One resource and scope holding an INFO record per seq, each with the attribute `test.seq`."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    service_name = KeyValue(key="service.name", value=AnyValue(string_value=service))
    resource_logs.resource.attributes.append(service_name)
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "tests.delivery"
    for seq in seqs:
        record = scope_logs.log_records.add(
            time_unix_nano=1_732_000_000_000_000_000 + seq,
            severity_number=9,  # type: ignore[arg-type]
            severity_text="INFO",
        )
        record.body.string_value = BODIES[seq % len(BODIES)]
        record.attributes.append(KeyValue(key=SEQ, value=AnyValue(int_value=seq)))
    return request


def seqs_of(entries: Iterable[LogEntry]) -> list[int]:
    """The `test.seq` of every record, in arrival order (duplicates kept)."""
    return [
        attribute.value.int_value
        for _resource, _scope, record in entries
        for attribute in record.attributes
        if attribute.key == SEQ
    ]


def grpc_exporter(sink: OtlpSink, name: str = "upstream") -> OtlpGrpcExporter:
    """A real OTLP/gRPC exporter toward the sink (uncompressed, so tests can read sizes)."""
    config = OtlpGrpcExporterConfig(
        type="otlp_grpc", name=name, endpoint=f"http://{sink.grpc_endpoint}", compression="none"
    )
    return OtlpGrpcExporter(config)


def metric(telemetry: Telemetry, metric_name: str, **labels: str) -> float:
    return telemetry.registry.get_sample_value(metric_name, labels) or 0.0


def outcome(telemetry: Telemetry, exporter: str, kind: str) -> float:
    """lipservice_export_records_total for one exporter and outcome (sent, rejected, failed)."""
    return metric(telemetry, "lipservice_export_records_total", exporter=exporter, outcome=kind)


def duplicates(seqs: Iterable[int]) -> int:
    """How many arrivals were repeats of an earlier one."""
    counts = collections.Counter(seqs)
    return sum(count - 1 for count in counts.values())


@dataclass
class LoadReport:
    acknowledged: set[int] = field(default_factory=set)
    requests: int = 0
    refusals: int = 0
    errors: list[str] = field(default_factory=list)


class SteadyLoad:
    """Sends a request of `per_request` new records every `interval` seconds from a thread, over gRPC.

    A request refused with a retryable status is sent again (the same records) until it is
    acknowledged, as an OTLP client does; the seqs of acknowledged requests are in `report`.
    """

    def __init__(self, endpoint: str, *, per_request: int = 20, interval: float = 0.02) -> None:
        self._channel = grpc.insecure_channel(endpoint)
        self._export = self._channel.unary_unary(
            LOGS_EXPORT, request_serializer=None, response_deserializer=None
        )
        self._per_request = per_request
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._lock = threading.Lock()
        self._report = LoadReport()
        self._next_seq = 0

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load thread did not stop"
        self._channel.close()
        return self.report

    @property
    def report(self) -> LoadReport:
        with self._lock:
            return LoadReport(
                set(self._report.acknowledged),
                self._report.requests,
                self._report.refusals,
                list(self._report.errors),
            )

    def acknowledged_count(self) -> int:
        with self._lock:
            return len(self._report.acknowledged)

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # a bound, far above any test's duration
        while not self._stop.is_set() and time.monotonic() < deadline:
            seqs = range(self._next_seq, self._next_seq + self._per_request)
            self._next_seq += self._per_request
            self._deliver(seqs, logs_request(seqs).SerializeToString())
            self._stop.wait(self._interval)

    def _deliver(self, seqs: range, body: bytes) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._report.requests += 1
            try:
                self._export(body, timeout=5)
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                with self._lock:
                    if code in RETRYABLE:
                        self._report.refusals += 1
                    else:
                        self._report.errors.append(f"{code}: {error.details()}")  # type: ignore[attr-defined]
                if code not in RETRYABLE:
                    return
                self._stop.wait(0.05)  # the client's own backoff, short to keep the test quick
                continue
            with self._lock:
                self._report.acknowledged.update(seqs)
            return


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process: a real disk-write failure, as writes past `limit` bytes of any
    file fail with EFBIG (SIGXFSZ ignored). Keep the block short: it applies to every file."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)
