"""The analysis loop: every `analysis.interval`, off the hot path, refresh the policy from the stats.

One pass (`run_once`): close the stats interval; detect anomalies and boost their patterns in the
running sampler at once; group templates into families (in a worker thread: DBSCAN is quadratic);
ask the LLM for a candidate when one is configured and within budget, else (or when it fails)
the heuristic; pass the candidate through the guardrails; write the policy atomically with
version + 1; make the store re-read it so the sampler applies it from the next batch. Every pass
is counted in `lipservice_analysis_runs_total{outcome}`: llm, heuristic, fallback (the LLM was
configured but its answer could not be used), skipped (no records), error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from ..config import AnalysisConfig
from ..memlimit import cgroup_headroom
from ..pattern_view import boost_rows, iso_time, pattern_row
from ..sampling.boosts import BoostTable
from ..sampling.policy import Policy
from ..sampling.rates import Resolved, busiest_sampled_level
from ..sampling.severity import ERROR
from ..sampling.store import PolicyStore
from ..telemetry import Telemetry
from .anomalies import DEFAULT_THRESHOLDS, NEW_PATTERN, Anomaly, Thresholds, detect
from .budget import KIND_RANK, BoostRequest, Plan, plan_boosts
from .clustering import ClusteringFailed, ClusteringSkipped, cluster_in_child, singletons
from .guardrails import Candidate, KnownPattern, Limits, apply_guardrails
from .heuristic import heuristic_candidate
from .projection import project
from .prompt import Family, PromptData, build_families, build_prompt
from .proposals import Proposal, ProposalBook, Rule, new_id, proposals_path
from .state import load_state, save_state, state_path
from .stats import IntervalSnapshot, PatternEntry, PatternStats, PatternVolume, pattern_volumes
from .writer import PolicyWriter

if TYPE_CHECKING:
    from .llm import LlmAdvisor

log = logging.getLogger(__name__)

RECENT_ANOMALIES_SECONDS = 3600.0  # what the status page lists: the last hour's anomalies
MAX_RECENT_ANOMALIES = 1000  # at most, whatever a flood of new patterns flags


class SamplerView(Protocol):
    """What the loop needs of the running sampler."""

    @property
    def policy(self) -> Policy: ...

    @property
    def boosts(self) -> BoostTable: ...

    def resolve(self, service: str, pattern_id: str, template: str) -> Resolved: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: str  # llm | heuristic | fallback | skipped | error
    policy: Policy | None  # the guarded policy of this pass (written unless `written` is False)
    written: bool
    anomalies: tuple[Anomaly, ...]
    records: int
    families: int
    noise: int
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "policy_version": self.policy.version if self.policy else None,
            "written": self.written,
            "anomalies": len(self.anomalies),
            "records": self.records,
            "families": self.families,
            "noise": self.noise,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class FlaggedAnomaly:
    """An anomaly with the boost the budget granted its patterns when it was flagged (none: declined)."""

    anomaly: Anomaly
    boost_rate: float | None
    boost_until: float | None


class AnalysisLoop:
    def __init__(
        self,
        config: AnalysisConfig,
        *,
        stats: PatternStats,
        sampler: SamplerView,
        store: PolicyStore | None,
        telemetry: Telemetry,
        policy_path: Path | None,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        offline: bool = False,
        memory_headroom: Callable[[], int | None] = cgroup_headroom,
    ) -> None:
        self._config = config
        self._memory_headroom = memory_headroom
        self._stats = stats
        self._sampler = sampler
        self._store = store
        self._telemetry = telemetry
        self._clock = clock
        self._thresholds = thresholds
        self._limits = Limits(config.min_rate, config.max_rate_change_factor, bound_first_rules=not offline)
        self._writer = PolicyWriter(policy_path, config.history) if policy_path is not None else None
        # offline (`analyze` over a file) there is no history to keep
        self._state_path = state_path(policy_path) if policy_path is not None and not offline else None
        self.proposals = ProposalBook(
            proposals_path(policy_path) if policy_path is not None and not offline else None
        )
        # one apply at a time (each writes version + 1), and no new proposal supersedes one being applied
        self._applying = asyncio.Lock()
        # offline (`analyze -o FILE`) the written file is itself what a person reviews
        self._propose = config.mode == "propose" and not offline
        if self._state_path is not None:
            load_state(self._state_path, stats)
        self._advisor: LlmAdvisor | None = None
        if config.llm is not None:
            from .llm import LlmAdvisor  # the openai client (~20 MiB) only when an LLM is configured

            self._advisor = LlmAdvisor(config.llm, telemetry, environ, clock)
        self._anomalies: list[tuple[Anomaly, float]] = []  # with the time their boost ends
        self._granted: dict[str, BoostRequest] = {}  # the boosts the budget admitted, by pattern id
        self._recent: deque[FlaggedAnomaly] = deque(maxlen=MAX_RECENT_ANOMALIES)  # oldest first
        self._families: dict[str, str] = {}  # pattern id -> family id, from the last pass
        self.last_result: RunResult | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run a pass every interval until `stop` is set; a failing pass is logged and counted.

        Passes start on a fixed grid (start + k * interval, on the monotonic clock), so the time a
        pass takes does not push the next one back; a pass that overruns whole intervals skips
        those ticks rather than running passes back to back."""
        interval = self._config.interval
        tick = time.monotonic() + interval
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, tick - time.monotonic()))
                if stop.is_set():
                    break
                try:
                    await self.run_once(self._clock())
                except Exception:  # the loop must outlive one bad pass
                    log.exception("analysis pass failed")
                    self._telemetry.analysis_runs.labels("error").inc()
                tick = next_tick(tick, interval, time.monotonic())
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        await self.save_state()
        if self._advisor is not None:
            await self._advisor.aclose()

    async def save_state(self) -> None:
        """Write what the loop knows beside the policy (a failure is logged: the next pass retries)."""
        if self._state_path is None:
            return
        taken = self._stats.state()  # on the event loop: observe() must not change the containers meanwhile
        try:
            await asyncio.to_thread(save_state, self._state_path, taken)
        except OSError as exc:
            log.error("analysis: cannot write its state to %s: %s", self._state_path, exc.strerror or exc)

    async def run_once(self, now: float) -> RunResult:
        result = await self._pass(now)
        await self.save_state()
        return result

    async def _pass(self, now: float) -> RunResult:
        # Closing the interval reads and resets the live stats, and boosting edits the running
        # sampler: those stay on the event loop. The rest is computed from the snapshot (or from
        # copies) in a worker thread. It is still GIL-bound, but a thread hands the GIL back every
        # switch interval, so an Export call arriving during a pass over 10,000 patterns waits
        # milliseconds, not the pass.
        snapshot = await asyncio.to_thread(self._stats.close_interval(now).snapshot)
        policy_in_force = self._sampler.policy
        entries = list(self._stats.entries())
        anomalies = await asyncio.to_thread(
            detect, snapshot, self._thresholds, _known_before(snapshot, entries)
        )
        plan = await asyncio.to_thread(self._plan_boosts, anomalies, policy_in_force, snapshot, now)
        self._apply_boosts(anomalies, plan, now)
        volumes = await asyncio.to_thread(pattern_volumes, snapshot)
        if not volumes:
            return self._finish(RunResult("skipped", None, False, tuple(anomalies), 0, 0, 0, "no records"))

        templates = [v.template for v in volumes]
        try:
            clustering = await cluster_in_child(templates, headroom=self._memory_headroom())
        except ClusteringSkipped as exc:
            log.warning("analysis: %s; every template is its own family this pass", exc)
            clustering = singletons(templates)
        except ClusteringFailed as exc:
            log.error("analysis: %s; every template is its own family this pass", exc)
            clustering = singletons(templates)
        families = await asyncio.to_thread(build_families, volumes, clustering)
        self._families = {m.pattern_id: f.id for f in families for m in f.members}
        known = await self._known_patterns()
        candidate, outcome = await self._candidate(
            volumes, families, anomalies, known, policy_in_force, snapshot
        )
        if (
            self._sampler.policy is not policy_in_force
        ):  # reloaded while the LLM thought: guard against the new one
            policy_in_force = self._sampler.policy
            known = await self._known_patterns()
        base = (snapshot.received, clustering.families, clustering.noise)
        try:
            policy = await self._guarded(candidate, policy_in_force, known, now)
        except ValidationError as exc:
            log.error("the guarded policy is invalid, keeping the one in force: %s", exc)
            return self._finish(RunResult("error", None, False, tuple(anomalies), *base, str(exc)))
        if _same_rates(policy, policy_in_force):
            return self._finish(RunResult(outcome, policy, False, tuple(anomalies), *base, "rates unchanged"))
        if self._propose:
            proposal = await asyncio.to_thread(
                _proposal, candidate, policy, policy_in_force, known, snapshot, iso_time(now)
            )
            async with self._applying:  # an apply under way finishes with its proposal still open
                superseded = self.proposals.record(proposal)
                await self.proposals.save()
            self._telemetry.proposals.labels("proposed").inc()
            self._telemetry.proposals.labels("superseded").inc(superseded)
            log.info(
                "analysis proposed %s (%s); the policy in force stays until it is applied",
                proposal.id,
                outcome,
            )
            message = f"proposed {proposal.id}"
            return self._finish(RunResult(outcome, policy, False, tuple(anomalies), *base, message))
        if self._writer is None:
            return self._finish(RunResult(outcome, policy, False, tuple(anomalies), *base))
        try:
            path = await self._write(policy)
        except OSError as exc:
            message = f"cannot write {self._writer.path}: {exc.strerror or exc}"
            log.error("analysis: %s; the policy in force stays", message)
            return self._finish(RunResult("error", policy, False, tuple(anomalies), *base, message))
        log.info("analysis wrote policy version %d to %s (%s)", policy.version, path, outcome)
        return self._finish(RunResult(outcome, policy, True, tuple(anomalies), *base))

    def _finish(self, result: RunResult) -> RunResult:
        self._telemetry.analysis_runs.labels(result.outcome).inc()
        self.last_result = result
        return result

    def _plan_boosts(
        self, anomalies: list[Anomaly], policy: Policy, snapshot: IntervalSnapshot, now: float
    ) -> Plan:
        """The boosts to run from now: those running and those the anomalies ask for, within the
        budget (budget.py). Read-only, so it runs in a worker thread; `_apply_boosts` applies it."""
        settings = policy.anomaly_boost
        requests = {pid: r for pid, r in self._granted.items() if r.until > now}
        for anomaly in anomalies:
            duration = settings.new_pattern_duration if anomaly.kind == NEW_PATTERN else settings.duration
            for pattern_id in anomaly.pattern_ids:
                asked = BoostRequest(
                    pattern_id,
                    anomaly.kind,
                    settings.rate,
                    now + duration,
                    f"{anomaly.kind}: {anomaly.message}",
                )
                running = requests.get(pattern_id)
                requests[pattern_id] = asked if running is None else _merged(running, asked)
        costs = self._boost_costs(snapshot, set(requests), settings.rate)
        budget = settings.max_share * snapshot.received / snapshot.duration
        return plan_boosts((replace(r, cost=costs.get(r.pattern_id, 0.0)) for r in requests.values()), budget)

    def _boost_costs(
        self, snapshot: IntervalSnapshot, pattern_ids: set[str], rate: float
    ) -> dict[str, float]:
        """Per pattern, the sampled records per second a boost to `rate` would keep on top."""
        costs: dict[str, float] = {}
        for window in snapshot.patterns:
            if window.pattern_id not in pattern_ids:
                continue
            rates, _ = self._sampler.resolve(window.service, window.pattern_id, window.template)
            extra = sum(n * max(0.0, rate - r) for n, r in zip(window.counts[:ERROR], rates, strict=False))
            costs[window.pattern_id] = costs.get(window.pattern_id, 0.0) + extra / snapshot.duration
        return costs

    def _apply_boosts(self, anomalies: list[Anomaly], plan: Plan, now: float) -> None:
        boosts = self._sampler.boosts
        for request in plan.declined:
            if request.running:
                boosts.end(request.pattern_id)
            self._telemetry.boosts_declined.labels(request.kind).inc()
        for request in plan.admitted:
            boosts.boost(request.pattern_id, request.rate, request.until, request.reason)
        self._granted = {r.pattern_id: replace(r, running=True) for r in plan.admitted}
        if plan.declined:
            log.info(
                "anomaly boosts: %d declined or ended, the budget of %.1f records/s (anomaly_boost.max_share)"
                " is spent by %d boosts",
                len(plan.declined),
                plan.budget,
                len(plan.admitted),
            )
        for anomaly in anomalies:
            self._telemetry.anomalies.labels(anomaly.kind).inc()
            until = max(
                (self._granted[p].until for p in anomaly.pattern_ids if p in self._granted), default=now
            )
            self._anomalies.append((anomaly, until))
            granted = [self._granted[p] for p in anomaly.pattern_ids if p in self._granted]
            self._recent.append(
                FlaggedAnomaly(
                    anomaly,
                    max((r.rate for r in granted), default=None),
                    max((r.until for r in granted), default=None),
                )
            )
            log.warning("anomaly %s in %s: %s", anomaly.kind, anomaly.service, anomaly.message)
        self._anomalies = [(a, end) for a, end in self._anomalies if end > now]

    async def _known_patterns(self) -> dict[str, KnownPattern]:
        """Every pattern in the stats with its rate under the policy in force, and every pattern the
        policy in force has a rule for (so a rule stays addressable while its pattern is quiet or
        forgotten by the stats), resolved in a worker thread over a copy of the entry list
        (observe() may add entries meanwhile)."""
        return await asyncio.to_thread(self._resolve_known, list(self._stats.entries()), self._sampler.policy)

    def _resolve_known(self, entries: list[PatternEntry], policy: Policy) -> dict[str, KnownPattern]:
        known: dict[str, KnownPattern] = {}
        volumes: dict[str, int] = {}
        for entry in entries:
            volumes[entry.pattern_id] = volumes.get(entry.pattern_id, 0) + entry.received
            if entry.pattern_id not in known:
                rates, sources = self._sampler.resolve(entry.service, entry.pattern_id, entry.template)
                level = busiest_sampled_level(entry.counts)
                known[entry.pattern_id] = KnownPattern(
                    entry.template, rates[level], has_rule=sources[level].has_rule
                )
        for rule in policy.patterns:
            # a rule given by id alone or by template alone names no pattern the prompt can show
            if rule.id is not None and rule.template is not None:
                known.setdefault(rule.id, KnownPattern(rule.template, rule.rate))
        return {
            pattern_id: replace(pattern, volume=volumes.get(pattern_id, 0))
            for pattern_id, pattern in known.items()
        }

    async def _candidate(
        self,
        volumes: list[PatternVolume],
        families: list[Family],
        anomalies: list[Anomaly],
        known: dict[str, KnownPattern],
        policy: Policy,
        snapshot: IntervalSnapshot,
    ) -> tuple[Candidate, str]:
        if self._advisor is not None:
            members = {m.pattern_id for family in families for m in family.members}
            quiet = {pid: k for pid, k in known.items() if k.has_rule and pid not in members}
            data = PromptData(
                families=families,
                anomalies=anomalies,
                policy=policy,
                current_rates={pid: k.current_rate for pid, k in known.items()},
                lines_seen={pid: k.volume for pid, k in known.items()},
                quiet_rules=quiet,
                duration=snapshot.duration,
                kept=sum(w.kept for w in snapshot.patterns),
                target_keep_ratio=self._config.target_keep_ratio,
                limits=self._limits,
            )
            candidate = await self._advisor.propose(build_prompt(data))
            if candidate is not None:
                return candidate, "llm"
        heuristic = await asyncio.to_thread(
            heuristic_candidate,
            volumes,
            target_keep_ratio=self._config.target_keep_ratio,
            duration=snapshot.duration,
            first_per_window=policy.first_per_window,
            min_rate=self._config.min_rate,
        )
        return heuristic, "heuristic" if self._advisor is None else "fallback"

    async def _guarded(
        self, candidate: Candidate, policy_in_force: Policy, known: Mapping[str, KnownPattern], now: float
    ) -> Policy:
        """The candidate through the guardrails against the policy in force, as the next version (past
        both the one in force and the one on disk); the patterns boosted now keep their boosts."""
        version = max(policy_in_force.version, self._writer.existing_version() if self._writer else 0) + 1
        boosted = {boost.pattern_id for boost in self._sampler.boosts.active(now)}
        return await asyncio.to_thread(
            apply_guardrails,
            candidate,
            policy_in_force,
            known,
            boosted,
            self._limits,
            version=version,
            generated_at=datetime.now(UTC),
        )

    async def _write(self, policy: Policy) -> Path:
        """Write the policy file (YAML of thousands of rules: ~0.5 s, off the loop) and have the store
        take it now rather than at its next poll. Raises OSError when it cannot be written."""
        assert self._writer is not None
        path = await asyncio.to_thread(self._writer.write, policy)
        if self._store is not None:
            self._store.poll()
        return path

    # ---- proposals (analysis.mode: propose) ----

    async def apply_proposal(self, proposal_id: str, by: str) -> Proposal:
        """Write the open proposal's rates as the loop writes a policy: through the guardrails again,
        against the policy in force now (it may have changed since), with version + 1. Raises
        ProposalNotFound, ProposalNotOpen, or OSError when the policy file cannot be written (the
        proposal stays open)."""
        async with self._applying:
            proposal = self.proposals.require_open(proposal_id)
            assert (
                self._writer is not None
            )  # the admin offers proposals only with the loop on (a policy file)
            now = self._clock()
            at = iso_time(now)
            policy_in_force = self._sampler.policy
            known = await self._known_patterns()
            candidate = proposal.candidate(
                f"Proposal {proposal.id} of {proposal.created_at}, applied by {by} at {at}."
            )
            policy = await self._guarded(candidate, policy_in_force, known, now)
            await self._write(policy)
            log.info("proposal %s applied by %s: policy version %d written", proposal.id, by, policy.version)
            applied = self.proposals.decide(
                proposal.id, "applied", by=by, at=at, policy_version=policy.version
            )
            await self.proposals.save()
            self._telemetry.proposals.labels("applied").inc()
            return applied

    async def reject_proposal(self, proposal_id: str, by: str) -> Proposal:
        """Raises ProposalNotFound or ProposalNotOpen."""
        proposal = self.proposals.decide(proposal_id, "rejected", by=by, at=iso_time(self._clock()))
        await self.proposals.save()
        self._telemetry.proposals.labels("rejected").inc()
        log.info("proposal %s rejected by %s", proposal.id, by)
        return proposal

    # ---- the admin API ----

    def patterns_view(self, limit: int) -> dict[str, Any]:
        now = self._clock()
        boosts = self._sampler.boosts.active(now)
        boosted = {boost.pattern_id: boost for boost in boosts}
        active = [(a, end) for a, end in self._anomalies if end > now]
        kinds: dict[str, str] = {}
        for anomaly, _ in active:
            for pattern_id in anomaly.pattern_ids:
                kinds.setdefault(pattern_id, anomaly.kind)
        ranked = sorted(
            self._stats.entries(),
            key=lambda e: (-(e.last_interval + sum(e.interval_counts)), -e.received, e.pattern_id, e.service),
        )
        patterns = [
            {
                **pattern_row(
                    entry.service,
                    entry.pattern_id,
                    entry.template,
                    entry.counts,
                    entry.kept,
                    resolve=self._sampler.resolve,
                    boost=boosted.get(entry.pattern_id),
                ),
                "family": self._families.get(entry.pattern_id, f"family-{entry.pattern_id}"),
                "last_interval": entry.last_interval,
                "anomaly": entry.pattern_id in kinds,
                "anomaly_kind": kinds.get(entry.pattern_id),
                "first_seen": iso_time(entry.first_seen),
                "last_seen": iso_time(entry.last_seen),
            }
            for entry in ranked[:limit]
        ]
        return {
            "patterns": patterns,
            "total_patterns": len(self._stats),
            "anomalies": [{**anomaly.as_dict(), "until": iso_time(end)} for anomaly, end in active],
            "boosts": boost_rows(boosts),
            "last_run": self.last_result.as_dict() if self.last_result else None,
        }

    def recent_anomalies_view(self, window: float = RECENT_ANOMALIES_SECONDS) -> list[dict[str, Any]]:
        """The anomalies flagged in the last `window` seconds, newest first, each with its boost: the
        rate and deadline granted, and whether a boost still runs on any of its patterns."""
        now = self._clock()
        running = {boost.pattern_id for boost in self._sampler.boosts.active(now)}
        flagged = []
        for item in reversed(self._recent):
            anomaly = item.anomaly
            if anomaly.detected_at < now - window:
                continue
            boost = None
            if item.boost_rate is not None and item.boost_until is not None:
                boost = {
                    "rate": item.boost_rate,
                    "until": iso_time(item.boost_until),
                    "running": any(p in running for p in anomaly.pattern_ids),
                }
            flagged.append(
                {**anomaly.as_dict(), "detected_at": iso_time(anomaly.detected_at), "boost": boost}
            )
        return flagged


