"""The DynamoDB stream consumer: pings become geofence events and lifecycle transitions.

One handler for Lambda and the local stream runner. The powertools batch
processor reports failed records individually, so one bad record never fails
or re-drives its whole batch. Everything here is safe to run twice: geofence
event ids are deterministic, timeline writes are conditional on the id, and
status changes are conditional on the status that was read.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import h3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from cachetools import TTLCache

from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.core.times import from_ms, to_ms
from chalicelib.fleet.models import MerchantSettings
from chalicelib.fleet.service import MerchantProfile, cached_merchant_profile
from chalicelib.geo.cells import haversine_m
from chalicelib.geo.eta import (
    DEFAULT_PARAMS,
    HOUR_MS,
    DriverMotion,
    EtaParams,
    PromisedWindow,
    SpeedTable,
    Stop,
    StopEta,
    delay_event_due,
    estimate_route,
    hour_of_week,
    leg_cells,
    plan_route,
    service_dwell_log,
    should_recompute,
)
from chalicelib.geo.geofence import (
    COARSE_INDEX_RES,
    DriverState,
    Fence,
    FenceIndex,
    FenceState,
    GeofenceEvent,
    GeofenceParams,
    GeoFix,
    evaluate,
    fence_from_dict,
    stop_fence,
)
from chalicelib.notifications.service import notify
from chalicelib.pipeline.store import (
    Counter,
    load_service_time_s,
    load_speed_table,
    service_time_counter,
    speed_counters,
)
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.storage.repository import ConditionFailed, Repository
from chalicelib.storage.tables import (
    EventItem,
    RouteItem,
    ShipmentItem,
    event_item,
    zone_event_item,
)

S = ShipmentStatus
ROUTE_CACHE_S = 30.0  # a route's stops and fences; a re-planned route is picked up within this
MERCHANT_CACHE_S = 60.0  # settings and the learned service time
ZONE_CACHE_S = 30.0  # a new or deleted zone takes effect within this
SPEED_CACHE_S = 600.0  # observed speeds move slowly; reread a route's cells every 10 minutes
SPEED_HOURS_AHEAD = 12  # the hours of week a route's ETA may need from the speed table
SPEED_MAX_ACCURACY_M = 50.0  # fixes worse than this make up speeds that were never driven
ZONE_PREFIX = "zon_"
GEOFENCE_MAX_ACCURACY_M = GeofenceParams().max_accuracy_m

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
_repo: Repository | None = None


def repo() -> Repository:
    global _repo
    if _repo is None:
        _repo = Repository()
    return _repo


class BatchStatistics:
    """What a batch adds to the learned statistics, written once after the batch as counter additions.

    A lost write loses a sample (logged), never an event: the statistics are sums
    that a few missing segments do not change.
    """

    def __init__(self) -> None:
        self.speeds = SpeedTable()
        self.counters: list[Counter] = []

    def flush(self, r: Repository) -> None:
        counters = speed_counters(self.speeds) + self.counters
        self.speeds, self.counters = SpeedTable(), []
        if not counters:
            return
        try:
            r.add_to_counters(counters)
        except Exception:  # statistics must never fail or re-drive the batch
            logger.exception("could not store learned statistics", extra={"items": len(counters)})
            metrics.add_metric(name="StatisticsLost", unit=MetricUnit.Count, value=len(counters))


_batch = BatchStatistics()


def handle_stream_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return dict(process_partial_response(event=event, record_handler=handle_record, processor=processor,
                                             context=context))
    finally:
        _batch.flush(repo())


def handle_record(record: DynamoDBRecord) -> None:
    if record.event_name is None or record.event_name.name != "INSERT" or record.dynamodb is None:
        return
    image = record.dynamodb.new_image or {}
    sk = str(image.get("SK", ""))
    if sk.startswith("PING#"):
        apply_ping(repo(), image, _batch)
    elif sk.startswith("EVENT#"):
        if image.get("to_status") in (S.DELIVERED, S.FAILED):
            apply_stop_completed(repo(), image)
        notify(repo(), image)  # the recipient's messages: notifications owns them


# --- cached context ----------------------------------------------------------------


@dataclass
class MerchantContext:
    """What the pipeline needs of a merchant: its profile (fleet, read at most once a minute) and the learned
    service time (its counters, read as often)."""

    profile: MerchantProfile
    service_s: float

    @property
    def settings(self) -> MerchantSettings:
        return self.profile.settings

    def geofence_params(self) -> GeofenceParams:
        return GeofenceParams(dwell_after_s=self.settings.dwell_after_s)

    def eta_params(self) -> EtaParams:
        return replace(DEFAULT_PARAMS, default_service_s=self.service_s)


_service_times: TTLCache[str, float] = TTLCache(maxsize=1024, ttl=MERCHANT_CACHE_S)


def merchant_context(r: Repository, merchant_id: str) -> MerchantContext:
    service_s = _service_times.get(merchant_id)
    if service_s is None:
        service_s = load_service_time_s(r, merchant_id, DEFAULT_PARAMS.default_service_s)
        _service_times[merchant_id] = service_s
    return MerchantContext(cached_merchant_profile(r, merchant_id), service_s)


@dataclass
class RouteFences:
    route_id: str
    index: FenceIndex
    stops: dict[str, tuple[float, float]]  # shipment id -> stop location
    loaded_at: float


_route_cache: dict[str, RouteFences] = {}


def route_fences(r: Repository, route: RouteItem, context: MerchantContext) -> RouteFences:
    """The route's stop fences (the shipment's radius, else the merchant's), indexed by H3 cell; cached briefly."""
    cached = _route_cache.get(route.route_id)
    if cached is not None and time.monotonic() - cached.loaded_at < ROUTE_CACHE_S:
        return cached
    shipments = r.get_shipments(route.merchant_id, [str(s) for s in route.stops])
    stops = {sid: (float(s.lat), float(s.lng)) for sid, s in shipments.items()}
    default_radius = context.settings.stop_radius_m
    fences = FenceIndex(stop_fence(sid, float(s.lat), float(s.lng),
                                   float(s.geofence_radius_m) if s.geofence_radius_m else default_radius)
                        for sid, s in shipments.items())
    result = RouteFences(route.route_id, fences, stops, time.monotonic())
    _route_cache[route.route_id] = result
    return result


