"""Geofence engine: shared real vectors, real ride-along traces, properties and focused rules."""

from __future__ import annotations

import json
import math
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.geo.cells import haversine_m
from chalicelib.geo.geofence import (
    DEFAULT_STOP_RADIUS_M,
    INDEX_RES,
    CircleFence,
    CorridorFence,
    DriverState,
    FenceIndex,
    FenceState,
    GeofenceEvent,
    GeofenceParams,
    GeoFix,
    PolygonFence,
    evaluate,
    event_id,
    fence_cells,
    fence_from_dict,
    polygon_area_m2,
    process_batch,
    segment_intersects,
    stop_fence,
)
from chalicelib.ingest.rules import Ping
from tests.conftest import SHARED_DATA, shared_path

PARAMS = GeofenceParams()
EXACT = GeofenceParams(unknown_accuracy_m=0.0)  # the vectors have no accuracy: take the points as exact
T0 = 1_750_000_000_000


def fix(lat: float, lng: float, t_s: float = 0, acc: float | None = 5.0, driver: str = "drv_1") -> GeoFix:
    return GeoFix(driver, T0 + int(t_s * 1000), lat, lng, acc)


def north_of(lat: float, lng: float, metres: float) -> tuple[float, float]:
    return lat + metres / 111_195.08, lng


def run(fixes: list[GeoFix], index: FenceIndex, params: GeofenceParams = PARAMS,
        states: dict[str, DriverState] | None = None) -> tuple[dict[str, DriverState], list[GeofenceEvent]]:
    return process_batch(fixes, states or {}, index, params)


def kinds(events: list[GeofenceEvent]) -> list[tuple[str, str]]:
    return [(e.kind, e.fence_id) for e in events]


# --- shared vectors (../shared/data/geofence/geofence_vectors.json) -------------------


def _vector_cases() -> list[Any]:
    path = SHARED_DATA / "geofence" / "geofence_vectors.json"
    if not path.exists():
        reason = f"real test data not present: {path} (a fresh clone has no ../shared/data)"
        return [pytest.param(None, id="vectors-absent", marks=pytest.mark.skip(reason=reason))]
    cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    return [pytest.param(case, id=case["id"]) for case in cases]


def _wkt_pairs(text: str) -> list[tuple[float, float]]:
    """Traccar WKT writes "lat lon" (not the standard "lon lat"): read the pairs in that order."""
    return [(float(a), float(b)) for a, b in re.findall(r"(-?[\d.]+)\s+(-?[\d.]+)", text)]


def _geojson_ring(ring: list[dict[str, float]]) -> list[list[float]]:
    return [[p["lon"], p["lat"]] for p in ring]


def _fence(spec: dict[str, Any], fence_id: str = "f") -> CircleFence | PolygonFence | CorridorFence:
    kind = spec["type"]
    wkt = spec.get("traccar_wkt")
    if kind == "circle":
        if wkt:  # built from the WKT to show the "lat lon" order is read right
            (lat, lng), = _wkt_pairs(wkt.split(",")[0])
            assert (lat, lng) == (spec["center"]["lat"], spec["center"]["lon"])
        return CircleFence(fence_id, spec["center"]["lat"], spec["center"]["lon"], spec["radius_m"])
    if kind == "polygon":
        if wkt:
            pairs = _wkt_pairs(wkt)
            assert all(math.isclose(a, p["lat"]) and math.isclose(b, p["lon"])
                       for (a, b), p in zip(pairs, spec["ring"], strict=True))
        return PolygonFence(fence_id, {"type": "Polygon", "coordinates": [_geojson_ring(spec["ring"])]})
    if kind == "bbox":
        lo, hi = spec["min"], spec["max"]
        ring = [[lo["lon"], lo["lat"]], [hi["lon"], lo["lat"]], [hi["lon"], hi["lat"]], [lo["lon"], hi["lat"]]]
        return PolygonFence(fence_id, {"type": "Polygon", "coordinates": [ring]})
    if kind == "corridor":
        line = tuple((p["lat"], p["lon"]) for p in spec["line"])
        assert wkt is None or _wkt_pairs(wkt) == list(line)
        return CorridorFence(fence_id, line, spec["buffer_m"])
    raise AssertionError(f"unknown fence type {kind}")


