"""ETA truth in the pipeline's pure step (pipeline.service.advance) and the one timeline order.

- 'approaching' only for the next stop(s) still to be served, never for a stop the driver passes on the way;
- an on-the-way stop whose fence the driver is already inside arrives; dwell/departed only within an attempt;
- events are dated never before the stop's floor (the shipment's creation, the route's start);
- no estimate when the driver is 300 km or more from the route;
- the timeline reads the same whatever order its events arrive in, created first, nothing before creation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.fleet.models import MerchantSettings
from chalicelib.fleet.service import MerchantProfile
from chalicelib.geo.eta import PromisedWindow, SpeedTable
from chalicelib.geo.geofence import FenceIndex, GeoFix, stop_fence
from chalicelib.pipeline.service import (
    DriverProgress,
    MerchantContext,
    Ports,
    RouteStops,
    ZoneCell,
    advance,
    next_stops,
    progress_from_json,
)
from chalicelib.shipments.timeline_order import ordered_timeline

BASE = (41.8781, -87.6298)  # Chicago
T0 = 1_780_000_000_000
DRIVER = "drv_1"


def at(north_m: float, east_m: float = 0.0) -> tuple[float, float]:
    lat, lng = BASE
    return lat + north_m / 111_320, lng + east_m / (111_320 * math.cos(math.radians(lat)))


def route(points: dict[str, tuple[float, float]], statuses: str, floor_ms: int | None = None) -> RouteStops:
    ids = list(points)
    return RouteStops("rte_1", "mer_1", ids, dict(points), {sid: PromisedWindow(None, None) for sid in ids},
                      FenceIndex(stop_fence(sid, lat, lng, 60.0) for sid, (lat, lng) in points.items()),
                      statuses, frozenset(), 0.0, {sid: floor_ms for sid in ids} if floor_ms is not None else {})


def context(**settings: object) -> MerchantContext:
    return MerchantContext(MerchantProfile("mer_1", "M", MerchantSettings.model_validate(settings), None), 60.0)


PORTS = Ports(zones_near=lambda cell: ZoneCell(FenceIndex([]), {}, 0.0), zone_by_id=lambda fence_id: None,
              speed_table=lambda stops, fix: SpeedTable())


def drive(points: list[tuple[float, float]], start_ms: int = T0, step_ms: int = 10_000) -> list[GeoFix]:
    return [GeoFix(DRIVER, start_ms + i * step_ms, lat, lng, 8.0) for i, (lat, lng) in enumerate(points)]


def fresh(stops: RouteStops) -> DriverProgress:
    progress = progress_from_json(DRIVER, None)
    progress.adopt(stops)
    return progress


# --- approaching only for the next stop -----------------------------------------------------------


def test_passing_within_500_m_of_a_later_stop_does_not_announce_it() -> None:
    # Stop 1 is 3 km east; the road there passes 200 m from stop 2 and stop 3 (due later on the route).
    points = {"shp_1": at(0, 3000), "shp_2": at(200, 1000), "shp_3": at(-200, 1500)}
    stops = route(points, "ooo")
    progress = fresh(stops)
    effects = advance(progress, drive([at(0, d) for d in range(0, 2600, 100)]), stops,
                      context(approach_minutes=0.0), PORTS)
    approached = [t.shipment_id for t in effects.transitions if t.kind == "approaching"]
    assert approached == ["shp_1"]  # within 500 m of stop 1 at the end, never stops 2-3 on the way
    assert progress.statuses == "poo"


def test_by_minutes_too_only_the_next_stop_is_approaching() -> None:
    points = {"shp_1": at(0, 1000), "shp_2": at(0, 1100), "shp_3": at(0, 1200)}  # all within minutes
    stops = route(points, "ooo")
    effects = advance(fresh(stops), drive([at(0, 0), at(0, 50)]), stops,
                      context(approach_minutes=30.0, approach_metres=0.0), PORTS)
    assert [t.shipment_id for t in effects.transitions if t.kind == "approaching"] == ["shp_1"]


def test_the_merchant_may_widen_it_to_n_stops_by_eta_order() -> None:
    points = {"shp_1": at(0, 1000), "shp_2": at(0, 1100), "shp_3": at(0, 1200)}
    stops = route(points, "ooo")
    effects = advance(fresh(stops), drive([at(0, 0), at(0, 50)]), stops,
                      context(approach_minutes=30.0, approach_metres=0.0, approach_next_stops=2), PORTS)
    assert [t.shipment_id for t in effects.transitions if t.kind == "approaching"] == ["shp_1", "shp_2"]


def test_next_stops_skips_the_served_ones() -> None:
    stops = route({"a": at(0), "b": at(100), "c": at(200), "d": at(300)}, "dfoo")
    assert next_stops(fresh(stops), stops, 1) == frozenset({2})
    assert next_stops(fresh(stops), stops, 5) == frozenset({2, 3})


# --- one clock in the pipeline ----------------------------------------------------------------------


def test_fixes_timed_before_the_route_start_arrive_and_are_dated_at_the_floor() -> None:
    """The demo's case: the driver's phone posts, after the route started, fixes timed an hour before it; the
    stop is on the way, the driver is at the door: it arrives, and nothing is dated before the floor."""
    floor = T0 + 3_600_000
    stops = route({"shp_1": at(0, 0)}, "o", floor_ms=floor)
    parked = [at(10 * math.sin(i), 10 * math.cos(i)) for i in range(30)]  # 5 minutes at the door
    away = [at(0, d) for d in range(100, 1000, 100)]
    effects = advance(fresh(stops), drive(parked + away), stops, context(), PORTS)
    kinds = [t.kind for t in effects.transitions]
    assert kinds == ["arrived"]
    assert [k for _, k, _, _ in effects.timeline] == ["dwell", "departed"]
    assert all(t.fix_ms >= floor for t in effects.transitions)
    assert all(ms >= floor for _, _, _, ms in effects.timeline)


def test_a_stop_the_driver_is_inside_when_it_goes_on_the_way_arrives() -> None:
    stops_before = route({"shp_1": at(0, 0)}, "a")  # assigned: the route has not started
    progress = fresh(stops_before)
    effects = advance(progress, drive([at(0, 500), at(0, 0), at(0, 5)]), stops_before, context(), PORTS)
    assert effects.transitions == []  # inside the fence before the stop was on the way: no arrival yet
    started = route({"shp_1": at(0, 0)}, "o")
    progress.adopt(started)
    effects = advance(progress, drive([at(0, 3), at(0, 2)], start_ms=T0 + 60_000), started, context(), PORTS)
    assert [(t.shipment_id, t.kind) for t in effects.transitions] == [("shp_1", "arrived")]
    again = advance(progress, drive([at(0, 1)], start_ms=T0 + 120_000), started, context(), PORTS)
    assert again.transitions == []  # once


def test_dwell_and_departed_of_a_stop_not_attempted_are_not_told() -> None:
    stops = route({"shp_1": at(0, 0)}, "a")
    parked = [at(10 * math.sin(i), 10 * math.cos(i)) for i in range(30)]
    effects = advance(fresh(stops), drive(parked + [at(0, d) for d in range(100, 600, 100)]), stops, context(),
                      PORTS)
    assert effects.timeline == [] and effects.transitions == []


def test_no_estimate_from_a_driver_300_km_away() -> None:
    stops = route({"shp_1": at(0, 0), "shp_2": at(0, 1000)}, "oo")
    seattle = GeoFix(DRIVER, T0, 47.6205, -122.3493, 8.0)
    effects = advance(fresh(stops), [seattle], stops, context(), PORTS)
    assert effects.eta == (T0, [])  # readers show the promised window
    assert effects.delayed == [] and effects.transitions == []
    near = advance(fresh(stops), drive([at(0, -2000)]), stops, context(), PORTS)
    assert near.eta is not None and [e.stop_id for e in near.eta[1]] == ["shp_1", "shp_2"]


def test_a_merchant_whose_drivers_wait_for_the_window_gets_etas_that_wait() -> None:
    """early_arrival 'wait': a stop reached before its window opens is served at the opening, and the next
    stop after it; 'deliver' (the default) keeps the drive's own arrival. Approaching follows the ETA."""
    opens = T0 + 3_600_000  # stop 1's window opens in an hour; the drive there takes minutes
    stops = route({"shp_1": at(0, 2000), "shp_2": at(0, 3000)}, "oo")
    stops.promised["shp_1"] = PromisedWindow(opens, opens + 7_200_000)
    fixes = drive([at(0, 0), at(0, 50)])

    delivers = advance(fresh(stops), fixes, stops, context(approach_minutes=10.0, approach_metres=0.0), PORTS)
    assert delivers.eta is not None
    drive_eta = delivers.eta[1][0].eta_ms
    assert drive_eta < T0 + 600_000  # the drive: minutes, in the hour before the window opens
    assert [t.shipment_id for t in delivers.transitions if t.kind == "approaching"] == ["shp_1"]

    waits = advance(fresh(stops), fixes, stops,
                    context(approach_minutes=10.0, approach_metres=0.0, early_arrival="wait"), PORTS)
    assert waits.eta is not None
    first, second = waits.eta[1]
    assert first.eta_ms == first.low_ms == opens  # the driver waits for the window: no earlier
    assert second.low_ms >= opens + 60_000  # the stop after it: after stop 1's opening and its 60 s service
    assert second.eta_ms > opens
    # Not approaching by minutes an hour before it is served (the drive alone is within the 10 minutes).
    assert [t.shipment_id for t in waits.transitions if t.kind == "approaching"] == []


