"""ETA honesty maths (chalicelib/pipeline/honesty_rules.py), against hand-computed figures."""

from __future__ import annotations

import math
import random

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
    # the error as the window model measures it (predicted 600 s, took 900 s), in the model's horizon bucket
    assert late.ratio == pytest.approx(ErrorModel().ratio(600, 900)) and late.slot == ErrorModel().slot(600)
    (wild,) = rules.outcomes([[5, 1000, 1010, 1000, 1100]], 9_000_000)  # 2 hours late on a 10 s prediction
    assert wild.ratio == rules.RATIO_MAX  # clamped


def test_histogram_summary_hand_computed():
    # Five arrivals at the 15-minute mark: errors 1.2, 1.2, 3.7, 10.0, 0.1 minutes; 3 inside their window.
    # 30-second bins: 2, 2, 7, 20, 0. Median: rank ceil(0.5 x 5) = 3 -> bin 2 -> its middle 1.25 min.
    # p90: rank ceil(0.9 x 5) = 5 -> bin 20 -> 10.25 min. Inside share 3/5.
    outcomes = [rules.Outcome(15, e, inside, 3, 0.0) for e, inside in
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
    assert "e5_120" in rules.counters([rules.Outcome(5, 120.0, False, 1, 1.0)])


def test_calibrated_margin_is_the_level_quantile_of_the_scores():
    # 10 arrivals in the 10-20 minute bucket, errors 0.02, 0.07, ..., 0.47 in log ratio: bins 0..9, counted at
    # their upper edges 0.05 ... 0.50. The default window reaches 0.35 above the prediction, so the scores (the
    # margin each needed) are -0.30 ... 0.15; the 80% nearest rank is the 8th, 0.05: a margin of 0.05 holds 8 of
    # these 10 arrivals.
    outcomes = [rules.Outcome(15, 1.0, True, 3, 0.02 + 0.05 * i) for i in range(10)]
    sums = rules.counters(outcomes)
    assert sorted(k for k in sums if k.startswith("r")) == sorted(f"r3_{i}" for i in range(10))
    assert rules.calibrated_margin(sums, 0.8, min_n=10) == pytest.approx(0.05)
    assert rules.calibrated_margin(sums, 0.8, min_n=11) is None
    assert rules.inside_share(sums) == (10, 1.0)


def _sums(ratios: list[float], slot: int = 3) -> dict[str, float]:
    return rules.counters([rules.Outcome(15, 1.0, True, slot, r) for r in ratios])


def test_the_merchants_own_window_learns_its_errors_and_holds_the_days_after():
    rng = random.Random(16)

    def day_of_errors(n: int) -> list[float]:
        # This merchant's stops take 30-45% longer than the engine expects (slow to park, say), now and then
        # far longer: lopsided errors the default window can only meet by widening on both sides.
        return [rng.uniform(0.30, 0.45) if rng.random() < 0.85 else rng.uniform(0.5, 1.0) for _ in range(n)]

    older, recent = _sums(day_of_errors(400)), _sums(day_of_errors(60))
    learned = rules.learned_window(older, recent, 0.8)
    assert learned is not None
    bins, margin = learned
    own = rules.window_model(bins, margin, 0.8)
    default = ErrorModel(margin=rules.calibrated_margin({**older}, 0.8) or 0.0)
    fresh = day_of_errors(2000)  # the days after: same merchant, errors not seen by either
    for model in (own, default):
        low, high = model.window(900)
        held = sum(low <= (900 + 120) * math.exp(r) - 120 <= high for r in fresh) / len(fresh)
        assert held >= 0.78, (model, held)
    # The default window stretches as far below the prediction as it must above it; the merchant's own window
    # knows these arrivals are never early (it still holds the expected arrival itself, at its low end).
    assert own.window(900)[0] == 900 > default.window(900)[0] + 250
    assert own.window(900)[1] - own.window(900)[0] < 0.7 * (default.window(900)[1] - default.window(900)[0])
    # too few outcomes on either side: no model of its own (the default window's margin is used instead)
    assert rules.learned_window(_sums(day_of_errors(99)), recent, 0.8) is None
    assert rules.learned_window(older, _sums(day_of_errors(29)), 0.8) is None