def _great_circle_miss_m(a: dict[str, float], b: dict[str, float], c: dict[str, float]) -> float:
    """Distance from c to the great circle through a and b (cross-track distance)."""
    def vec(p: dict[str, float]) -> tuple[float, float, float]:
        la, lo = math.radians(p["lat"]), math.radians(p["lon"])
        return math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = vec(a), vec(b), vec(c)
    nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    return abs(math.asin((nx * cx + ny * cy + nz * cz) / norm)) * 6_371_008.8


@pytest.mark.parametrize("case", _vector_cases())
def test_shared_geofence_vector(case: dict[str, Any]) -> None:
    """Every case of the shared vectors that applies to Doorstep.

    Interpretation of Tile38's "cross" (tile38-eec, tile38-eecio): the path between
    two fixes is a straight line in lon/lat space, as in Tile38, not a great circle.
    So (0,0) -> (20,20) does cross the 10 km circle at (10,10) (`segment_intersects`
    is True), although the great circle between those points passes ~36 km away
    (asserted below, to make the choice visible). Between fixes seconds apart the
    two readings differ by centimetres. The state machine itself emits only enter,
    exit and dwell: a cross is a pass with no fix inside, which is not an arrival,
    so the third update produces no event and leaves the driver outside.

    "roam" (one moving object near another) is not a geofence feature: skipped,
    though its distances are checked against haversine_m in another test.
    """
    op = case["op"]
    if op == "contains":
        fence = _fence(case["fence"])
        point = case["point"]
        assert fence.contains(point["lat"], point["lon"]) is case["expect"]
        # The same answer through the H3 index: candidates by cell, then the exact test.
        found = FenceIndex([fence]).containing(point["lat"], point["lon"])
        assert (fence in found) is case["expect"]
    elif op == "segment_intersects":
        fence = _fence(case["fence"])
        a, b = case["segment"]
        assert segment_intersects(fence, (a["lat"], a["lon"]), (b["lat"], b["lon"])) is case["expect"]
    elif op == "area_km2":
        fence = _fence(case["fence"])
        assert isinstance(fence, PolygonFence)
        assert abs(polygon_area_m2(fence) / 1e6 - case["expect"]) <= case["tolerance"]
    elif op == "event_sequence":
        _check_event_sequence(case)
    elif op == "multi_fence_order":
        fences = [_fence(spec, name) for name, spec in case["fences"].items()]
        index = FenceIndex(fences)
        first, second = (GeoFix("obj", T0 + i * 1000, p["lat"], p["lon"], 0.0) for i, p in enumerate(case["track"]))
        state, _ = evaluate(first, DriverState("obj"), index, EXACT)  # "set before the fences exist"
        state, events = evaluate(second, state, index, EXACT)
        # Our events come exits first, then enters; Tile38 follows each group with the state messages.
        exits = [e.fence_id for e in events if e.kind == "exit"]
        enters = [e.fence_id for e in events if e.kind == "enter"]
        assert [e.kind for e in events] == ["exit"] * len(exits) + ["enter"] * len(enters)
        assert all(not state.inside(n) for n in exits) and all(state.inside(n) for n in enters)
        got = ([f"exit:{n}" for n in exits] + [f"outside:{n}" for n in exits]
               + [f"enter:{n}" for n in enters] + [f"inside:{n}" for n in enters])
        assert got == case["expect_after_second_point"]
    elif op == "roam":
        pytest.skip("roam (a moving object near another moving object) is not a geofence feature of Doorstep")
    else:
        raise AssertionError(f"a vector op this test does not know: {op}")


