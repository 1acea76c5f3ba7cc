"""The engine's bounds show up as the proxy's metrics."""

from __future__ import annotations

import itertools

from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.patterns.metrics import StatsPublisher
from lipservice_proxy.telemetry import Telemetry


def sample(telemetry: Telemetry, name: str, labels: dict[str, str] | None = None) -> float | None:
    return telemetry.registry.get_sample_value(name, labels or {})


def test_template_and_cache_counts_and_evictions_are_published() -> None:
    telemetry = Telemetry()
    publisher = StatsPublisher(telemetry)
    engine = PatternEngine(max_templates=5, cache_size=10)
    for i in range(40):
        engine.add(" ".join(f"w{chr(97 + i % 26)}{chr(97 + i // 26)}{k}" for k in "xyz"))
    publisher.publish(engine.stats())
    assert sample(telemetry, "lipservice_patterns_active") == 5
    assert sample(telemetry, "lipservice_pattern_cache_entries") == engine.stats().cache_entries
    assert sample(telemetry, "lipservice_pattern_evictions_total", {"kind": "template"}) == 35
    cache_evictions = sample(telemetry, "lipservice_pattern_evictions_total", {"kind": "cache"})
    assert cache_evictions == engine.stats().cache_evictions > 0

    engine.add("one more distinct statement here")
    publisher.publish(engine.stats())
    publisher.publish(engine.stats())  # no growth, no double counting
    assert sample(telemetry, "lipservice_pattern_evictions_total", {"kind": "template"}) == 36


def test_merges_and_shed_lines_are_published() -> None:
    telemetry = Telemetry()
    publisher = StatsPublisher(telemetry)
    steps = itertools.count()
    # each mining costs one tick of this clock: a burst of 20 ticks mines about ten lines
    engine = PatternEngine(
        mining_burst=20, mining_per_line=0.0, mining_per_second=0.0, clock=lambda: next(steps)
    )
    for state in ("done", "failed", "killed", "lost"):
        engine.add(f"job 1 finished with state {state}")
    for i in range(100):
        engine.add(" ".join(_word(i * 4 + k) for k in range(4)))
    publisher.publish(engine.stats())
    publisher.publish(engine.stats())  # no growth, no double counting
    stats = engine.stats()
    assert stats.pattern_merges >= 2 and stats.shed_lines >= 80
    assert sample(telemetry, "lipservice_pattern_merges_total") == stats.pattern_merges
    assert sample(telemetry, "lipservice_pattern_shed_lines_total") == stats.shed_lines


def _word(n: int) -> str:
    return "w" + "".join(chr(97 + (n // 26**k) % 26) for k in range(3))
