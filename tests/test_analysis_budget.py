"""The boost budget: boosts are admitted by rank (error surge > spike > new pattern) while their cost
fits in `anomaly_boost.max_share` of the records received; what does not fit is declined or ended."""

from __future__ import annotations

from lipservice_proxy.analysis.anomalies import ERROR_SURGE, NEW_PATTERN, SPIKE
from lipservice_proxy.analysis.budget import BoostRequest, plan_boosts


def request(pattern_id: str, kind: str, cost: float, running: bool = False) -> BoostRequest:
    return BoostRequest(pattern_id, kind, 1.0, 100.0, kind, cost, running)


def test_boosts_are_admitted_by_rank_within_the_budget() -> None:
    plan = plan_boosts(
        [
            request("new-a", NEW_PATTERN, 3.0),
            request("spike", SPIKE, 4.0),
            request("surge-busy", ERROR_SURGE, 50.0),  # alone over the budget: declined
            request("surge", ERROR_SURGE, 2.0),
            request("new-b", NEW_PATTERN, 5.0),  # no room left after the others
            request("new-c", NEW_PATTERN, 0.5),  # a cheaper one still fits
        ],
        budget=10.0,
    )
    assert [r.pattern_id for r in plan.admitted] == ["surge", "spike", "new-a", "new-c"]
    assert {r.pattern_id for r in plan.declined} == {"surge-busy", "new-b"}
    assert plan.spent == 9.5


def test_a_running_boost_keeps_its_place_against_a_newcomer_of_its_rank() -> None:
    plan = plan_boosts([request("newcomer", SPIKE, 6.0), request("running", SPIKE, 6.0, running=True)], 10.0)
    assert [r.pattern_id for r in plan.admitted] == ["running"]
    assert [r.pattern_id for r in plan.declined] == ["newcomer"]
