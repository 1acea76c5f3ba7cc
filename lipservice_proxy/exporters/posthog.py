"""PostHog logs exporter: OTLP/HTTP protobuf to `{host}/i/v1/logs` with the project token as a bearer.

PostHog's logs ingestion takes standard OTLP/HTTP at `/i/v1/logs`, authenticated by the project token
(`phc_...`) in `Authorization: Bearer`. Its request bodies are limited (2 MiB before compression), so
a bigger payload is split by resource, scope and record into several requests, each record keeping
its resource and scope. A record too big to fit in any body is dropped and reported as rejected, with
its size; the others are sent.

A split payload is sent as several requests, so one attempt may fail after some of them succeeded.
The exporter remembers which parts of a payload were accepted and a retry of the same payload sends
only the rest: the retry loop around `export` never causes duplicates.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import xxhash
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from ..config import PosthogExporterConfig
from ..errors import ConfigError, ExportError, PermanentExportError
from .base import ExportResult
from .otlp_http import OtlpHttpExporter

log = logging.getLogger(__name__)

LOGS_PATH = "/i/v1/logs"
NESTING_OVERHEAD = 5
"""Upper bound of the bytes around one nested message (tag + length varint) in a body of < 256 MiB."""
REMEMBERED_PAYLOADS = 64
"""Split payloads whose progress is kept for retries; older entries are forgotten first."""


@dataclass(slots=True)
class SplitPayload:
    """A payload cut into bodies of at most `max_bytes`, and the sizes of records that fit in none."""

    bodies: list[bytes] = field(default_factory=list)
    oversized: list[int] = field(default_factory=list)


class _Opening(NamedTuple):
    """A ResourceLogs or ScopeLogs without its children, and the most bytes it adds to a body."""

    header: ResourceLogs | ScopeLogs
    size: int


class _BodyBuilder:
    """Packs records into requests of bounded serialized size, reopening resource and scope per request."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.split = SplitPayload()
        self._request = ExportLogsServiceRequest()
        self._size = 0
        self._records = 0
        self._resource: ResourceLogs | None = None
        self._scope: ScopeLogs | None = None

    def enter_resource(self, resource_logs: ResourceLogs) -> _Opening:
        header = ResourceLogs(resource=resource_logs.resource, schema_url=resource_logs.schema_url)
        self._resource = self._scope = None
        return _Opening(header, header.ByteSize() + NESTING_OVERHEAD)

    def enter_scope(self, scope_logs: ScopeLogs) -> _Opening:
        header = ScopeLogs(scope=scope_logs.scope, schema_url=scope_logs.schema_url)
        self._scope = None
        return _Opening(header, header.ByteSize() + NESTING_OVERHEAD)

    def add_record(self, record: LogRecord, resource: _Opening, scope: _Opening) -> None:
        record_size = record.ByteSize() + NESTING_OVERHEAD
        if resource.size + scope.size + record_size > self.max_bytes:
            self.split.oversized.append(record_size - NESTING_OVERHEAD)  # fits in no body at all
            return
        opening = (resource.size if self._resource is None else 0) + (
            scope.size if self._scope is None else 0
        )
        if self._size + opening + record_size > self.max_bytes:
            self.flush()
            opening = resource.size + scope.size
        if self._resource is None:
            self._resource = self._request.resource_logs.add()
            self._resource.CopyFrom(resource.header)
        if self._scope is None:
            self._scope = self._resource.scope_logs.add()
            self._scope.CopyFrom(scope.header)
        self._scope.log_records.append(record)
        self._size += opening + record_size
        self._records += 1

    def flush(self) -> None:
        if self._records:
            self.split.bodies.append(self._request.SerializeToString())
        self._request = ExportLogsServiceRequest()
        self._size = self._records = 0
        self._resource = self._scope = None


def split_request(request: ExportLogsServiceRequest, max_bytes: int) -> SplitPayload:
    """Cut `request` into serialized requests of at most `max_bytes` each, records in their order."""
    builder = _BodyBuilder(max_bytes)
    for resource_logs in request.resource_logs:
        resource = builder.enter_resource(resource_logs)
        for scope_logs in resource_logs.scope_logs:
            scope = builder.enter_scope(scope_logs)
            for record in scope_logs.log_records:
                builder.add_record(record, resource, scope)
    builder.flush()
    return builder.split


@dataclass(slots=True)
class _Progress:
    sent: set[int] = field(default_factory=set)
    rejected: int = 0


class PosthogExporter(OtlpHttpExporter):
    """OTLP/HTTP protobuf to PostHog, splitting payloads over its body limit."""

    def __init__(self, config: PosthogExporterConfig, token: str) -> None:
        super().__init__(
            config.name,
            url=config.host + LOGS_PATH,
            encoding="protobuf",
            headers={"Authorization": f"Bearer {token}"},
            compression=config.compression,
            tls=config.tls,
            timeout=config.timeout,
        )
        self._api_key_env = config.api_key_env
        self._max_bytes = config.max_body_bytes
        self._progress: OrderedDict[bytes, _Progress] = OrderedDict()

    @classmethod
    def from_environment(cls, config: PosthogExporterConfig, environ: Mapping[str, str]) -> PosthogExporter:
        token = environ.get(config.api_key_env, "").strip()
        if not token:
            raise ConfigError(
                f"exporter {config.name}: environment variable {config.api_key_env} is "
                "not set; it must hold the PostHog project token (phc_...)"
            )
        return cls(config, token)

    async def export(self, payload: bytes, records: int) -> ExportResult:
        if len(payload) <= self._max_bytes:
            return await self.post(payload)
        try:
            request = ExportLogsServiceRequest.FromString(payload)
        except DecodeError:
            raise PermanentExportError("payload is not a serialized ExportLogsServiceRequest") from None
        split = split_request(request, self._max_bytes)
        too_big = _describe_oversized(split.oversized, self._max_bytes)
        if not split.bodies:
            raise PermanentExportError(f"nothing sent: {too_big}")
        key = xxhash.xxh3_128_digest(payload)
        progress = self._remember(key)
        for index, body in enumerate(split.bodies):
            if index in progress.sent:
                continue
            progress.rejected += (await self.post(body)).rejected_records
            progress.sent.add(index)
        del self._progress[key]
        if split.oversized:
            log.error("exporter %s: %s", self.name, too_big)
        rejected_upstream = f"{progress.rejected} rejected by PostHog" if progress.rejected else ""
        message = "; ".join(text for text in (too_big, rejected_upstream) if text)
        return ExportResult(rejected_records=progress.rejected + len(split.oversized), message=message)

    def _remember(self, key: bytes) -> _Progress:
        progress = self._progress.pop(key, None) or _Progress()
        self._progress[key] = progress
        while len(self._progress) > REMEMBERED_PAYLOADS:
            self._progress.popitem(last=False)
        return progress

    def status_error(self, status: int, message: str, retry_after: float | None) -> ExportError:
        if status == 401:
            log.error(
                "exporter %s: PostHog refused the project token (HTTP 401); check that %s holds the "
                "project token (phc_...) of the right project and region",
                self.name,
                self._api_key_env,
            )
            return PermanentExportError(f"{message} (the project token in {self._api_key_env} is wrong)")
        return super().status_error(status, message, retry_after)


def _describe_oversized(sizes: list[int], max_bytes: int) -> str:
    if not sizes:
        return ""
    listed = ", ".join(f"{size} bytes" for size in sizes[:5]) + (", ..." if len(sizes) > 5 else "")
    return f"dropped {len(sizes)} log record(s) larger than the {max_bytes}-byte body limit ({listed})"