def _check_event_sequence(case: dict[str, Any]) -> None:
    fence = _fence(case["fence"])
    index = FenceIndex([fence])
    state = DriverState("obj")
    previous: dict[str, float] | None = None
    detect = {d.split("(")[0].strip() for d in case["detect"].split(",")}  # what the Tile38 hook asked for
    for i, (point, expected) in enumerate(zip(case["track"], case["expect"], strict=True)):
        was_inside = state.inside(fence.id)
        state, events = evaluate(GeoFix("obj", T0 + i * 1000, point["lat"], point["lon"], 0.0), state, index, EXACT)
        got = [e.kind for e in events]
        if "inside" in expected or "outside" in expected:
            got.append("inside" if state.inside(fence.id) else "outside")
        if "cross" in expected:
            assert previous is not None and not was_inside and not state.inside(fence.id)
            assert events == []
            start, end = (previous["lat"], previous["lon"]), (point["lat"], point["lon"])
            assert segment_intersects(fence, start, end)  # straight line in lon/lat: crosses
            assert isinstance(fence, CircleFence)
            assert _great_circle_miss_m(previous, point, case["fence"]["center"]) > 3 * fence.radius_m
            got = ["cross", *got]
        assert [g for g in got if g in detect] == expected
        previous = point


def test_roam_distances_agree_with_haversine() -> None:
    case = next(c for c in json.loads(shared_path("geofence", "geofence_vectors.json").read_text())["cases"]
                if c["op"] == "roam")
    car1, car2 = case["car1"], case["car2"]
    # The four messages: car1[3] vs car2[2], car2[3] vs car1[3], car1[4] vs car2[3], car2[4] vs car1[4].
    pairs = [(car1[3], car2[2]), (car2[3], car1[3]), (car1[4], car2[3]), (car2[4], car1[4])]
    for (a, b), message in zip(pairs, case["expect"], strict=True):
        got = haversine_m(a["lat"], a["lon"], b["lat"], b["lon"])
        assert abs(got - message["meters"]) <= case["tolerance_m"]


# --- real ride-along traces ---------------------------------------------------------

GPX = {"g": "http://www.topografix.com/GPX/1/1",
       "x": "http://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd",
       "t": "http://trails.io/GPX/1/0"}


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def load_gpx(path: Path) -> tuple[list[tuple[str, float, float, int]], list[dict[str, Any]]]:
    """Waypoints (name, lat, lon, time ms) and track points (time, lat, lon, speed, hacc)."""
    root = ET.parse(path).getroot()
    waypoints = [(w.findtext("g:name", "", GPX), float(w.attrib["lat"]), float(w.attrib["lon"]),
                  _iso_ms(w.findtext("g:time", "", GPX))) for w in root.findall("g:wpt", GPX)]
    points = []
    for p in root.iter(f"{{{GPX['g']}}}trkpt"):
        speed, hacc = p.findtext(".//x:speed", None, GPX), p.findtext(".//t:hacc", None, GPX)
        points.append({"fix_ms": _iso_ms(p.findtext("g:time", "", GPX)), "lat": float(p.attrib["lat"]),
                       "lon": float(p.attrib["lon"]), "speed": None if speed is None else float(speed),
                       "hacc": None if hacc is None else float(hacc)})
    return waypoints, points


def parkings(waypoints: list[tuple[str, float, float, int]]) -> list[tuple[str, float, float, int]]:
    """'Park' waypoints, and in nighttime_drive.gpx the stops named by street address ('Photo' marks a photo)."""
    return [w for w in waypoints if w[0] != "Photo"]


def replay(points: list[dict[str, Any]], index: FenceIndex, chunk: int) -> list[GeofenceEvent]:
    fixes = [GeoFix("truck", p["fix_ms"], p["lat"], p["lon"], p["hacc"]) for p in points]
    states: dict[str, DriverState] = {}
    events: list[GeofenceEvent] = []
    for i in range(0, len(fixes), chunk):
        states, new = process_batch(fixes[i:i + chunk], states, index, PARAMS)
        events.extend(new)
    return events


