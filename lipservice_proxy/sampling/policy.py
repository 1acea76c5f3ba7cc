"""The policy document: schema, parse, validate, dump.

A policy is data, not code: keep probabilities per severity and per pattern, exemptions, the
first-occurrence window, an optional throughput cap and the anomaly boost. ERROR and FATAL are
always 1.0; a document that lowers them is rejected, whoever wrote it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import SEVERITY_NAMES, Duration, PositiveDuration, SeverityName, format_validation_error
from ..errors import PolicyError

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
PROTECTED_SEVERITIES = ("ERROR", "FATAL")
# libyaml's safe loader and dumper are ~10x faster: a generated policy can hold thousands of rules
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
GENERATED_BY = re.compile(r"^(default|heuristic|manual|llm:[^\s]{1,200})$")


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _normalise_severity_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).upper().replace("WARNING", "WARN"): v for k, v in value.items()}
    return value


class PatternRule(PolicyModel):
    """A keep probability for one pattern, found by id (or, when the id is unknown, by template). A rule
    may give the template alone, as a person writes it from `lipservice-proxy patterns` output: it
    applies to whichever id that template has when the sampler meets it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"anyOf": [{"required": ["id"]}, {"required": ["template"]}]},
    )

    id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[0-9a-zA-Z_-]+$")
    template: str | None = Field(None, min_length=1, max_length=4096)
    rate: Rate
    reason: str | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _named(self) -> PatternRule:
        if self.id is None and self.template is None:
            raise ValueError("a pattern rule needs an `id`, a `template` or both")
        return self


class Exemption(PolicyModel):
    """A record matching this is never sampled: `attribute` + `equals` or `matches`, or `service`."""

    attribute: str | None = Field(None, min_length=1, max_length=256)
    equals: str | None = Field(None, max_length=4096)
    matches: str | None = Field(None, max_length=1024)
    service: str | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _well_formed(self) -> Exemption:
        if self.attribute is None and self.service is None:
            raise ValueError("an exemption needs `attribute` (with `equals` or `matches`) or `service`")
        if self.attribute is not None and (self.equals is None) == (self.matches is None):
            raise ValueError("an attribute exemption needs exactly one of `equals` or `matches`")
        if self.attribute is None and (self.equals is not None or self.matches is not None):
            raise ValueError("`equals`/`matches` need an `attribute`")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"`matches` is not a valid regular expression: {exc}") from None
        return self


class FirstPerWindow(PolicyModel):
    count: int = Field(1, ge=0, le=1_000_000)
    window: PositiveDuration = 60.0


class AnomalyBoost(PolicyModel):
    rate: Rate = 1.0
    duration: Duration = 600.0  # spikes and error surges
    # first-per-window already keeps a new pattern's first records: its boost only needs to be short
    new_pattern_duration: Duration = 60.0
    # at most this share of the records received is kept because of boosts (analysis/budget.py)
    max_share: Rate = 0.05


class ServiceOverride(PolicyModel):
    severity_rates: dict[SeverityName, Rate] = {}
    patterns: list[PatternRule] = []

    @field_validator("severity_rates", mode="before")
    @classmethod
    def _severity_keys(cls, value: Any) -> Any:
        return _normalise_severity_keys(value)

    @field_validator("severity_rates")
    @classmethod
    def _protected(cls, rates: dict[str, float]) -> dict[str, float]:
        return _check_protected(rates)


def _check_protected(rates: dict[str, float]) -> dict[str, float]:
    for name in PROTECTED_SEVERITIES:
        if name in rates and rates[name] != 1.0:
            raise ValueError(f"{name} must be 1.0 (ERROR and FATAL are always kept)")
    return rates


DEFAULT_SEVERITY_RATES: dict[str, float] = {
    "TRACE": 0.01,
    "DEBUG": 0.05,
    "INFO": 0.2,
    "WARN": 0.5,
    "ERROR": 1.0,
    "FATAL": 1.0,
}


class Policy(PolicyModel):
    version: int = Field(1, ge=0)
    generated_by: str = "default"
    generated_at: datetime | None = None
    reasoning: str | None = Field(None, max_length=20_000)
    severity_rates: dict[SeverityName, Rate] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY_RATES))
    patterns: list[PatternRule] = []
    exemptions: list[Exemption] = []
    first_per_window: FirstPerWindow = FirstPerWindow()
    max_per_pattern_per_second: float | None = Field(None, gt=0)
    anomaly_boost: AnomalyBoost = AnomalyBoost()
    services: dict[str, ServiceOverride] = {}

    @field_validator("severity_rates", mode="before")
    @classmethod
    def _severity_keys(cls, value: Any) -> Any:
        return _normalise_severity_keys(value)

    @field_validator("severity_rates")
    @classmethod
    def _protected(cls, rates: dict[str, float]) -> dict[str, float]:
        return _check_protected(rates)

    @field_validator("generated_by")
    @classmethod
    def _generated_by(cls, value: str) -> str:
        if not GENERATED_BY.match(value):
            raise ValueError("must be default, heuristic, manual or llm:<model>")
        return value

    @model_validator(mode="after")
    def _invariants(self) -> Policy:
        ids: set[str] = set()
        templates: set[str] = set()
        for rule in self.patterns:
            if rule.id is not None:
                if rule.id in ids:
                    raise ValueError(f"pattern id {rule.id!r} appears twice")
                ids.add(rule.id)
            elif rule.template in templates:  # by template alone: the same template twice is ambiguous
                raise ValueError(f"pattern template {rule.template!r} appears twice without an id")
            else:
                templates.add(str(rule.template))
        return self

    def severity_rate(self, severity: str) -> float:
        return self.severity_rates.get(severity, 1.0)  # type: ignore[call-overload]


def parse_policy(text: str | bytes, source: str = "policy") -> Policy:
    """Parse YAML (or JSON, a YAML subset) into a validated Policy; raises PolicyError naming the problem."""
    try:
        raw = yaml.load(text, Loader=_LOADER)  # a safe loader: libyaml's when present
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(f"{source}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if raw is None:
        raise PolicyError(f"{source}: the file is empty")
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: the top level must be a mapping")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(exc, source)) from None


def load_policy(path: str | Path) -> Policy:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_policy(data, str(path))


def dump_policy(policy: Policy) -> str:
    """YAML text of a policy, severity keys in severity order, durations as readable strings."""
    data = policy.model_dump(mode="json", exclude_none=True)
    data["severity_rates"] = {
        k: policy.severity_rates[k] for k in SEVERITY_NAMES if k in policy.severity_rates
    }
    data["first_per_window"]["window"] = _format_duration(policy.first_per_window.window)
    data["anomaly_boost"]["duration"] = _format_duration(policy.anomaly_boost.duration)
    data["anomaly_boost"]["new_pattern_duration"] = _format_duration(
        policy.anomaly_boost.new_pattern_duration
    )
    if policy.generated_at is not None:
        data["generated_at"] = policy.generated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=120)


def _format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "lipservice-proxy policy"
    return schema
