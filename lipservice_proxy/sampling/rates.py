"""Which keep rate applies to a (service, pattern, severity), and which rule said so.

Order: the service's override (its pattern rules, then its severity rates), then the policy's
pattern rule, then the policy's severity rate, then 1.0. ERROR and FATAL are 1.0 whatever
any rule says, so raising `always_keep_min_severity` can never lose them either. A pattern rule
is found by id, or by its template when the id is unknown here (ids change when a template
generalises; templates do not).
"""

from __future__ import annotations

from .policy import PatternRule, Policy
from .severity import ERROR, SEVERITY_NAMES


class _RuleIndex:
    def __init__(self, rules: list[PatternRule]) -> None:
        self.by_id = {rule.id: rule for rule in rules if rule.id is not None}
        self.by_template = {rule.template: rule for rule in rules if rule.template}

    def find(self, pattern_id: str, template: str) -> PatternRule | None:
        rule = self.by_id.get(pattern_id)
        return rule if rule is not None else self.by_template.get(template)


class RateTable:
    """A policy compiled for lookups; resolved once per (service, pattern) and cached by the sampler."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._patterns = _RuleIndex(policy.patterns)
        self._services = {
            name: (override.severity_rates, _RuleIndex(override.patterns))
            for name, override in policy.services.items()
        }

    def resolve(self, service: str, pattern_id: str, template: str) -> tuple[list[float], list[str]]:
        """Keep rate and rule name for each of the six levels."""
        rates: list[float] = []
        rules: list[str] = []
        override = self._services.get(service)
        service_rule = override[1].find(pattern_id, template) if override else None
        pattern_rule = self._patterns.find(pattern_id, template)
        for level, name in enumerate(SEVERITY_NAMES):
            if level >= ERROR:
                rate, rule = 1.0, "protected"
            elif service_rule is not None:
                rate, rule = service_rule.rate, f"service:{service}:pattern"
            elif override is not None and name in override[0]:
                rate, rule = override[0][name], f"service:{service}:severity"  # type: ignore[index]
            elif pattern_rule is not None:
                rate, rule = pattern_rule.rate, "pattern"
            elif name in self._policy.severity_rates:
                rate, rule = self._policy.severity_rates[name], "severity"  # type: ignore[index]
            else:
                rate, rule = 1.0, "default"
            rates.append(rate)
            rules.append(rule)
        return rates, rules
