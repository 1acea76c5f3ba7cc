"""The sampler: one decision per log record, in this order (the README documents it).

1. severity at or above `always_keep_min_severity` -> keep (reason severity)
2. a policy exemption (service, record or resource attribute) -> keep (exempt)
3. an active anomaly boost on the pattern -> the boosted rate (boost)
4. the first N records of the pattern in the window -> keep (first)
5. the rate: service override, pattern rule, severity rate, 1.0 (ERROR/FATAL always 1.0)
6. an optional per-pattern throughput cap lowers it
7. the coin (coin.py): by trace id when there is one, else a systematic counter (sampled / dropped)

`process` runs that order over a whole request in one pass, editing the message in place: dropped
and invalid records are deleted (cheaper than rebuilding), kept ones get their annotation bytes
appended. Per-(service, pattern) state caches everything that does not change per record (rates
per level, annotation bytes, coin thresholds), so a record costs a handful of attribute reads and
list operations. `decide` explains a single record with the same rules, for tools and tests.
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ..config import SEVERITY_NAMES
from .annotate import SAMPLE_RATE, SAMPLE_RATE_NEEDLE, annotation, take_prior_weight
from .boosts import BoostTable
from .coin import SYSTEMATIC_START, TRACE_RANDOM_BYTES, trace_threshold
from .decision import BatchOutcome, Decision, PatternTally, Reason
from .exemptions import Exemptions
from .policy import Policy
from .rates import RateTable
from .severity import LEVEL_OF_NAME, LEVEL_OF_NUMBER, level_of_body, level_of_text
from .throughput import ThroughputCap
from .window import window_start

UNKNOWN_SERVICE = "unknown_service"
REASONS = (Reason.SEVERITY, Reason.EXEMPT, Reason.BOOST, Reason.FIRST, Reason.SAMPLED, Reason.DROPPED)
R_SEVERITY, R_EXEMPT, R_BOOST, R_FIRST, R_SAMPLED, R_DROPPED = range(6)
N_REASONS = len(REASONS)
# Per-batch counters of a pattern state, one flat list: for each level, a count per reason, then the
# body characters seen and kept (a cheap stand-in for per-pattern bytes; exact bytes are per scope).
S_CHARS, S_CHARS_KEPT = N_REASONS, N_REASONS + 1
N_SLOTS = N_REASONS + 2
N_LEVELS = len(SEVERITY_NAMES)
_NUMBER_LEVELS = LEVEL_OF_NUMBER


class Pattern(Protocol):
    id: str
    template: str


class PatternSource(Protocol):
    def add(self, text: str) -> Pattern: ...
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
    """What the sampler remembers per (service, pattern)."""

    __slots__ = (
        "annotations",
        "body_level",
        "counts",
        "credits",
        "epoch",
        "generation",
        "last_seen",
        "pattern",
        "rates",
        "rules",
        "service",
        "thresholds",
        "throughput",
        "weights",
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
        self.epoch = -1
        self.counts: list[int] = []
        self.weights: list[float] = []
        self.last_seen = 0.0

    def start_batch(self, epoch: int) -> None:
        self.epoch = epoch
        self.counts = [0] * (N_SLOTS * N_LEVELS)
        self.weights = [0.0] * N_LEVELS

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
    ) -> None:
        self._engine = engine
        self._keep_min = LEVEL_OF_NAME[always_keep_min_severity]
        self._dry_run = dry_run
        self.boosts = boosts if boosts is not None else BoostTable()
        self._max_states = max_states
        self._generation = 0
        self._compiled = _Compiled(policy, 0)
        self._states: dict[str, dict[str, PatternState]] = {}
        self._n_states = 0
        self._epoch = 0

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

    def _state(self, service: str, pattern: Pattern) -> PatternState:
        by_pattern = self._states.get(service)
        if by_pattern is None:
            by_pattern = self._states[service] = {}
        state = by_pattern.get(pattern.id)
        if state is None:
            state = by_pattern[pattern.id] = PatternState(service, pattern)
            self._n_states += 1
        state.refresh(self._compiled)
        return state

    def process(
        self, request: ExportLogsServiceRequest, raw: bytes, now: float, wire_size: int | None = None
    ) -> BatchOutcome:
        """Decide every record of `request`, deleting dropped ones and annotating kept ones in place.

        `raw` is the request as received (for cheap substring checks); `wire_size`, its serialized
        protobuf size when known, spares measuring a single-resource request before sampling.
        """
        compiled = self._compiled
        generation = compiled.generation
        add_text = self._engine.add
        add_body = self._engine.add_body
        keep_min = self._keep_min
        dry_run = self._dry_run
        boosts = self.boosts if self.boosts else None
        exemptions = (
            compiled.exemptions if compiled.exemptions and compiled.exemptions.might_match(raw) else None
        )
        has_prior = SAMPLE_RATE_NEEDLE in raw
        first_count, window, max_per_second = compiled.first_count, compiled.window, compiled.max_per_second
        self._epoch += 1
        epoch = self._epoch
        touched: list[PatternState] = []
        outcome = BatchOutcome()
        received = forwarded = rejected = 0

        resources = request.resource_logs
        empty_resources: list[int] = []
        for resource_index, resource_logs in enumerate(resources):
            service = service_name(resource_logs.resource)
            states = self._states.get(service)
            if states is None:
                states = self._states[service] = {}
            whole_exempt = service in compiled.exemptions.services or (
                exemptions is not None and exemptions.match(resource_logs.resource.attributes) is not None
            )
            service_bytes = outcome.bytes.get(service)
            if service_bytes is None:
                service_bytes = outcome.bytes[service] = [0, 0]
            # Bytes in: the wire size when this is the request's only resource, else one C-level walk.
            single = wire_size is not None and len(resources) == 1
            service_bytes[0] += wire_size if single else resource_logs.ByteSize()  # type: ignore[operator]
            scopes = resource_logs.scope_logs
            empty_scopes: list[int] = []
            kept: list[tuple[LogRecord, PatternState, float, int]] = []
            for scope_index, scope_logs in enumerate(scopes):
                records = scope_logs.log_records
                received += len(records)
                removed: list[int] = []
                for index, record in enumerate(records):
                    trace_id = record.trace_id
                    if (trace_id and len(trace_id) != 16) or len(record.span_id) not in (0, 8):
                        removed.append(index)
                        rejected += 1
                        outcome.rejection_message = "trace_id must be 16 bytes and span_id 8 bytes (or empty)"
                        continue
                    text = record.body.string_value
                    pattern = add_text(text) if text else add_body(record.body)
                    state = states.get(pattern.id)
                    if state is None or state.generation != generation:
                        state = self._state(service, pattern)
                    if state.epoch != epoch:
                        state.start_batch(epoch)
                        touched.append(state)
                    number = record.severity_number
                    if 0 < number < 25:
                        level = _NUMBER_LEVELS[number]
                    else:
                        severity_text = record.severity_text
                        level = level_of_text(severity_text) if severity_text else None
                        if level is None:
                            level = state.body_level

                    # the decision order of the module docstring
                    if level >= keep_min:
                        keep, weight, reason = True, 1.0, R_SEVERITY
                    elif whole_exempt or (exemptions is not None and exemptions.match(record.attributes)):
                        keep, weight, reason = True, 1.0, R_EXEMPT
                    else:
                        rate = boosts.rate(pattern.id, now) if boosts is not None else None
                        if rate is not None:
                            reason = R_BOOST
                        else:
                            if now - state.window_start >= window or now < state.window_start:
                                state.window_start = window_start(now, window)
                                state.window_count = 0
                            if state.window_count < first_count:
                                state.window_count += 1
                                rate, reason = 1.0, R_FIRST
                            else:
                                rate = state.rates[level]
                                if max_per_second is not None:
                                    cap = state.throughput.rate_cap(now, max_per_second)
                                    if cap < rate:
                                        rate = cap
                                reason = R_SAMPLED
                        if rate >= 1.0:
                            keep, weight = True, 1.0
                        elif rate <= 0.0:
                            keep, weight = False, 0.0
                        else:
                            weight = 1.0 / rate
                            if trace_id:
                                # equal-length bytes compare as big-endian numbers: no int conversion
                                keep = trace_id[-TRACE_RANDOM_BYTES:] < state.threshold(rate)  # type: ignore[operator]
                            else:
                                credit = state.credits[level] + rate
                                keep = credit >= 1.0
                                state.credits[level] = credit - 1.0 if keep else credit
                        if not keep:
                            reason = R_DROPPED

                    counts = state.counts
                    base = level * N_SLOTS
                    counts[base + reason] += 1
                    counts[base + S_CHARS] += len(text)
                    if keep:
                        counts[base + S_CHARS_KEPT] += len(text)
                        kept.append((record, state, weight, level))
                    elif dry_run:
                        kept.append((record, state, 0.0, level))  # forwarded, standing for no record
                    else:
                        removed.append(index)

                if len(removed) == len(records):
                    del records[:]
                    empty_scopes.append(scope_index)
                else:
                    for index in reversed(removed):
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
            for record, state, weight, level in kept:
                if has_prior:
                    weight *= take_prior_weight(record)
                state.weights[level] += weight
                record.MergeFromString(state.annotation(weight))
        for resource_index in reversed(empty_resources):
            del resources[resource_index]

        outcome.received, outcome.forwarded, outcome.rejected = received, forwarded, rejected
        self._tally(outcome, touched, now)
        if self._n_states > self._max_states:
            self._evict(now)
        return outcome

    def _tally(self, outcome: BatchOutcome, touched: list[PatternState], now: float) -> None:
        kept_total = 0
        for state in touched:
            state.last_seen = now
            counts = state.counts
            for level in range(N_LEVELS):
                base = level * N_SLOTS
                reasons = counts[base : base + N_REASONS]
                seen = sum(reasons)
                if not seen:
                    continue
                kept = seen - reasons[R_DROPPED]
                kept_total += kept
                severity = SEVERITY_NAMES[level]
                totals = outcome.records.get((state.service, severity))
                if totals is None:
                    totals = outcome.records[(state.service, severity)] = [0, 0]
                totals[0] += seen
                totals[1] += kept
                outcome.patterns[(state.service, state.pattern.id, severity)] = PatternTally(
                    template=state.pattern.template,
                    received=seen,
                    kept=kept,
                    bytes=counts[base + S_CHARS],
                    bytes_kept=counts[base + S_CHARS_KEPT],
                    weight=state.weights[level],
                    reasons={REASONS[r]: n for r, n in enumerate(reasons) if n},
                )
        outcome.kept = kept_total

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
