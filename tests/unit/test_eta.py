"""ETA engine: cumulative arrivals, speed sources and fallbacks, windows, throttle, delays, storage."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import replace

import h3
import pytest

from chalicelib.geo.cells import haversine_m
from chalicelib.geo.eta import (
    DEFAULT_SERVICE_TIME_S,
    DEFAULT_SPEED_MPS,
    DriverMotion,
    ErrorModel,
    EtaParams,
    PromisedWindow,
    ServiceTimes,
    SpeedTable,
    Stop,
    StopEta,
    conformal_margin,
    default_service_time_s,
    delay_check,
    delay_event_due,
    estimate_route,
    hour_of_week,
    plan_route,
    should_recompute,
)
from chalicelib.ingest.rules import LastFix
from tests.conftest import shared_path

MONDAY_8 = 1_700_467_200_000  # 2023-11-20 08:00 UTC, a Monday
MIN = 60_000
# Plain physics, so expected values can be computed by hand.
BARE = EtaParams(circuity=1.0, motion_weight=0.0, lateness_weight=0.0, approach_s=0.0, default_service_s=0.0)


def _east(lat: float, lng: float, metres: float) -> tuple[float, float]:
    return lat, lng + math.degrees(metres / (6_371_008.8 * math.cos(math.radians(lat))))


def _drive(table: SpeedTable, lat: float, lng: float, start_ms: int, speed: float, seconds: int,
           every_s: int = 5) -> tuple[float, float]:
    """Observe fixes of a driver heading east at `speed`; returns where it ended."""
    previous = LastFix(start_ms, lat, lng)
    for k in range(1, seconds // every_s + 1):
        lat, lng = _east(lat, lng, speed * every_s)
        fix = LastFix(start_ms + k * every_s * 1000, lat, lng)
        table.observe(previous, fix)
        previous = fix
    return lat, lng


def _line_stops(n: int, spacing_m: float, service_s: float | None = None) -> list[Stop]:
    stops, (lat, lng) = [], (52.52, 13.40)
    for i in range(n):
        lat, lng = _east(lat, lng, spacing_m)
        stops.append(Stop(f"s{i}", lat, lng, service_s))
    return stops


# --- the route -----------------------------------------------------------------------


def test_arrivals_are_cumulative_in_route_order():
    stops = _line_stops(5, 1000.0)
    table = SpeedTable(default_speed_mps=10.0)
    etas = estimate_route((52.52, 13.40), MONDAY_8, stops, table, None, BARE)
    assert [e.stop_id for e in etas] == [s.stop_id for s in stops]
    gaps = [b.eta_ms - a.eta_ms for a, b in zip([StopEta("", MONDAY_8, 0, 0), *etas], etas, strict=False)]
    # 1 km legs at the default 10 m/s: 100 s each, so 100 s, 200 s, ... from now.
    assert gaps == pytest.approx([100_000] * 5, abs=300)


def test_service_time_of_every_earlier_stop_is_added():
    params = EtaParams(circuity=1.0, motion_weight=0.0, lateness_weight=0.0, approach_s=0.0)
    table = SpeedTable(default_speed_mps=10.0)
    quick = estimate_route((52.52, 13.40), MONDAY_8, _line_stops(3, 1000.0, service_s=0.0), table, None, params)
    slow = estimate_route((52.52, 13.40), MONDAY_8, _line_stops(3, 1000.0, service_s=300.0), table, None, params)
    assert slow[0].eta_ms == quick[0].eta_ms  # nothing served before the first stop
    assert slow[1].eta_ms - quick[1].eta_ms == 300_000
    assert slow[2].eta_ms - quick[2].eta_ms == 600_000
    # No service time given: the params' default (the ALMRRC median).
    default = estimate_route((52.52, 13.40), MONDAY_8, _line_stops(2, 1000.0), table, None, params)
    assert default[1].eta_ms - quick[1].eta_ms == pytest.approx(DEFAULT_SERVICE_TIME_S * 1000, abs=1)


def test_a_stop_served_no_earlier_than_its_window_holds_it_and_every_later_stop():
    table = SpeedTable(default_speed_mps=10.0)
    free = estimate_route((52.52, 13.40), MONDAY_8, _line_stops(3, 1000.0, service_s=60.0), table, None, BARE)
    assert [e.eta_ms - MONDAY_8 for e in free] == pytest.approx([100_000, 260_000, 420_000], abs=300)

    opens = MONDAY_8 + 30 * MIN  # stop 2's window opens half an hour from now; the drive reaches it in 260 s
    stops = _line_stops(3, 1000.0, service_s=60.0)
    stops[1] = replace(stops[1], not_before_ms=opens)
    held = estimate_route((52.52, 13.40), MONDAY_8, stops, table, None, BARE)
    assert held[0] == free[0]  # before the wait: unchanged
    assert held[1].eta_ms == held[1].low_ms == opens  # served when the window opens, not earlier
    assert held[1].high_ms >= opens
    # Stop 3 after the wait: the window's opening + stop 2's 60 s of service + the 100 s leg.
    assert held[2].eta_ms - opens == pytest.approx(160_000, abs=300)
    assert held[2].low_ms >= opens + 60_000
    # The wait is certain (the drive ends well before the opening): stop 3's window is that of a stop 160 s
    # away, not of one 33 minutes away (the wait adds no uncertainty).
    lo_s, hi_s = ErrorModel().window((held[2].eta_ms - MONDAY_8) / 1000)
    assert held[2].high_ms - held[2].low_ms <= free[2].high_ms - free[2].low_ms < (hi_s - lo_s) * 1000 / 3

    # A window already open (or opening before the driver can possibly arrive) changes nothing.
    stops[1] = replace(stops[1], not_before_ms=MONDAY_8 - 10 * MIN)
    assert estimate_route((52.52, 13.40), MONDAY_8, stops, table, None, BARE) == free
    # A drive that reaches the stop inside its window keeps its own estimate; only the early end is clipped.
    stops[1] = replace(stops[1], not_before_ms=free[1].eta_ms - 1_000)
    inside = estimate_route((52.52, 13.40), MONDAY_8, stops, table, None, BARE)
    assert inside[1].eta_ms == free[1].eta_ms and inside[1].low_ms == free[1].eta_ms - 1_000
    assert inside[1].high_ms == free[1].high_ms
    assert (inside[2].eta_ms, inside[2].high_ms) == (free[2].eta_ms, free[2].high_ms)
    assert inside[2].low_ms == inside[1].low_ms + 60_000  # no earlier than stop 2's opening and its service


def test_circuity_and_approach_scale_the_leg():
    table = SpeedTable(default_speed_mps=10.0)
    stops = _line_stops(1, 1000.0)
    bare = estimate_route((52.52, 13.40), MONDAY_8, stops, table, None, BARE)[0].eta_ms - MONDAY_8
    bent = EtaParams(circuity=1.5, motion_weight=0.0, lateness_weight=0.0, approach_s=45.0)
    assert estimate_route((52.52, 13.40), MONDAY_8, stops, table, None, bent)[0].eta_ms - MONDAY_8 == pytest.approx(
        bare * 1.5 + 45_000, abs=2)


def test_empty_route_and_plan_reuse():
    assert estimate_route((52.52, 13.40), MONDAY_8, [], SpeedTable(), None) == []
    stops = _line_stops(4, 500.0)
    assert plan_route(stops) is plan_route(list(stops))  # same stops: legs are not measured again
    plan = plan_route(stops)
    assert plan.leg_m[1] == pytest.approx(500.0, rel=1e-3)
    by_plan = estimate_route((52.52, 13.40), MONDAY_8, plan, SpeedTable(), None)
    assert by_plan == estimate_route((52.52, 13.40), MONDAY_8, stops, SpeedTable(), None)


def test_later_legs_use_the_hour_they_are_driven_in():
    table = SpeedTable(prior_m=100.0)
    lat, lng = 52.52, 13.40
    # Fast at 08:00, slow at 09:00, in the same cells.
    _drive(table, lat, lng, MONDAY_8, 15.0, 120)
    _drive(table, lat, lng, MONDAY_8 + 60 * MIN, 3.0, 600)
    cell = table.cell(*_east(lat, lng, 500))
    assert table.pace(cell, hour_of_week(MONDAY_8)) < table.pace(cell, hour_of_week(MONDAY_8 + 60 * MIN))
    stop = [Stop("a", *_east(lat, lng, 1000))]
    early = estimate_route((lat, lng), MONDAY_8, stop, table, None, BARE)[0].eta_ms - MONDAY_8
    later = estimate_route((lat, lng), MONDAY_8 + 60 * MIN, stop, table, None, BARE)[0].eta_ms - MONDAY_8 - 60 * MIN
    assert later > 2 * early


# --- speed sources and fallbacks -------------------------------------------------------


def test_speed_table_falls_back_from_hour_to_cell_to_parent_to_global_to_default():
    empty = SpeedTable()
    assert empty.speed_at(52.52, 13.40, MONDAY_8) == pytest.approx(DEFAULT_SPEED_MPS)

    table = SpeedTable(prior_m=200.0)
    here = (52.52, 13.40)
    _drive(table, *here, MONDAY_8, 12.0, 60)  # ~720 m fast at Monday 08:00
    _drive(table, *here, MONDAY_8 + 26 * 60 * MIN, 4.0, 180)  # ~720 m slow on Tuesday 10:00, same cells
    far = (48.14, 11.58)  # Munich: another parent cell, walking pace
    _drive(table, *far, MONDAY_8, 1.5, 1200)

    cell = table.cell(*_east(*here, 300))
    monday, sunday = hour_of_week(MONDAY_8), hour_of_week(MONDAY_8 + 6 * 24 * 60 * MIN)
    at_hour = 1 / table.pace(cell, monday)
    any_hour = 1 / table.pace(cell, sunday)  # no data on Sunday: the cell over all hours
    assert at_hour > any_hour > 4.0
    assert 8.0 < at_hour < 12.0  # mostly its own data, a little of the cell's

    neighbour = str(h3.grid_ring(cell, 3)[0])  # same district, never driven: the parent cell
    assert h3.cell_to_parent(neighbour, table.parent_res) == h3.cell_to_parent(cell, table.parent_res)
    parent_speed = 1 / table.pace(neighbour, sunday)
    assert 4.0 < parent_speed < 12.0

    nowhere = table.cell(-33.87, 151.21)  # Sydney: no parent data, the fleet's global pace
    global_speed = 1 / table.pace(nowhere, monday)
    assert global_speed == pytest.approx(1 / table.global_pace())
    assert global_speed < parent_speed  # the walkers in Munich pull the fleet average down


def test_speed_table_ignores_gaps_stops_and_impossible_segments():
    table = SpeedTable()
    a = LastFix(MONDAY_8, 52.52, 13.40)
    assert not table.observe(a, LastFix(MONDAY_8 + 10 * MIN, *_east(52.52, 13.40, 3000)))  # phone was off
    assert not table.observe(a, LastFix(MONDAY_8 + 30_000, *_east(52.52, 13.40, 5)))  # parked at a door
    assert not table.observe(a, LastFix(MONDAY_8 + 10_000, *_east(52.52, 13.40, 5000)))  # 500 m/s: bad fix
    assert not table.observe(a, a)
    assert len(table) == 0
    assert table.observe(a, LastFix(MONDAY_8 + 10_000, *_east(52.52, 13.40, 100)))
    assert table.segments() == 1


def test_speed_table_round_trips_through_a_dict():
    table = SpeedTable()
    _drive(table, 52.52, 13.40, MONDAY_8, 9.0, 300)
    _drive(table, 52.50, 13.35, MONDAY_8 + 5 * 60 * MIN, 4.0, 300)
    copy = SpeedTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert len(copy) == len(table)
    for lat, lng, ms in ((52.52, 13.41, MONDAY_8), (52.50, 13.36, MONDAY_8 + 5 * 60 * MIN), (40.0, -3.7, MONDAY_8)):
        assert copy.pace_at(lat, lng, ms) == pytest.approx(table.pace_at(lat, lng, ms), rel=1e-4)  # sums kept to 0.1


def test_speed_tables_merge_additively():
    whole, part_a, part_b = SpeedTable(), SpeedTable(), SpeedTable()
    _drive(whole, 52.52, 13.40, MONDAY_8, 9.0, 300)
    _drive(whole, 52.52, 13.40, MONDAY_8 + 60 * MIN, 5.0, 300)
    _drive(part_a, 52.52, 13.40, MONDAY_8, 9.0, 300)
    _drive(part_b, 52.52, 13.40, MONDAY_8 + 60 * MIN, 5.0, 300)
    part_a.merge(part_b)
    assert part_a.pace_at(52.52, 13.41, MONDAY_8) == pytest.approx(whole.pace_at(52.52, 13.41, MONDAY_8))


def test_driver_motion_tracks_moving_speed_only():
    motion = DriverMotion()
    lat, lng, ms = 52.52, 13.40, MONDAY_8
    for _ in range(60):  # 5 minutes at 10 m/s
        lat, lng = _east(lat, lng, 50)
        ms += 5000
        motion.update(LastFix(ms, lat, lng))
    assert motion.speed_mps == pytest.approx(10.0, rel=0.02)
    for _ in range(60):  # 5 minutes parked: the moving speed does not decay to zero
        ms += 5000
        motion.update(LastFix(ms, lat, lng))
    assert motion.speed_mps == pytest.approx(10.0, rel=0.02)
    for _ in range(200):  # then slow traffic at 4 m/s: the EWMA follows
        lat, lng = _east(lat, lng, 20)
        ms += 5000
        motion.update(LastFix(ms, lat, lng))
    assert motion.speed_mps == pytest.approx(4.0, rel=0.05)
    assert motion.update(LastFix(ms - 60_000, 0.0, 0.0)) == 0.0  # out of order: ignored
    assert motion.last_ms == ms
    assert DriverMotion.from_dict(json.loads(json.dumps(motion.to_dict()))) == motion


def test_a_parked_phones_jitter_and_a_walk_to_the_door_are_not_the_vans_speed():
    from chalicelib.geo.geofence import GeoFix

    motion = DriverMotion()
    lat, lng, ms = 47.66, -122.31, MONDAY_8
    for _ in range(30):  # driving at 10 m/s, good GPS
        lat, lng = _east(lat, lng, 50)
        ms += 5000
        motion.update(GeoFix("d", ms, lat, lng, accuracy=5.0))
    assert motion.speed_mps == pytest.approx(10.0, rel=0.02)
    parked = (lat, lng)
    for k in range(60):  # parked, the phone jumping 40 m each second with 64 m accuracy: "40 m/s"
        ms += 1000
        motion.update(GeoFix("d", ms, *_east(*parked, 40.0 * (k % 2)), accuracy=64.0))
    for _ in range(30):  # the driver walks to a door and back at 1.5 m/s, good GPS
        lat, lng = _east(lat, lng, 7.5)
        ms += 5000
        motion.update(GeoFix("d", ms, lat, lng, accuracy=5.0))
    assert motion.speed_mps == pytest.approx(10.0, rel=0.02)  # still the van's driving speed
    restored = DriverMotion.from_dict(json.loads(json.dumps(motion.to_dict())))
    assert restored == motion and restored.last_accuracy_m == 5.0
    assert DriverMotion.from_dict({"last_ms": 1}).last_accuracy_m == 0.0  # state saved before the field


def test_driver_speed_replaces_an_empty_table_and_blends_with_a_full_one():
    stop = [Stop("a", *_east(52.52, 13.40, 2000))]
    motion = DriverMotion(speed_mps=4.0)
    params = EtaParams(circuity=1.0, motion_weight=0.5, lateness_weight=0.0, approach_s=0.0)
    alone = estimate_route((52.52, 13.40), MONDAY_8, stop, SpeedTable(), motion, params)[0]
    assert alone.eta_ms - MONDAY_8 == pytest.approx(500_000, abs=500)  # 2 km at the driver's 4 m/s
    table = SpeedTable(prior_m=100.0)
    _drive(table, 52.52, 13.40, MONDAY_8, 16.0, 200)  # the fleet drives this stretch at 16 m/s
    blended = estimate_route((52.52, 13.40), MONDAY_8, stop, table, motion, params)[0].eta_ms - MONDAY_8
    assert blended == pytest.approx(2000 / math.sqrt(16.0 * 4.0) * 1000, rel=0.1)  # geometric mean: 8 m/s


def test_a_leg_running_late_pushes_the_eta_and_marks_it():
    stop = [Stop("a", *_east(52.52, 13.40, 1000))]
    table = SpeedTable(default_speed_mps=10.0)
    params = EtaParams(circuity=1.0, motion_weight=0.0, lateness_weight=0.5, approach_s=0.0)
    fresh = DriverMotion()
    fresh.start_leg(MONDAY_8, 52.52, 13.40)
    on_time = estimate_route((52.52, 13.40), MONDAY_8, stop, table, fresh, params)[0]
    stuck = estimate_route((52.52, 13.40), MONDAY_8 + 20 * MIN, stop, table, fresh, params)[0]  # no progress
    assert not on_time.late and stuck.late
    assert stuck.eta_ms - (MONDAY_8 + 20 * MIN) == pytest.approx((on_time.eta_ms - MONDAY_8) + 600_000, abs=500)


# --- windows ---------------------------------------------------------------------------


def test_window_contains_the_expected_arrival_and_widens_with_horizon():
    stops = _line_stops(30, 2000.0)
    etas = estimate_route((52.52, 13.40), MONDAY_8, stops, SpeedTable(), DriverMotion(speed_mps=8.0))
    widths = []
    for eta in etas:
        assert eta.low_ms <= eta.eta_ms <= eta.high_ms
        assert eta.low_ms >= MONDAY_8
        widths.append(eta.high_ms - eta.low_ms)
    assert widths == sorted(widths) and widths[-1] > 5 * widths[0]
    model = ErrorModel()
    short, long_ = model.window(300), model.window(3600)
    assert long_[1] - long_[0] > short[1] - short[0]


def test_error_model_learns_the_observed_spread():
    model = ErrorModel(level=0.8)
    for i in range(400):  # it always takes 1.5x to 2.5x longer than predicted
        predicted = 600 + i
        model.observe(predicted, predicted * (1.5 + (i % 11) / 10))
    lo, hi = model.window(800)
    assert lo == 800  # the window always holds the expected arrival, even when history says it is too early
    assert 800 * 2.2 < hi < 800 * 2.6
    assert model.window(400)[1] < hi  # shorter horizon, narrower
    wider = ErrorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert wider.window(800) == pytest.approx((lo, hi))
    wider.set_level(0.98)
    assert wider.window(800)[1] > hi
    # No late predictions yet: that side borrows everything observed rather than the defaults.
    assert model.window(800, late=True) == model.window(800)
    assert ErrorModel().window(800)[0] < 800
    for _ in range(100):  # late predictions turn out much longer: now they have their own window
        model.observe(800, 800 * 4, late=True)
    assert model.window(800, late=True)[1] > 800 * 3.5 > model.window(800)[1]


def test_error_models_merge_additively():
    a, b, both = ErrorModel(), ErrorModel(), ErrorModel()
    for i in range(100):
        a.observe(600, 600 + i)
        b.observe(600, 900 + i)
        both.observe(600, 600 + i)
        both.observe(600, 900 + i)
    a.merge(b)
    assert a.window(600) == both.window(600)
    assert a.count() == 200
    a_only = ErrorModel()
    for i in range(100):
        a_only.observe(600, 600 + i)
    assert a.without(b).window(600) == pytest.approx(a_only.window(600))  # b taken out again: exactly a
    assert a.without(b).count() == 100


def test_window_is_smooth_across_horizon_buckets():
    model = ErrorModel()
    for i in range(200):  # 5-10 minute predictions are tight, 10-20 minute ones loose
        model.observe(424, 424 * (1 + (i % 21) / 100))
        model.observe(849, 849 * (0.5 + (i % 21) / 10))
    tight, loose = model.quantiles(model.slot(424)), model.quantiles(model.slot(849))
    assert loose[1] - loose[0] > 3 * (tight[1] - tight[0])
    # At a bucket's centre, its own quantiles; between centres, a straight line in log-horizon.
    assert model.bounds(math.sqrt(300 * 600)) == pytest.approx(tight)
    assert model.bounds(math.sqrt(600 * 1200)) == pytest.approx(loose)
    middle = model.bounds(600)  # the edge between the buckets is halfway between their centres in log
    assert middle == pytest.approx(((tight[0] + loose[0]) / 2, (tight[1] + loose[1]) / 2))
    # No jump at the bucket edge, and the high end grows steadily with the horizon.
    assert model.window(599.99)[1] == pytest.approx(model.window(600.01)[1], rel=1e-4)
    highs = [model.window(h)[1] for h in range(300, 1300, 10)]
    assert highs == sorted(highs)
    # Flat beyond the outer centres: below 1 minute, the first bucket's quantiles.
    assert model.bounds(10) == model.bounds(60) == model.quantiles(0)
    assert model.bounds(50_000) == model.quantiles(model.slot(50_000))


def test_score_is_the_smallest_margin_whose_window_holds_the_arrival():
    rng = random.Random(7)
    model = ErrorModel()
    for _ in range(500):
        predicted = rng.uniform(0, 5000)
        model.observe(predicted, predicted * math.exp(rng.gauss(0.1, 0.4)), late=rng.random() < 0.3)
    checked = 0
    for _ in range(300):
        predicted, late = rng.uniform(0, 6000), rng.random() < 0.3
        actual = max(0.0, predicted * math.exp(rng.gauss(0.0, 0.8)) + rng.uniform(-300, 300))
        score = model.score(predicted, actual, late)
        for margin in (-0.3, -0.05, 0.0, 0.1, 0.4, 1.0):
            if abs(score - margin) < 1e-6:
                continue
            model.set_margin(margin)
            lo, hi = model.window(predicted, late)
            assert (lo <= actual <= hi) == (score <= margin)
            checked += 1
    assert checked > 1500
    assert model.score(600, 600) == -math.inf  # the prediction itself is in every window


def test_conformal_margin_takes_the_corrected_quantile_of_pooled_scores():
    groups = [[float(g * 5 + i) for i in range(5)] for g in range(4)]  # scores 0..19 in 4 groups
    assert conformal_margin(groups, 0.6) == 14.0  # 0.6 x (1 + 1/4) = 75%: the 15th of 20
    assert conformal_margin(groups, 0.8) == 19.0  # 100%: the largest
    assert conformal_margin(groups, 0.95) == 19.0  # past the largest: still the largest
    assert conformal_margin([[], []], 0.8) == 0.0
    assert conformal_margin([[-math.inf] * 5, [-math.inf] * 5], 0.8) == -ErrorModel.MAX_R


def _clumpy_groups(rng: random.Random, n: int) -> list[list[tuple[float, float, bool]]]:
    """Groups (trips) that each run consistently fast or slow: errors clump by group, as on real routes."""
    groups = []
    for _ in range(n):
        bias = rng.gauss(0.0, 0.35)
        triples = []
        for _ in range(rng.randint(40, 120)):
            predicted = rng.uniform(60, 3600)
            triples.append((predicted, predicted * math.exp(bias + rng.gauss(0.0, 0.1)), False))
        groups.append(triples)
    return groups


def test_calibrated_windows_cover_their_level_of_unseen_groups():
    rng = random.Random(11)
    inside = plain_inside = total = 0
    for _ in range(10):
        groups = _clumpy_groups(rng, 12)
        # Each group's own errors never score it: the margin is that of leave-one-group-out scores.
        model = ErrorModel.calibrated(groups)
        pooled = ErrorModel()
        for triples in groups:
            for predicted, actual, late in triples:
                pooled.observe(predicted, actual, late)
        expected = conformal_margin(
            [[pooled.without(ErrorModel.calibrated([g])).score(*t) for t in g] for g in groups], 0.8)
        assert model.margin == pytest.approx(expected)
        assert model.window(900) != pooled.window(900) and model.count() == pooled.count()
        for predicted, actual, late in (t for g in _clumpy_groups(rng, 3) for t in g):  # trips not seen
            lo, hi = model.window(predicted, late)
            inside += lo <= actual <= hi
            plain_lo, plain_hi = pooled.window(predicted, late)
            plain_inside += plain_lo <= actual <= plain_hi
            total += 1
    assert inside / total >= 0.8 > plain_inside / total
    assert ErrorModel.calibrated([[(600.0, 700.0, False)] * 60]).margin == 0.0  # one group: nothing to calibrate on
    restored = ErrorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored.margin == pytest.approx(model.margin, abs=1e-4)
    assert restored.window(900) == pytest.approx(model.window(900), rel=1e-3)
    assert ErrorModel.from_dict({"hist": []}).margin == 0.0  # stored before margins existed: plain quantiles


# --- throttle and delays -------------------------------------------------------------


def test_recompute_throttle_30_s_or_200_m():
    assert should_recompute(None, MONDAY_8, 0.0)
    assert not should_recompute(MONDAY_8, MONDAY_8 + 29_999, 199.0)
    assert should_recompute(MONDAY_8, MONDAY_8 + 30_000, 0.0)
    assert should_recompute(MONDAY_8, MONDAY_8 + 5_000, 200.0)


def test_delayed_fires_once_when_the_eta_leaves_the_promised_window():
    promised = PromisedWindow(MONDAY_8, MONDAY_8 + 60 * MIN)
    sequence = [MONDAY_8 + 30 * MIN, MONDAY_8 + 59 * MIN, MONDAY_8 + 65 * MIN, MONDAY_8 + 70 * MIN,
                MONDAY_8 + 50 * MIN, MONDAY_8 + 75 * MIN]
    emitted, flag = [], False
    for eta_ms in sequence:
        eta = StopEta("s", eta_ms, eta_ms - 5 * MIN, eta_ms + 10 * MIN)
        if delay_event_due(eta, promised, flag):
            emitted.append(eta_ms)
            flag = True
    assert emitted == [MONDAY_8 + 65 * MIN]
    # A window that merely reaches past the end is not late yet; early is not a delay; no end, no delay.
    assert not delay_check(StopEta("s", MONDAY_8 + 55 * MIN, MONDAY_8 + 50 * MIN, MONDAY_8 + 70 * MIN), promised)
    assert not delay_check(StopEta("s", MONDAY_8 - 30 * MIN, MONDAY_8 - 40 * MIN, MONDAY_8 - 20 * MIN), promised)
    assert not delay_check(StopEta("s", MONDAY_8 + 999 * MIN, 0, 0), PromisedWindow(MONDAY_8, None))


# --- service times -------------------------------------------------------------------


def test_service_time_per_merchant_starts_at_the_prior_and_learns():
    model = ServiceTimes()
    assert model.estimate("mer_a") == DEFAULT_SERVICE_TIME_S
    for _ in range(40):
        model.observe("mer_a", 180.0)
    assert 150.0 < model.estimate("mer_a") <= 180.0
    assert model.estimate("mer_b") == DEFAULT_SERVICE_TIME_S  # merchants do not share
    before = model.estimate("mer_a")
    model.observe("mer_a", 3 * 3600.0)  # one stop with a 3-hour dwell: capped, and in log space
    assert model.estimate("mer_a") < before * 1.35
    copy = ServiceTimes.from_dict(json.loads(json.dumps(model.to_dict())))
    assert copy.estimate("mer_a") == pytest.approx(model.estimate("mer_a"), rel=1e-4)


def test_default_service_time_is_the_almrrc_median():
    routes = shared_path("routes", "almrrc2021")
    assert default_service_time_s(routes) == DEFAULT_SERVICE_TIME_S  # the baked-in constant is the data's


def test_default_service_time_without_data_is_the_constant(tmp_path):
    assert default_service_time_s(None) == DEFAULT_SERVICE_TIME_S
    assert default_service_time_s(tmp_path / "absent") == DEFAULT_SERVICE_TIME_S
    (tmp_path / "new_package_data.json").write_text("{not json")
    assert default_service_time_s(tmp_path) == DEFAULT_SERVICE_TIME_S


def test_hour_of_week_starts_monday_utc():
    assert hour_of_week(MONDAY_8) == 8
    assert hour_of_week(0) == 72  # 1970-01-01 00:00 UTC was a Thursday
    assert hour_of_week(MONDAY_8 + 7 * 24 * 60 * MIN) == 8


# --- evaluation harness --------------------------------------------------------------


def _synthetic_trips(n: int = 6) -> list:
    """Straight trips in one area at 5 m/s along a 1.3x detour, one fix every 10 s, 20-40 minutes."""
    from bench.eval_eta import Point, Trip

    trips = []
    for i in range(n):
        lat, lng = 52.50 + 0.004 * i, 13.38
        speed, every_s = 5.0, 10
        straight = 4000.0 + 1000 * (i % 3)
        duration_s = straight * 1.3 / speed
        start = MONDAY_8 + i * 86_400_000
        dest = _east(lat, lng, straight)
        points = [Point(start + k * every_s * 1000, *_east(lat, lng, straight * k * every_s / duration_s))
                  for k in range(int(duration_s // every_s) + 1)]
        trips.append(Trip(i, 0, start, points[-1].fix_ms, (lat, lng), dest, points))
    return trips


def test_eval_on_synthetic_trips_beats_the_speed_baseline_without_leakage(monkeypatch):
    from bench import eval_eta

    trips = _synthetic_trips()
    # Record every table the evaluation asks for: a fold must never see its test trip.
    asked: list[tuple[int, frozenset[int]]] = []
    real_run_fold = eval_eta.run_fold

    def spying_run_fold(k, trips_, stops, replays, tables, variant=eval_eta.FULL):
        def spy(excluded):
            asked.append((trips_[k].trip_id, excluded))
            return tables(excluded)
        return real_run_fold(k, trips_, stops, replays, spy, variant)

    monkeypatch.setattr(eval_eta, "run_fold", spying_run_fold)
    monkeypatch.setattr(eval_eta, "MIN_TRIPS_TO_FIT", 5)  # six trips: each fold fits on the other five
    results = eval_eta.evaluate(trips, verbose=False)
    assert asked and all(test in excluded for test, excluded in asked)
    assert all(r.params != eval_eta.DEFAULT_PARAMS for r in results)  # fitted, not the shipped defaults

    figures = {f["name"]: f for f in eval_eta.figures(results)}
    assert figures["eta_mae_min"]["points"] == sum(len(t.points) for t in trips)
    # Constant speed and detour: the engine learns both from the other trips and is near exact.
    assert figures["eta_mae_min"]["value"] < 1.0
    assert figures["eta_mae_min"]["value"] <= figures["eta_mae_min"]["baseline"]
    assert figures["eta_window_coverage"]["value"] >= 0.8
    assert figures["eta_window_coverage"]["window_level"] == 0.8
    assert 0 <= figures["eta_window_width_min"]["value"] < 10  # near-exact predictions: narrow windows
    assert all(r.margin == r.margin for r in results)  # a calibrated (finite) margin in every fold
    for name in ("eta_rmse_min", "eta_acc5", "eta_acc10", "eta_mae_reduction_vs_baseline"):
        assert figures[name]["value"] is not None


def test_eval_in_sample_bound_fits_on_every_trip_and_needs_enough_of_them(monkeypatch):
    from bench import eval_eta

    trips = _synthetic_trips()
    assert eval_eta.in_sample_bound(trips[:4]) is None  # below MIN_TRIPS_TO_FIT: nothing is fitted, no bound
    monkeypatch.setattr(eval_eta, "MIN_TRIPS_TO_FIT", 5)
    bound = eval_eta.in_sample_bound(trips, "synthetic")
    assert bound is not None
    assert bound["name"] == "eta_gain_vs_best_constant_in_sample" and bound["dataset"] == "synthetic"
    assert bound["target"] is None  # a diagnostic, not a target
    assert bound["engine_mae_min"] < 1.0  # one speed, one detour: the fitted engine is near exact

    # Half the trips twice as slow: no constant pace fits both, the engine's lateness term follows each trip.
    slow = [replace(t, points=[replace(p, fix_ms=t.start_ms + 2 * (p.fix_ms - t.start_ms)) for p in t.points],
                    end_ms=t.start_ms + 2 * (t.end_ms - t.start_ms)) if t.trip_id % 2 else t for t in trips]
    bound = eval_eta.in_sample_bound(slow, "synthetic")
    assert bound is not None and bound["best_constant_mae_min"] > 0
    assert abs(bound["value"] - (1 - bound["engine_mae_min"] / bound["best_constant_mae_min"])) < 0.01
    assert bound["params"]["circuity"] in eval_eta.GRID["circuity"]


def test_eval_loads_the_real_geolife_trips():
    from bench.eval_eta import load_trips

    folder = shared_path("traces", "geolife", "geolife_long")
    trips = load_trips(folder)
    assert len(trips) == 14
    for trip in trips:
        assert trip.points and all(trip.start_ms <= p.fix_ms <= trip.end_ms for p in trip.points)
        assert [p.fix_ms for p in trip.points] == sorted({p.fix_ms for p in trip.points})
    # Trip 1 of user 0: 04:08:07 to 04:34:37 UTC, arriving near (39.9997, 116.3248).
    trip = next(t for t in trips if t.trip_id == 1)
    assert (trip.end_ms - trip.start_ms) / 1000 == 26 * 60 + 30
    assert haversine_m(*trip.dest, 39.99972, 116.32480) < 5


# --- storage forms of the learned statistics ----------------------------------------------


def test_speed_table_sums_round_trip_and_add_up() -> None:
    a, b = SpeedTable(), SpeedTable()
    t0 = 1_760_000_000_000
    for i in range(20):
        fix1 = LastFix(t0 + i * 10_000, 52.52 + i * 0.0005, 13.40)
        fix2 = LastFix(t0 + (i + 1) * 10_000, 52.52 + (i + 1) * 0.0005, 13.40)
        (a if i % 2 else b).observe(fix1, fix2)
    both = SpeedTable.from_sums([*a.sums(), *b.sums()])  # two batches added, as stored counters are
    whole = SpeedTable()
    whole.merge(a)
    whole.merge(b)
    assert sorted(both.sums()) == sorted(whole.sums())
    assert both.speed_at(52.525, 13.40, t0) == whole.speed_at(52.525, 13.40, t0)


def test_learned_service_time_starts_at_the_prior_and_follows_the_dwells() -> None:
    from chalicelib.geo.eta import DEFAULT_SERVICE_TIME_S, learned_service_s, service_dwell_log

    assert learned_service_s(0, 0.0) == DEFAULT_SERVICE_TIME_S
    logs = [service_dwell_log(300.0)] * 95
    assert all(v is not None for v in logs)
    learned = learned_service_s(len(logs), sum(v for v in logs if v is not None))
    assert 270 < learned < 300  # 95 stays of 5 minutes outweigh the prior's 5 pseudo-stays of 70 s
    assert service_dwell_log(8.0) is None  # a drive-by through the fence is not a service
    assert service_dwell_log(7200.0) == service_dwell_log(3600.0)  # capped: a lunch break is not a service


def test_eval_loads_the_ride_along_parkings_as_legs():
    from bench.eval_eta import load_ridealong

    trips = load_ridealong(shared_path("traces", "ridealong"))
    # nighttime_drive: its three street-address stops. test1: no leg to `Park` (the trace starts with the truck
    # parked there and the phone walking around it), then the drive to where the truck rests for over two
    # minutes at the end of the trace. Photo waypoints are not parkings.
    assert len(trips) == 4
    for trip in trips:
        assert trip.points[-1].fix_ms == trip.end_ms  # a leg ends at its arrival fix...
        assert haversine_m(trip.points[-1].lat, trip.points[-1].lng, *trip.dest) < 10  # ...at the parking
        assert haversine_m(*trip.origin, *trip.dest) > 75  # ...and starts outside its arrival fence
        assert all(p.fix_ms < trip.start_ms for p in trip.before)  # earlier fixes only feed the pace
    assert [round((t.end_ms - t.start_ms) / 1000) for t in trips] == [28, 54, 257, 389]
    assert [round(t.od_m) for t in trips] == [375, 656, 3468, 1250]


def _gpx(path, fixes, waypoints) -> None:
    ns = "http://www.topografix.com/GPX/1/1"

    def when(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

    wpts = "".join(f'<wpt lat="{lat}" lon="{lng}"><time>{when(ms)}</time><name>{name}</name></wpt>'
                   for name, ms, lat, lng in waypoints)
    pts = "".join(f'<trkpt lat="{lat}" lon="{lng}"><time>{when(ms)}</time></trkpt>' for ms, lat, lng in fixes)
    path.write_text(f'<?xml version="1.0"?><gpx xmlns="{ns}" version="1.1">{wpts}<trk><trkseg>{pts}'
                    "</trkseg></trk></gpx>", encoding="utf-8")


def test_ride_along_legs_start_outside_the_stop_and_a_long_rest_is_a_parking(tmp_path):
    from bench.eval_eta import load_ridealong

    lat, lng = 47.66, -122.31
    fixes = [(MONDAY_8 + k * 5000, *_east(lat, lng, 10.0 * (k % 3))) for k in range(24)]  # 2 min at the parking
    t0 = fixes[-1][0]
    fixes += [(t0 + k * 5000, *_east(lat, lng, 50.0 * k)) for k in range(1, 21)]  # 1 km east at 10 m/s
    t1, far = fixes[-1][0], _east(lat, lng, 1000.0)
    fixes += [(t1 + k * 10_000, far[0] + 0.00005 * (k % 2), far[1]) for k in range(1, 16)]  # rests 150 s
    t2 = fixes[-1][0]
    fixes += [(t2 + k * 5000, *_east(*far, 40.0 * k)) for k in range(1, 5)]  # a stop light later: 20 s only
    _gpx(tmp_path / "trace.gpx", fixes, [("Park", MONDAY_8 + 60_000, lat, lng), ("Photo", t1, *far)])

    trips = load_ridealong(tmp_path)
    # No leg to `Park` (already there at the first fix); one leg to the rest, which was not a named waypoint.
    assert len(trips) == 1
    (leg,) = trips
    assert haversine_m(*leg.dest, *far) < 10 and leg.end_ms == t1  # arrives at the rest's first fix
    assert leg.before == [] or leg.before[-1].fix_ms < leg.start_ms  # the leg starts after the arrival at `Park`
    assert leg.points[-1].fix_ms == t1


def test_too_few_training_trips_run_the_shipped_defaults_not_a_fit():
    from bench import eval_eta

    results = eval_eta.evaluate(_synthetic_trips(4), verbose=False)
    assert all(r.params == eval_eta.DEFAULT_PARAMS for r in results)  # 3 training trips < MIN_TRIPS_TO_FIT
    assert eval_eta.MIN_TRIPS_TO_FIT == 10


def test_window_is_the_shortest_interval_holding_the_level_of_skewed_errors():
    model = ErrorModel(level=0.8)
    rng = random.Random(7)
    for _ in range(2000):  # mostly on time, a long tail of late arrivals: skewed
        model.observe(900, 900 * math.exp(rng.expovariate(4.0)))
    lo, hi = model.window(900)
    ratios = sorted(math.log((900 * math.exp(rng.expovariate(4.0)) + 120) / 1020) for _ in range(20000))
    equal_lo = 1020 * math.exp(ratios[len(ratios) // 10]) - 120
    equal_hi = 1020 * math.exp(ratios[9 * len(ratios) // 10]) - 120
    assert hi - lo < 0.85 * (equal_hi - equal_lo)  # narrower than the equal-tailed p10-p90 window
    held = sum(lo <= 900 * math.exp(rng.expovariate(4.0)) <= hi for _ in range(20000)) / 20000
    assert 0.77 <= held <= 0.85  # and it still holds about its level


def test_eval_figures_name_their_dataset_and_the_issue_16_lines():
    from bench import eval_eta

    results = eval_eta.evaluate(_synthetic_trips(4), verbose=False)
    lines = eval_eta.figures(results, "ridealong")
    by_name = {f["name"]: f for f in lines}
    assert all(f["dataset"] == "ridealong" for f in lines)
    for name in ("eta_mae_min", "eta_mae_best_constant_min", "eta_gain_vs_best_constant", "eta_window_coverage",
                 "eta_window_median_width_min"):
        assert by_name[name]["value"] is not None
    assert by_name["eta_gain_vs_best_constant"]["engine_mae_min"] == by_name["eta_mae_min"]["value"]
    gain = by_name["eta_gain_vs_best_constant"]
    assert gain["best_constant_mae_min"] == by_name["eta_mae_best_constant_min"]["value"]
    assert by_name["eta_gain_vs_best_constant"]["target"] == 0.15
    assert by_name["eta_window_median_width_min"]["target"] == 25.0


def test_the_drivers_pace_takes_over_where_the_table_knows_nothing_of_the_district():
    from chalicelib.geo.eta import DriverMotion, EtaParams, SpeedTable, Stop, estimate_route

    table = SpeedTable()
    # 20 km of slow history (2 m/s) in Berlin only
    lat, lng = 52.52, 13.40
    for i in range(200):
        a = LastFix(MONDAY_8 + i * 50_000, *_east(lat, lng, i * 100.0))
        b = LastFix(MONDAY_8 + i * 50_000 + 50_000, *_east(lat, lng, i * 100.0 + 100.0))
        table.observe(a, b)
    assert table.metres() > table.prior_m
    motion = DriverMotion(speed_mps=20.0)
    params = EtaParams(circuity=1.0, motion_weight=0.0, lateness_weight=0.0, approach_s=0.0)
    # In Berlin the table decides (motion weight 0): about 2 m/s.
    start = _east(lat, lng, 5000.0)
    dest = _east(*start, 2000.0)
    here = estimate_route(start, MONDAY_8, [Stop("s", *dest)], table, motion, params)[0]
    assert (here.eta_ms - MONDAY_8) / 1000 > 2000 / 4.0
    # In Munich, where the table has no history at all, the driver's own 20 m/s decides.
    munich = (48.137, 11.575)
    there = estimate_route(munich, MONDAY_8, [Stop("s", *_east(*munich, 2000.0))], table, motion, params)[0]
    assert (there.eta_ms - MONDAY_8) / 1000 == pytest.approx(2000 / 20.0, rel=0.05)
    assert table.local_metres([table.cell(*munich)]) == 0.0