@pytest.mark.parametrize(("name", "stops"), [("test1.gpx", 1), ("nighttime_drive.gpx", 3)])
@pytest.mark.parametrize("chunk", [1, 25, 1000])
def test_ridealong_one_arrival_per_parking(name: str, stops: int, chunk: int) -> None:
    """A stop fence of the default 75 m at each parking; the real fixes replayed in batches.

    test1.gpx is the hard one: the phone starts at the truck with 64 m accuracy,
    walks ~107 m away (a delivery on foot) and back, then sits there with 16 m
    accuracy before the truck leaves. One enter, one dwell, one exit, in that order.
    """
    waypoints, points = load_gpx(shared_path("traces", "ridealong", name))
    parked = parkings(waypoints)
    assert len(parked) == stops
    index = FenceIndex([stop_fence(f"stop{i}", lat, lng) for i, (_, lat, lng, _) in enumerate(parked)])
    events = replay(points, index, chunk)
    by_fence = {f"stop{i}": [e for e in events if e.fence_id == f"stop{i}"] for i in range(len(parked))}
    for i, (_, _, _, marked_ms) in enumerate(parked):
        seq = by_fence[f"stop{i}"]
        assert [e.kind for e in seq if e.kind != "dwell"] == ["enter", "exit"], seq  # no flapping
        enter, leave = seq[0], next(e for e in seq if e.kind == "exit")
        assert enter.fix_ms <= marked_ms <= leave.fix_ms  # the stay brackets the moment it was marked
        assert sum(e.kind == "dwell" for e in seq) == (1 if leave.fix_ms - enter.fix_ms >= 120_000 else 0)
    assert events == replay(points, index, 7)  # batching does not matter


def test_ridealong_naive_fence_would_flap() -> None:
    """The data is the hard case: "inside iff distance <= 75 m" fires several arrivals at test1's parking."""
    waypoints, points = load_gpx(shared_path("traces", "ridealong", "test1.gpx"))
    (_, lat, lng, _), = parkings(waypoints)
    inside = [haversine_m(lat, lng, p["lat"], p["lon"]) <= DEFAULT_STOP_RADIUS_M for p in points]
    naive_enters = sum(1 for a, b in zip([False, *inside], inside, strict=False) if b and not a)
    assert naive_enters >= 2


# --- properties -----------------------------------------------------------------------

CENTRE = (47.6615, -122.3140)
PROPERTY_FENCES = FenceIndex([
    CircleFence("a", *CENTRE, 60.0),
    CircleFence("b", *north_of(*CENTRE, 90.0), 40.0, exit_radius_m=100.0),
    PolygonFence("z", {"type": "Polygon", "coordinates": [[
        [-122.3160, 47.6600], [-122.3125, 47.6600], [-122.3125, 47.6620], [-122.3160, 47.6620], [-122.3160, 47.6600]]]},
        buffer_m=30.0),
])

