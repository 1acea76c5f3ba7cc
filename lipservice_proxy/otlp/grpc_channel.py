"""Client gRPC channels toward an upstream, with the endpoint rules of the OTel SDKs and the Collector.

`http://host:port` is plaintext, `https://host:port` is TLS, and a bare `host:port` is TLS unless
`tls.insecure` is true. The scheme wins over `insecure`. TLS may use a private CA (`ca_file`) and a
client certificate (`cert_file` + `key_file`). Message size limits are raised well above gRPC's 4 MiB
default because batches of logs (and passed-through traces and metrics) are routinely bigger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc

from .. import __version__
from ..config import ClientTLS
from ..errors import ConfigError

MAX_MESSAGE_BYTES = 256 * 1024 * 1024

DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.primary_user_agent", f"lipservice-proxy/{__version__}"),
    # gRPC's reconnect backoff grows toward 120 s by default; an upstream back from an outage would
    # then wait that long to be noticed. The exporters' retries wait for the channel to reconnect
    # (OtlpGrpcExporter.reconnected), so these bound how late delivery resumes: ~1 s at most.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

ChannelOption = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """Where a channel connects: gRPC's `host:port` target and whether it speaks TLS."""

    address: str
    secure: bool


def parse_endpoint(endpoint: str, tls: ClientTLS) -> GrpcTarget:
    """Apply the endpoint rules; raises ConfigError for anything that is not host:port or a URL of one."""
    text = endpoint.strip()
    if "://" in text:
        url = urlsplit(text)
        if url.scheme not in ("http", "https"):
            raise ConfigError(f"gRPC endpoint {endpoint!r}: the scheme must be http or https")
        if url.path not in ("", "/") or url.query:
            raise ConfigError(f"gRPC endpoint {endpoint!r}: a gRPC endpoint has no path or query")
        if url.username or url.password:
            raise ConfigError("gRPC endpoint: credentials belong in headers, not in the endpoint")
        address, secure = url.netloc, url.scheme == "https"
    else:
        address, secure = text, not tls.insecure
    host, sep, port = address.rpartition(":")
    if not address or (sep and not port.isdigit()) or (sep and not host):
        raise ConfigError(
            f"gRPC endpoint {endpoint!r} is not host:port, http://host:port or https://host:port"
        )
    return GrpcTarget(address=address, secure=secure)


def plaintext_hint(endpoint: str, tls: ClientTLS, details: str | None) -> str:
    """What to add to a failed TLS handshake's error when the endpoint only means TLS by having no
    scheme: the usual cause is a plaintext upstream written as a bare host:port."""
    if "://" in endpoint or tls.insecure or "handshake" not in (details or "").lower():
        return ""
    return f" (a bare host:port endpoint means TLS: write http://{endpoint.strip()} for a plaintext upstream)"


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what} {str(path)!r}: cannot read: {exc.strerror or exc}") from None


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    if tls.insecure_skip_verify:
        raise ConfigError(
            "tls.insecure_skip_verify is not supported for gRPC upstreams; give tls.ca_file with the "
            "upstream's CA instead, or use an http:// endpoint for plaintext"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file"),
        private_key=_read(tls.key_file, "key_file"),
        certificate_chain=_read(tls.cert_file, "cert_file"),
    )


def open_channel(
    endpoint: str,
    tls: ClientTLS,
    *,
    compression: Literal["gzip", "none"] | str = "none",
    options: Sequence[ChannelOption] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to `endpoint`. `options` extend or override DEFAULT_OPTIONS by name."""
    if compression not in ("gzip", "none"):
        raise ConfigError(f"gRPC compression {compression!r}: must be gzip or none")
    target = parse_endpoint(endpoint, tls)
    merged = list(dict([*DEFAULT_OPTIONS, *options]).items())
    algorithm = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
    if target.secure:
        return grpc.aio.secure_channel(target.address, channel_credentials(tls), merged, algorithm)
    return grpc.aio.insecure_channel(target.address, merged, algorithm)
