"""Ping screening rules, without AWS."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.ingest.models import parse_ping
from chalicelib.ingest.rules import Fix, ItemResult, LastFix, ScreenLimits, screen_batch

NOW = 1_763_600_000_000
LIMITS = ScreenLimits(max_accuracy_m=500, max_speed_mps=70)


def screen(items, last_fix=None):
    parsed = [parse_ping(i, raw) for i, raw in enumerate(items)]
    return screen_batch(parsed, driver_id="drv_1", merchant_id="mer_1", now_ms=NOW, limits=LIMITS,
                        last_fix=last_fix)


def ping(offset_s: float = 0, lat: float = 47.6, lng: float = -122.3, **extra):
    return {"lat": lat, "lng": lng, "fix_time": (NOW + offset_s * 1000) / 1000, **extra}


def statuses(screening):
    return [(r.status, r.field) for r in screening.finalize()]


def test_valid_pings_are_accepted_and_indexed():
    s = screen([ping(-10), ping(-5, lat=47.6001)])
    assert statuses(s) == [("accepted", None), ("accepted", None)]
    assert all(p.cell.startswith("8a") for p in s.to_store.values())  # H3 resolution 10
    assert s.newest().fix_ms == NOW - 5000


def test_clock_rules():
    s = screen([ping(121), ping(119), ping(-7 * 86400 - 1), ping(-7 * 86400 + 60)])
    assert statuses(s) == [("rejected", "fix_time"), ("accepted", None), ("rejected", "fix_time"),
                           ("accepted", None)]


def test_type_and_range_errors_name_the_field():
    s = screen([{"lat": 91, "lng": 0, "fix_time": NOW / 1000}, {"lat": "1", "lng": 0, "fix_time": NOW / 1000},
                {"lng": 0, "fix_time": NOW / 1000}, {"lat": 1, "lng": 0, "fix_time": "2025-01-01T00:00:00"},
                {"lat": 1, "lng": 0, "fix_time": NOW / 1000, "battery": 101}, "not an object"])
    results = s.finalize()
    assert [r.field for r in results] == ["lat", "lat", "lat", "fix_time", "battery", "item"]
    assert all(r.status == "rejected" and r.reason for r in results)


def test_nan_and_infinity_are_refused():
    s = screen([{"lat": float("nan"), "lng": 0, "fix_time": NOW / 1000},
                {"lat": 0, "lng": float("inf"), "fix_time": NOW / 1000}])
    assert statuses(s) == [("rejected", "lat"), ("rejected", "lng")]


def test_poor_accuracy_is_refused():
    assert statuses(screen([ping(-1, accuracy=501), ping(-2, accuracy=499)])) == [
        ("rejected", "accuracy"), ("accepted", None)]


def test_duplicates_within_a_batch_keep_the_first():
    s = screen([ping(-10), ping(-10, lat=47.7), ping(-9)])
    assert statuses(s) == [("accepted", None), ("duplicate", None), ("accepted", None)]


def test_stored_duplicates_are_reported():
    s = screen([ping(-10), ping(-9)])
    s.mark_duplicates({NOW - 10_000})
    assert statuses(s) == [("duplicate", None), ("accepted", None)]


def test_impossible_speed_is_refused_against_batch_and_last_fix():
    # 1 degree of latitude (~111 km) in 10 s
    s = screen([ping(-20), ping(-10, lat=48.6), ping(-5, lat=47.6001)])
    assert statuses(s) == [("accepted", None), ("rejected", "lat"), ("accepted", None)]
    s = screen([ping(-5, lat=48.6)], last_fix=LastFix(NOW - 10_000, 47.6, -122.3))
    assert statuses(s) == [("rejected", "lat")]
    # after a long gap a jump is believable (phone off in a moving van)
    s = screen([ping(-5, lat=47.7)], last_fix=LastFix(NOW - 3_600_000, 47.6, -122.3))
    assert statuses(s) == [("accepted", None)]


def test_a_glitch_stored_as_latest_does_not_lock_the_driver_out():
    glitch = LastFix(NOW - 20_000, 48.6, -122.3)  # ~111 km away, 20 s before
    s = screen([ping(-10), ping(-5, lat=47.6001), ping(-1, lat=47.6002)], last_fix=glitch)
    assert statuses(s) == [("accepted", None)] * 3
    # a lone jump is still refused
    s = screen([ping(-10), ping(-5, lat=48.6), ping(-1, lat=47.6001)])
    assert statuses(s) == [("accepted", None), ("rejected", "lat"), ("accepted", None)]


fix_times = st.lists(st.integers(min_value=-3600, max_value=0), min_size=1, max_size=40)


@given(fix_times, st.randoms())
def test_order_of_arrival_does_not_change_what_is_stored(offsets, rnd):
    items = [ping(o, lat=47.6 + o * 1e-6) for o in offsets]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    first = {p.fix_ms for p in screen(items).to_store.values()}
    second = {p.fix_ms for p in screen(shuffled).to_store.values()}
    assert first == second == {NOW + o * 1000 for o in offsets}


def test_fix_is_parsed_from_iso_and_epoch_forms():
    iso = parse_ping(0, {"lat": 1, "lng": 2, "fix_time": "2025-11-20T10:00:00.250+01:00"})
    secs = parse_ping(0, {"lat": 1, "lng": 2, "fix_time": 1763629200.25})
    millis = parse_ping(0, {"lat": 1, "lng": 2, "fix_time": 1763629200250})
    assert isinstance(iso, Fix) and isinstance(secs, Fix) and isinstance(millis, Fix)
    assert iso.fix_ms == secs.fix_ms == millis.fix_ms == 1763629200250
    assert isinstance(parse_ping(0, {"lat": True, "lng": 2, "fix_time": 1}), ItemResult)
