"""The fleet API's messages to and from the proxy's own types, with every bound checked. Pure.

Sampler side: `report_message` (a closed window -> ReportPatternsRequest) and `read_snapshot`
(PolicySnapshot -> a validated Policy and boosts). Analyzer side: `report_outcome` (a report -> the
BatchOutcome that `PatternStats` already understands) and `snapshot_message`. A message that breaks a
bound raises BadRequest (report) or PolicyError (snapshot) naming the field, never a crash.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pydantic import ValidationError

from ..config import SEVERITY_NAMES, format_validation_error
from ..errors import BadRequest, PolicyError
from ..sampling.boosts import Boost
from ..sampling.decision import BatchOutcome, PatternTally
from ..sampling.policy import Policy
from . import policy_pb2 as pb
from .reports import N_LEVELS, ClosedWindow

MAX_SAMPLER_ID = 253
MAX_SERVICE = 1024
MAX_TEMPLATE = 16_384
MAX_REASON = 1000
MAX_REPORT_PATTERNS = 100_000
MAX_BOOSTS = 10_000
MAX_BOOST_SECONDS = 7 * 86_400.0
PATTERN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")  # as a policy's pattern rule ids
NANOS = 1_000_000_000


def _sendable(service: str, pattern_id: str, template: str) -> bool:
    return (
        len(service) <= MAX_SERVICE and len(template) <= MAX_TEMPLATE and bool(PATTERN_ID.match(pattern_id))
    )


# ---- reports ----


PATTERN_OVERHEAD = 100  # bytes of a PatternCount besides its strings, generously


def report_message(
    window: ClosedWindow, *, sampler_id: str, sequence: int, policy_version: int, max_bytes: int
) -> pb.ReportPatternsRequest:
    """A closed window as a report of at most about `max_bytes`. An entry the analyzer would refuse
    (an overlong service name or template), or one past the size budget, is summed into `other`
    instead, so the report is never refused for its size or its content."""
    other_received, other_kept = list(window.other_received), list(window.other_kept)
    patterns = []
    budget = max_bytes - PATTERN_OVERHEAD - len(sampler_id)
    for (service, pattern_id), entry in window.patterns:
        size = PATTERN_OVERHEAD + len(service) + len(pattern_id) + len(entry.template.encode())
        if size <= budget and _sendable(service, pattern_id, entry.template):
            budget -= size
            patterns.append(
                pb.PatternCount(
                    service=service,
                    pattern_id=pattern_id,
                    template=entry.template,
                    counts=pb.SeverityCounts(received=entry.received, kept=entry.kept),
                    bytes=entry.bytes,
                    bytes_kept=entry.bytes_kept,
                )
            )
        else:
            for level in range(N_LEVELS):
                other_received[level] += entry.received[level]
                other_kept[level] += entry.kept[level]
    return pb.ReportPatternsRequest(
        sampler_id=sampler_id,
        sequence=sequence,
        window_start_unix_nano=int(window.start * NANOS),
        window_end_unix_nano=int(window.end * NANOS),
        patterns=patterns,
        other=pb.SeverityCounts(received=other_received, kept=other_kept),
        policy_version=policy_version,
    )


@dataclass(frozen=True, slots=True)
class Report:
    """What the analyzer takes from one report."""

    sampler_id: str
    sequence: int
    policy_version: int
    outcome: BatchOutcome  # the named patterns, as PatternStats observes them; totals include `other`
    pattern_records: int
    other_records: int


def _counts(counts: pb.SeverityCounts, where: str, *, optional: bool = False) -> tuple[list[int], list[int]]:
    received, kept = list(counts.received), list(counts.kept)
    if optional and not received and not kept:
        return [0] * N_LEVELS, [0] * N_LEVELS
    if len(received) != N_LEVELS or len(kept) != N_LEVELS:
        raise BadRequest(
            f"{where}: received and kept need {N_LEVELS} counts each ({', '.join(SEVERITY_NAMES)})"
        )
    if any(k > r for r, k in zip(received, kept, strict=True)):
        raise BadRequest(f"{where}: kept exceeds received")
    return received, kept


def report_outcome(request: pb.ReportPatternsRequest) -> Report:
    """Validate a report and turn it into a BatchOutcome: one tally per named pattern and severity seen
    (a pattern's bytes go with its first), their counts per (service, severity) as the sampler's
    `records`, received and kept summed over everything, `other` included. Raises BadRequest naming
    the first problem."""
    if not 0 < len(request.sampler_id) <= MAX_SAMPLER_ID:
        raise BadRequest(f"sampler_id must have 1 to {MAX_SAMPLER_ID} characters")
    if len(request.patterns) > MAX_REPORT_PATTERNS:
        raise BadRequest(f"a report may name at most {MAX_REPORT_PATTERNS} patterns")
    if request.window_end_unix_nano < request.window_start_unix_nano:
        raise BadRequest("window_end_unix_nano is before window_start_unix_nano")
    outcome = BatchOutcome()
    tallies = outcome.patterns
    pattern_records = 0
    for index, pattern in enumerate(request.patterns):
        where = f"patterns[{index}]"
        if not _sendable(pattern.service, pattern.pattern_id, pattern.template):
            raise BadRequest(
                f"{where}: needs a pattern_id of 1-64 characters [0-9a-zA-Z_-], a service of at most "
                f"{MAX_SERVICE} and a template of at most {MAX_TEMPLATE} characters"
            )
        if pattern.bytes_kept > pattern.bytes:
            raise BadRequest(f"{where}: bytes_kept exceeds bytes")
        received, kept = _counts(pattern.counts, where)
        bytes_total, bytes_kept = pattern.bytes, pattern.bytes_kept
        for level, count in enumerate(received):
            if not count:
                continue
            key = (pattern.service, pattern.pattern_id, SEVERITY_NAMES[level])
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = PatternTally(pattern.template)
            tally.received += count
            tally.kept += kept[level]
            outcome.kept += kept[level]
            totals = outcome.records.setdefault((pattern.service, SEVERITY_NAMES[level]), [0, 0])
            totals[0] += count
            totals[1] += kept[level]
            tally.bytes += bytes_total
            tally.bytes_kept += bytes_kept
            bytes_total = bytes_kept = 0
            pattern_records += count
    other_received, other_kept = _counts(request.other, "other", optional=True)
    outcome.received = pattern_records + sum(other_received)
    outcome.kept += sum(other_kept)
    outcome.forwarded = outcome.kept
    return Report(
        request.sampler_id,
        request.sequence,
        request.policy_version,
        outcome,
        pattern_records,
        sum(other_received),
    )


# ---- policy snapshots ----


def snapshot_message(
    policy_json: bytes, version: int, boosts: list[Boost], *, now: float, revision: int
) -> pb.PolicySnapshot:
    return pb.PolicySnapshot(
        version=version,
        policy_json=policy_json,
        boosts=[
            pb.Boost(
                pattern_id=boost.pattern_id,
                rate=boost.rate,
                remaining_seconds=boost.until - now,
                reason=boost.reason[:MAX_REASON],
            )
            for boost in boosts[:MAX_BOOSTS]
        ],
        revision=revision,
    )


def read_snapshot(message: pb.PolicySnapshot, source: str, now: float) -> tuple[Policy, list[Boost]]:
    """The snapshot's policy, validated as a policy file is, and its boosts as absolute deadlines."""
    try:
        policy = Policy.model_validate_json(message.policy_json)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(exc, source)) from None
    if policy.version != message.version:
        raise PolicyError(f"{source}: version {message.version} but the policy says {policy.version}")
    if len(message.boosts) > MAX_BOOSTS:
        raise PolicyError(f"{source}: more than {MAX_BOOSTS} boosts")
    boosts = []
    for index, boost in enumerate(message.boosts):
        remaining = boost.remaining_seconds
        if not (
            PATTERN_ID.match(boost.pattern_id)
            and 0.0 <= boost.rate <= 1.0
            and math.isfinite(remaining)
            and remaining <= MAX_BOOST_SECONDS
            and len(boost.reason) <= MAX_REASON
        ):
            raise PolicyError(
                f"{source}: boosts[{index}] needs a valid pattern_id, a rate in [0, 1] and at most "
                f"{MAX_BOOST_SECONDS:g} remaining seconds"
            )
        if remaining > 0:
            boosts.append(Boost(boost.pattern_id, boost.rate, now + remaining, boost.reason))
    return policy, boosts
