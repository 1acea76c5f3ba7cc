"""Cold start from four unseen Loghub systems with the analysis loop on, at two rates: the loop
brings the keep ratio down within the targets, boosts stay within `anomaly_boost.max_share`, and
every ERROR+ record is kept. bench/coldstart.py is the replay (real engine, sampler, stats, loop,
policy store; a virtual clock, so 150 s of stream run in seconds); here it runs at its full
length for 50 records/s and shortened to 45 s (six passes) for 1,000 records/s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.coldstart import replay_cold_start
from lipservice_proxy.sampling.policy import AnomalyBoost

pytestmark = pytest.mark.loghub


@pytest.mark.parametrize(
    ("rate", "seconds", "interval", "target"),
    [(50, 150, 10.0, 0.30), (1000, 45, 7.5, 0.15)],
    ids=["50-per-second", "1000-per-second"],
)
def test_cold_start_keeps_within_target(
    tmp_path: Path, rate: int, seconds: int, interval: float, target: float
) -> None:
    result = asyncio.run(replay_cold_start(tmp_path, rate=rate, seconds=seconds, interval=interval))
    assert result.passes >= 5
    assert result.last_third <= target, (result.keep_ratio(), result.last_third)
    kept, errors = result.errors
    assert errors > 0 and kept == errors
    assert result.boost_share <= AnomalyBoost().max_share
