"""Server TLS for both receivers: the files are read and checked when the proxy is built, so a missing
file, a malformed PEM or a key that does not match its certificate stops start-up with one clear
`ConfigError` instead of a traceback (or, for gRPC, a server that fails every handshake)."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from ..config import ServerTLS
from ..errors import ConfigError


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"receivers.tls.{key} {str(path)!r}: cannot read: {exc.strerror or exc}") from None


def server_ssl_context(tls: ServerTLS) -> ssl.SSLContext:
    _read(tls.cert_file, "cert_file")
    _read(tls.key_file, "key_file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"receivers.tls: {str(tls.cert_file)!r} and {str(tls.key_file)!r} are not a PEM certificate "
            f"and its private key ({exc.reason or exc})"
        ) from None
    if tls.client_ca_file:
        _read(tls.client_ca_file, "client_ca_file")
        try:
            context.load_verify_locations(tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"receivers.tls.client_ca_file {str(tls.client_ca_file)!r}: not PEM certificates "
                f"({exc.reason or exc})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def grpc_server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    server_ssl_context(tls)  # grpc accepts any bytes here and fails each handshake later: check first
    root = _read(tls.client_ca_file, "client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))],
        root_certificates=root,
        require_client_auth=root is not None,
    )