@dataclass
class ZoneCell:
    """The zones indexed under one res-7 cell (a Query of the stored index), as an in-memory fine index."""

    index: FenceIndex
    names: dict[str, str]
    loaded_at: float


_zone_cache: dict[tuple[str, str], ZoneCell] = {}


def zones_near(r: Repository, merchant_id: str, fine_cell: str) -> ZoneCell:
    coarse = str(h3.cell_to_parent(fine_cell, COARSE_INDEX_RES))
    cached = _zone_cache.get((merchant_id, coarse))
    if cached is not None and time.monotonic() - cached.loaded_at < ZONE_CACHE_S:
        return cached
    items = r.zones_in_cell(merchant_id, coarse)
    zone = ZoneCell(FenceIndex(fence_from_dict(json.loads(i.fence)) for i in items),
                    {i.zone_id: i.name for i in items}, time.monotonic())
    _zone_cache[(merchant_id, coarse)] = zone
    return zone


class CombinedLookup:
    """The state machine's view of a driver's fences: the route's stops, the zones near the fix, and any
    zone the driver is inside though it is not indexed near this fix (a jump across a gap)."""

    def __init__(self, indexes: Sequence[FenceIndex], extra: dict[str, Fence]) -> None:
        self.indexes = indexes
        self.extra = extra

    def candidates(self, lat: float, lng: float) -> list[Fence]:
        return [f for index in self.indexes for f in index.candidates(lat, lng)]

    def get(self, fence_id: str) -> Fence | None:
        for index in self.indexes:
            fence = index.get(fence_id)
            if fence is not None:
                return fence
        return self.extra.get(fence_id)


@dataclass
class DriverProgress:
    """What the pipeline keeps per driver between pings: geofence state, motion, last ETA recompute."""

    fences: DriverState
    motion: DriverMotion
    eta_at_ms: int | None = None
    eta_lat: float = 0.0
    eta_lng: float = 0.0
    # Stops whose "approaching" question is settled (announced, or past that status): not re-read per ping.
    approach_settled: set[str] = field(default_factory=set)


def _progress_from_json(driver_id: str, raw: str | None) -> DriverProgress:
    if not raw:
        return DriverProgress(DriverState(driver_id), DriverMotion())
    data = json.loads(raw)
    fences = DriverState(driver_id, data.get("last_fix_ms"),
                         {k: FenceState(v["since_ms"], v.get("dwell_fired", False))
                          for k, v in data["fences"].items()})
    eta = data.get("eta") or {}
    return DriverProgress(fences, DriverMotion.from_dict(data.get("motion") or {}), eta.get("at_ms"),
                          eta.get("lat", 0.0), eta.get("lng", 0.0), set(data.get("approach_settled", [])))