# --- the one timeline order ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ev:
    type: str
    occurred_at: datetime
    recorded_at: datetime
    event_id: str


C = datetime(2026, 12, 8, 16, 55, tzinfo=UTC)


def demo_events() -> list[Ev]:
    m = timedelta(minutes=1)
    return [
        Ev("delivered", C - 14 * m, C + 40 * m, "evt_d"),  # "Delivered 16:41" stamped by a phone behind
        Ev("created", C, C, "evt_c"),
        Ev("assigned", C + m, C + m, "evt_a"),
        Ev("out_for_delivery", C + 5 * m, C + 5 * m, "evt_o"),
        Ev("approaching", C - 27 * m, C + 20 * m, "evt_p"),  # "Driver approaching 08:28" before creation
        Ev("arrived", C + 30 * m, C + 30 * m, "evt_r"),
        Ev("dwell", C + 32 * m, C + 32 * m, "evt_w"),
        Ev("departed", C + 38 * m, C + 38 * m, "evt_x"),
        Ev("instructions_updated", C + 2 * m, C + 2 * m, "evt_i"),
    ]


def test_created_first_and_nothing_before_creation_or_the_attempt() -> None:
    ordered = ordered_timeline(demo_events())
    kinds = [e.type for e, _ in ordered]
    assert kinds == ["created", "assigned", "instructions_updated", "out_for_delivery", "approaching", "arrived",
                     "dwell", "departed", "delivered"]
    times = dict((e.type, t) for e, t in ordered)
    assert all(t >= C for t in times.values())
    assert times["approaching"] == C + timedelta(minutes=5)  # floored at the attempt's start
    assert times["delivered"] == C + timedelta(minutes=38)  # not before the departure recorded before it