fix_strategy = st.builds(
    GeoFix,
    driver_id=st.sampled_from(["d1", "d2"]),
    fix_ms=st.integers(0, 120).map(lambda k: T0 + k * 5000),  # few distinct times: same-time conflicts happen
    lat=st.floats(CENTRE[0] - 0.003, CENTRE[0] + 0.003),
    lng=st.floats(CENTRE[1] - 0.004, CENTRE[1] + 0.004),
    accuracy=st.one_of(st.none(), st.floats(0, 150)),
)


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(fix_strategy, max_size=40), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_duplicating_or_reordering_a_batch_gives_the_same_events(batch: list[GeoFix], seed: int,
                                                                 data: st.DataObject) -> None:
    states, events = run(batch, PROPERTY_FENCES)
    noisy = batch + data.draw(st.lists(st.sampled_from(batch), max_size=20)) if batch else []
    random.Random(seed).shuffle(noisy)
    states2, events2 = run(noisy, PROPERTY_FENCES)
    assert events2 == events and states2 == states
    # The same batch delivered again creates nothing new.
    states3, events3 = process_batch(noisy, states2, PROPERTY_FENCES, PARAMS)
    assert events3 == [] and states3 == states2
    assert len({e.event_id for e in events}) == len(events)


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(fix_strategy, max_size=40), cut=st.integers(0, 40))
def test_a_time_ordered_stream_gives_the_same_events_however_it_is_batched(batch: list[GeoFix], cut: int) -> None:
    ordered = sorted(batch, key=lambda f: (f.fix_ms, f.lat, f.lng, -1.0 if f.accuracy is None else f.accuracy))
    # Per driver, later batches only hold later fixes (what the ingest path guarantees).
    _, whole = run(ordered, PROPERTY_FENCES)
    states, first = run(ordered[:cut], PROPERTY_FENCES)
    _, second = process_batch(ordered[cut:], states, PROPERTY_FENCES, PARAMS)
    assert sorted(first + second, key=lambda e: e.event_id) == sorted(whole, key=lambda e: e.event_id)


@settings(max_examples=60, deadline=None)
@given(lat=st.floats(-60, 60), lng=st.floats(-179.9, 179.9), radius=st.floats(20, 500),
       bearing=st.floats(0, 2 * math.pi), frac=st.floats(0, 1))
def test_the_cell_cover_reaches_the_exit_line(lat: float, lng: float, radius: float, bearing: float,
                                              frac: float) -> None:
    """Any point within the exit radius finds the fence among its candidates (no false negatives)."""
    fence = CircleFence("c", lat, lng, radius)
    assert fence.exit_radius_m is not None
    d = fence.exit_radius_m * frac
    plat = lat + d * math.cos(bearing) / 111_195.08
    plng = lng + d * math.sin(bearing) / (111_195.08 * math.cos(math.radians(lat)))
    assert fence in FenceIndex([fence]).candidates(plat, plng)


@settings(max_examples=300, deadline=None)
@given(lat=st.floats(-70, 70), lng=st.floats(-180, 180), radius=st.floats(20, 2000),
       bearing=st.floats(0, 2 * math.pi), dist=st.floats(0, 5000), acc=st.floats(0, 100))
def test_enter_and_exit_follow_the_signed_distance_rule(lat: float, lng: float, radius: float, bearing: float,
                                                        dist: float, acc: float) -> None:
    """The state machine's fast circle tests agree with `signed_distance_m` (across the antimeridian too)."""
    fence = CircleFence("c", lat, lng, radius)
    plat = max(-89.9, min(89.9, lat + dist * math.cos(bearing) / 111_195.08))
    plng = (lng + dist * math.sin(bearing) / (111_195.08 * math.cos(math.radians(lat))) + 180) % 360 - 180
    s = fence.signed_distance_m(plat, plng)
    if min(abs(s - acc), abs(s + fence.exit_margin_m + acc)) < 1e-6:
        return  # on a decision line to the last micrometre: either answer is right
    index = FenceIndex([fence])
    _, entered = evaluate(GeoFix("d", 2, plat, plng, acc), DriverState("d"), index, PARAMS)
    assert bool(entered) is (s >= acc)
    _, left = evaluate(GeoFix("d", 2, plat, plng, acc), DriverState("d", 1, {"c": FenceState(1)}), index, PARAMS)
    assert [e.kind for e in left] == (["exit"] if s < -(fence.exit_margin_m + acc) else [])


def test_polygon_cover_reaches_its_buffer_and_holes() -> None:
    outer = [[-122.320, 47.660], [-122.310, 47.660], [-122.310, 47.665], [-122.320, 47.665], [-122.320, 47.660]]
    hole = [[-122.317, 47.661], [-122.313, 47.661], [-122.313, 47.664], [-122.317, 47.664], [-122.317, 47.661]]
    fence = PolygonFence("z", {"type": "Polygon", "coordinates": [outer, hole]}, buffer_m=40.0)
    index = FenceIndex([fence])
    rng = random.Random(3)
    checked = 0
    for _ in range(4000):
        lat, lng = 47.6590 + rng.random() * 0.0070, -122.3215 + rng.random() * 0.0130
        if fence.signed_distance_m(lat, lng) >= -40.0:
            checked += 1
            assert fence in index.candidates(lat, lng)
    assert checked > 1000


