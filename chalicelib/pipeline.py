"""The DynamoDB stream consumer: pings become geofence events and lifecycle transitions.

One handler for Lambda and the local stream runner. The powertools batch
processor reports failed records individually, so one bad record never fails
or re-drives its whole batch. Everything here is safe to run twice: geofence
event ids are deterministic, timeline writes are conditional on the id, and
status changes are conditional on the status that was read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib.domain.eta import (
    DriverMotion,
    PromisedWindow,
    SpeedTable,
    Stop,
    delay_event_due,
    estimate_route,
    should_recompute,
)
from chalicelib.domain.geo import haversine_m
from chalicelib.domain.geofence import (
    DriverState,
    FenceIndex,
    FenceState,
    GeofenceEvent,
    GeofenceParams,
    GeoFix,
    evaluate,
    stop_fence,
)
from chalicelib.domain.lifecycle import ShipmentStatus
from chalicelib.observability import MetricUnit, logger, metrics
from chalicelib.storage.repository import ConditionFailed, Repository
from chalicelib.storage.tables import EventItem, RouteItem, ShipmentItem, event_item

S = ShipmentStatus
APPROACH_RADIUS_M = 500.0
ROUTE_CACHE_S = 30.0
GEOFENCE_PARAMS = GeofenceParams()

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
_repo: Repository | None = None


def repo() -> Repository:
    global _repo
    if _repo is None:
        _repo = Repository()
    return _repo


def handle_stream_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=handle_record, processor=processor,
                                         context=context))


def handle_record(record: DynamoDBRecord) -> None:
    if record.event_name is None or record.event_name.name != "INSERT" or record.dynamodb is None:
        return
    image = record.dynamodb.new_image or {}
    if str(image.get("SK", "")).startswith("PING#"):
        apply_ping(repo(), image)


@dataclass
class RouteFences:
    route_id: str
    index: FenceIndex
    stops: dict[str, tuple[float, float]]  # shipment id -> stop location
    loaded_at: float


_route_cache: dict[str, RouteFences] = {}


def route_fences(r: Repository, route: RouteItem) -> RouteFences:
    """The route's stop fences, indexed by H3 cell; cached briefly per warm container."""
    cached = _route_cache.get(route.route_id)
    if cached is not None and time.monotonic() - cached.loaded_at < ROUTE_CACHE_S:
        return cached
    shipments = r.get_shipments(route.merchant_id, [str(s) for s in route.stops])
    stops = {sid: (float(s.lat), float(s.lng)) for sid, s in shipments.items()}
    fences = RouteFences(route.route_id, FenceIndex(stop_fence(sid, lat, lng) for sid, (lat, lng) in stops.items()),
                         stops, time.monotonic())
    _route_cache[route.route_id] = fences
    return fences


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


def apply_ping(r: Repository, image: dict[str, Any]) -> list[GeofenceEvent]:
    """Run one stored ping through the driver's route geofences and apply what it means."""
    merchant_id, driver_id = str(image["merchant_id"]), str(image["driver_id"])
    fix = GeoFix(driver_id, int(image["fix_ms"]), float(image["lat"]), float(image["lng"]),
                 float(image["accuracy"]) if image.get("accuracy") is not None else None)
    day = datetime.fromtimestamp(fix.fix_ms / 1000, UTC).date().isoformat()
    route = r.active_route(merchant_id, driver_id, day)
    if route is None:
        return []
    fences = route_fences(r, route)
    raw_state, version = r.geofence_state(driver_id)
    progress = _progress_from_json(driver_id, raw_state)
    before = _progress_to_json(progress)
    state = progress.fences
    new_state, events = evaluate(fix, state, fences.index, GEOFENCE_PARAMS)
    for event in events:
        _apply_geofence_event(r, merchant_id, event)
    progress.fences = new_state
    is_news = new_state.last_fix_ms is not None and new_state.last_fix_ms > (state.last_fix_ms or 0)
    if is_news:
        _approach(r, merchant_id, fix, fences, progress)
        progress.motion.update(fix)
        if any(e.kind == "exit" for e in events):
            progress.motion.start_leg(fix.fix_ms, fix.lat, fix.lng)
        moved = haversine_m(progress.eta_lat, progress.eta_lng, fix.lat, fix.lng) if progress.eta_at_ms else 0.0
        if events or should_recompute(progress.eta_at_ms, fix.fix_ms, moved):
            update_etas(r, route, fix, progress)
            progress.eta_at_ms, progress.eta_lat, progress.eta_lng = fix.fix_ms, fix.lat, fix.lng
    after = _progress_to_json(progress)
    if after != before:
        r.save_geofence_state(driver_id, after, version)
    if events:
        metrics.add_metric(name="GeofenceEvents", unit=MetricUnit.Count, value=len(events))
    return events


