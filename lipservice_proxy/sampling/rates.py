"""Which keep rate applies to a (service, pattern, severity), and which rule said so.

Order: the service's override (its pattern rules, then its severity rates), then the policy's
pattern rule, then the policy's severity rate, then 1.0. ERROR and FATAL are 1.0 whatever
any rule says, so raising `always_keep_min_severity` can never lose them either. A pattern rule
is found by id, or by its template when the id is unknown here (ids change when a template
generalises; templates do not).

Where a rate came from is a `RateSource`: the admin API's `rule` label, the reason it shows and
whether a pattern rule is involved all derive from it, here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..config import SEVERITY_NAMES
from .policy import PatternRule, Policy, ServiceOverride
from .severity import ERROR, INFO


class RateKind(StrEnum):
    PROTECTED = "protected"  # ERROR and FATAL: always 1.0
    SERVICE_PATTERN = "service-pattern"  # a pattern rule of the service's override
    SERVICE_SEVERITY = "service-severity"  # a severity rate of the service's override
    PATTERN = "pattern"  # a pattern rule of the policy
    SEVERITY = "severity"  # a severity rate of the policy
    DEFAULT = "default"  # nothing applies: 1.0
    BOOST = "boost"  # an anomaly boost (the sampler asks the boost table, not the policy)


_RULE_KINDS = (RateKind.PATTERN, RateKind.SERVICE_PATTERN)
_SERVICE_KINDS = {RateKind.SERVICE_PATTERN: "pattern", RateKind.SERVICE_SEVERITY: "severity"}
_SERVICE_KIND_OF = {what: kind for kind, what in _SERVICE_KINDS.items()}
_KIND_OF_LABEL = {kind.value: kind for kind in RateKind if kind not in _SERVICE_KINDS}
_FIXED_REASONS = {
    RateKind.PROTECTED: "always kept (severity)",
    RateKind.SEVERITY: "the policy's rate for this severity",
    RateKind.SERVICE_SEVERITY: "the service's rate for this severity",
    RateKind.DEFAULT: "no rule applies: kept",
}


@dataclass(frozen=True, slots=True)
class RateSource:
    """Where a keep rate came from: its kind, the service whose override set it, the pattern rule
    that set it, or the boost's own reason."""

    kind: RateKind
    service: str | None = None  # the service kinds only
    rule: PatternRule | None = None  # the pattern kinds only (None when parsed from a label)
    boost_reason: str | None = None  # BOOST only

    @classmethod
    def boost(cls, reason: str | None) -> RateSource:
        return cls(RateKind.BOOST, boost_reason=reason)

    @classmethod
    def parse(cls, label: str) -> RateSource:
        """The source a `label` names (without the rule or boost behind it); ValueError if none."""
        if label.startswith("service:"):
            service, _, what = label.removeprefix("service:").rpartition(":")
            kind = _SERVICE_KIND_OF.get(what)
            if service and kind is not None:
                return cls(kind, service=service)
        elif label in _KIND_OF_LABEL:
            return cls(_KIND_OF_LABEL[label])
        raise ValueError(f"not a rate source label: {label!r}")

    @property
    def label(self) -> str:
        """The admin API's `rule` field: `service:<name>:pattern`, `service:<name>:severity`, or the kind."""
        what = _SERVICE_KINDS.get(self.kind)
        return f"service:{self.service}:{what}" if what is not None else self.kind.value

    @property
    def has_rule(self) -> bool:
        """A pattern rule (the policy's or the service's) sets the rate."""
        return self.kind in _RULE_KINDS

    @property
    def has_own_reason(self) -> bool:
        """The reason is the rule's or the boost's own text, not a description of the kind."""
        return self.has_rule or self.kind is RateKind.BOOST

    @property
    def reason(self) -> str:
        """Why the rate applies: the rule's or the boost's own reason, else what the kind means."""
        own = self.rule.reason if self.rule is not None else self.boost_reason
        return own or _FIXED_REASONS.get(self.kind) or self.label


PROTECTED = RateSource(RateKind.PROTECTED)
_SEVERITY = RateSource(RateKind.SEVERITY)
_DEFAULT = RateSource(RateKind.DEFAULT)

Resolved = tuple[list[float], list[RateSource]]  # keep rate and its source for each of the six levels


def busiest_sampled_level(counts: Sequence[int]) -> int:
    """The level below ERROR with the most records in `counts` (per level), INFO when there are none:
    the level whose rate the pattern's volume mostly gets."""
    sampled = counts[:ERROR]
    return max(range(ERROR), key=sampled.__getitem__) if any(sampled) else INFO


class _RuleIndex:
    """Pattern rules by id and by template, each with its rate and the RateSource naming it."""

    def __init__(self, rules: list[PatternRule], source: Callable[[PatternRule], RateSource]) -> None:
        found = [(rule, (rule.rate, source(rule))) for rule in rules]
        self.by_id = {rule.id: entry for rule, entry in found if rule.id is not None}
        self.by_template = {rule.template: entry for rule, entry in found if rule.template}

    def find(self, pattern_id: str, template: str) -> tuple[float, RateSource] | None:
        entry = self.by_id.get(pattern_id)
        return entry if entry is not None else self.by_template.get(template)


class _Override:
    """A service's override compiled for lookups."""

    def __init__(self, service: str, override: ServiceOverride) -> None:
        self.severity_rates = override.severity_rates
        self.rules = _RuleIndex(
            override.patterns, lambda rule: RateSource(RateKind.SERVICE_PATTERN, service, rule)
        )
        self.severity_source = RateSource(RateKind.SERVICE_SEVERITY, service)


class RateTable:
    """A policy compiled for lookups; resolved once per (service, pattern) and cached by the sampler."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._patterns = _RuleIndex(policy.patterns, lambda rule: RateSource(RateKind.PATTERN, rule=rule))
        self._services = {name: _Override(name, override) for name, override in policy.services.items()}

    def resolve(self, service: str, pattern_id: str, template: str) -> Resolved:
        """Keep rate and its source for each of the six levels."""
        rates: list[float] = []
        sources: list[RateSource] = []
        override = self._services.get(service)
        service_rule = override.rules.find(pattern_id, template) if override else None
        pattern_rule = self._patterns.find(pattern_id, template)
        for level, name in enumerate(SEVERITY_NAMES):
            rate: float
            source: RateSource
            if level >= ERROR:
                rate, source = 1.0, PROTECTED
            elif service_rule is not None:
                rate, source = service_rule
            elif override is not None and name in override.severity_rates:
                rate, source = override.severity_rates[name], override.severity_source  # type: ignore[index]
            elif pattern_rule is not None:
                rate, source = pattern_rule
            elif name in self._policy.severity_rates:
                rate, source = self._policy.severity_rates[name], _SEVERITY  # type: ignore[index]
            else:
                rate, source = 1.0, _DEFAULT
            rates.append(rate)
            sources.append(source)
        return rates, sources