# --- focused rules --------------------------------------------------------------------

STOP = CircleFence("stop", *CENTRE, 75.0)  # exit line at max(112.5, 125) = 125 m
STOP_INDEX = FenceIndex([STOP])


def test_defaults() -> None:
    assert STOP.exit_radius_m == 125.0 and CircleFence("big", *CENTRE, 300.0).exit_radius_m == 450.0
    assert stop_fence("s", *CENTRE).radius_m == DEFAULT_STOP_RADIUS_M == 75.0
    assert stop_fence("s", *CENTRE, radius_m=40.0).exit_radius_m == 90.0


def test_hysteresis_needs_a_clearly_larger_distance_to_leave() -> None:
    states, events = run([fix(*CENTRE, 0), fix(*north_of(*CENTRE, 110), 10), fix(*north_of(*CENTRE, 129), 20),
                          fix(*north_of(*CENTRE, 131), 30), fix(*north_of(*CENTRE, 72), 40)], STOP_INDEX)
    # 110 m and 129 m (minus 5 m accuracy) are inside the 125 m exit line; 131 - 5 is beyond it.
    # Coming back to 72 m is not an enter: 72 + 5 > 75.
    assert [(e.kind, e.fix_ms - T0) for e in events] == [("enter", 0), ("exit", 30_000)]
    _, events = run([fix(*north_of(*CENTRE, 69), 50)], STOP_INDEX, states=states)
    assert kinds(events) == [("enter", "stop")]


def test_a_fix_straddling_the_boundary_changes_nothing() -> None:
    _, events = run([fix(*north_of(*CENTRE, 70), 0, acc=10)], STOP_INDEX)  # 60..80 m: straddles 75
    assert events == []
    states, events = run([fix(*north_of(*CENTRE, 70), 0, acc=4)], STOP_INDEX)  # 66..74 m: inside
    assert kinds(events) == [("enter", "stop")]
    _, events = run([fix(*north_of(*CENTRE, 150), 10, acc=40)], STOP_INDEX, states=states)  # 110..190: straddles
    assert events == []


def test_very_poor_fixes_are_ignored() -> None:
    _, events = run([fix(*CENTRE, 0, acc=150)], STOP_INDEX)
    assert events == []
    states, _ = run([fix(*CENTRE, 0)], STOP_INDEX)
    after, events = run([fix(*north_of(*CENTRE, 2000), 10, acc=500)], STOP_INDEX, states=states)
    assert events == [] and after["drv_1"].fences == states["drv_1"].fences
    assert after["drv_1"].last_fix_ms == T0 + 10_000  # looked at, so a copy arriving later is a duplicate
    # A fix worse than the fence radius can never enter: its circle cannot fit inside.
    small = FenceIndex([CircleFence("small", *CENTRE, 30.0)])
    assert run([fix(*CENTRE, 0, acc=35)], small)[1] == []


def test_unknown_accuracy_is_assumed_ten_metres() -> None:
    assert run([fix(*north_of(*CENTRE, 66), 0, acc=None)], STOP_INDEX)[1] == []
    assert kinds(run([fix(*north_of(*CENTRE, 64), 0, acc=None)], STOP_INDEX)[1]) == [("enter", "stop")]


