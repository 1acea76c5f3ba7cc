"""`lipservice-proxy analyze`: one analysis pass over a log file, offline.

The records go through the proxy's own sampler under the base policy (as `replay` does, batched
per second of log time), the stats observe every batch exactly as in the running proxy, and one
pass of the same loop turns the whole input into one interval: same heuristic or LLM, same
guardrails, same writer. The base policy is the one the new policy refines: its version, rates,
exemptions and windows are the starting point, as the policy in force is for the running proxy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ..config import AnalysisConfig
from ..errors import InputError
from ..memlimit import cgroup_headroom
from ..patterns import PatternEngine
from ..replay import InputRecord, replay
from ..sampling.policy import Policy
from ..sampling.sampler import Sampler
from ..telemetry import Telemetry
from .loop import AnalysisLoop, RunResult
from .stats import PatternStats


async def analyze_records(
    records: list[InputRecord],
    base: Policy,
    config: AnalysisConfig,
    *,
    output: Path | None,
    total: int | None = None,
    rate: float | None = None,
    always_keep_min_severity: str = "ERROR",
    environ: Mapping[str, str] = os.environ,
    memory_headroom: Callable[[], int | None] = cgroup_headroom,
) -> RunResult:
    """One pass over `records` (cycled to `total` at `rate` per second, as replay does)."""
    if not records:
        raise InputError("no log records in the input")
    engine = PatternEngine()
    stats = PatternStats()
    replay(
        records,
        base,
        total=total,
        rate=rate,
        always_keep_min_severity=always_keep_min_severity,
        engine=engine,
        observers=[stats],
    )
    sampler = Sampler(engine, base, always_keep_min_severity=always_keep_min_severity)
    loop = AnalysisLoop(
        config,
        stats=stats,
        sampler=sampler,
        store=None,
        telemetry=Telemetry(),
        policy_path=output,
        environ=environ,
        offline=True,
        memory_headroom=memory_headroom,
    )
    try:
        end = (stats.last_observed or 0.0) + 1.0  # the last batch's second, included
        return await loop.run_once(end)
    finally:
        await loop.shutdown()
