"""The decision order, one record at a time: the specification the batched sampler is held to.

sampler.py decides a scope's records in groups, for speed; this module states the same order for a
single record, in the order of sampler.py's docstring, with its state in plain objects and no
protobuf. It decides (it moves the coin's credit, the window's allowance and the key's tail, as the
sampler would) and explains: each answer is a `Decision` with the rate, the reason, the rule and,
for a kept record, its `lipservice.count`. The property tests feed both the same streams and
compare every decision and every count.

What a record is, for a decision: its service, pattern (id and template), level, trace id, and
whether an exemption matches it (exemptions.py says which do). Records of one request share `now`,
as they do in the sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..config import SEVERITY_NAMES
from .boosts import BoostTable
from .coin import SYSTEMATIC_START, TRACE_RANDOM_BYTES, trace_threshold
from .counting import carry_onto, tail_due
from .decision import Decision, Reason
from .policy import Policy
from .rates import RateTable
from .severity import LEVEL_OF_NAME
from .throughput import ThroughputCap
from .window import window_start


@dataclass(frozen=True, slots=True)
class Record:
    service: str
    pattern_id: str
    template: str
    level: int  # 0 TRACE .. 5 FATAL
    trace_id: bytes = b""
    exempt: bool = False  # an exemption matches the record, its resource or its service


@dataclass(slots=True)
class _PatternState:
    window_start: float = -1.0
    window_count: int = 0
    credits: list[float] = field(default_factory=lambda: [SYSTEMATIC_START] * len(SEVERITY_NAMES))
    throughput: ThroughputCap = field(default_factory=ThroughputCap)


@dataclass(slots=True)
class _Tail:
    count: int = 0
    since: float = 0.0


Key = tuple[str, str, int]  # service, pattern id, level
_Make = Callable[[bool, float, Reason], Decision]


class ReferenceSampler:
    def __init__(
        self, policy: Policy, *, always_keep_min_severity: str = "ERROR", boosts: BoostTable | None = None
    ) -> None:
        self.policy = policy
        self._rates = RateTable(policy)
        self._keep_min = LEVEL_OF_NAME[always_keep_min_severity]
        self.boosts = boosts if boosts is not None else BoostTable()
        self._patterns: dict[tuple[str, str], _PatternState] = {}
        self._tails: dict[Key, _Tail] = {}

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._rates = RateTable(policy)

    def decide(self, record: Record, now: float) -> Decision:
        """Steps 1-7 decide keep or drop; step 8 counts."""
        decision = self._keep_or_drop(record, now)
        tail = self._tails.setdefault((record.service, record.pattern_id, record.level), _Tail())
        if not decision.keep:
            if not tail.count:
                tail.since = now
            tail.count += 1
            return decision
        count, tail.count = carry_onto(tail.count)
        if tail.count:  # past the int64 bound: the rest waits for the next kept record
            tail.since = now
        return replace(decision, count=count)

    def close_tails(self, now: float, *, everything: bool = False) -> dict[Key, int]:
        """The tails that leave as summary records at `now` (all of them with `everything`)."""
        window = self.policy.first_per_window.window
        closed: dict[Key, int] = {}
        for key, tail in self._tails.items():
            if tail.count and (everything or tail_due(tail.since, now, window)):
                closed[key] = tail.count
                tail.count = 0
        return closed

    @property
    def unaccounted(self) -> int:
        return sum(tail.count for tail in self._tails.values())

    def _keep_or_drop(self, record: Record, now: float) -> Decision:
        level = record.level
        rates, sources = self._rates.resolve(record.service, record.pattern_id, record.template)
        rule = sources[level]

        def decision(keep: bool, rate: float, reason: Reason) -> Decision:
            return Decision(keep, rate, reason, record.pattern_id, record.template, rule)

        if level >= self._keep_min:  # 1. severity
            return decision(True, 1.0, Reason.SEVERITY)
        if record.exempt:  # 2. exemption
            return decision(True, 1.0, Reason.EXEMPT)
        state = self._patterns.setdefault((record.service, record.pattern_id), _PatternState())
        boost = self.boosts.rate(record.pattern_id, now)
        if boost is not None:  # 3. anomaly boost
            return self._toss(state, record, boost, Reason.BOOST, decision)
        first = self.policy.first_per_window  # 4. first N of the window
        if now - state.window_start >= first.window or now < state.window_start:
            state.window_start = window_start(now, first.window)
            state.window_count = 0
        if state.window_count < first.count:
            state.window_count += 1
            return decision(True, 1.0, Reason.FIRST)
        rate = rates[level]  # 5. the rate
        limit = self.policy.max_per_pattern_per_second
        if limit is not None:  # 6. the throughput cap
            rate = min(rate, state.throughput.rate_cap(now, limit))
        return self._toss(state, record, rate, Reason.SAMPLED, decision)

    @staticmethod
    def _toss(state: _PatternState, record: Record, rate: float, reason: Reason, decision: _Make) -> Decision:
        """7. the coin: the trace id's random bits when there is one, else the systematic credit."""
        if rate >= 1.0:
            return decision(True, 1.0, reason)
        if record.trace_id:
            threshold = trace_threshold(rate)
            keep = threshold is not None and rate > 0.0 and record.trace_id[-TRACE_RANDOM_BYTES:] < threshold
        else:
            state.credits[record.level] += rate
            keep = state.credits[record.level] >= 1.0
            if keep:
                state.credits[record.level] -= 1.0
        return decision(True, rate, reason) if keep else decision(False, rate, Reason.DROPPED)
