"""Proposals: in `analysis.mode: propose` a pass that would change the policy records one here instead.

A proposal holds the guarded candidate of its pass (the rates it would set and why), the per-pattern
changes against the policy in force, and the projected effect on the interval's traffic
(projection.py). A person applies or rejects it (admin API, CLI, status page); applying passes the
candidate through the guardrails again, against the policy in force then, and writes it as the loop
does. At most one proposal is open: a newer one supersedes it.

Kept beside the generated policy (`<policy stem>.proposals.json`, written whole with
files.write_atomically after every change) so a restart loses none; the open one and the newest
`MAX_PROPOSALS` decided ones (with their changed rules only) are kept. A missing file is a first
start; an unreadable one is logged and ignored, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import orjson

from ..files import write_atomically
from .guardrails import Candidate, RateChange

log = logging.getLogger(__name__)

FORMAT = "lipservice-proposals"
VERSION = 1
MAX_PROPOSALS = 20  # decided proposals kept, newest first; the open one is always kept

Status = Literal["open", "applied", "rejected", "superseded"]
STATUSES = get_args(Status)


class ProposalNotFound(LookupError):
    """No proposal has this id (never had, or it left the bounded history): permanent, HTTP 404."""


class ProposalNotOpen(ValueError):
    """The proposal was already applied, rejected or superseded: permanent, HTTP 409."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern rule of the candidate: its rate, the rate in force when proposed, and why."""

    pattern_id: str
    template: str
    from_rate: float
    to_rate: float
    reason: str  # as the guarded policy words it
    proposed_reason: str  # the candidate's own, handed to the guardrails again on apply

    @property
    def changed(self) -> bool:
        return self.from_rate != self.to_rate


@dataclass(frozen=True, slots=True)
class Proposal:
    id: str
    created_at: str
    generated_by: str
    reasoning: str
    candidate_reasoning: str
    severity_rates: dict[str, float]
    severity_rates_in_force: dict[str, float]  # when proposed, for the diff
    rules: tuple[Rule, ...]
    projected: dict[str, Any]  # the candidate over the interval's traffic (Projection.as_dict)
    in_force: dict[str, Any]  # the policy in force over the same traffic, to compare with
    status: Status = "open"
    decided_at: str | None = None
    decided_by: str | None = None
    policy_version: int | None = None  # the version written when applied

    def candidate(self, note: str) -> Candidate:
        """The rates to put through the guardrails again, with `note` (who applied it) first in the
        reasoning."""
        return Candidate(
            generated_by=self.generated_by,
            reasoning=f"{note}\n{self.candidate_reasoning}",
            severity_rates=dict(self.severity_rates),
            pattern_rates={r.pattern_id: RateChange(r.to_rate, r.proposed_reason) for r in self.rules},
        )

    def as_dict(self) -> dict[str, Any]:
        """The admin API's view."""
        return {
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at,
            "generated_by": self.generated_by,
            "reasoning": self.reasoning,
            "projected": self.projected,
            "in_force": self.in_force,
            "changes": [
                {
                    "pattern_id": r.pattern_id,
                    "template": r.template,
                    "from_rate": r.from_rate,
                    "to_rate": r.to_rate,
                    "reason": r.reason,
                }
                for r in self.rules
                if r.changed
            ],
            "severity_changes": [
                {"severity": name, "from_rate": self.severity_rates_in_force.get(name, 1.0), "to_rate": rate}
                for name, rate in self.severity_rates.items()
                if rate != self.severity_rates_in_force.get(name, 1.0)
            ],
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "policy_version": self.policy_version,
        }


def _closed(
    proposal: Proposal, status: Status, *, by: str, at: str, policy_version: int | None = None
) -> Proposal:
    """`proposal` decided. Only its changed rules stay: the rest served to apply it, and a policy can
    have thousands of rules, kept `MAX_PROPOSALS` times over."""
    return replace(
        proposal,
        status=status,
        decided_by=by,
        decided_at=at,
        policy_version=policy_version,
        rules=tuple(rule for rule in proposal.rules if rule.changed),
    )


def new_id() -> str:
    return f"prop-{secrets.token_hex(6)}"


def proposals_path(policy_path: Path) -> Path:
    return policy_path.with_name(f"{policy_path.stem}.proposals.json")


class ProposalBook:
    """The proposals, newest first, persisted to `path` (None: in memory only)."""

    def __init__(self, path: Path | None, keep: int = MAX_PROPOSALS) -> None:
        self.path = path
        self._keep = keep
        self._proposals: list[Proposal] = self._load() if path is not None else []
        self._writing = asyncio.Lock()

    def all(self) -> list[Proposal]:
        return list(self._proposals)

    def open(self) -> list[Proposal]:
        return [p for p in self._proposals if p.status == "open"]

    def get(self, proposal_id: str) -> Proposal:
        for proposal in self._proposals:
            if proposal.id == proposal_id:
                return proposal
        raise ProposalNotFound(f"no proposal {proposal_id!r}")

    def require_open(self, proposal_id: str) -> Proposal:
        proposal = self.get(proposal_id)
        if proposal.status != "open":
            raise ProposalNotOpen(f"proposal {proposal_id!r} is {proposal.status}, not open")
        return proposal

    def record(self, proposal: Proposal) -> int:
        """Add `proposal` as the open one; an older open one is superseded (how many: 0 or 1). Then `save`."""
        superseded = len(self.open())
        kept = [
            _closed(p, "superseded", by=proposal.id, at=proposal.created_at) if p.status == "open" else p
            for p in self._proposals
        ]
        self._proposals = [proposal, *kept[: self._keep]]
        return superseded

    def decide(
        self, proposal_id: str, status: Status, *, by: str, at: str, policy_version: int | None = None
    ) -> Proposal:
        """Close the open proposal `proposal_id` (then `save`); raises ProposalNotFound, ProposalNotOpen."""
        decided = _closed(self.require_open(proposal_id), status, by=by, at=at, policy_version=policy_version)
        self._proposals = [decided if p.id == proposal_id else p for p in self._proposals]
        return decided

    async def save(self) -> None:
        """Write the proposals as they are now (serialised here, written in a worker thread, one write
        at a time so an older state never lands last). A failure is logged: the proposals stay in
        memory and the next change writes them again."""
        if self.path is None:
            return
        data = orjson.dumps(
            {"format": FORMAT, "version": VERSION, "proposals": [asdict(p) for p in self._proposals]}
        )
        async with self._writing:
            try:
                await asyncio.to_thread(write_atomically, self.path, data)
            except OSError as exc:
                log.error("analysis: cannot write proposals to %s: %s", self.path, exc.strerror or exc)

    def _load(self) -> list[Proposal]:
        assert self.path is not None
        try:
            document = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("proposals file %s is unreadable (%s); starting without it", self.path, exc)
            return []
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("version") != VERSION
        ):
            log.error("%s is not a proposals file of version %d; starting without it", self.path, VERSION)
            return []
        try:
            proposals = [
                Proposal(**{**raw, "rules": tuple(Rule(**rule) for rule in raw["rules"])})
                for raw in document["proposals"]
            ]
        except (KeyError, TypeError) as exc:
            log.error("proposals file %s is malformed (%s); starting without it", self.path, exc)
            return []
        if any(p.status not in STATUSES for p in proposals):
            log.error("proposals file %s has an unknown status; starting without it", self.path)
            return []
        log.info("analysis: %d proposals restored from %s", len(proposals), self.path)
        return proposals
