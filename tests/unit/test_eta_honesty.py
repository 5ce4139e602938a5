"""ETA honesty maths (chalicelib/pipeline/honesty_rules.py), against hand-computed figures."""

from __future__ import annotations

import pytest

from chalicelib.geo.eta import ErrorModel, StopEta
from chalicelib.pipeline import honesty_rules as rules

MIN = 60_000


def _eta(stop: str, now_ms: int, remaining_min: float) -> StopEta:
    eta = now_ms + int(remaining_min * MIN)
    return StopEta(stop, eta, eta - 2 * MIN, eta + 3 * MIN)


@pytest.mark.parametrize(("remaining_min", "mark"), [(40, None), (30, 30), (28, 30), (15.5, 30), (15, 15),
                                                     (10, 15), (5, 5), (0.5, 5), (-3, 5)])
def test_the_mark_just_crossed(remaining_min, mark):
    assert rules.crossed_mark(remaining_min * 60) == mark


def test_remember_keeps_the_first_eta_after_each_mark_once():
    shown: dict[str, list[list[int]]] = {}
    t0 = 1_760_000_000_000
    for minute, remaining in [(0, 40), (1, 28), (2, 27), (10, 20), (15, 12), (16, 11), (24, 4), (25, 3)]:
        now = t0 + minute * MIN
        rules.remember(shown, [_eta("s1", now, remaining)], now)
    marks = [(e[0], e[1]) for e in shown["s1"]]
    assert marks == [(30, (t0 + MIN) // 1000), (15, (t0 + 15 * MIN) // 1000), (5, (t0 + 24 * MIN) // 1000)]
    at_30 = shown["s1"][0]
    assert at_30[2:] == [(t0 + 29 * MIN) // 1000, (t0 + 27 * MIN) // 1000, (t0 + 32 * MIN) // 1000]
    # a stop first seen 10 minutes out is recorded at 15 only
    rules.remember(shown, [_eta("s2", t0, 10)], t0)
    assert [e[0] for e in shown["s2"]] == [15]
    # a stop shown long ago and never arrived at is forgotten
    later = t0 + 8 * 3600 * 1000
    rules.remember(shown, [], later)
    assert shown == {}


def test_outcome_error_and_inside():
    # shown at t=1000 s: expected 1600, window 1500-1800; arrived at 1700 s
    (o,) = rules.outcomes([[15, 1000, 1600, 1500, 1800]], 1_700_000)
    assert o.mark == 15 and o.abs_error_min == pytest.approx(100 / 60) and o.inside
    (late,) = rules.outcomes([[5, 1000, 1600, 1500, 1800]], 1_900_000)
    assert late.abs_error_min == pytest.approx(5.0) and not late.inside
    # the score is the margin the engine's window model needed for it (predicted 600 s, took 900 s)
    assert late.score == pytest.approx(ErrorModel().score(600, 900))


def test_histogram_summary_hand_computed():
    # Five arrivals at the 15-minute mark: errors 1.2, 1.2, 3.7, 10.0, 0.1 minutes; 3 inside their window.
    # 30-second bins: 2, 2, 7, 20, 0. Median: rank ceil(0.5 x 5) = 3 -> bin 2 -> its middle 1.25 min.
    # p90: rank ceil(0.9 x 5) = 5 -> bin 20 -> 10.25 min. Inside share 3/5.
    outcomes = [rules.Outcome(15, e, inside, 0.0) for e, inside in
                [(1.2, True), (1.2, True), (3.7, False), (10.0, False), (0.1, True)]]
    sums = rules.counters(outcomes)
    assert sums["n15"] == 5 and sums["in15"] == 3 and sums["e15_2"] == 2 and sums["e15_20"] == 1
    figures = rules.summary(sums)
    assert figures["15"] == {"n": 5, "median_abs_error_min": 1.25, "p90_abs_error_min": 10.25,
                             "inside_window_share": 0.6}
    assert figures["30"] == {"n": 0, "median_abs_error_min": None, "p90_abs_error_min": None,
                             "inside_window_share": None}
    # counters of two items add up to the counters of their arrivals together
    total: dict[str, float] = {}
    rules.add(total, rules.counters(outcomes[:2]))
    rules.add(total, rules.counters(outcomes[2:]))
    assert total == sums
    # an error of 2 hours lands in the last bin (60 minutes and more)
    assert "e5_120" in rules.counters([rules.Outcome(5, 120.0, False, 1.0)])


def test_calibrated_margin_is_the_level_quantile_of_the_scores():
    # 10 arrivals with scores -0.30, -0.25, ..., 0.15 (bins -6..3): the 80% nearest rank is the 8th, score 0.05,
    # bin 1, whose top is 0.10: a margin of 0.10 holds 8 of these 10 arrivals (and one more at most).
    outcomes = [rules.Outcome(15, 1.0, True, -0.30 + 0.05 * i + 0.001) for i in range(10)]
    sums = rules.counters(outcomes)
    assert rules.calibrated_margin(sums, 0.8, min_n=10) == pytest.approx(0.10)
    assert rules.calibrated_margin(sums, 0.8, min_n=11) is None
    assert rules.inside_share(sums) == (10, 1.0)
