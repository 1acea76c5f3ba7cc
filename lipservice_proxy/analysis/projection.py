"""What a policy would keep of the traffic the proxy just saw: the projected effect of a proposal.

Computed, not guessed: each (service, pattern) of the interval gets the rates the sampler itself
would resolve for it under the policy (`RateTable`, the sampler's rule order), and its records are
kept as the sampler keeps them: ERROR and FATAL always; the first N per window whatever the rate
(`first_keeps`, the same figure the heuristic plans with); the rest at the pattern's rate, capped by
`max_per_pattern_per_second` when set. The systematic coin keeps `rate` of a key's records to
within one record, so the expected count is what the sampler keeps. Bytes follow records within a
pattern (the stats count bytes per pattern, not per level). Anomaly boosts and exemptions are not
part of a policy's rates and are left out: they keep more, never less.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..sampling.policy import Policy
from ..sampling.rates import RateTable
from ..sampling.severity import ERROR, SEVERITY_NAMES
from ..sampling.window import first_keeps
from .stats import PatternWindow


@dataclass(frozen=True, slots=True)
class Projection:
    received: tuple[int, ...]  # per level
    kept: tuple[float, ...]  # per level, expected
    bytes_received: int
    bytes_kept: float
    first_per_window: float  # records kept as a pattern's first of a window
    duration: float  # seconds of traffic the figures are over

    @property
    def records_received(self) -> int:
        return sum(self.received)

    @property
    def records_kept(self) -> float:
        return sum(self.kept)

    @property
    def keep_ratio(self) -> float:
        return self.records_kept / self.records_received if self.records_received else 1.0

    @property
    def bytes_saved_ratio(self) -> float:
        return 1 - self.bytes_kept / self.bytes_received if self.bytes_received else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_received": self.records_received,
            "records_kept": round(self.records_kept),
            "keep_ratio": round(self.keep_ratio, 4),
            "bytes_received": self.bytes_received,
            "bytes_kept": round(self.bytes_kept),
            "bytes_saved_ratio": round(self.bytes_saved_ratio, 4),
            "error_and_above_kept": sum(self.received[ERROR:]),
            "first_per_window_kept": round(self.first_per_window),
            "window_seconds": round(self.duration, 3),
            "per_severity": {
                name: {"received": received, "kept": round(kept)}
                for name, received, kept in zip(SEVERITY_NAMES, self.received, self.kept, strict=True)
                if received
            },
        }


def project(policy: Policy, windows: Iterable[PatternWindow], duration: float) -> Projection:
    """The records and bytes `policy` keeps of `windows` (one interval of `duration` seconds)."""
    table = RateTable(policy)
    first = policy.first_per_window
    cap = policy.max_per_pattern_per_second
    received = [0] * len(SEVERITY_NAMES)
    kept = [0.0] * len(SEVERITY_NAMES)
    bytes_received = 0
    bytes_kept = firsts_total = 0.0
    for window in windows:
        rates, _ = table.resolve(window.service, window.pattern_id, window.template)
        sampleable = window.sampleable
        firsts = first_keeps(sampleable, first.count, first.window, duration)
        # the window's firsts fall on its levels in proportion to their records
        first_share = [firsts * n / sampleable if sampleable else 0.0 for n in window.counts[:ERROR]]
        sampled = [(window.counts[level] - first_share[level]) * rates[level] for level in range(ERROR)]
        if cap is not None:
            scale = min(1.0, cap * duration / sum(sampled)) if sum(sampled) else 1.0
            sampled = [n * scale for n in sampled]
        pattern_kept = 0.0
        for level, count in enumerate(window.counts):
            level_kept = count if level >= ERROR else first_share[level] + sampled[level]
            received[level] += count
            kept[level] += level_kept
            pattern_kept += level_kept
        firsts_total += firsts
        bytes_received += window.bytes
        bytes_kept += window.bytes * pattern_kept / window.received if window.received else 0.0
    return Projection(tuple(received), tuple(kept), bytes_received, bytes_kept, firsts_total, duration)
