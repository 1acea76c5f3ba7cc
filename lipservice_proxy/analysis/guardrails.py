"""Guardrails: every candidate policy, from the heuristic or an LLM, passes here before it is written.

A candidate only proposes rates. What it may not touch is taken from the policy in force
(exemptions, first-per-window, anomaly boost, throughput cap, service overrides), and its rates
are bounded: ERROR and FATAL stay 1.0; every rate lies in [min_rate, 1]; a rate moves by at most
`max_change_factor` from the rate in force per refresh (so one bad answer cannot silence a
pattern, and a good policy is reached over a few refreshes); ids the stats do not know are
ignored; a pattern under an active anomaly boost is never lowered. Nothing in a candidate is
interpreted as anything but numbers and short texts, so a log line crafted as an instruction can
at most move a rate within these bounds.

Offline (`analyze` over a file, reviewed by a person before it is deployed) a pattern's first rule
is only clamped: there is no running rate for it to jolt, and its severity's default rate is no
judgement of that pattern. Rules the base policy already has are bounded as usual.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..sampling.policy import PROTECTED_SEVERITIES, Policy
from ..sampling.severity import SEVERITY_NAMES

# Pattern rules in one policy. The busiest patterns carry nearly all the volume; past the cap the
# rarest fall back to their severity's rate. A bigger policy costs every process that loads it
# (validation, indexes, the heap churn of a reload) and reads worse.
MAX_RULES = 2000
MAX_REASON = 300
MAX_REASONING = 20_000


@dataclass(frozen=True, slots=True)
class RateChange:
    rate: float
    reason: str  # why this rate; what the rate means is written by the guardrails, after bounding it


def rate_outcome(rate: float) -> str:
    """What a rate does, in words."""
    return "kept in full" if rate >= 1.0 else f"keep about 1 in {1 / rate:.0f}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """Proposed rates and why; `generated_by` is `heuristic` or `llm:<model>`."""

    generated_by: str
    reasoning: str
    severity_rates: Mapping[str, float] = field(default_factory=dict)
    pattern_rates: Mapping[str, RateChange] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KnownPattern:
    template: str
    current_rate: float  # the rate it gets under the policy in force (its rule, else its severity's)
    has_rule: bool = True  # False: only a severity rate applies to it so far
    volume: int = 0  # records seen: rules for the busiest patterns are the last to go past MAX_RULES


@dataclass(frozen=True, slots=True)
class Limits:
    min_rate: float
    max_change_factor: float
    bound_first_rules: bool = True  # False offline: no policy in force that a first rule could jolt

    def bound(self, proposed: float, current: float, *, has_rule: bool = True) -> float:
        """`proposed` clamped to [min_rate, 1] and to within the change factor of `current`."""
        if not math.isfinite(proposed):
            proposed = current
        if not has_rule and not self.bound_first_rules:
            return min(max(proposed, self.min_rate), 1.0)
        reference = min(max(current, self.min_rate), 1.0)
        low = max(self.min_rate, reference / self.max_change_factor)
        high = min(1.0, reference * self.max_change_factor)
        return min(max(proposed, low), high)


@dataclass
class GuardrailReport:
    """Which bounds applied and what they changed, written into the policy's reasoning."""

    limits: Limits
    unknown_ids: int = 0
    limited: int = 0
    held_by_boost: int = 0
    protected_ignored: int = 0
    unbounded_first_rules: int = 0  # offline: first rules only clamped, no change bound

    def summary(self) -> str:
        limits = self.limits
        parts = [
            "ERROR and FATAL at 1.0"
            + (
                f" ({self.protected_ignored} proposals to lower them ignored)"
                if self.protected_ignored
                else ""
            ),
            f"every rate in [{limits.min_rate:g}, 1]",
            f"a rate moves by at most x{limits.max_change_factor:g} per refresh",
        ]
        if self.unbounded_first_rules:
            parts[-1] += (
                f" (not applied to {self.unbounded_first_rules} patterns' first rules: offline, no rate in"
                " force for them to jolt, so they may move further from their severity's rate)"
            )
        parts.append(f"{self.limited or 'no'} proposed rates limited by them")
        if self.unknown_ids:
            parts.append(f"{self.unknown_ids} unknown pattern ids ignored")
        if self.held_by_boost:
            parts.append(f"{self.held_by_boost} boosted patterns not lowered")
        return "Guardrails: " + "; ".join(parts) + "."


def apply_guardrails(
    candidate: Candidate,
    current: Policy,
    known: Mapping[str, KnownPattern],
    boosted: Collection[str],
    limits: Limits,
    *,
    version: int,
    generated_at: datetime,
) -> Policy:
    """The policy to write: the candidate's rates within the limits, everything else from `current`."""
    report = GuardrailReport(limits)
    severity_rates: dict[str, float] = {}
    for name in SEVERITY_NAMES:
        now_rate = current.severity_rate(name)
        proposed = candidate.severity_rates.get(name)
        if name in PROTECTED_SEVERITIES:
            report.protected_ignored += proposed is not None and proposed != 1.0
            severity_rates[name] = 1.0
        elif proposed is None:
            severity_rates[name] = now_rate
        else:
            severity_rates[name] = _limited(limits.bound(proposed, now_rate), proposed, report)

    rules: dict[str, dict[str, Any]] = {}
    for pattern_id, change in candidate.pattern_rates.items():
        pattern = known.get(pattern_id)
        if pattern is None:
            report.unknown_ids += 1
            continue
        bounded = limits.bound(change.rate, pattern.current_rate, has_rule=pattern.has_rule)
        report.unbounded_first_rules += not pattern.has_rule and not limits.bound_first_rules
        rate = _limited(bounded, change.rate, report)
        why = "" if rate == change.rate else "limited by the per-refresh change bound or [min_rate, 1]"
        if pattern_id in boosted and rate < pattern.current_rate:
            rate = pattern.current_rate
            report.held_by_boost += 1
            why = "held: its anomaly boost is active"
        rules[pattern_id] = {
            "id": pattern_id,
            "template": pattern.template[:4096],
            "rate": rate,
            "reason": _reason(change, rate, why),
        }

    # rules the candidate did not touch carry over; those of patterns still seen go first
    renamed = {rule["template"] for rule in rules.values()}
    carried = [r for r in current.patterns if r.id not in rules and r.template not in renamed]
    carried.sort(key=lambda rule: -known[rule.id].volume if rule.id is not None and rule.id in known else 1)
    new_rules = sorted(rules.values(), key=lambda rule: -known[rule["id"]].volume)  # stable: ties keep order
    patterns = new_rules + [r.model_dump() for r in carried]

    reasoning = f"{candidate.reasoning.strip()}\n{report.summary()}"
    data = current.model_dump()
    data.update(
        version=version,
        generated_by=candidate.generated_by,
        generated_at=generated_at,
        reasoning=reasoning[:MAX_REASONING],
        severity_rates=severity_rates,
        patterns=patterns[:MAX_RULES],
    )
    return Policy.model_validate(data)


def _reason(change: RateChange, rate: float, why: str) -> str:
    """The rule's reason, written for the rate it ends with (not the one proposed)."""
    proposed = f" (proposed {change.rate:.4g}; {why})" if why else ""
    reason = change.reason.strip()[: MAX_REASON - 80]
    return f"{reason}: {rate_outcome(rate)}{proposed}" if reason else f"{rate_outcome(rate)}{proposed}"


def _limited(rate: float, proposed: float, report: GuardrailReport) -> float:
    if rate != proposed:
        report.limited += 1
    return rate
