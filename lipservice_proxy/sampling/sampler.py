"""The sampler: one decision per log record, in this order (the README documents it).

1. severity at or above `always_keep_min_severity` -> keep (reason severity)
2. a policy exemption (service, record or resource attribute) -> keep (exempt)
3. an active anomaly boost on the pattern -> the boosted rate (boost)
4. the first N records of the pattern in the window -> keep (first)
5. the rate: service override, pattern rule, severity rate, 1.0 (ERROR/FATAL always 1.0)
6. an optional per-pattern throughput cap lowers it
7. the coin (coin.py): by trace id when there is one, else a systematic counter (sampled / dropped)
8. the count (counting.py): a kept record accounts for itself and the drops of its (service,
   pattern, severity) since that key's previous kept record; later drops wait as the key's tail

reference.py states the same order one record at a time; tests hold this batched path to it.

`process` runs each scope of a request through three stages:
- `extract` takes the scope's scan (scan.py: each record's trace id, body and severity, grouped by
  body shape; read from the wire bytes by the compiled wirescan.pyx), names each shape's pattern
  and groups the records by (pattern state, level). No message object is made per record.
- `decide_extraction` applies the order above to each pattern's groups, one named step each:
  `keep_protected` (1-2), `keep_first` (4), `toss` (5-7) and `Sampler._account` (8). Everything
  but the coin and the count is constant within a group for one request (the time, the rate, the
  boost, the window), so it is worked out once per group.
- the output: with `splice` (the pipeline), the kept records' own bytes with their pre-serialised
  annotation bytes appended (wirescan.splice), never re-encoded; otherwise (and in a dry run, or
  for records carrying an earlier hop's attributes) the message is edited in place: dropped and
  invalid records deleted, annotation bytes merged into the kept ones.
Per-(service, pattern) state caches what does not change between requests (rates per level,
annotation bytes, coin thresholds) and holds what must carry over (windows, coin credits, tails).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, MutableSequence, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ..config import RecordLimits
from .annotate import SAMPLE_RATE_NEEDLE, annotation, count_annotation, take_prior_weight
from .boosts import BoostTable
from .coin import SYSTEMATIC_START, TRACE_RANDOM_BYTES, trace_threshold
from .counting import MAX_COUNT, Tail, carry_onto, service_origin, tail_due
from .decision import BatchOutcome, PatternTally, Reason
from .exemptions import Exemptions
from .limits import RecordLimiter
from .policy import Policy
from .rates import RateTable, Resolved
from .scan import N_LEVELS, UNKNOWN_LEVEL, Row, ScopeScan, Shape, ids_valid, scan_scope
from .severity import LEVEL_OF_NAME, LEVEL_OF_NUMBER, SEVERITY_NAMES, level_of_body, level_of_text
from .throughput import ThroughputCap
from .window import window_start

try:
    from .wirescan import largest_record, scan_request
    from .wirescan import splice as splice_request
except ImportError as exc:  # a checkout whose extension was never built, or built for another Python
    raise ImportError(
        "lipservice_proxy.sampling.wirescan is not built: scripts/setup.sh (pip install -e .) compiles it"
    ) from exc

UNKNOWN_SERVICE = "unknown_service"
INVALID_IDS = "trace_id must be 16 bytes and span_id 8 bytes (or empty)"
NONE_OVER: frozenset[int] = frozenset()
_NUMBER_LEVELS = LEVEL_OF_NUMBER
_SEVERITY, _EXEMPT, _BOOST, _FIRST = Reason.SEVERITY, Reason.EXEMPT, Reason.BOOST, Reason.FIRST
_SAMPLED, _DROPPED = Reason.SAMPLED, Reason.DROPPED

# One record between extract and decide (scan.py): its index in the scope, its trace id, and its
# body's length in characters (a cheap stand-in for per-pattern bytes; exact bytes are per scope).
_CHARS = itemgetter(2)
_INDEX = itemgetter(0)
# A record to forward: its index in the scope, its pattern state, lipservice.sample_rate,
# lipservice.count and its tally (0.0 and 0: forwarded by dry run, standing for no record).
Forward = tuple[int, "PatternState", float, int, PatternTally]
# The same for a record edited in place (not spliced): the record itself instead of its index.
KeptRecord = tuple[LogRecord, "PatternState", float, int, PatternTally]


class Pattern(Protocol):
    # read-only: the engine hands out frozen patterns
    @property
    def id(self) -> str: ...
    @property
    def template(self) -> str: ...


class PatternSource(Protocol):
    def add_runs(self, shapes: Iterable[tuple[bytes, str, int]]) -> Sequence[Pattern]: ...
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
        "origins",
        "pattern",
        "rates",
        "service",
        "tail_since",
        "tails",
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
        self.credits = [SYSTEMATIC_START] * N_LEVELS
        self.window_start = -1.0  # first occurrences: see window.py
        self.window_count = 0
        self.throughput = ThroughputCap()
        self.annotations: dict[float, bytes] = {}
        self.thresholds: dict[float, bytes | None] = {}
        self.last_seen = 0.0
        self.tails = [0] * N_LEVELS  # per level: drops not yet accounted for by a kept record
        self.tail_since = [0.0] * N_LEVELS  # when each open tail opened
        self.origins: list[tuple[bytes, bytes] | None] = [None] * N_LEVELS  # of the drops opening each tail

    def retemplate(self, pattern: Pattern) -> None:
        """The engine generalised this pattern's template (its id stays): rules may name templates,
        and annotations carry the template, so both are worked out again."""
        self.pattern = pattern
        self.body_level = level_of_body(pattern.template)
        self.generation = -1
        self.annotations.clear()

    def refresh(self, compiled: _Compiled) -> None:
        self.rates, _ = compiled.rates.resolve(self.service, self.pattern.id, self.pattern.template)
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


class Origin:
    """A scope's resource and scope, serialised on first need: only a key whose tail stays open
    keeps them, for its summary record."""

    __slots__ = ("_resource", "_scope", "_serialised")

    def __init__(self, resource: Resource, scope: InstrumentationScope) -> None:
        self._resource = resource
        self._scope = scope
        self._serialised: tuple[bytes, bytes] | None = None

    def serialised(self) -> tuple[bytes, bytes]:
        if self._serialised is None:
            self._serialised = (self._resource.SerializeToString(), self._scope.SerializeToString())
        return self._serialised


@dataclass(slots=True)
class Extraction:
    """One scope's valid records grouped by pattern state and level (index = level), in scope order,
    plus the indices of the invalid ones. Nothing is decided yet."""

    records: Sequence[LogRecord]
    groups: dict[PatternState, list[list[Row] | None]] = field(default_factory=dict)
    invalid: list[int] = field(default_factory=list)
    over_limits: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    """One scope's decisions: the records to forward, and the indices of the records to delete, in
    no particular order."""

    kept: list[Forward] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)


class Group:
    """One scope's records of one (pattern, level), in scope order, while the steps decide them."""

    __slots__ = ("dropped", "kept", "level", "rows", "tally")

    def __init__(self, level: int, rows: list[Row], tally: PatternTally) -> None:
        self.level = level
        self.rows = rows  # not decided yet
        self.tally = tally
        # runs kept at one weight, each in scope order, with the number of the group's drops before
        # each of their records when the step that kept them knows it (the coin does)
        self.kept: list[tuple[list[Row], float, list[int] | None]] = []
        self.dropped: list[Row] = []

    def keep(
        self, rows: list[Row], weight: float, reason: str, drops_before: list[int] | None = None
    ) -> None:
        count = len(rows)
        tally = self.tally
        tally.kept += count
        tally.bytes_kept += sum(map(_CHARS, rows))
        tally.weight += weight * count
        tally.reasons[reason] = tally.reasons.get(reason, 0) + count
        self.kept.append((rows, weight, drops_before))

    def drop(self, rows: list[Row]) -> None:
        self.tally.reasons[_DROPPED] = self.tally.reasons.get(_DROPPED, 0) + len(rows)
        self.dropped = rows

    def drops_before(self, rows: list[Row]) -> list[int]:
        """For each of `rows` (in scope order), how many of the group's dropped records precede it."""
        if not self.dropped:
            return [0] * len(rows)
        dropped_at = list(map(_INDEX, self.dropped))
        return [bisect_left(dropped_at, row[0]) for row in rows]

    def in_scope_order(self) -> tuple[Sequence[Row], Iterable[float], Sequence[int]]:
        """The kept records in scope order, their weights, and the drops before each."""
        if len(self.kept) == 1:
            rows, weight, before = self.kept[0]
            return rows, itertools.repeat(weight), before if before is not None else self.drops_before(rows)
        merged: list[tuple[Row, float, int]] = []
        for rows, weight, before in self.kept:
            merged += zip(rows, itertools.repeat(weight), before or self.drops_before(rows), strict=False)
        merged.sort(key=_kept_index)
        kept_rows, weights, befores = zip(*merged, strict=True)
        return kept_rows, weights, befores


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
        wire_scan: bool = True,
    ) -> None:
        self._engine = engine
        # the compiled scan of protobuf requests (wirescan.pyx); without it, the reference (scan.py)
        self._wire_scan = wire_scan
        self._limiter = RecordLimiter(limits or RecordLimits())
        self._keep_min = LEVEL_OF_NAME[always_keep_min_severity]
        self._dry_run = dry_run
        self.boosts = boosts if boosts is not None else BoostTable()
        self._max_states = max_states
        self._generation = 0
        self._compiled = _Compiled(policy, 0)
        self._states: dict[str, dict[str, PatternState]] = {}
        self._n_states = 0
        self._open: dict[PatternState, None] = {}  # states that may hold an open tail, in order
        self._evicted: list[Tail] = []  # tails of forgotten states, for the next summaries
        self.unaccounted = 0  # records in open tails (and evicted ones): no kept record counts them yet

    @property
    def policy(self) -> Policy:
        return self._compiled.policy

    def resolve(self, service: str, pattern_id: str, template: str) -> Resolved:
        """Keep rate and its source per level for a pattern under the policy in force (read-only)."""
        return self._compiled.rates.resolve(service, pattern_id, template)

    def set_policy(self, policy: Policy) -> None:
        """Swap the policy. Takes effect from the next batch; counters, windows and tails carry over."""
        self._generation += 1
        self._compiled = _Compiled(policy, self._generation)

    def process(
        self,
        request: ExportLogsServiceRequest,
        raw: bytes,
        now: float,
        wire_size: int | None = None,
        *,
        splice: bool = False,
    ) -> BatchOutcome:
        """Decide every record of `request`, deleting dropped ones and annotating kept ones in place;
        or, with `splice`, leave `request` as it is and put the forwarded request's encoding in
        `outcome.wire`: the kept records' bytes as they came, each with its annotations appended, in
        their scopes and resources (the compiled `wirescan.splice`; no message is edited or encoded).

        `raw` is the request as received (for cheap substring checks); `wire_size`, its serialized
        protobuf size when known, spares measuring a single-resource request before sampling.
        """
        compiled = self._compiled
        dry_run = self._dry_run
        might_exempt = bool(compiled.exemptions) and compiled.exemptions.might_match(raw)
        has_prior = SAMPLE_RATE_NEEDLE in raw
        limiter = self._limiter
        check_limits, sizes = self._limit_check(raw, wire_size)
        # per resource and scope, what extract needs from each record, read from the wire bytes (an
        # OTLP/JSON request is encoded first: ~0.2 us a record, a tenth of scanning its messages)
        scans = None
        wire: bytes | None = None
        if self._wire_scan:
            wire = raw if wire_size is not None else request.SerializeToString()
            scans = scan_request(wire)
        # a dry run forwards every record, and a record from an earlier hop has attributes to replace
        plan: list[list[list[bytes | None]]] | None = (
            [] if splice and scans is not None and not dry_run and not has_prior else None
        )
        outcome = BatchOutcome()
        received = forwarded = rejected = 0

        resources = request.resource_logs
        empty_resources: list[int] = []
        spliced_bytes: list[list[int]] = []  # each spliced resource's service's byte totals, in order
        for resource_index, resource_logs in enumerate(resources):
            service = service_name(resource_logs.resource)
            whole_exempt = service in compiled.exemptions.services or (
                might_exempt and compiled.exemptions.match(resource_logs.resource.attributes) is not None
            )
            service_bytes = outcome.bytes.get(service)
            if service_bytes is None:
                service_bytes = outcome.bytes[service] = [0, 0]
            # Bytes in: the wire size when this is the request's only resource, else one C-level walk.
            known_size = wire_size if len(resources) == 1 else None
            service_bytes[0] += known_size if known_size is not None else resource_logs.ByteSize()
            scopes = resource_logs.scope_logs
            empty_scopes: list[int] = []
            kept: list[KeptRecord] = []
            planned: list[list[bytes | None]] = []
            for scope_index, scope_logs in enumerate(scopes):
                records = scope_logs.log_records
                received += len(records)
                over_limits = (
                    limiter.over(records, sizes[resource_index][scope_index] if sizes else None)
                    if check_limits
                    else NONE_OVER
                )
                extraction = self.extract(
                    records, service, over_limits, scans[resource_index][scope_index] if scans else None
                )
                verdict = self.decide_extraction(
                    extraction,
                    now,
                    outcome,
                    whole_exempt=whole_exempt,
                    check_exemptions=might_exempt,
                    origin=Origin(resource_logs.resource, scope_logs.scope),
                )
                removed = verdict.removed
                rejected += _reject(extraction, removed, outcome, limiter.message)
                if plan is not None:
                    planned.append(_annotations(len(records), verdict.kept))
                    forwarded += len(records) - len(removed)
                    continue
                # before any deletion
                kept += [
                    (records[index], state, weight, count, tally)
                    for index, state, weight, count, tally in verdict.kept
                ]
                if not _delete(records, removed):
                    empty_scopes.append(scope_index)
                forwarded += len(records)
            if plan is not None:
                plan.append(planned)
                spliced_bytes.append(service_bytes)
                continue
            for scope_index in reversed(empty_scopes):
                del scopes[scope_index]
            if not scopes:
                empty_resources.append(resource_index)
            elif dry_run:  # nothing was deleted: measure the would-be kept records one by one
                service_bytes[1] += sum(record.ByteSize() for record, _, _, count, _ in kept if count)
            else:  # only kept records are left: a cheap walk, before they grow by their annotations
                service_bytes[1] += resource_logs.ByteSize()
            _annotate_kept(kept, has_prior)
        for resource_index in reversed(empty_resources):
            del resources[resource_index]
        if plan is not None:
            assert wire is not None  # a plan is made only from a wire scan
            outcome.wire, kept_sizes = splice_request(wire, plan)
            for totals, size in zip(spliced_bytes, kept_sizes, strict=True):
                totals[1] += size

        outcome.received, outcome.kept = received, _tally_records(outcome)
        outcome.forwarded, outcome.rejected = forwarded, rejected
        if self._n_states > self._max_states:
            self._evict(now)
        return outcome

    def _limit_check(
        self, raw: bytes, wire_size: int | None
    ) -> tuple[bool, list[list[Sequence[int]]] | None]:
        """Whether a record of the request `raw` may be over a per-record limit and, for a protobuf
        request (its wire size is known), each record's size, so that only the large ones are looked at."""
        limiter = self._limiter
        if not limiter.might_hold_any(raw):
            return False, None
        if wire_size is None:
            return True, None
        if self._wire_scan:
            largest = largest_record(raw)  # no record that large: none can be over a limit
            if largest is not None and largest < limiter.threshold:
                return False, None
        return True, limiter.record_sizes(raw)

    def extract(
        self,
        records: Sequence[LogRecord],
        service: str,
        over_limits: frozenset[int] = frozenset(),
        scan: ScopeScan | None = None,
    ) -> Extraction:
        """Stage 1: name each body shape's pattern and group the records by (state, level), from the
        scope's `scan` (scan.py; made here from the messages when not given). The records at the
        indices `over_limits` (see RecordLimiter) are set aside as rejected, those with invalid ids
        as invalid; both have still taught the engine their body when it is a short text."""
        shapes, others, invalid = scan if scan is not None else scan_scope(records)
        states = self._states.get(service)
        if states is None:
            states = self._states[service] = {}
        extraction = Extraction(records, invalid=invalid)
        groups = extraction.groups
        if over_limits:
            extraction.over_limits = _set_aside(shapes.values(), over_limits)
        unsorted: list[list[Row]] = []  # rows of one (state, level) from several shapes
        patterns = self._engine.add_runs([(key, shape[0], shape[1]) for key, shape in shapes.items()])
        for shape, pattern in zip(shapes.values(), patterns, strict=True):
            state = self._state(states, service, pattern)
            levels = groups.get(state)
            if levels is None:
                levels = groups[state] = [None] * N_LEVELS
            for level, rows in enumerate(shape[2]):
                if not rows:
                    continue
                if level == UNKNOWN_LEVEL:
                    for row in rows:
                        _add_row(levels, _level(records[row[0]], state), row, unsorted)
                elif (same_level := levels[level]) is None:
                    levels[level] = rows
                else:
                    same_level += rows
                    unsorted.append(same_level)
        add_body = self._engine.add_body
        for index in others:
            record = records[index]
            trace_id = record.trace_id
            if not ids_valid(trace_id, record.span_id):
                invalid.append(index)
                continue
            if index in over_limits:
                extraction.over_limits.append(index)
                continue
            state = self._state(states, service, add_body(record.body))
            levels = groups.get(state)
            if levels is None:
                levels = groups[state] = [None] * N_LEVELS
            _add_row(
                levels, _level(record, state), (index, trace_id, len(record.body.string_value)), unsorted
            )
        for rows in unsorted:
            rows.sort(key=_INDEX)
        return extraction

    def _state(self, states: dict[str, PatternState], service: str, pattern: Pattern) -> PatternState:
        state = states.get(pattern.id)
        if state is None:
            state = states[pattern.id] = PatternState(service, pattern)
            self._n_states += 1
        elif state.pattern is not pattern:
            state.retemplate(pattern)
        return state

    def decide_extraction(
        self,
        extraction: Extraction,
        now: float,
        outcome: BatchOutcome,
        *,
        whole_exempt: bool = False,
        check_exemptions: bool = False,
        origin: Origin | None = None,
    ) -> Verdict:
        """Stage 2: the decision order of the module docstring, pattern by pattern; counts into
        `outcome`. `origin` is the scope's resource and scope, for the summaries of open tails.

        Touches no protobuf field except a record's attributes when an exemption may match.
        """
        compiled = self._compiled
        generation = compiled.generation
        keep_min = self._keep_min
        exemptions = compiled.exemptions if check_exemptions else None
        may_protect = whole_exempt or exemptions is not None
        boosts = self.boosts if self.boosts else None  # (asked once: most requests have none)
        patterns = outcome.patterns
        verdict = Verdict()
        records = extraction.records
        for state, levels in extraction.groups.items():
            if state.generation != generation:
                state.refresh(compiled)
            state.last_seen = now
            groups: list[Group] = []
            for level, rows in enumerate(levels):
                if rows is None:
                    continue
                key = (state.service, state.pattern.id, SEVERITY_NAMES[level])
                tally = patterns.get(key)
                if tally is None:
                    tally = patterns[key] = PatternTally(template=state.pattern.template)
                tally.received += len(rows)
                tally.bytes += sum(map(_CHARS, rows))
                groups.append(Group(level, rows, tally))
            # (a call per group costs: ask keep_protected only when something may protect)
            sampled = [
                group
                for group in groups
                if not (
                    (group.level >= keep_min or may_protect)
                    and keep_protected(group, keep_min, whole_exempt, exemptions, records)
                )
            ]
            if sampled:
                self._sample(state, sampled, now, boosts)
            for group in groups:
                self._account(state, group, now, origin, verdict)
        return verdict

    def _sample(
        self, state: PatternState, groups: list[Group], now: float, boosts: BoostTable | None
    ) -> None:
        """Steps 3-7 for one pattern's groups that are neither protected nor exempt."""
        boost = boosts.rate(state.pattern.id, now) if boosts is not None else None
        if boost is not None:
            for group in groups:
                toss(state, group, boost, _BOOST)
            return
        compiled = self._compiled
        groups = keep_first(state, groups, now, compiled.first_count, compiled.window)
        cap = 1.0
        if compiled.max_per_second is not None and groups:
            waiting = sum(len(group.rows) for group in groups)
            cap = state.throughput.rate_cap(now, compiled.max_per_second, waiting)
        for group in groups:
            toss(state, group, min(state.rates[group.level], cap), _SAMPLED)

    def _account(
        self,
        state: PatternState,
        group: Group,
        now: float,
        origin: Origin | None,
        verdict: Verdict,
    ) -> None:
        """Step 8: each kept record's count, the key's tail, and the records to forward or delete.

        A kept record counts itself and the key's drops before it since the key's previous kept
        record (the earliest kept one also the tail carried from earlier requests); the drops
        after the last kept record become the key's tail.
        """
        level = group.level
        tally = group.tally
        dropped = group.dropped
        forward = verdict.kept
        old_tail = state.tails[level]
        if not group.kept:
            tail = old_tail + len(dropped)
        elif not dropped and not old_tail:  # nothing to carry: every kept record counts itself
            for run_rows, run_weight, _ in group.kept:
                forward += [(row[0], state, run_weight, 1, tally) for row in run_rows]
                tally.counted += len(run_rows)
            tail = 0
        else:
            runs = group.kept
            rows: Sequence[Row]
            weights: Iterable[float]
            before: Sequence[int]
            if len(runs) == 1 and (known_before := runs[0][2]) is not None:  # the coin's winners: common
                rows, weights, before = runs[0][0], itertools.repeat(runs[0][1]), known_before
            else:
                rows, weights, before = group.in_scope_order()
            if old_tail + len(dropped) < MAX_COUNT - len(rows):  # no count can reach the bound
                forward += [
                    (row[0], state, weight, after - prior + 1, tally)
                    for row, weight, prior, after in zip(
                        rows, weights, [-old_tail, *before], before, strict=False
                    )
                ]
                tally.counted += old_tail + before[-1] + len(rows)
                tail = len(dropped) - before[-1]
            else:  # the same, one record at a time, splitting counts at the bound
                carry, prior = old_tail, 0
                for row, weight, after in zip(rows, weights, before, strict=False):
                    count, carry = carry_onto(carry + after - prior)
                    prior = after
                    forward.append((row[0], state, weight, count, tally))
                    tally.counted += count
                tail = carry + len(dropped) - prior
        if tail and (group.kept or not old_tail):  # a new tail: these drops opened it
            state.tail_since[level] = now
            state.origins[level] = origin.serialised() if origin is not None else None
            self._open[state] = None
        state.tails[level] = tail
        self.unaccounted += tail - old_tail
        if dropped:
            if self._dry_run:
                forward += [(row[0], state, 0.0, 0, tally) for row in dropped]
            else:
                verdict.removed += map(_INDEX, dropped)

    def close_tails(self, now: float, *, everything: bool = False) -> list[Tail]:
        """Close the tails due for a summary record at `now` (with `everything`, all of them, as at
        shutdown), and those of forgotten states. The caller sends their summaries."""
        closed, self._evicted = self._evicted, []
        window = self._compiled.window
        for state in list(self._open):
            still_open = False
            for level, tail in enumerate(state.tails):
                if not tail:
                    continue
                if everything or tail_due(state.tail_since[level], now, window):
                    closed.append(self._close(state, level))
                else:
                    still_open = True
            if not still_open:
                del self._open[state]
        self.unaccounted -= sum(tail.count for tail in closed)
        return closed

    def _close(self, state: PatternState, level: int) -> Tail:
        origin = state.origins[level] or service_origin(state.service)
        pattern = state.pattern
        tail = Tail(state.service, pattern.id, pattern.template, level, state.tails[level], origin)
        state.tails[level] = 0
        return tail

    def _evict(self, now: float) -> None:
        """Forget the least recently seen half of the pattern states (their windows and counters);
        their open tails wait for the next summaries."""
        everything = sorted(
            (state.last_seen, service, pattern_id)
            for service, by_pattern in self._states.items()
            for pattern_id, state in by_pattern.items()
        )
        for _, service, pattern_id in everything[: len(everything) // 2]:
            state = self._states[service].pop(pattern_id)
            if state in self._open:
                del self._open[state]
                self._evicted += [self._close(state, level) for level, tail in enumerate(state.tails) if tail]
        self._states = {service: by_pattern for service, by_pattern in self._states.items() if by_pattern}
        self._n_states = sum(len(by_pattern) for by_pattern in self._states.values())


def _level(record: LogRecord, state: PatternState) -> int:
    """A record's level: its severity_number, else its severity_text, else what its template says."""
    number = record.severity_number
    if 0 < number < 25:
        return _NUMBER_LEVELS[number]
    text = record.severity_text
    level = level_of_text(text) if text else None
    return state.body_level if level is None else level


def _add_row(levels: list[list[Row] | None], level: int, row: Row, unsorted: list[list[Row]]) -> None:
    rows = levels[level]
    if rows is None:
        levels[level] = [row]
    else:
        rows.append(row)
        unsorted.append(rows)


def _set_aside(shapes: Iterable[Shape], over_limits: frozenset[int]) -> list[int]:
    """Take the rows at the indices `over_limits` out of the shapes' rows; return their indices."""
    taken: list[int] = []
    for shape in shapes:
        by_level = shape[2]
        for level, rows in enumerate(by_level):
            if rows and any(row[0] in over_limits for row in rows):
                taken += [row[0] for row in rows if row[0] in over_limits]
                by_level[level] = [row for row in rows if row[0] not in over_limits] or None
    return taken


def _reject(extraction: Extraction, removed: list[int], outcome: BatchOutcome, limit_message: str) -> int:
    """Add the extraction's records with invalid ids or over a limit to `removed`, and say why in the
    outcome's rejection message; returns how many were rejected."""
    rejected = 0
    for indices, message in ((extraction.invalid, INVALID_IDS), (extraction.over_limits, limit_message)):
        if indices:
            rejected += len(indices)
            outcome.rejection_message = _joined(outcome.rejection_message, message)
            removed += indices
    return rejected


def _annotations(n_records: int, kept: list[Forward]) -> list[bytes | None]:
    """What to append to each record of a scope when its kept records are spliced (None: dropped)."""
    annotations: list[bytes | None] = [None] * n_records
    for index, state, weight, count, _ in kept:
        annotations[index] = state.annotation(weight) + count_annotation(count)
    return annotations


def _delete(records: MutableSequence[LogRecord], removed: list[int]) -> bool:
    """Delete the records at the indices `removed` in place; whether any record is left."""
    if len(removed) == len(records):
        del records[:]
        return False
    removed.sort(reverse=True)
    for index in removed:
        del records[index]
    return True


def _annotate_kept(
    kept: list[tuple[LogRecord, PatternState, float, int, PatternTally]], has_prior: bool
) -> None:
    """Mark each kept record with its sample rate and count (a prior proxy's weight multiplied in)."""
    for record, state, weight, count, tally in kept:
        if has_prior:
            prior = take_prior_weight(record)
            tally.weight += weight * (prior - 1.0)
            weight *= prior
        record.MergeFromString(state.annotation(weight) + count_annotation(count))


def _tally_records(outcome: BatchOutcome) -> int:
    """Sum the outcome's pattern tallies into its per (service, severity) records; the records kept."""
    kept_total = 0
    for (service, _, severity), tally in outcome.patterns.items():
        totals = outcome.records.get((service, severity))
        if totals is None:
            totals = outcome.records[(service, severity)] = [0, 0]
        totals[0] += tally.received
        totals[1] += tally.kept
        kept_total += tally.kept
    return kept_total


def _kept_index(kept: tuple[Row, float, int]) -> int:
    return kept[0][0]


def _joined(message: str, reason: str) -> str:
    return f"{message}; {reason}" if message and reason not in message else message or reason


def keep_protected(
    group: Group,
    keep_min: int,
    whole_exempt: bool,
    exemptions: Exemptions | None,
    records: Sequence[LogRecord],
) -> bool:
    """Steps 1-2: keep what severity or an exemption protects; True when nothing is left to sample."""
    rows = group.rows
    if group.level >= keep_min:
        group.keep(rows, 1.0, _SEVERITY)
    elif whole_exempt:
        group.keep(rows, 1.0, _EXEMPT)
    elif exemptions is not None:
        exempt: list[Row] = []
        rest: list[Row] = []
        for row in rows:
            (rest if exemptions.match(records[row[0]].attributes) is None else exempt).append(row)
        if exempt:
            group.keep(exempt, 1.0, _EXEMPT)
            group.rows = rest
        return not rest
    else:
        return False
    group.rows = []
    return True


def keep_first(
    state: PatternState, groups: list[Group], now: float, first_count: int, window: float
) -> list[Group]:
    """Step 4: keep the pattern's first `first_count` records of the window in scope order, whatever
    their levels; return the groups with records left. Each group is in scope order, so what is
    taken from a group is a prefix of it."""
    if now - state.window_start >= window or now < state.window_start:
        state.window_start = window_start(now, window)
        state.window_count = 0
    allowance = first_count - state.window_count
    if allowance <= 0:
        return groups
    if len(groups) == 1:
        counts = [min(allowance, len(groups[0].rows))]
    else:
        indices = sorted(row[0] for group in groups for row in group.rows)
        last = indices[min(allowance, len(indices)) - 1]
        counts = [bisect_right(group.rows, last, key=_INDEX) for group in groups]
    state.window_count += sum(counts)
    rest: list[Group] = []
    for group, count in zip(groups, counts, strict=True):
        if count:
            group.keep(group.rows[:count], 1.0, _FIRST)
            group.rows = group.rows[count:]
        if group.rows:
            rest.append(group)
    return rest


def toss(state: PatternState, group: Group, rate: float, reason: str) -> None:
    """Step 7: the coin at `rate` for each record of the group (coin.py)."""
    rows = group.rows
    group.rows = []
    if rate >= 1.0:
        group.keep(rows, 1.0, reason)
        return
    threshold = state.threshold(rate) if rate > 0.0 else b""
    level = group.level
    credits = state.credits
    credit = credits[level]
    winners: list[Row] = []
    drops_before: list[int] = []  # per winner: the losers before it, for its count
    losers: list[Row] = []
    for row in rows:
        trace_id = row[1]
        if trace_id:
            # equal-length bytes compare as big-endian numbers: no int conversion
            keep = trace_id[-TRACE_RANDOM_BYTES:] < threshold  # type: ignore[operator]  # rate < 1 here: a bytes threshold
        else:
            credit += rate
            keep = credit >= 1.0
            if keep:
                credit -= 1.0
        if keep:
            winners.append(row)
            drops_before.append(len(losers))
        else:
            losers.append(row)
    credits[level] = credit
    if winners:
        group.keep(winners, 1.0 / rate, reason, drops_before)
    if losers:
        group.drop(losers)