def _progress_to_json(progress: DriverProgress) -> str:
    state = progress.fences
    return json.dumps({"last_fix_ms": state.last_fix_ms,
                       "fences": {k: {"since_ms": v.since_ms, "dwell_fired": v.dwell_fired}
                                  for k, v in state.fences.items()},
                       "motion": progress.motion.to_dict(),
                       "eta": {"at_ms": progress.eta_at_ms, "lat": progress.eta_lat, "lng": progress.eta_lng},
                       "approach_settled": sorted(progress.approach_settled)})


def apply_ping(r: Repository, image: dict[str, Any], batch: BatchStatistics | None = None) -> list[GeofenceEvent]:
    """Run one stored ping through the driver's stop fences and the merchant's zones; apply what it means."""
    merchant_id, driver_id = str(image["merchant_id"]), str(image["driver_id"])
    accuracy = float(image["accuracy"]) if image.get("accuracy") is not None else None
    fix = GeoFix(driver_id, int(image["fix_ms"]), float(image["lat"]), float(image["lng"]), accuracy)
    context = merchant_context(r, merchant_id)
    day = from_ms(fix.fix_ms).date().isoformat()
    route = r.active_route(merchant_id, driver_id, day)
    fences = route_fences(r, route, context) if route is not None else None
    fine_cell = str(image.get("cell") or h3.latlng_to_cell(fix.lat, fix.lng, 10))
    zones = zones_near(r, merchant_id, fine_cell)
    raw_state, version = r.geofence_state(driver_id)
    progress = _progress_from_json(driver_id, raw_state)
    before = _progress_to_json(progress)
    state = progress.fences
    indexes = [zones.index] if fences is None else [fences.index, zones.index]
    lookup = CombinedLookup(indexes, _zones_inside_elsewhere(r, merchant_id, state, indexes))
    new_state, events = evaluate(fix, state, lookup, context.geofence_params())
    for event in events:
        if event.fence_id.startswith(ZONE_PREFIX):
            _record_zone_event(r, merchant_id, event, zones)
        else:
            _apply_geofence_event(r, merchant_id, event, state, batch)
    progress.fences = new_state
    is_news = new_state.last_fix_ms is not None and new_state.last_fix_ms > (state.last_fix_ms or 0)
    # A fix too vague for the geofences (Wi-Fi or cell positioning) must not move anything else either:
    # no approaching by distance, no motion, no ETA from a position that may be kilometres off.
    if is_news and (accuracy is None or accuracy <= GEOFENCE_MAX_ACCURACY_M):
        # Time inside a fence (at a door, in the depot) is service time, and its GPS jitter would read as
        # slow driving: only fixes outside every fence teach the speed table.
        if batch is not None and progress.motion.last_ms is not None and not state.fences and not new_state.fences \
                and (accuracy or 0.0) <= SPEED_MAX_ACCURACY_M:
            previous = GeoFix(driver_id, progress.motion.last_ms, progress.motion.last_lat, progress.motion.last_lng)
            batch.speeds.observe(previous, fix)
        if fences is not None:
            _approach_by_distance(r, merchant_id, fix, fences, progress, context.settings.approach_metres)
        progress.motion.update(fix)
        if any(e.kind == "exit" and not e.fence_id.startswith(ZONE_PREFIX) for e in events):
            progress.motion.start_leg(fix.fix_ms, fix.lat, fix.lng)
        moved = haversine_m(progress.eta_lat, progress.eta_lng, fix.lat, fix.lng) if progress.eta_at_ms else 0.0
        if route is not None and (events or should_recompute(progress.eta_at_ms, fix.fix_ms, moved)):
            update_etas(r, route, fix, progress, context)
    after = _progress_to_json(progress)
    if after != before:
        r.save_geofence_state(driver_id, after, version)
    if events:
        metrics.add_metric(name="GeofenceEvents", unit=MetricUnit.Count, value=len(events))
    return events