def test_dwell_fires_once_per_stay() -> None:
    track = [fix(*CENTRE, t) for t in (0, 60, 119, 120, 180, 600)]
    states, events = run(track, STOP_INDEX)
    assert [(e.kind, e.fix_ms - T0) for e in events] == [("enter", 0), ("dwell", 120_000)]
    # Leave and come back: a new stay, a new dwell.
    again = [fix(*north_of(*CENTRE, 500), 700), fix(*CENTRE, 800), fix(*CENTRE, 950)]
    _, events = run(again, STOP_INDEX, states=states)
    assert [(e.kind, e.fix_ms - T0) for e in events] == [("exit", 700_000), ("enter", 800_000), ("dwell", 950_000)]
    short = GeofenceParams(dwell_after_s=30)
    assert [e.kind for e in run(track[:2], STOP_INDEX, short)[1]] == ["enter", "dwell"]


def test_stale_fixes_never_flip_state() -> None:
    states, _ = run([fix(*CENTRE, 100)], STOP_INDEX)
    # Older than the last processed fix: dropped, inside stays inside.
    after, events = run([fix(*north_of(*CENTRE, 1000), 50), fix(*north_of(*CENTRE, 1000), 100)],
                        STOP_INDEX, states=states)
    assert events == [] and after == states
    # The same through evaluate directly, and an older fix cannot enter either.
    state = DriverState("drv_1", T0 + 100_000)
    assert evaluate(fix(*CENTRE, 50), state, STOP_INDEX, PARAMS) == (state, [])


def test_a_jump_far_away_exits_fences_not_among_the_candidates() -> None:
    states, _ = run([fix(*CENTRE, 0)], STOP_INDEX)
    assert STOP_INDEX.candidates(10.0, 10.0) == ()
    _, events = run([fix(10.0, 10.0, 60)], STOP_INDEX, states=states)
    assert kinds(events) == [("exit", "stop")]


def test_a_deleted_fence_drops_its_state_without_an_event() -> None:
    states, _ = run([fix(*CENTRE, 0)], STOP_INDEX)
    other = FenceIndex([CircleFence("other", 0.0, 0.0, 50.0)])
    after, events = run([fix(*CENTRE, 10)], other, states=states)
    assert events == [] and not after["drv_1"].inside("stop")


def test_events_are_deterministic_and_ordered_exits_first() -> None:
    index = FenceIndex([CircleFence("a", *CENTRE, 50.0), CircleFence("b", *north_of(*CENTRE, 400), 50.0)])
    track = [fix(*CENTRE, 0), fix(*north_of(*CENTRE, 400), 60)]
    _, events = run(track, index)
    assert kinds(events) == [("enter", "a"), ("exit", "a"), ("enter", "b")]
    assert events[1].event_id == event_id("drv_1", "a", "exit", T0 + 60_000)
    assert run(list(reversed(track)), index)[1] == events
    assert len({event_id("d", "f", k, 1) for k in ("enter", "exit", "dwell")}) == 3


def test_drivers_are_independent() -> None:
    states, events = run([fix(*CENTRE, 0, driver="d1"), fix(*CENTRE, 0, driver="d2")], STOP_INDEX)
    assert kinds(events) == [("enter", "stop"), ("enter", "stop")] and set(states) == {"d1", "d2"}
    with pytest.raises(ValueError, match="another driver"):
        evaluate(fix(*CENTRE, 1, driver="d1"), states["d2"], STOP_INDEX, PARAMS)


def test_a_stored_ping_is_a_fix() -> None:
    ping = Ping("drv_1", "mer_1", T0, CENTRE[0], CENTRE[1], h3.latlng_to_cell(*CENTRE, 10), T0, accuracy=8.0)
    _, events = run([ping], STOP_INDEX)
    assert kinds(events) == [("enter", "stop")]
    assert STOP_INDEX.candidates_for_cell(ping.cell) == STOP_INDEX.candidates(ping.lat, ping.lng)


