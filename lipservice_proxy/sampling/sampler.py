"""The sampler: one decision per log record, in this order (the README documents it).

1. severity at or above `always_keep_min_severity` -> keep (reason severity)
2. a policy exemption (service, record or resource attribute) -> keep (exempt)
3. an active anomaly boost on the pattern -> the boosted rate (boost)
4. the first N records of the pattern in the window -> keep (first)
5. the rate: service override, pattern rule, severity rate, 1.0 (ERROR/FATAL always 1.0)
6. an optional per-pattern throughput cap lowers it
7. the coin (coin.py): by trace id when there is one, else a systematic counter (sampled / dropped)

`process` runs each scope of a request through three stages, editing the message in place:
- `extract` reads what a decision needs from each record (trace id, body, severity), names its
  pattern and groups the records by (pattern state, level). This is the only per-record protobuf work.
- `decide_extraction` applies the order above to each group. Everything but the coin is constant within a
  group for one request (the time, the rate, the boost, the window), so it is worked out once per
  group; the coin is the only per-record step, and the counts are added per group.
- the edit: dropped and invalid records are deleted (cheaper than rebuilding), kept ones get their
  pre-serialised annotation bytes appended.
Per-(service, pattern) state caches what does not change between requests (rates per level,
annotation bytes, coin thresholds). `decide` explains one record with the same rules.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ..config import SEVERITY_NAMES, RecordLimits
from .annotate import SAMPLE_RATE, SAMPLE_RATE_NEEDLE, annotation, take_prior_weight
from .boosts import BoostTable
from .coin import SYSTEMATIC_START, TRACE_RANDOM_BYTES, trace_threshold
from .decision import BatchOutcome, Decision, PatternTally, Reason
from .exemptions import Exemptions
from .limits import RecordLimiter
from .policy import Policy
from .rates import RateTable
from .severity import LEVEL_OF_NAME, LEVEL_OF_NUMBER, level_of_body, level_of_text
from .throughput import ThroughputCap
from .window import window_start

UNKNOWN_SERVICE = "unknown_service"
N_LEVELS = len(SEVERITY_NAMES)
INVALID_IDS = "trace_id must be 16 bytes and span_id 8 bytes (or empty)"
NONE_OVER: frozenset[int] = frozenset()
_NUMBER_LEVELS = LEVEL_OF_NUMBER
_SEVERITY, _EXEMPT, _BOOST, _FIRST = Reason.SEVERITY, Reason.EXEMPT, Reason.BOOST, Reason.FIRST
_SAMPLED, _DROPPED = Reason.SAMPLED, Reason.DROPPED

# One record between extract and decide: its index in the scope, the record, its trace id, and its
# body's length in characters (a cheap stand-in for per-pattern bytes; exact bytes are per scope).
Row = tuple[int, LogRecord, bytes, int]
_CHARS = itemgetter(3)
_INDEX = itemgetter(0)


class Pattern(Protocol):
    id: str
    template: str


class PatternSource(Protocol):
    def add_many(self, texts: Sequence[str]) -> list[Pattern]: ...
    def add_body(self, body: AnyValue) -> Pattern: ...


def service_name(resource: Resource) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


class _Compiled:
    """A policy prepared for the hot path; replaced whole on reload (the atomic swap)."""

    def __init__(self, policy: Policy, generation: int) -> None:
        self.policy = policy
        self.generation = generation
        self.rates = RateTable(policy)
        self.exemptions = Exemptions(policy.exemptions)
        self.first_count = policy.first_per_window.count
        self.window = policy.first_per_window.window
        self.max_per_second = policy.max_per_pattern_per_second


class PatternState:
    """What the sampler remembers per (service, pattern) between requests."""

    __slots__ = (
        "annotations",
        "body_level",
        "credits",
        "generation",
        "last_seen",
        "pattern",
        "rates",
        "rules",
        "service",
        "thresholds",
        "throughput",
        "window_count",
        "window_start",
    )

    def __init__(self, service: str, pattern: Pattern) -> None:
        self.service = service
        self.pattern = pattern
        self.body_level = level_of_body(pattern.template)
        self.generation = -1
        self.rates: list[float] = []
        self.rules: list[str] = []
        self.credits = [SYSTEMATIC_START] * N_LEVELS
        self.window_start = -1.0  # first occurrences: see window.py
        self.window_count = 0
        self.throughput = ThroughputCap()
        self.annotations: dict[float, bytes] = {}
        self.thresholds: dict[float, bytes | None] = {}
        self.last_seen = 0.0

    def retemplate(self, pattern: Pattern) -> None:
        """The engine generalised this pattern's template (its id stays): rules may name templates,
        and annotations carry the template, so both are worked out again."""
        self.pattern = pattern
        self.body_level = level_of_body(pattern.template)
        self.generation = -1
        self.annotations.clear()

    def refresh(self, compiled: _Compiled) -> None:
        self.rates, self.rules = compiled.rates.resolve(self.service, self.pattern.id, self.pattern.template)
        self.generation = compiled.generation

    def annotation(self, weight: float) -> bytes:
        data = self.annotations.get(weight)
        if data is None:
            if len(self.annotations) > 64:  # a throughput cap makes many distinct weights
                self.annotations.clear()
            data = self.annotations[weight] = annotation(weight, self.pattern.id, self.pattern.template)
        return data

    def threshold(self, rate: float) -> bytes | None:
        try:
            return self.thresholds[rate]
        except KeyError:
            if len(self.thresholds) > 64:
                self.thresholds.clear()
            value = self.thresholds[rate] = trace_threshold(rate)
            return value


@dataclass(slots=True)
class Extraction:
    """One scope's valid records grouped by pattern state and level (index = level), in scope order,
    plus the indices of the invalid ones. Nothing is decided yet."""

    groups: dict[PatternState, list[list[Row] | None]] = field(default_factory=dict)
    invalid: list[int] = field(default_factory=list)
    over_limits: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    """One scope's decisions: the records to forward with their weights (0.0: forwarded by dry run,
    standing for no record), and the indices of the records to delete, in no particular order."""

    kept: list[tuple[LogRecord, PatternState, float, PatternTally]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)


class Sampler:
    def __init__(
        self,
        engine: PatternSource,
        policy: Policy,
        *,
        always_keep_min_severity: str = "ERROR",
        dry_run: bool = False,
        boosts: BoostTable | None = None,
        max_states: int = 100_000,
        limits: RecordLimits | None = None,
    ) -> None:
        self._engine = engine
        self._limiter = RecordLimiter(limits or RecordLimits())
        self._keep_min = LEVEL_OF_NAME[always_keep_min_severity]
        self._dry_run = dry_run
        self.boosts = boosts if boosts is not None else BoostTable()
        self._max_states = max_states
        self._generation = 0
        self._compiled = _Compiled(policy, 0)
        self._states: dict[str, dict[str, PatternState]] = {}
        self._n_states = 0

    @property
    def policy(self) -> Policy:
        return self._compiled.policy

    def resolve(self, service: str, pattern_id: str, template: str) -> tuple[list[float], list[str]]:
        """Keep rate and rule name per level for a pattern under the policy in force (read-only)."""
        return self._compiled.rates.resolve(service, pattern_id, template)

    def set_policy(self, policy: Policy) -> None:
        """Swap the policy. Takes effect from the next batch; counters and windows carry over."""
        self._generation += 1
        self._compiled = _Compiled(policy, self._generation)

    def process(
        self, request: ExportLogsServiceRequest, raw: bytes, now: float, wire_size: int | None = None
    ) -> BatchOutcome:
        """Decide every record of `request`, deleting dropped ones and annotating kept ones in place.

        `raw` is the request as received (for cheap substring checks); `wire_size`, its serialized
        protobuf size when known, spares measuring a single-resource request before sampling.
        """
        compiled = self._compiled
        dry_run = self._dry_run
        might_exempt = bool(compiled.exemptions) and compiled.exemptions.might_match(raw)
        has_prior = SAMPLE_RATE_NEEDLE in raw
        limiter = self._limiter
        check_limits = limiter.might_hold_any(raw)
        # a protobuf request (its wire size is known): each record's size, to look at the large ones only
        sizes = limiter.record_sizes(raw) if check_limits and wire_size is not None else None
        outcome = BatchOutcome()
        received = forwarded = rejected = 0

        resources = request.resource_logs
        empty_resources: list[int] = []
        for resource_index, resource_logs in enumerate(resources):
            service = service_name(resource_logs.resource)
            whole_exempt = service in compiled.exemptions.services or (
                might_exempt and compiled.exemptions.match(resource_logs.resource.attributes) is not None
            )
            service_bytes = outcome.bytes.get(service)
            if service_bytes is None:
                service_bytes = outcome.bytes[service] = [0, 0]
            # Bytes in: the wire size when this is the request's only resource, else one C-level walk.
            single = wire_size is not None and len(resources) == 1
            service_bytes[0] += wire_size if single else resource_logs.ByteSize()  # type: ignore[operator]
            scopes = resource_logs.scope_logs
            empty_scopes: list[int] = []
            kept: list[tuple[LogRecord, PatternState, float, PatternTally]] = []
            for scope_index, scope_logs in enumerate(scopes):
                records = scope_logs.log_records
                received += len(records)
                over_limits = (
                    limiter.over(records, sizes[resource_index][scope_index] if sizes else None)
                    if check_limits
                    else NONE_OVER
                )
                extraction = self.extract(records, service, over_limits)
                verdict = self.decide_extraction(
                    extraction, now, outcome, whole_exempt=whole_exempt, check_exemptions=might_exempt
                )
                kept += verdict.kept
                removed = verdict.removed
                if extraction.invalid:
                    rejected += len(extraction.invalid)
                    outcome.rejection_message = _joined(outcome.rejection_message, INVALID_IDS)
                    removed += extraction.invalid
                if extraction.over_limits:
                    rejected += len(extraction.over_limits)
                    outcome.rejection_message = _joined(outcome.rejection_message, limiter.message)
                    removed += extraction.over_limits
                if len(removed) == len(records):
                    del records[:]
                    empty_scopes.append(scope_index)
                else:
                    removed.sort(reverse=True)
                    for index in removed:
                        del records[index]
                forwarded += len(records)
            for scope_index in reversed(empty_scopes):
                del scopes[scope_index]
            if not scopes:
                empty_resources.append(resource_index)
            elif dry_run:  # nothing was deleted: measure the would-be kept records one by one
                service_bytes[1] += sum(record.ByteSize() for record, _, weight, _ in kept if weight)
            else:  # only kept records are left: a cheap walk, before they grow by their annotations
                service_bytes[1] += resource_logs.ByteSize()
            for record, state, weight, tally in kept:
                if has_prior:
                    prior = take_prior_weight(record)
                    tally.weight += weight * (prior - 1.0)
                    weight *= prior
                record.MergeFromString(state.annotation(weight))
        for resource_index in reversed(empty_resources):
            del resources[resource_index]

        kept_total = 0
        for (service, _, severity), tally in outcome.patterns.items():
            totals = outcome.records.get((service, severity))
            if totals is None:
                totals = outcome.records[(service, severity)] = [0, 0]
            totals[0] += tally.received
            totals[1] += tally.kept
            kept_total += tally.kept
        outcome.received, outcome.kept = received, kept_total
        outcome.forwarded, outcome.rejected = forwarded, rejected
        if self._n_states > self._max_states:
            self._evict(now)
        return outcome

    def extract(
        self, records: Iterable[LogRecord], service: str, over_limits: frozenset[int] = frozenset()
    ) -> Extraction:
        """Stage 1: validate ids, read severity and body, name the pattern, group by (state, level).
        The records at the indices `over_limits` (see RecordLimiter) are set aside as rejected."""
        states = self._states.get(service)
        if states is None:
            states = self._states[service] = {}
        add_body = self._engine.add_body
        extraction = Extraction()
        groups = extraction.groups
        invalid = extraction.invalid
        rejected_for_limits = extraction.over_limits
        # Bodies first, in one C-level pass and one engine call; the ids are checked after, so a
        # record rejected for its ids has still taught the engine its (valid) body.
        records = list(records)
        texts = [record.body.string_value for record in records]
        patterns = self._engine.add_many(texts)
        for index, (record, text, pattern) in enumerate(zip(records, texts, patterns, strict=True)):
            trace_id = record.trace_id
            if (trace_id and len(trace_id) != 16) or len(record.span_id) not in (0, 8):
                invalid.append(index)
                continue
            if over_limits and index in over_limits:
                rejected_for_limits.append(index)
                continue
            if not text:
                pattern = add_body(record.body)  # a map, bytes or other value: see PatternEngine.add_body
            state = states.get(pattern.id)
            if state is None:
                state = states[pattern.id] = PatternState(service, pattern)
                self._n_states += 1
            elif state.pattern is not pattern:
                state.retemplate(pattern)
            number = record.severity_number
            if 0 < number < 25:
                level = _NUMBER_LEVELS[number]
            else:
                severity_text = record.severity_text
                level = level_of_text(severity_text) if severity_text else None
                if level is None:
                    level = state.body_level
            levels = groups.get(state)
            if levels is None:
                levels = groups[state] = [None] * N_LEVELS
            rows = levels[level]
            if rows is None:
                levels[level] = [(index, record, trace_id, len(text))]
            else:
                rows.append((index, record, trace_id, len(text)))
        return extraction

    def decide_extraction(
        self,
        extraction: Extraction,
        now: float,
        outcome: BatchOutcome,
        *,
        whole_exempt: bool = False,
        check_exemptions: bool = False,
    ) -> Verdict:
        """Stage 2: the decision order of the module docstring, group by group; counts into `outcome`.

        Touches no protobuf field except a record's attributes when an exemption may match.
        """
        compiled = self._compiled
        generation = compiled.generation
        keep_min = self._keep_min
        dry_run = self._dry_run
        boosts = self.boosts if self.boosts else None
        exemptions = compiled.exemptions if check_exemptions else None
        first_count, window, max_per_second = compiled.first_count, compiled.window, compiled.max_per_second
        patterns = outcome.patterns
        verdict = Verdict()
        kept = verdict.kept
        removed = verdict.removed

        for state, levels in extraction.groups.items():
            if state.generation != generation:
                state.refresh(compiled)
            state.last_seen = now
            pattern_id = state.pattern.id
            sampled: list[tuple[int, list[Row], PatternTally]] = []
            for level, rows in enumerate(levels):
                if rows is None:
                    continue
                key = (state.service, pattern_id, SEVERITY_NAMES[level])
                tally = patterns.get(key)
                if tally is None:
                    tally = patterns[key] = PatternTally(template=state.pattern.template)
                tally.received += len(rows)
                tally.bytes += sum(map(_CHARS, rows))
                if level >= keep_min or whole_exempt:
                    _keep_all(rows, state, 1.0, tally, _SEVERITY if level >= keep_min else _EXEMPT, kept)
                    continue
                if exemptions is not None:
                    exempt: list[Row] = []
                    rest: list[Row] = []
                    for row in rows:
                        (rest if exemptions.match(row[1].attributes) is None else exempt).append(row)
                    if exempt:
                        _keep_all(exempt, state, 1.0, tally, _EXEMPT, kept)
                        rows = rest
                if rows:
                    sampled.append((level, rows, tally))
            if not sampled:
                continue

            boost = boosts.rate(pattern_id, now) if boosts is not None else None
            cap = 1.0
            if boost is None:
                if now - state.window_start >= window or now < state.window_start:
                    state.window_start = window_start(now, window)
                    state.window_count = 0
                if state.window_count < first_count:
                    sampled, taken = _keep_first(sampled, first_count - state.window_count, state, kept)
                    state.window_count += taken
                if max_per_second is not None and sampled:
                    waiting = sum(len(rows) for _, rows, _ in sampled)
                    cap = state.throughput.rate_cap(now, max_per_second, waiting)

            for level, rows, tally in sampled:
                rate = boost if boost is not None else min(state.rates[level], cap)
                reason = _BOOST if boost is not None else _SAMPLED
                if rate >= 1.0:
                    _keep_all(rows, state, 1.0, tally, reason, kept)
                    continue
                weight = 1.0 / rate if rate > 0.0 else 0.0
                threshold = state.threshold(rate) if rate > 0.0 else b""
                credits = state.credits
                credit = credits[level]
                winners: list[Row] = []
                losers: list[Row] = []
                for row in rows:
                    trace_id = row[2]
                    if trace_id:
                        # equal-length bytes compare as big-endian numbers: no int conversion
                        keep = trace_id[-TRACE_RANDOM_BYTES:] < threshold  # type: ignore[operator]
                    else:
                        credit += rate
                        keep = credit >= 1.0
                        if keep:
                            credit -= 1.0
                    if keep:
                        winners.append(row)
                    else:
                        losers.append(row)
                credits[level] = credit
                if winners:
                    _keep_all(winners, state, weight, tally, reason, kept)
                if losers:
                    tally.reasons[_DROPPED] = tally.reasons.get(_DROPPED, 0) + len(losers)
                    if dry_run:
                        kept += [(row[1], state, 0.0, tally) for row in losers]
                    else:
                        removed += map(_INDEX, losers)
        return verdict

    def _evict(self, now: float) -> None:
        """Forget the least recently seen half of the pattern states (their windows and counters)."""
        everything = sorted(
            (state.last_seen, service, pattern_id)
            for service, by_pattern in self._states.items()
            for pattern_id, state in by_pattern.items()
        )
        for _, service, pattern_id in everything[: len(everything) // 2]:
            del self._states[service][pattern_id]
        self._states = {service: by_pattern for service, by_pattern in self._states.items() if by_pattern}
        self._n_states = sum(len(by_pattern) for by_pattern in self._states.values())

    def decide(self, record: LogRecord, service: str, now: float) -> Decision:
        """Decide one record with the same rules and state as `process` (the record is not edited)."""
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = service
        resource_logs.scope_logs.add().log_records.add().CopyFrom(record)
        outcome = self.process(request, b"", now)
        if outcome.rejected:
            return Decision(keep=False, rate=0.0, reason=Reason.INVALID, pattern_id="")
        ((_, pattern_id, severity), tally), *_ = outcome.patterns.items()
        level = LEVEL_OF_NAME[severity]
        state = self._states[service][pattern_id]
        rate = state.rates[level]
        if tally.kept:
            kept = request.resource_logs[0].scope_logs[0].log_records[0]
            weight = next(a.value.double_value for a in kept.attributes if a.key == SAMPLE_RATE)
            rate = 1.0 / weight
        return Decision(
            keep=bool(tally.kept),
            rate=rate,
            reason=Reason(next(iter(tally.reasons))),
            pattern_id=pattern_id,
            template=tally.template,
            rule=state.rules[level],
        )


def _joined(message: str, reason: str) -> str:
    return f"{message}; {reason}" if message and reason not in message else message or reason


def _keep_all(
    rows: list[Row],
    state: PatternState,
    weight: float,
    tally: PatternTally,
    reason: str,
    kept: list[tuple[LogRecord, PatternState, float, PatternTally]],
) -> None:
    """Keep every row of a group, for one reason and at one weight, and count them."""
    count = len(rows)
    tally.kept += count
    tally.bytes_kept += sum(map(_CHARS, rows))
    tally.weight += weight * count
    tally.reasons[reason] = tally.reasons.get(reason, 0) + count
    kept += [(row[1], state, weight, tally) for row in rows]


def _keep_first(
    sampled: list[tuple[int, list[Row], PatternTally]],
    allowance: int,
    state: PatternState,
    kept: list[tuple[LogRecord, PatternState, float, PatternTally]],
) -> tuple[list[tuple[int, list[Row], PatternTally]], int]:
    """Keep a pattern's first `allowance` records in scope order, whatever their levels; return
    the groups of the rest and how many were kept. Each group is in scope order, so what is taken
    from a group is a prefix of it."""
    if len(sampled) == 1:
        cutoff = min(allowance, len(sampled[0][1]))
        counts = [cutoff]
    else:
        indices = sorted(row[0] for _, rows, _ in sampled for row in rows)
        last = indices[min(allowance, len(indices)) - 1]
        counts = [bisect_right(rows, last, key=_INDEX) for _, rows, _ in sampled]
    rest: list[tuple[int, list[Row], PatternTally]] = []
    for (level, rows, tally), count in zip(sampled, counts, strict=True):
        if count:
            _keep_all(rows[:count], state, 1.0, tally, _FIRST, kept)
        if count < len(rows):
            rest.append((level, rows[count:], tally))
    return rest, sum(counts)