def apply_stop_completed(r: Repository, image: dict[str, Any]) -> None:
    """A stop was delivered or failed: the next stops' ETAs change now (the driver's phone may be silent)."""
    merchant_id, shipment_id = str(image["merchant_id"]), str(image["shipment_id"])
    shipment = r.get_shipment(merchant_id, shipment_id)
    if shipment is None or not shipment.route_id or not shipment.driver_id:
        return
    route = r.get_route(merchant_id, shipment.route_id)
    if route is None or route.status != "active":
        return
    raw_state, version = r.geofence_state(shipment.driver_id)
    progress = _progress_from_json(shipment.driver_id, raw_state)
    motion = progress.motion
    if motion.last_ms is None:
        return  # no position yet: the first ping computes the ETAs
    occurred = image.get("occurred_at")
    occurred_ms = to_ms(datetime.fromisoformat(str(occurred))) if occurred else motion.last_ms
    here = GeoFix(shipment.driver_id, max(motion.last_ms, occurred_ms), motion.last_lat, motion.last_lng)
    motion.start_leg(here.fix_ms, here.lat, here.lng)  # the next leg starts at this door
    update_etas(r, route, here, progress, merchant_context(r, merchant_id))
    with contextlib.suppress(ConditionFailed):  # a ping was processed meanwhile, from a newer position
        r.save_geofence_state(shipment.driver_id, _progress_to_json(progress), version)


def _zones_inside_elsewhere(r: Repository, merchant_id: str, state: DriverState,
                            indexes: Sequence[FenceIndex]) -> dict[str, Fence]:
    """Zones the driver is inside that the indexes near this fix do not hold: read by id, so the exit fires."""
    extra: dict[str, Fence] = {}
    for fence_id in state.fences:
        if fence_id.startswith(ZONE_PREFIX) and all(index.get(fence_id) is None for index in indexes):
            zone = r.get_zone(merchant_id, fence_id)
            if zone is not None:  # a deleted zone: the state is dropped, no event
                extra[fence_id] = fence_from_dict(json.loads(zone.fence))
    return extra


def _record_zone_event(r: Repository, merchant_id: str, event: GeofenceEvent, zones: ZoneCell) -> None:
    name = zones.names.get(event.fence_id)
    if name is None:
        zone = r.get_zone(merchant_id, event.fence_id)
        name = zone.name if zone is not None else event.fence_id
    item = zone_event_item(merchant_id, event.driver_id, event.event_id, event.kind, event.fence_id, name,
                           from_ms(event.fix_ms), event.lat, event.lng)
    if r.put_zone_event_once(item):
        metrics.add_metric(name="ZoneEvents", unit=MetricUnit.Count, value=1)
        logger.info("zone event", extra={"kind": event.kind, "zone_id": event.fence_id})


_ON_THE_WAY = (S.OUT_FOR_DELIVERY, S.APPROACHING)
_speed_cache: dict[str, tuple[SpeedTable, float]] = {}


def route_speed_table(r: Repository, route: RouteItem, stops: Sequence[Stop], fix: GeoFix) -> SpeedTable:
    """Observed speeds for the cells along the route's remaining legs and the hours ahead; cached per route."""
    cached = _speed_cache.get(route.route_id)
    if cached is not None and time.monotonic() - cached[1] < SPEED_CACHE_S:
        return cached[0]
    plan = plan_route(stops)
    first = stops[0]
    cells = {c for legs in plan.leg_cells for c in legs}
    cells.update(leg_cells(fix.lat, fix.lng, first.lat, first.lng, haversine_m(fix.lat, fix.lng, first.lat, first.lng),
                           plan.res))
    hours = {hour_of_week(fix.fix_ms + h * HOUR_MS) for h in range(SPEED_HOURS_AHEAD)}
    table = load_speed_table(r, cells, hours)
    _speed_cache[route.route_id] = (table, time.monotonic())
    return table


def update_etas(r: Repository, route: RouteItem, fix: GeoFix, progress: DriverProgress,
                context: MerchantContext) -> list[StopEta]:
    """Recompute ETA windows for the route's remaining stops; emit 'delayed' once when one leaves its promise,
    and mark 'approaching' the stops now within the merchant's minutes."""
    progress.eta_at_ms, progress.eta_lat, progress.eta_lng = fix.fix_ms, fix.lat, fix.lng
    shipments = r.get_shipments(route.merchant_id, [str(s) for s in route.stops])
    remaining = [shipments[str(s)] for s in route.stops
                 if str(s) in shipments and shipments[str(s)].status in _ON_THE_WAY]
    if not remaining:
        return []
    stops = [Stop(s.shipment_id, float(s.lat), float(s.lng)) for s in remaining]
    table = route_speed_table(r, route, stops, fix)
    start_ms, motion = fix.fix_ms, progress.motion
    serving = [progress.fences.fences[sid].since_ms for sid in progress.fences.fences
               if sid in shipments and shipments[sid].status == S.ARRIVED]
    if serving:  # at a door: the next leg starts when its service time is over, and nothing is late yet
        start_ms = max(fix.fix_ms, min(serving) + int(context.service_s * 1000))
        motion = replace(motion, leg_start_ms=None)
    etas = estimate_route((fix.lat, fix.lng), start_ms, stops, table, motion, context.eta_params())
    approach_ms = context.settings.approach_minutes * 60_000
    for shipment, eta in zip(remaining, etas, strict=True):
        r.set_eta(shipment, eta.eta_ms, eta.low_ms, eta.high_ms)
        promised = PromisedWindow(to_ms(shipment.window_start), to_ms(shipment.window_end))
        if delay_event_due(eta, promised, shipment.delayed_at is not None):
            event = _timeline_event(route.merchant_id, shipment.shipment_id, "delayed",
                                    f"delayed-{shipment.shipment_id}", fix.fix_ms)
            if r.mark_delayed(shipment, event):
                metrics.add_metric(name="ShipmentsDelayed", unit=MetricUnit.Count, value=1)
        if approach_ms > 0 and shipment.status == S.OUT_FOR_DELIVERY and eta.eta_ms - fix.fix_ms <= approach_ms \
                and not progress.fences.inside(shipment.shipment_id):
            _mark_approaching(r, route.merchant_id, shipment, fix, progress)
    return etas


