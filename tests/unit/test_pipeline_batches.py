"""The per-driver batch path of the stream pipeline (pipeline.service.advance), without storage.

Properties: for any cut of a driver's fixes into stream batches, any duplication and reordering inside a
batch, any redelivery of a batch (Lambda retries, bisection) and overlapping windows, the transitions,
timeline events, 'delayed' flags and the ETA item end the same as one clean pass; a fix older than what was
already processed changes nothing. The state goes through its JSON form between batches, as it does
through the state item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.fleet.models import MerchantSettings
from chalicelib.fleet.service import MerchantProfile
from chalicelib.geo.eta import PromisedWindow, SpeedTable, StopEta
from chalicelib.geo.geofence import FenceIndex, GeoFix, stop_fence
from chalicelib.pipeline.service import (
    Effects,
    MerchantContext,
    Ports,
    RouteStops,
    ZoneCell,
    advance,
    progress_from_json,
    progress_to_json,
)
from chalicelib.shipments.lifecycle import ShipmentStatus

BASE = (47.6205, -122.3493)
T0 = 1_760_000_000_000
DRIVER = "drv_1"


def offset(north_m: float, east_m: float = 0.0) -> tuple[float, float]:
    lat, lng = BASE
    return lat + north_m / 111_320, lng + east_m / (111_320 * math.cos(math.radians(lat)))


STOP_POINTS = {"shp_a": offset(1500), "shp_b": offset(3000), "shp_c": offset(6000)}


def route() -> RouteStops:
    ids = list(STOP_POINTS)
    return RouteStops("rte_1", "mer_1", ids, dict(STOP_POINTS),
                      {"shp_a": PromisedWindow(None, None), "shp_b": PromisedWindow(None, T0 + 60_000),
                       "shp_c": PromisedWindow(T0, T0 + 86_400_000)},
                      FenceIndex(stop_fence(sid, lat, lng, 60.0) for sid, (lat, lng) in STOP_POINTS.items()),
                      "ooo", frozenset(), 0.0)


def trace() -> list[GeoFix]:
    """North at 10 m/s past stop a (3 minutes parked there with jitter), towards b: one fix every 10 s."""
    fixes: list[GeoFix] = []
    t = T0
    for d in range(0, 1500, 100):
        fixes.append(GeoFix(DRIVER, t, *offset(d), 8.0))
        t += 10_000
    for i in range(18):
        fixes.append(GeoFix(DRIVER, t, *offset(1500 + 15 * math.sin(i), 15 * math.cos(i)), 12.0))
        t += 10_000
    for d in range(1600, 2600, 100):
        fixes.append(GeoFix(DRIVER, t, *offset(d), 8.0 if d != 2000 else 400.0))  # one Wi-Fi fix
        t += 10_000
    return fixes


CONTEXT = MerchantContext(MerchantProfile("mer_1", "M", MerchantSettings(), None), 120.0)
PORTS = Ports(zones_near=lambda cell: ZoneCell(FenceIndex([]), {}, 0.0), zone_by_id=lambda fence_id: None,
              speed_table=lambda stops, fix: SpeedTable())


@dataclass
class Outcome:
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    timeline: list[tuple[str, str, str]] = field(default_factory=list)
    delayed: list[str] = field(default_factory=list)
    eta: tuple[int, list[StopEta]] | None = None
    final_state: str = ""

    def take(self, effects: Effects) -> None:
        self.transitions += [(t.shipment_id, str(t.to_status), t.event_id) for t in effects.transitions]
        self.timeline += [(sid, kind, event_id) for sid, kind, event_id, _ in effects.timeline]
        self.delayed += [sid for sid, _ in effects.delayed]
        # the ETA item is written only forward in fix time (put_route_eta's condition)
        if effects.eta is not None and (self.eta is None or effects.eta[0] >= self.eta[0]):
            self.eta = effects.eta


def run(batches: list[list[GeoFix]]) -> Outcome:
    stops = route()
    first = progress_from_json(DRIVER, None)
    first.adopt(stops)
    first.statuses_at = 0.0
    stored = progress_to_json(first)
    outcome = Outcome()
    for batch in batches:
        progress = progress_from_json(DRIVER, stored)  # read the state item
        outcome.take(advance(progress, batch, stops, CONTEXT, PORTS))
        stored = progress_to_json(progress)  # the conditional write
    outcome.final_state = stored
    return outcome


REFERENCE = run([trace()])


def test_the_clean_pass_arrives_dwells_departs_and_estimates() -> None:
    kinds = [(sid, to) for sid, to, _ in REFERENCE.transitions]
    assert ("shp_a", "arrived") in kinds
    assert [(sid, kind) for sid, kind, _ in REFERENCE.timeline] == [("shp_a", "dwell"), ("shp_a", "departed")]
    assert REFERENCE.delayed == ["shp_b"]  # promised by T0 + 1 min: late from the first estimate
    assert REFERENCE.eta is not None and [e.stop_id for e in REFERENCE.eta[1]] == ["shp_b", "shp_c"]


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[GeoFix]]:
    """The trace cut into batches; each batch shuffled with duplicates; some delivered again or overlapping."""
    fixes = trace()
    cuts = sorted(draw(st.sets(st.integers(1, len(fixes) - 1), max_size=8)))
    bounds = list(zip([0, *cuts], [*cuts, len(fixes)], strict=True))
    batches: list[list[GeoFix]] = []
    for start, end in bounds:
        back = draw(st.integers(0, 3))  # an overlapping window, as a bisected retry re-reads from earlier
        window = fixes[max(0, start - back):end]
        window = window + draw(st.lists(st.sampled_from(window), max_size=4))  # duplicates
        window = draw(st.permutations(window))
        batches.append(window)
        if draw(st.booleans()) and draw(st.booleans()):
            batches.append(list(window))  # the same batch delivered twice
    return batches


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_any_batching_duplication_or_redelivery_gives_the_same_events_and_etas(batches: list[list[GeoFix]]) -> None:
    outcome = run(batches)
    assert outcome.transitions == REFERENCE.transitions
    assert outcome.timeline == REFERENCE.timeline
    assert outcome.delayed == REFERENCE.delayed
    assert outcome.eta == REFERENCE.eta
    assert outcome.final_state == REFERENCE.final_state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, len(trace()) - 1), st.lists(st.integers(0, len(trace()) - 1), min_size=1, max_size=6))
def test_a_fix_older_than_what_was_processed_changes_nothing(cut: int, late: list[int]) -> None:
    fixes = trace()
    stale = [fixes[i] for i in late if i < cut]
    outcome = run([fixes[:cut], [*stale, *fixes[cut:]]] if stale else [fixes[:cut], fixes[cut:]])
    assert (outcome.transitions, outcome.timeline, outcome.delayed, outcome.eta) == \
        (REFERENCE.transitions, REFERENCE.timeline, REFERENCE.delayed, REFERENCE.eta)
    late_only = run([fixes, stale]) if stale else REFERENCE
    assert late_only.final_state == REFERENCE.final_state and late_only.transitions == REFERENCE.transitions


def test_a_stop_completed_elsewhere_leaves_the_remaining_etas() -> None:
    progress = progress_from_json(DRIVER, None)
    progress.adopt(route())
    progress.statuses_at = 0.0
    progress.set_status(1, ShipmentStatus.DELIVERED)  # shp_b delivered by the driver before any ping
    effects = advance(progress, trace()[:5], route(), CONTEXT, PORTS)
    assert effects.eta is not None and [e.stop_id for e in effects.eta[1]] == ["shp_a", "shp_c"]
    assert progress.statuses[1] == "d"