@given(st.permutations(demo_events()))
def test_any_arrival_order_reads_the_same(events: list[Ev]) -> None:
    assert ordered_timeline(events) == ordered_timeline(demo_events())


@st.composite
def timelines(draw: st.DrawFn) -> list[Ev]:
    kinds = st.sampled_from(["assigned", "out_for_delivery", "approaching", "arrived", "dwell", "departed",
                             "delivered", "failed", "rescheduled", "instructions_updated", "rated"])
    minutes = st.integers(-600, 600)
    out = [Ev("created", C, C, "evt_0")]
    for i in range(draw(st.integers(0, 12))):
        occurred = C + timedelta(minutes=draw(minutes))
        recorded = C + timedelta(minutes=draw(st.integers(0, 600)))
        out.append(Ev(draw(kinds), occurred, recorded, f"evt_{i + 1}"))
    return out


@given(timelines(), st.randoms(use_true_random=False))
def test_any_timeline_any_order_created_first_never_before_it(events: list[Ev], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    ordered = ordered_timeline(shuffled)
    assert ordered == ordered_timeline(events)
    assert ordered[0][0].type == "created"
    assert all(t >= C for _, t in ordered)
    assert [t for _, t in ordered] == sorted(t for _, t in ordered)  # shown times never go backwards


def test_without_a_created_event_the_stored_times_are_kept() -> None:
    events = [replace(e, type="assigned") if e.type == "created" else e for e in demo_events()]
    first, shown = ordered_timeline(events)[0]
    assert (first.event_id, shown) == ("evt_c", C)  # its stored time; attempt events still follow their start
