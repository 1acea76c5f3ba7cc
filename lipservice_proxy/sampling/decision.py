"""What a sampling decision is, and what one batch's decisions add up to.

A `Decision` carries keep, rate, reason and the pattern key (as Refinery's sample/ decisions do) so
any record's fate can be explained; reference.py makes one per record. The hot path does not: it
tallies the same facts straight into a `BatchOutcome`, which receivers, metrics and the analysis
loop read.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from enum import StrEnum

from .rates import RateSource


class Reason(StrEnum):
    """Why a record was kept or dropped; also the `decision` label of pattern metrics."""

    SEVERITY = "severity"  # at or above always_keep_min_severity
    EXEMPT = "exempt"  # matched a policy exemption
    BOOST = "boost"  # an anomaly boost is active on the pattern
    FIRST = "first"  # among the first N of its pattern in this window
    SAMPLED = "sampled"  # kept by the coin at the resolved rate
    DROPPED = "dropped"  # dropped by the coin at the resolved rate
    INVALID = "invalid"  # rejected as malformed (partial success)


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    rate: float  # keep probability applied; the kept record stands for 1/rate records
    reason: Reason
    pattern_id: str
    template: str = ""
    rule: RateSource | None = None  # where the rate came from
    count: int = 0  # lipservice.count of a kept record: itself and the drops it accounts for


@dataclass(slots=True)
class BatchOutcome:
    """Counts of one request's decisions, grouped for metrics and stats.

    records: (service, severity) -> [received, kept]
    bytes: service -> [received, kept]: serialized size of the records with their scope framing
    patterns: (service, pattern_id, severity) -> PatternTally
    """

    received: int = 0
    kept: int = 0
    forwarded: int = 0  # records left in the request: the kept ones, or all valid ones in dry run
    rejected: int = 0
    rejection_message: str = ""
    records: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    bytes: dict[str, list[int]] = field(default_factory=dict)
    patterns: dict[tuple[str, str, str], PatternTally] = field(default_factory=dict)
    wire: builtins.bytes | None = None  # the forwarded request's encoding, when the sampler spliced it

    @property
    def dropped(self) -> int:
        return self.received - self.kept - self.rejected


@dataclass(slots=True)
class PatternTally:
    template: str
    received: int = 0
    kept: int = 0
    bytes: int = 0  # body characters: relative volume per pattern, cheap to count
    bytes_kept: int = 0
    weight: float = 0.0  # sum of the kept records' lipservice.sample_rate: the estimated count
    counted: int = 0  # sum of the kept records' lipservice.count: the exact count, less the open tail
    reasons: dict[str, int] = field(default_factory=dict)