def _timeline_event(merchant_id: str, shipment_id: str, kind: str, event_id: str, fix_ms: int,
                    from_status: str | None = None, to_status: str | None = None) -> EventItem:
    """A system event at the fix's time, with a deterministic id so a replay finds it already there."""
    return event_item(merchant_id, shipment_id, event_id, kind, "system", from_ms(fix_ms),
                      datetime.now(UTC), from_status, to_status)


def _transition(r: Repository, shipment: ShipmentItem, wanted: ShipmentStatus, event: EventItem) -> bool:
    try:
        r.change_statuses([(shipment, wanted, [], event)])
    except ConditionFailed:
        return False  # someone (a retry, the driver) moved it first: nothing to do
    return True


def _apply_geofence_event(r: Repository, merchant_id: str, event: GeofenceEvent, before: DriverState,
                          batch: BatchStatistics | None) -> None:
    shipment = r.get_shipment(merchant_id, event.fence_id)
    if shipment is None:
        return
    if event.kind == "enter":
        if shipment.status in (S.OUT_FOR_DELIVERY, S.APPROACHING):
            _transition(r, shipment, S.ARRIVED, _timeline_event(merchant_id, shipment.shipment_id, "arrived",
                                                                event.event_id, event.fix_ms, shipment.status,
                                                                S.ARRIVED))
    else:
        kind = "departed" if event.kind == "exit" else "dwell"
        first_time = r.put_event_once(_timeline_event(merchant_id, shipment.shipment_id, kind, event.event_id,
                                                      event.fix_ms))
        stay = before.fences.get(event.fence_id)
        if kind == "departed" and first_time and stay is not None and batch is not None:
            log_dwell = service_dwell_log((event.fix_ms - stay.since_ms) / 1000)
            if log_dwell is not None:  # the stay at the door teaches the merchant's service time
                batch.counters.append(service_time_counter(merchant_id, log_dwell))
    logger.info("geofence event", extra={"kind": event.kind, "shipment_id": shipment.shipment_id})


def _approach_by_distance(r: Repository, merchant_id: str, fix: GeoFix, fences: RouteFences,
                          progress: DriverProgress, radius_m: float) -> None:
    """Mark stops the driver is within the merchant's metres of as approaching (once: no way back)."""
    if radius_m <= 0:
        return
    for shipment_id, (lat, lng) in fences.stops.items():
        if shipment_id in progress.approach_settled or progress.fences.inside(shipment_id) \
                or haversine_m(fix.lat, fix.lng, lat, lng) > radius_m:
            continue
        shipment = r.get_shipment(merchant_id, shipment_id)
        if shipment is not None:
            _mark_approaching(r, merchant_id, shipment, fix, progress)


def _mark_approaching(r: Repository, merchant_id: str, shipment: ShipmentItem, fix: GeoFix,
                      progress: DriverProgress) -> None:
    shipment_id = shipment.shipment_id
    if shipment.status != S.OUT_FOR_DELIVERY:
        if shipment.status not in (S.CREATED, S.ASSIGNED):
            progress.approach_settled.add(shipment_id)  # past it: never ask again
        return
    progress.approach_settled.add(shipment_id)
    _transition(r, shipment, S.APPROACHING, _timeline_event(merchant_id, shipment_id, "approaching",
                                                            f"approach-{shipment_id}", fix.fix_ms, shipment.status,
                                                            S.APPROACHING))
