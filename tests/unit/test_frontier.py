"""The forgetting frontier: relative changes with intervals, the Pareto front, the remedy goal, the recommendation."""

import json
import math

import pytest

from cptnb.evaluate.frontier import (
    FrontierPoint,
    pareto_front,
    point_from_measurements,
    recommend,
    relative_change,
    remedy_goal,
    write_frontier,
)


def _measurement(domain_nll, general_nll):
    """A measure() result with per-document items (bytes fixed per document, so only the nll moves)."""
    def items(nlls, size):
        return [{"id": f"{i}-x", "nll_nats": v, "tokens": 100, "bytes": size} for i, v in enumerate(nlls)]
    heldout = {}
    for name, nlls, size in (("domain", domain_nll, 400), ("general", general_nll, 300)):
        rows = items(nlls, size)
        heldout[name] = {"bits_per_byte": sum(nlls) / math.log(2) / (size * len(nlls)), "items": rows}
    return {"heldout": heldout, "generations": []}


BEFORE = _measurement([200.0, 210.0, 190.0, 205.0], [100.0, 104.0, 98.0, 101.0, 99.0, 103.0])


def test_relative_change_is_a_ratio_of_sums_with_a_paired_interval():
    after = _measurement([160.0, 170.0, 150.0, 160.0], [105.0, 109.0, 103.0, 106.0, 104.0, 108.0])
    change, (low, high) = relative_change(BEFORE, after, "general")
    assert change == pytest.approx(635 / 605 - 1)
    assert low <= change <= high and low > 0  # every document got dearer: the interval excludes 0
    gain = point_from_measurements("r", 0.0, 1.0, BEFORE, after)
    assert gain.domain_gain == pytest.approx(1 - 640 / 805)
    assert gain.domain_ci[0] <= gain.domain_gain <= gain.domain_ci[1] and gain.forgets_clearly
    assert gain.bits_per_byte["domain"] == after["heldout"]["domain"]["bits_per_byte"]


def test_a_mixed_change_has_an_interval_around_zero():
    after = _measurement([200.0] * 4, [110.0, 94.0, 108.0, 95.0, 107.0, 96.0])
    change, (low, high) = relative_change(BEFORE, after, "general")
    assert low < 0 < high
    assert not point_from_measurements("r", 0.0, 1.0, BEFORE, after).forgets_clearly


def test_different_documents_are_refused():
    other = _measurement([1.0] * 5, [1.0] * 6)
    with pytest.raises(ValueError, match="different documents"):
        relative_change(BEFORE, other, "domain")


def _point(name, share, alpha, gain, change):
    return FrontierPoint(name, share, alpha, gain, change, (gain - 0.01, gain + 0.01), (change - 0.005, change + 0.005))


def _frontier():
    return [
        _point("replay 0%", 0.0, 1.0, 0.20, 0.040),
        _point("replay 0% · alpha 0.5", 0.0, 0.5, 0.17, 0.015),  # 85% of the gain, 37.5% of the regression
        _point("replay 0% · alpha 0.25", 0.0, 0.25, 0.10, 0.004),
        _point("replay 10%", 0.1, 1.0, 0.15, 0.030),  # dominated by alpha 0.5
        _point("replay 20%", 0.2, 1.0, 0.18, 0.025),  # 90% of the gain but 62.5% of the regression
    ]


def test_pareto_front_keeps_only_points_nothing_beats_on_both():
    points = _frontier()
    front = pareto_front(points)
    assert [p.name for p in front] == ["replay 0% · alpha 0.25", "replay 0% · alpha 0.5", "replay 20%", "replay 0%"]
    assert not points[3].pareto
    tie = [_point("a", 0.0, 1.0, 0.1, 0.01), _point("b", 0.1, 1.0, 0.1, 0.01)]
    assert len(pareto_front(tie)) == 2 and all(p.pareto for p in tie)  # equal points dominate neither


def test_remedy_goal_names_the_points_that_meet_it_or_says_none_does():
    goal = remedy_goal(_frontier())
    assert goal.met and goal.meeting == ["replay 0% · alpha 0.5"]
    assert "Goal met: replay 0% · alpha 0.5 is" in goal.sentence()
    strict = remedy_goal(_frontier(), keep_gain=0.9, max_regression=0.3)
    assert not strict.met and strict.sentence().startswith("No point on this frontier")
    calm = remedy_goal([_point("replay 0%", 0.0, 1.0, 0.2, -0.01), _point("replay 5%", 0.05, 1.0, 0.2, -0.02)])
    assert not calm.met and "did not forget beyond its 95% interval" in calm.sentence()
    with pytest.raises(ValueError, match="without remedy"):
        remedy_goal([_point("replay 5%", 0.05, 1.0, 0.2, 0.01)])


def test_recommendation_takes_the_largest_gain_under_the_declared_threshold():
    points = _frontier()
    chosen = recommend(points, 0.02)
    assert chosen.chosen == "replay 0% · alpha 0.5" and "+17.00%" in chosen.sentence
    assert "reaches past the threshold" in recommend(points, 0.016).sentence  # its interval ends at +2.0%
    assert recommend(points, 0.05).chosen == "replay 0%"  # a loose threshold: no remedy needed
    nothing = recommend(points, 0.001)
    assert nothing.chosen is None and "least damaging is 'replay 0% · alpha 0.25'" in nothing.sentence


def test_write_frontier_writes_the_chart_table_and_verdict(tmp_path):
    payload = write_frontier(tmp_path, _frontier(), 0.02, title="test", extra={"total_seconds": 1.0})
    for name in ("frontier.json", "frontier.md", "frontier.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "frontier.json").read_text())
    assert saved == json.loads(json.dumps(payload)) and saved["total_seconds"] == 1.0
    assert [p["pareto"] for p in saved["points"]] == [True, True, True, False, True]
    assert saved["remedy_goal"]["met"] and saved["recommendation"]["chosen"] == "replay 0% · alpha 0.5"
    assert saved["verdict"][0].endswith("forgetting beyond the interval.")
    table = (tmp_path / "frontier.md").read_text()
    assert "| replay 0% · alpha 0.5 | 0% | 0.5 | +17.00% [+16.00%, +18.00%] | +1.50% [+1.00%, +2.00%] | yes |" in table
