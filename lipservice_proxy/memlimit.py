"""The process memory limiter, as the Collector's memory_limiter: refuse data before RSS outgrows the limit.

Every `check_interval` the resident set size is read from /proc/self/statm (a few microseconds, no
dependency). Above the soft limit (`limit_mib - spike_limit_mib`) new requests are refused with
`Backpressure`, which receivers answer as retryable (gRPC UNAVAILABLE, HTTP 503), so clients hold
the data; above the hard limit (`limit_mib`) a garbage collection is forced too. Refusing stops as
soon as a measurement is back under the soft limit. `check()` only reads the last verdict, so the
hot path never touches /proc. Where /proc is missing (not Linux), the limiter is off, with a warning.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import MIB, MemoryLimiterConfig
from .errors import Backpressure
from .telemetry import Telemetry

log = logging.getLogger(__name__)

STATM = "/proc/self/statm"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_rss_bytes() -> int | None:
    """This process's resident set size, or None where /proc is not available."""
    try:
        with open(STATM, "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    hard: int
    soft: int

    @classmethod
    def from_config(cls, config: MemoryLimiterConfig) -> MemoryLimits:
        soft_mib = config.limit_mib - config.spike_limit_mib
        return cls(hard=int(config.limit_mib * MIB), soft=int(soft_mib * MIB))


class MemoryLimiter:
    """The logs pipeline's `Admission`: `check()` raises Backpressure while memory is over the soft limit."""

    def __init__(
        self,
        config: MemoryLimiterConfig,
        telemetry: Telemetry,
        *,
        read_rss: Callable[[], int | None] = read_rss_bytes,
    ) -> None:
        self.limits = MemoryLimits.from_config(config)
        self._interval = config.check_interval
        self._telemetry = telemetry
        self._read_rss = read_rss
        self.rss: int | None = None
        self.refusing = False

    def check(self) -> None:
        if self.refusing:
            self._telemetry.memory_limiter_refusals.inc()
            raise Backpressure(
                f"memory limiter: resident memory {_mib(self.rss)} MiB is over the soft limit of "
                f"{_mib(self.limits.soft)} MiB",
                retry_after=max(1.0, self._interval),
            )

    def measure(self) -> None:
        """Read RSS and decide whether to refuse; force a collection above the hard limit."""
        rss = self._read_rss()
        if rss is not None and rss >= self.limits.hard:
            gc.collect()
            rss = self._read_rss()
        self.rss = rss
        refusing = rss is not None and rss >= self.limits.soft
        if refusing and not self.refusing:
            log.warning(
                "memory limiter: resident memory %d MiB is over the soft limit of %d MiB; refusing data",
                _mib(rss),
                _mib(self.limits.soft),
            )
        elif self.refusing and not refusing:
            log.info("memory limiter: resident memory %d MiB is back under the soft limit", _mib(rss))
        self.refusing = refusing

    async def run(self) -> None:
        """Measure every `check_interval` until cancelled (call `measure` once before, at start-up)."""
        if self._read_rss() is None:
            log.warning("memory limiter: cannot read %s on this system; the limit is not enforced", STATM)
            return
        while True:
            await asyncio.sleep(self._interval)
            self.measure()


CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def cgroup_headroom(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes this container may still use before its cgroup's memory limit, counting usage as the
    kubelet does (the working set: usage minus inactive file cache, which the kernel reclaims first).
    None without a limit, or where the cgroup files cannot be read. cgroup v2, else v1."""
    for limit_file, usage_file, inactive_key in (
        ("memory.max", "memory.current", "inactive_file"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "total_inactive_file"),
    ):
        try:
            limit_text = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text())
            stat = (root / limit_file).with_name("memory.stat").read_text()
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _NO_LIMIT:
            return None
        inactive = 0
        for line in stat.splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key and value.strip().isdigit():
                inactive = int(value)
        return int(limit_text) - max(0, usage - inactive)
    return None


def _mib(value: int | None) -> int:
    return (value or 0) // MIB
