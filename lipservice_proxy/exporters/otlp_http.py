"""OTLP/HTTP log exporter (aiohttp): protobuf or JSON bodies, optional gzip, OTLP's status rules.

429, 502, 503 and 504 are retryable and their Retry-After (seconds or an HTTP-date) becomes
`retry_after`; a connection failure or a timeout is retryable too; every other 4xx/5xx (and a 3xx,
since redirects are not followed) is permanent. A 2xx body is read, as protobuf or JSON by its
Content-Type, for a partial success; an error body holding a `google.rpc.Status` lends its message to
the error text.

After a failure to connect, `reconnected` tries a plain TCP connection to the upstream every
RECONNECT_PROBE_INTERVAL and returns once one succeeds, so a retry waiting on a long backoff goes
within about that long of the upstream's return.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import math
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
import orjson
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from multidict import CIMultiDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from .. import __version__
from ..config import ClientTLS, OtlpHttpExporterConfig
from ..errors import BadRequest, ConfigError, ExportError, PermanentExportError, RetryableExportError
from ..receivers.otlp_json import json_to_message, message_to_json
from .base import UNREADABLE_RESPONSE, ExportResult, LogExporter, partial_success_result

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}
GZIP_LEVEL = 6
GZIP_IN_THREAD_BYTES = 256 * 1024
"""Bodies above this are compressed off the event loop (zlib releases the GIL)."""
ERROR_TEXT_CHARS = 300
RECONNECT_PROBE_INTERVAL = 0.5


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None when absent or invalid."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; a zone-less date is read the same way
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def describe_error_body(body: bytes, content_type: str | None) -> str:
    """The message of a `google.rpc.Status` error body, else the start of the body as text."""
    media = _media_type(content_type)
    if media == CONTENT_TYPES["protobuf"]:
        try:
            status = status_pb2.Status.FromString(body)
        except DecodeError:
            status = None
        if status is not None and status.message:
            return status.message
    elif media == CONTENT_TYPES["json"]:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return str(parsed["message"])
    text = body.decode("utf-8", errors="replace").strip()
    return text[:ERROR_TEXT_CHARS] + ("..." if len(text) > ERROR_TEXT_CHARS else "") if text else "empty body"


def read_partial_success(body: bytes, content_type: str | None) -> ExportResult:
    """The ExportResult of a 2xx response body (empty means full success)."""
    if not body:
        return ExportResult()
    try:
        if _media_type(content_type) == CONTENT_TYPES["json"]:
            return partial_success_result(json_to_message(body, ExportLogsServiceResponse))
        return partial_success_result(ExportLogsServiceResponse.FromString(body))
    except (BadRequest, DecodeError):
        return UNREADABLE_RESPONSE


def ssl_context(tls: ClientTLS) -> ssl.SSLContext:
    """The client TLS context for https:// upstreams."""
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certificates: {exc}") from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def gzip_body(body: bytes) -> bytes:
    if len(body) > GZIP_IN_THREAD_BYTES:
        return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)
    return gzip.compress(body, GZIP_LEVEL, mtime=0)


class OtlpHttpExporter(LogExporter):
    """POSTs each payload to one OTLP/HTTP logs URL."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        encoding: str = "protobuf",
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        tls: ClientTLS | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name)
        if encoding not in CONTENT_TYPES:
            raise ConfigError(f"exporter {name}: encoding must be protobuf or json")
        if compression not in ("gzip", "none"):
            raise ConfigError(f"exporter {name}: compression must be gzip or none")
        self.url = url
        self._encoding = encoding
        self._gzip = compression == "gzip"
        self._tls = tls or ClientTLS()
        self._timeout = timeout
        # Case-insensitive, so a configured "content-type" cannot end up next to ours.
        self._headers = CIMultiDict({"User-Agent": f"lipservice-proxy/{__version__}"})
        self._headers.update(headers or {})
        self._headers["Content-Type"] = CONTENT_TYPES[encoding]
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        else:
            self._headers.popall("Content-Encoding", None)
        self._session: aiohttp.ClientSession | None = None
        self._connection_lost = False  # the last failed request could not connect

    @classmethod
    def from_config(cls, config: OtlpHttpExporterConfig, environ: Mapping[str, str]) -> OtlpHttpExporter:
        return cls(
            config.name,
            url=config.endpoint,
            encoding=config.encoding,
            headers=config.headers,
            compression=config.compression,
            tls=config.tls,
            timeout=config.timeout,
        )

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            ssl=ssl_context(self._tls) if self.url.startswith("https://") else False
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout)
        )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def export(self, payload: bytes, records: int) -> ExportResult:
        if self._encoding == "json":
            try:
                request = ExportLogsServiceRequest.FromString(payload)
            except DecodeError:
                raise PermanentExportError("payload is not a serialized ExportLogsServiceRequest") from None
            payload = message_to_json(request)
        return await self.post(payload)

    async def post(self, body: bytes) -> ExportResult:
        """One POST of an already encoded body."""
        if self._session is None:
            raise RuntimeError(f"exporter {self.name}: export() before start()")
        data = await gzip_body(body) if self._gzip else body
        try:
            async with self._session.post(
                self.url, data=data, headers=self._headers, allow_redirects=False
            ) as reply:
                self._connection_lost = False  # connected: whatever follows, the upstream answers
                answer = await reply.read()
                content_type = reply.headers.get("Content-Type")
                if 200 <= reply.status < 300:
                    return read_partial_success(answer, content_type)
                raise self.status_error(
                    reply.status,
                    f"HTTP {reply.status} {reply.reason or ''}".rstrip()
                    + f": {describe_error_body(answer, content_type)}",
                    parse_retry_after(reply.headers.get("Retry-After")),
                )
        except TimeoutError:
            raise RetryableExportError(f"no answer within {self._timeout:g}s") from None
        except aiohttp.ClientError as exc:
            self._connection_lost = isinstance(exc, aiohttp.ClientConnectorError)
            raise RetryableExportError(f"connection failed: {exc.__class__.__name__}: {exc}") from None

    async def reconnected(self) -> None:
        if not self._connection_lost:  # the upstream itself answered: back off
            await super().reconnected()
            return
        url = urlsplit(self.url)
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        while True:
            try:
                async with asyncio.timeout(RECONNECT_PROBE_INTERVAL):
                    _, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                await asyncio.sleep(RECONNECT_PROBE_INTERVAL)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def status_error(self, status: int, message: str, retry_after: float | None) -> ExportError:
        """The error a non-2xx status means; subclasses add advice for statuses they know better."""
        if status in RETRYABLE_STATUSES:
            return RetryableExportError(message, retry_after=retry_after)
        return PermanentExportError(message)
