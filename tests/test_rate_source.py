"""Where a keep rate came from (`RateSource`), and the patterns view rows built from it: the label the
admin API shows, the reason, "has a rule", and the label read back."""

from __future__ import annotations

import pytest

from lipservice_proxy.pattern_view import pattern_row
from lipservice_proxy.sampling.boosts import Boost
from lipservice_proxy.sampling.policy import PatternRule, Policy
from lipservice_proxy.sampling.rates import RateKind, RateSource, RateTable, busiest_sampled_level
from lipservice_proxy.sampling.severity import DEBUG, ERROR, INFO, TRACE, WARN

HEALTH = PatternRule(id="aaaa", template="GET /health <*>", rate=0.01, reason="liveness probe")
POLICY = Policy(
    severity_rates={"TRACE": 0.0, "DEBUG": 0.1, "INFO": 0.2},  # no WARN: the default 1.0 applies
    patterns=[HEALTH, PatternRule(template="cache hit <*>", rate=0.3)],
    services={
        "checkout": {
            "severity_rates": {"DEBUG": 0.5},
            "patterns": [{"id": "bbbb", "rate": 0.25, "reason": "checkout noise"}],
        }
    },
)


def test_each_level_gets_its_rate_and_the_source_that_set_it() -> None:
    table = RateTable(POLICY)
    rates, sources = table.resolve("web", "zzzz", "GET /health <*>")  # found by template
    assert rates == [0.01] * 4 + [1.0, 1.0]
    assert [s.label for s in sources] == ["pattern"] * 4 + ["protected"] * 2
    assert sources[INFO].rule == HEALTH and sources[INFO].reason == "liveness probe"
    rates, sources = table.resolve("checkout", "bbbb", "anything")
    assert rates[INFO] == 0.25 and sources[INFO].label == "service:checkout:pattern"
    assert sources[INFO].reason == "checkout noise"
    rates, sources = table.resolve("checkout", "cccc", "GET /health <*>")  # the service's rate wins
    assert (rates[DEBUG], sources[DEBUG].label) == (0.5, "service:checkout:severity")
    assert (rates[INFO], sources[INFO].label) == (0.01, "pattern")
    rates, sources = table.resolve("web", "dddd", "nothing matches")
    assert [(r, s.label) for r, s in zip(rates[:ERROR], sources, strict=False)] == [
        (0.0, "severity"),
        (0.1, "severity"),
        (0.2, "severity"),
        (1.0, "default"),
    ]
    assert [s.reason for s in sources[WARN : ERROR + 1]] == [
        "no rule applies: kept",
        "always kept (severity)",
    ]


def test_has_rule_only_when_a_pattern_rule_sets_the_rate() -> None:
    table = RateTable(POLICY)
    _, by_pattern = table.resolve("web", "aaaa", "")
    _, by_service = table.resolve("checkout", "bbbb", "")
    _, by_severity = table.resolve("checkout", "cccc", "")
    assert by_pattern[INFO].has_rule and by_service[INFO].has_rule
    assert not any(s.has_rule for s in by_severity)
    assert not by_pattern[ERROR].has_rule  # ERROR is protected whatever the rule says


@pytest.mark.parametrize(
    "source",
    [
        RateSource(RateKind.PROTECTED),
        RateSource(RateKind.SERVICE_PATTERN, "checkout"),
        RateSource(RateKind.SERVICE_SEVERITY, "a:b"),  # a colon in a service name survives
        RateSource(RateKind.PATTERN),
        RateSource(RateKind.SEVERITY),
        RateSource(RateKind.DEFAULT),
        RateSource(RateKind.BOOST),
    ],
)
def test_a_label_reads_back_as_its_source(source: RateSource) -> None:
    assert RateSource.parse(source.label) == source


def test_rule_and_boost_reasons_survive_only_on_the_object() -> None:
    by_rule = RateSource(RateKind.SERVICE_PATTERN, "checkout", PatternRule(id="b", rate=0.5, reason="noisy"))
    assert (by_rule.label, by_rule.reason) == ("service:checkout:pattern", "noisy")
    assert RateSource.parse(by_rule.label).reason == "service:checkout:pattern"  # no rule, no reason text
    boost = RateSource.boost("spike: x20")
    assert (boost.label, boost.reason, boost.has_own_reason, boost.has_rule) == (
        "boost",
        "spike: x20",
        True,
        False,
    )
    assert RateSource.boost(None).reason == "boost"
    assert not RateSource(RateKind.SEVERITY).has_own_reason


@pytest.mark.parametrize(
    "label", ["", "bogus", "service-pattern", "service:checkout", "service::pattern", "service:x:boost"]
)
def test_a_label_that_names_no_source_is_refused(label: str) -> None:
    with pytest.raises(ValueError, match="not a rate source label"):
        RateSource.parse(label)


def test_the_busiest_level_below_error_is_the_one_shown() -> None:
    assert busiest_sampled_level([0, 3, 5, 1, 90, 2]) == INFO
    assert busiest_sampled_level([7, 3, 5, 1, 0, 0]) == TRACE
    assert busiest_sampled_level([0, 0, 0, 0, 4, 1]) == INFO  # none sampled: INFO
    assert busiest_sampled_level([0, 2, 0, 2, 0, 0]) == DEBUG  # a tie: the lower level


def test_rows_show_the_rule_the_boost_or_the_kind_with_its_reason() -> None:
    resolve = RateTable(POLICY).resolve
    boost = Boost("cccc", 1.0, 2e9, "spike: x20")

    def row(
        service: str, pattern_id: str, template: str, counts: list[int], boost: Boost | None = None
    ) -> tuple:
        shown = pattern_row(service, pattern_id, template, counts, 1, resolve=resolve, boost=boost)
        return shown["rate"], shown["rule"], shown["reason"]

    assert row("web", "zzzz", "GET /health <*>", [0, 0, 5, 0, 0, 0]) == (0.01, "pattern", "liveness probe")
    assert row("checkout", "bbbb", "x", [0, 0, 5, 0, 0, 0]) == (
        0.25,
        "service:checkout:pattern",
        "checkout noise",
    )
    assert row("web", "cccc", "y", [0, 0, 5, 0, 0, 0], boost) == (1.0, "boost", "spike: x20")
    assert row("web", "dddd", "z", [0, 9, 5, 0, 0, 0]) == (
        0.1,
        "severity",
        "the policy's rate for this severity",
    )
    assert row("checkout", "eeee", "z", [0, 9, 0, 0, 0, 0]) == (
        0.5,
        "service:checkout:severity",
        "the service's rate for this severity",
    )
    assert row("web", "ffff", "cache hit <*>", [0, 0, 5, 0, 0, 0]) == (
        0.3,
        "pattern",
        "pattern",
    )  # no reason given
    # every record ERROR or FATAL: every one was kept, whatever the rule or a boost says
    assert row("web", "zzzz", "GET /health <*>", [0, 0, 0, 0, 3, 1], boost) == (
        1.0,
        "protected",
        "always kept (severity)",
    )


def test_a_row_counts_what_the_pattern_received_per_severity() -> None:
    shown = pattern_row(
        "web", "dddd", "z", [0, 2, 5, 0, 1, 0], 4, resolve=RateTable(POLICY).resolve, boost=None
    )
    assert shown["counts"] == {"DEBUG": 2, "INFO": 5, "ERROR": 1}
    assert (shown["received"], shown["kept"], shown["id"], shown["service"]) == (8, 4, "dddd", "web")