def test_polygon_with_hole_and_multipolygon() -> None:
    outer = [[0.0, 0.0], [0.01, 0.0], [0.01, 0.01], [0.0, 0.01], [0.0, 0.0]]
    hole = [[0.004, 0.004], [0.006, 0.004], [0.006, 0.006], [0.004, 0.006]]  # left open: closed for us
    far = [[1.0, 1.0], [1.01, 1.0], [1.01, 1.01], [1.0, 1.0]]
    zone = PolygonFence("z", {"type": "MultiPolygon", "coordinates": [[outer, hole], [far]]})
    assert zone.contains(0.002, 0.002) and not zone.contains(0.005, 0.005) and zone.contains(1.002, 1.008)
    # 0.001 degrees of latitude from the hole's edge, inside the polygon: ~111 m.
    assert zone.signed_distance_m(0.003, 0.005) == pytest.approx(111.2, abs=0.5)
    assert zone.signed_distance_m(0.005, 0.005) == pytest.approx(-111.2, abs=0.5)
    assert zone.contains(0.0, 0.005)  # on an edge: the boundary counts as inside
    index = FenceIndex([zone])
    _, events = run([fix(0.002, 0.002, 0), fix(0.005, 0.005, 10), fix(0.005, 0.0052, 20)], index)
    # Inside the hole but only ~111 m from its edge: beyond the 50 m buffer plus 5 m accuracy, so an exit.
    assert kinds(events) == [("enter", "z"), ("exit", "z")]


def test_fence_cells_are_res10_strings_and_fences_round_trip() -> None:
    cells = fence_cells(STOP)
    assert cells and all(h3.get_resolution(c) == INDEX_RES for c in cells)
    assert h3.latlng_to_cell(*CENTRE, INDEX_RES) in cells
    assert 5 <= len(cells) <= 40  # 125 m exit radius: a handful of ~66 m cells, not a wide disk
    zone = PolygonFence("z", {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0]]]})
    corridor = CorridorFence("r", ((56.836, 60.6126), (56.8393, 60.6114)), 15.0)
    for fence in (STOP, zone, corridor, CircleFence("x", 1.0, 2.0, 80.0, exit_radius_m=200.0)):
        assert fence_from_dict(fence.to_dict()) == fence
        assert fence_cells(fence_from_dict(fence.to_dict())) == fence_cells(fence)


def test_invalid_fences_are_refused() -> None:
    with pytest.raises(ValueError, match="exit_radius_m"):
        CircleFence("c", 0.0, 0.0, 100.0, exit_radius_m=90.0)
    with pytest.raises(ValueError, match="radius_m"):
        CircleFence("c", 0.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="coordinates"):
        CircleFence("c", 91.0, 0.0, 10.0)
    with pytest.raises(ValueError, match="GeoJSON"):
        PolygonFence("p", {"type": "Point", "coordinates": [0, 0]})
    with pytest.raises(ValueError, match="3 distinct"):
        PolygonFence("p", {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]})
    with pytest.raises(ValueError, match="too large"):
        fence_cells(CircleFence("huge", 0.0, 0.0, 200_000.0))
    with pytest.raises(ValueError, match="duplicate"):
        FenceIndex([STOP, STOP])


def test_index_build_is_not_a_scan_per_ping() -> None:
    """Candidates come from the fix's cell only: far fences are never looked at."""
    rng = random.Random(1)
    fences = [CircleFence(f"f{i}", 47.5 + rng.random() * 0.3, -122.5 + rng.random() * 0.4, rng.uniform(30, 300))
              for i in range(2000)]
    index = FenceIndex(fences)
    for _ in range(300):
        lat, lng = 47.5 + rng.random() * 0.3, -122.5 + rng.random() * 0.4
        expected = {f.id for f in fences if f.contains(lat, lng)}
        assert {f.id for f in index.containing(lat, lng)} == expected
        near = {f.id for f in fences if f.exit_radius_m is not None
                and haversine_m(f.lat, f.lng, lat, lng) <= f.exit_radius_m}
        candidates = {f.id for f in index.candidates(lat, lng)}
        assert near <= candidates and len(candidates) < 40
    assert Counter(type(f).__name__ for f in fences) == {"CircleFence": 2000}
