"""The proxy's own logs: JSON lines on stderr (stdout belongs to the debug exporter), rate-limited.

A message template that repeats (one per failing batch, say) is let through a few times per
interval, then summarised: the next line that passes says how many were suppressed. Record bodies
never reach these logs at info level; secrets never reach them at all.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extras = record.__dict__.items()
        entry.update((key, value) for key, value in extras if key not in _RESERVED and key[0] != "_")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RateLimitFilter(logging.Filter):
    """At most `burst` records per (logger, template) per `interval` seconds."""

    def __init__(
        self,
        burst: int = 10,
        interval: float = 10.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        key = (record.name, str(record.msg))
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval:
            suppressed = int(window[2]) if window else 0
            if len(self._windows) >= self._max_keys:
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            if suppressed:
                record.suppressed = suppressed
            return True
        if window[1] < self._burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "asyncio", "openai", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
