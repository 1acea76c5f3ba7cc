"""The engine's bounds show up as the proxy's metrics."""

from __future__ import annotations

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
