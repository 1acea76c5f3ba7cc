"""A listening socket that cannot be opened is a config problem: one line naming the key, exit code 2.

aiohttp raises the OSError of its bind. grpc says only that binding failed (and its C core prints
its own line on stderr), so before grpc binds, a plain socket with the options grpc uses is bound to
the same address and closed again: its error says why, in one line, before grpc has said anything.

Connections are file descriptors, so the open-file limit is lifted to what the receivers' caps need.
"""

from __future__ import annotations

import errno
import logging
import socket

from .config import host_port
from .errors import ConfigError

log = logging.getLogger(__name__)

# File descriptors besides the receivers' connections: the admin server and its clients, exporter
# channels, disk queue segments, the policy files, the clustering child's pipes.
RESERVED_FILES = 256


def listen_error(key: str, endpoint: str, error: OSError) -> ConfigError:
    if error.errno == errno.EADDRINUSE:
        return ConfigError(f"{key}: {endpoint} is already in use")
    return ConfigError(f"{key}: cannot listen on {endpoint}: {error.strerror or error}")


def check_grpc_endpoint(key: str, endpoint: str, *, reuse_port: bool = False) -> None:
    """Raise the ConfigError grpc's bind of `endpoint` would fail with, if any."""
    host, port = host_port(endpoint)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{key}: cannot resolve {endpoint}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(address)
            except OSError as exc:
                raise listen_error(key, endpoint, exc) from None


def grpc_bind_failed(key: str, endpoint: str) -> ConfigError:
    """grpc's bind failed although the check passed (the port was taken in between)."""
    return ConfigError(f"{key}: cannot listen on {endpoint}")


def raise_open_file_limit(needed: int) -> None:
    """Every connection is a file descriptor: lift the soft open-file limit toward the hard one when
    `needed` (the receivers' connection caps plus room for everything else) exceeds it, as Go's
    runtime does at start; warn when even the hard limit is lower, since the admin server's probes
    and the exporters would then be the first to fail under a flood of connections."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "the open-file limit (%d) is below the %d the receivers' max_connections need with room for "
            "the admin server and exporters: lower receivers.*.max_connections or raise the limit",
            target,
            needed,
        )