def next_tick(tick: float, interval: float, now: float) -> float:
    """The first tick of the grid `tick + k * interval` (k >= 1) that is still ahead of `now`."""
    return tick + interval * max(1, math.floor((now - tick) / interval) + 1)


def _merged(running: BoostRequest, asked: BoostRequest) -> BoostRequest:
    """One request per pattern: the higher-ranked kind (and its reason), the later deadline."""
    better = asked if KIND_RANK[asked.kind] < KIND_RANK[running.kind] else running
    return replace(better, until=max(running.until, asked.until), running=running.running)


def _known_before(snapshot: IntervalSnapshot, entries: list[PatternEntry]) -> Iterator[tuple[str, str]]:
    """(service, template) of every pattern the stats held before the snapshot's interval."""
    new = {(w.service, w.pattern_id) for w in snapshot.patterns if w.new}
    return ((e.service, e.template) for e in entries if (e.service, e.pattern_id) not in new)


def _proposal(
    candidate: Candidate,
    policy: Policy,
    policy_in_force: Policy,
    known: Mapping[str, KnownPattern],
    snapshot: IntervalSnapshot,
    created_at: str,
) -> Proposal:
    """The proposal of a pass: the guarded `policy`'s rates, what they change, what they would keep."""
    rules = tuple(
        Rule(
            pattern_id=rule.id,
            template=rule.template or "",
            from_rate=known[rule.id].current_rate,
            to_rate=rule.rate,
            reason=rule.reason or "",
            proposed_reason=candidate.pattern_rates[rule.id].reason,
        )
        for rule in policy.patterns
        if rule.id is not None and rule.id in candidate.pattern_rates and rule.id in known
    )
    return Proposal(
        id=new_id(),
        created_at=created_at,
        generated_by=policy.generated_by,
        reasoning=policy.reasoning or "",
        candidate_reasoning=candidate.reasoning,
        severity_rates={name: rate for name, rate in policy.severity_rates.items()},
        severity_rates_in_force={name: rate for name, rate in policy_in_force.severity_rates.items()},
        rules=rules,
        projected=project(policy, snapshot.patterns, snapshot.duration).as_dict(),
        in_force=project(policy_in_force, snapshot.patterns, snapshot.duration).as_dict(),
    )


def _same_rates(new: Policy, old: Policy) -> bool:
    return new.severity_rates == old.severity_rates and {
        (r.id, r.template): r.rate for r in new.patterns
    } == {(r.id, r.template): r.rate for r in old.patterns}