# Observed speeds per cell and hour are not yet aggregated from the stream: until they are, the
# table is empty and the driver's recent moving speed (then the default) sets the pace.
_SPEED_TABLE = SpeedTable()
_ON_THE_WAY = (S.OUT_FOR_DELIVERY, S.APPROACHING)


def update_etas(r: Repository, route: RouteItem, fix: GeoFix, progress: DriverProgress) -> None:
    """Recompute ETA windows for the route's remaining stops; emit 'delayed' once when one leaves its promise."""
    shipments = r.get_shipments(route.merchant_id, [str(s) for s in route.stops])
    remaining = [shipments[str(s)] for s in route.stops
                 if str(s) in shipments and shipments[str(s)].status in _ON_THE_WAY]
    if not remaining:
        return
    stops = [Stop(s.shipment_id, float(s.lat), float(s.lng)) for s in remaining]
    etas = estimate_route((fix.lat, fix.lng), fix.fix_ms, stops, _SPEED_TABLE, progress.motion)
    for shipment, eta in zip(remaining, etas, strict=True):
        r.set_eta(shipment, eta.eta_ms, eta.low_ms, eta.high_ms)
        promised = PromisedWindow(_ms(shipment.window_start), _ms(shipment.window_end))
        if delay_event_due(eta, promised, shipment.delayed_at is not None):
            event = _timeline_event(route.merchant_id, shipment.shipment_id, "delayed",
                                    f"delayed-{shipment.shipment_id}", fix.fix_ms)
            if r.mark_delayed(shipment, event):
                metrics.add_metric(name="ShipmentsDelayed", unit=MetricUnit.Count, value=1)


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _timeline_event(merchant_id: str, shipment_id: str, kind: str, event_id: str, fix_ms: int,
                    from_status: str | None = None, to_status: str | None = None) -> EventItem:
    """A system event at the fix's time, with a deterministic id so a replay finds it already there."""
    return event_item(merchant_id, shipment_id, event_id, kind, "system", datetime.fromtimestamp(fix_ms / 1000, UTC),
                      datetime.now(UTC), from_status, to_status)


def _transition(r: Repository, shipment: ShipmentItem, wanted: ShipmentStatus, event: EventItem) -> bool:
    try:
        r.change_statuses([(shipment, wanted, [], event)])
    except ConditionFailed:
        return False  # someone (a retry, the driver) moved it first: nothing to do
    return True


def _apply_geofence_event(r: Repository, merchant_id: str, event: GeofenceEvent) -> None:
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
        r.put_event_once(_timeline_event(merchant_id, shipment.shipment_id, kind, event.event_id, event.fix_ms))
    logger.info("geofence event", extra={"kind": event.kind, "shipment_id": shipment.shipment_id})


def _approach(r: Repository, merchant_id: str, fix: GeoFix, fences: RouteFences, progress: DriverProgress) -> None:
    """Mark stops the driver is nearing as approaching (once: the lifecycle has no way back)."""
    for shipment_id, (lat, lng) in fences.stops.items():
        if shipment_id in progress.approach_settled or progress.fences.inside(shipment_id) \
                or haversine_m(fix.lat, fix.lng, lat, lng) > APPROACH_RADIUS_M:
            continue
        shipment = r.get_shipment(merchant_id, shipment_id)
        if shipment is None or shipment.status != S.OUT_FOR_DELIVERY:
            if shipment is None or shipment.status not in (S.CREATED, S.ASSIGNED):
                progress.approach_settled.add(shipment_id)
            continue
        progress.approach_settled.add(shipment_id)
        event_id = f"approach-{shipment_id}"
        _transition(r, shipment, S.APPROACHING, _timeline_event(merchant_id, shipment_id, "approaching", event_id,
                                                                fix.fix_ms, shipment.status, S.APPROACHING))
