"""The DynamoDB stream consumer: a batch's pings, grouped per driver, become geofence events, lifecycle
transitions and one ETA item per route.

One handler for Lambda and the local stream runner. A batch is cut into its fix chunk inserts (one per
accepted request and driver, `storage/fix_chunks.py`; PING inserts of the one-item-per-fix format too),
grouped by driver, and its timeline EVENT inserts. Each driver's fixes are processed together, in fix-time order:
one read of the driver's state item, the route's stops from the warm container (or one BatchGetItem),
one conditional (versioned) write of the state, at most one write of the route's ETA item, and the
transitions the fixes cause. The state item caches the active route's id and its stops' statuses, so a
ping reads no shipment. A record that cannot be parsed fails alone; a driver whose processing fails
reports all its records (Lambda retries from the lowest). Everything is safe to run twice: geofence event
ids are deterministic, timeline writes are conditional on the id, transitions are conditional on the
status that was cached, the state write on its version (a lost race re-reads and re-runs), and the ETA
item only moves forward in fix time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from cachetools import TTLCache

from chalicelib.core.config import get_settings
from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.core.times import to_ms
from chalicelib.driver_reports import service as driver_reports
from chalicelib.exceptions import service as exceptions
from chalicelib.exceptions.rules import ExceptionKind, StillSince, long_stop_due, route_behind_due, track_still
from chalicelib.fleet.models import MerchantSettings
from chalicelib.fleet.presence import DRIVER_OFF_DUTY, DRIVER_OFFLINE, DRIVER_ONLINE, driver_seen
from chalicelib.fleet.presence_rules import due_moves
from chalicelib.fleet.service import MerchantProfile, cached_merchant_profile
from chalicelib.geo.cells import EARTH_RADIUS_M, haversine_m
from chalicelib.geo.day_window import MAX_ESTIMATE_DISTANCE_M
from chalicelib.geo.eta import (
    DEFAULT_PARAMS,
    HOUR_MS,
    DriverMotion,
    ErrorModel,
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
from chalicelib.pipeline import honesty, honesty_rules
from chalicelib.pipeline.honesty import eta_honesty as eta_honesty  # the analytics' reader (issue 16)
from chalicelib.pipeline.store import (
    Counter,
    load_service_time_s,
    load_speed_table,
    service_time_counter,
    speed_counters,
)
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.route_rules import ROUTE_STOP_DONE
from chalicelib.storage.dead_letters import keep_failed
from chalicelib.storage.fix_chunks import CHUNK_PREFIX, decode_fixes
from chalicelib.storage.repository import ConditionFailed, Repository
from chalicelib.storage.tables import (
    ROUTE_ETA_RETENTION_DAYS,
    ROUTE_ETA_SK,
    EventItem,
    RouteEtaItem,
    RouteItem,
    ShipmentItem,
    encode_etas,
    event_item,
    merchant_pk,
    route_eta_pk,
    zone_event_item,
)

S = ShipmentStatus
ROUTE_CACHE_S = 600.0  # a route's stops and fences (a stop's change bumps the driver's stops_version: reloaded)
STATUS_REFRESH_S = 300.0  # the cached stop statuses are re-read at least this often (changes made elsewhere)
MERCHANT_CACHE_S = 60.0  # settings and the learned service time
ZONE_CACHE_S = 30.0  # a new or deleted zone takes effect within this
SPEED_CACHE_S = 600.0  # observed speeds move slowly; reread a route's cells every 10 minutes
SPEED_HOURS_AHEAD = 12  # the hours of week a route's ETA may need from the speed table
SPEED_MAX_ACCURACY_M = 50.0  # fixes worse than this make up speeds that were never driven
STATE_ATTEMPTS = 4  # a lost state race re-reads and re-runs the driver's fixes (idempotent)
ZONE_PREFIX = "zon_"
GEOFENCE_MAX_ACCURACY_M = GeofenceParams().max_accuracy_m
_ON_THE_WAY = (S.OUT_FOR_DELIVERY, S.APPROACHING)
_NOT_DONE = (*_ON_THE_WAY, S.ARRIVED)  # a driver standing at one of these is at work, not on a long stop

# One character per status in the state item's status string (aligned with the route's stops).
STATUS_CODE = {S.CREATED: "c", S.ASSIGNED: "a", S.OUT_FOR_DELIVERY: "o", S.APPROACHING: "p", S.ARRIVED: "r",
               S.DELIVERED: "d", S.FAILED: "f", S.RESCHEDULED: "s", S.RETURNED: "t", S.CANCELLED: "x"}
CODE_STATUS = {code: status for status, code in STATUS_CODE.items()}
MISSING = "-"  # a stop whose shipment is gone

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

    def absorb(self, other: BatchStatistics) -> None:
        self.speeds.merge(other.speeds)
        self.counters.extend(other.counters)

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


# --- the handler -------------------------------------------------------------------


@dataclass
class DriverFixes:
    merchant_id: str
    fixes: list[GeoFix] = field(default_factory=list)
    sequence_numbers: list[str] = field(default_factory=list)


def handle_stream_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda's DynamoDB stream event in, the partial batch response out."""
    failed: list[str] = []
    drivers: dict[str, DriverFixes] = {}
    lifecycle: list[tuple[str, dict[str, Any]]] = []
    driver_events: list[tuple[str, dict[str, Any]]] = []
    try:
        for raw in event.get("Records", []):
            record = DynamoDBRecord(raw)
            sequence = str((raw.get("dynamodb") or {}).get("SequenceNumber", ""))
            try:
                if record.event_name is None or record.event_name.name != "INSERT" or record.dynamodb is None:
                    continue
                image = record.dynamodb.new_image or {}
                sk = str(image.get("SK", ""))
                if sk.startswith(CHUNK_PREFIX):  # one accepted request's fixes of a driver (fix_chunks)
                    driver_id = str(image["driver_id"])
                    group = drivers.setdefault(driver_id, DriverFixes(str(image["merchant_id"])))
                    group.fixes.extend(fixes_of_chunk(image))
                    group.sequence_numbers.append(sequence)
                elif sk.startswith("PING#"):  # one fix per item, as stored before chunks (records in flight)
                    driver_id = str(image["driver_id"])
                    group = drivers.setdefault(driver_id, DriverFixes(str(image["merchant_id"])))
                    group.fixes.append(fix_of(image))
                    group.sequence_numbers.append(sequence)
                elif sk.startswith("EVENT#") and str(image.get("PK", "")).startswith("DRIVER#"):
                    driver_events.append((sequence, image))  # presence: driver_offline / driver_online
                elif sk.startswith("EVENT#"):
                    lifecycle.append((sequence, image))
            except Exception:
                logger.exception("unreadable stream record", extra={"sequence_number": sequence})
                failed.append(sequence)
        failed.extend(_apply_drivers(repo(), drivers))
        failed.extend(_handle_lifecycles(repo(), lifecycle))
        failed.extend(_handle_driver_events(repo(), driver_events))
    finally:
        _batch.flush(repo())
    if failed:  # their bodies outlive the stream's 24 h (storage/dead_letters.py); nothing on the happy path
        keep_failed("stream_pipeline", event, failed)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in failed]}


def _apply_drivers(r: Repository, drivers: dict[str, DriverFixes]) -> list[str]:
    """Each driver's fixes; returns the sequence numbers of the drivers that failed. A batch's drivers are
    independent (their own state item, route and events), so they run side by side (settings'
    `pipeline_workers`): the function then waits on DynamoDB once per round trip of the batch, not once
    per round trip of every driver. Statistics are gathered per driver and absorbed here, in this thread."""

    def one(item: tuple[str, DriverFixes]) -> tuple[BatchStatistics, list[str]]:
        driver_id, group = item
        stats = BatchStatistics()
        try:
            apply_driver_fixes(r, group.merchant_id, driver_id, group.fixes, stats)
        except Exception:
            logger.exception("driver's fixes failed", extra={"driver_id": driver_id, "records": len(group.fixes)})
            return stats, group.sequence_numbers
        return stats, []

    workers = min(get_settings().pipeline_workers, len(drivers))
    if workers <= 1:
        results = [one(item) for item in drivers.items()]
    else:
        for merchant_id in {g.merchant_id for g in drivers.values()}:
            merchant_context(r, merchant_id)  # warm the merchant caches once, not from every worker
        with ThreadPoolExecutor(workers, thread_name_prefix="driver") as pool:
            results = list(pool.map(one, drivers.items()))
    failed: list[str] = []
    for stats, sequences in results:
        _batch.absorb(stats)
        failed.extend(sequences)
    return failed


def _handle_lifecycles(r: Repository, lifecycle: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The batch's lifecycle records; returns the sequence numbers that failed. One shipment's records run in
    stream order (its messages go out in the order things happened); shipments run side by side, as drivers do:
    each record is a few round trips (the ledger's claim, the send, the ledger's "sent")."""
    if not lifecycle:  # a batch of pings only: nothing to count, and analytics is never imported for it
        return []
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for sequence, image in lifecycle:
        groups.setdefault(str(image.get("shipment_id", "")), []).append((sequence, image))

    def one(group: list[tuple[str, dict[str, Any]]]) -> list[str]:
        failed: list[str] = []
        for sequence, image in group:
            try:
                handle_lifecycle(r, image)
            except Exception:
                logger.exception("lifecycle record failed", extra={"sequence_number": sequence})
                failed.append(sequence)
        return failed

    workers = min(get_settings().pipeline_workers, len(groups))
    if workers <= 1:
        results = [one(group) for group in groups.values()]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="lifecycle") as pool:
            results = list(pool.map(one, groups.values()))
    failed = [sequence for failed in results for sequence in failed]
    try:  # the performance figures: the whole batch at once (a few requests, not two per event), each once
        from chalicelib.analytics.service import on_lifecycle_batch

        on_lifecycle_batch(r, [image for _, image in lifecycle])
    except Exception:
        logger.exception("analytics failed for the batch's lifecycle records")
        failed = sorted({*failed, *(sequence for sequence, _ in lifecycle)})
    return failed


# Who hears of a driver's presence events besides the webhook sender (which reads the stream itself): the
# exception queue opens a driver_offline exception per episode and resolves it when the driver is back.
DriverEventHandler = Callable[[Repository, str, str, str, datetime, "str | None"], None]
DRIVER_EVENT_HANDLERS: list[DriverEventHandler] = [exceptions.on_driver_event]


def _handle_driver_events(r: Repository, records: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The batch's `driver_offline` / `driver_online` / `driver_off_duty` events, in stream order; the sequence
    numbers that failed. Handlers must be idempotent (a redelivered batch calls them again)."""
    failed: list[str] = []
    for sequence, image in records:
        kind = str(image.get("type", ""))
        if kind not in (DRIVER_OFFLINE, DRIVER_ONLINE, DRIVER_OFF_DUTY):
            continue
        try:
            occurred = datetime.fromisoformat(str(image["occurred_at"]).replace("Z", "+00:00"))
            reason = (image.get("data") or {}).get("reason")
            for handler in DRIVER_EVENT_HANDLERS:
                handler(r, str(image["merchant_id"]), str(image["driver_id"]), kind, occurred,
                        str(reason) if reason else None)
        except Exception:
            logger.exception("driver event failed", extra={"sequence_number": sequence})
            failed.append(sequence)
    return failed


def handle_lifecycle(r: Repository, image: dict[str, Any]) -> None:
    """One lifecycle record's effects (analytics counts the batch's together: `_handle_lifecycles`)."""
    if image.get("type") == "message_sent":  # a driver wrote: messaging tells a recipient whose page is closed
        from chalicelib.messaging.service import on_message_sent

        on_message_sent(r, image)
        return
    if image.get("to_status") in (S.DELIVERED, S.FAILED):
        apply_stop_completed(r, image)
    if image.get("to_status") in ROUTE_STOP_DONE:  # the route's last stop? then the route completes
        from chalicelib.shipments.routes import complete_route_if_done

        complete_route_if_done(r, str(image["merchant_id"]), str(image["shipment_id"]))
    notify(r, image)  # the recipient's messages: notifications owns them
    exceptions.on_lifecycle(r, image)  # late, failed attempts, delivered far: the dispatcher's queue


def fixes_of_chunk(image: dict[str, Any]) -> list[GeoFix]:
    driver_id = str(image["driver_id"])
    return [GeoFix(driver_id, row[0], row[1], row[2], row[3], row[4]) for row in decode_fixes(str(image["f"]))]


def fix_of(image: dict[str, Any]) -> GeoFix:
    accuracy = float(image["accuracy"]) if image.get("accuracy") is not None else None
    return GeoFix(str(image["driver_id"]), int(image["fix_ms"]), float(image["lat"]), float(image["lng"]), accuracy)


# --- cached context ----------------------------------------------------------------


@dataclass
class MerchantContext:
    """What the pipeline needs of a merchant: its profile (fleet, read at most once a minute) and the learned
    service time (its counters, read as often)."""

    profile: MerchantProfile
    service_s: float
    errors: ErrorModel | None = None  # the merchant's calibrated window (honesty.merchant_errors)

    @property
    def settings(self) -> MerchantSettings:
        return self.profile.settings

    def geofence_params(self) -> GeofenceParams:
        return GeofenceParams(dwell_after_s=self.settings.dwell_after_s)

    def eta_params(self) -> EtaParams:
        return replace(DEFAULT_PARAMS, default_service_s=self.service_s)


_service_times: TTLCache[str, float] = TTLCache(maxsize=1024, ttl=MERCHANT_CACHE_S)
_service_times_lock = threading.Lock()  # a TTLCache is not thread-safe, and a batch's drivers run side by side


def merchant_context(r: Repository, merchant_id: str) -> MerchantContext:
    with _service_times_lock:
        service_s = _service_times.get(merchant_id)
    if service_s is None:
        service_s = load_service_time_s(r, merchant_id, DEFAULT_PARAMS.default_service_s)
        with _service_times_lock:
            _service_times[merchant_id] = service_s
    return MerchantContext(cached_merchant_profile(r, merchant_id), service_s, honesty.merchant_errors(r, merchant_id))


@dataclass
class RouteStops:
    """A route's stops as the pipeline needs them: order, locations, promised windows, fences by H3 cell.

    Built from one BatchGetItem of the route's shipments and kept in the warm container (a route's stop list
    never changes once created); `statuses` is what that read saw, the seed of a driver's status cache.
    """

    route_id: str
    merchant_id: str
    ids: list[str]
    where: dict[str, tuple[float, float]]
    promised: dict[str, PromisedWindow]
    index: FenceIndex
    statuses: str
    delayed: frozenset[int]
    loaded_at: float
    # Per stop, the earliest instant an event of this attempt may be dated: the later of the shipment's creation
    # and the route's start (fixes timed before it, posted after, are clamped to it; docs/eta.md, "One clock").
    floor_ms: dict[str, int] = field(default_factory=dict)
    stops_version: int = 0  # the driver's GeofenceStateItem.stops_version this was read at

    def position(self, shipment_id: str) -> int:
        return self.ids.index(shipment_id)

    def dated(self, shipment_id: str, fix_ms: int) -> int:
        """The fix's time, never before the stop's floor."""
        return max(fix_ms, self.floor_ms.get(shipment_id, fix_ms))


_route_cache: dict[str, RouteStops] = {}
# What a batch reads of the driver's active route: not its stop list (a hundred ids, parsed every batch), which
# route_stops reads once per route and container.
ACTIVE_ROUTE_ATTRIBUTES = ("PK", "SK", "route_id", "merchant_id", "driver_id", "day")
# What build_route_stops reads of a shipment: a 100-stop route's read parses these, not whole shipments.
ROUTE_STOP_ATTRIBUTES = ("shipment_id", "lat", "lng", "window_start", "window_end", "geofence_radius_m", "status",
                         "delayed_at", "created_at")


def route_stops(r: Repository, route: RouteItem, default_radius_m: float, fresh: bool = False,
                stops_version: int = 0) -> RouteStops:
    cached = _route_cache.get(route.route_id)
    if not fresh and cached is not None and cached.stops_version == stops_version \
            and time.monotonic() - cached.loaded_at < ROUTE_CACHE_S:
        return cached
    if route.stops is None:  # read without its stop list (ACTIVE_ROUTE_ATTRIBUTES): read it whole, this once
        route = r.get_route(route.merchant_id, route.route_id) or route
    ids = [str(s) for s in route.stops or []]
    shipments = r.get_shipments(route.merchant_id, ids, attributes=ROUTE_STOP_ATTRIBUTES)
    result = replace(build_route_stops(route.route_id, route.merchant_id, ids, shipments, default_radius_m,
                                      to_ms(route.started_at) if route.started_at is not None else None),
                     stops_version=stops_version)
    _route_cache[route.route_id] = result
    return result


def build_route_stops(route_id: str, merchant_id: str, ids: list[str], shipments: dict[str, ShipmentItem],
                      default_radius_m: float, started_ms: int | None = None) -> RouteStops:
    present = [shipments[sid] for sid in ids if sid in shipments]
    floors = {s.shipment_id: max(to_ms(s.created_at) if s.created_at is not None else 0, started_ms or 0)
              for s in present}
    return RouteStops(
        route_id, merchant_id, ids,
        where={s.shipment_id: (float(s.lat), float(s.lng)) for s in present},
        promised={s.shipment_id: PromisedWindow(to_ms(s.window_start), to_ms(s.window_end)) for s in present},
        index=FenceIndex(stop_fence(s.shipment_id, float(s.lat), float(s.lng),
                                    float(s.geofence_radius_m) if s.geofence_radius_m else default_radius_m)
                         for s in present),
        statuses="".join(STATUS_CODE.get(S(shipments[sid].status), MISSING) if sid in shipments else MISSING
                         for sid in ids),
        delayed=frozenset(i for i, sid in enumerate(ids) if sid in shipments
                          and shipments[sid].delayed_at is not None),
        loaded_at=time.monotonic(), floor_ms={sid: ms for sid, ms in floors.items() if ms > 0})


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


# --- the driver's state item ----------------------------------------------------------


@dataclass
class DriverProgress:
    """What the pipeline keeps per driver between batches: geofence state, motion, last ETA recompute, and
    the active route's id with its stops' statuses (one character each, in route order) and delayed flags."""

    fences: DriverState
    motion: DriverMotion
    eta_at_ms: int | None = None
    eta_lat: float = 0.0
    eta_lng: float = 0.0
    route_id: str | None = None
    statuses: str = ""
    delayed: set[int] = field(default_factory=set)
    statuses_at: float = 0.0  # wall-clock epoch seconds the statuses were read from the shipments
    stops_version: int = 0  # the GeofenceStateItem.stops_version the route's stops were last read at
    still: StillSince | None = None  # where and since when the driver has not moved on (long_stop)
    behind_route: str | None = None  # the route already reported behind plan (route_behind, once per route)
    presence_due_ms: int | None = None  # the offline due time last written to the driver's presence item
    reports: dict[str, Any] | None = None  # driver reports' running trip/stop/behaviour state (driver_reports)
    shown: dict[str, list[list[int]]] = field(default_factory=dict)  # ETAs shown at 30/15/5 min (honesty_rules)

    def status(self, index: int) -> ShipmentStatus | None:
        code = self.statuses[index] if 0 <= index < len(self.statuses) else MISSING
        return CODE_STATUS.get(code)

    def set_status(self, index: int, status: ShipmentStatus) -> None:
        if 0 <= index < len(self.statuses):
            self.statuses = self.statuses[:index] + STATUS_CODE[status] + self.statuses[index + 1:]

    def adopt(self, stops: RouteStops) -> None:
        self.route_id, self.statuses, self.delayed = stops.route_id, stops.statuses, set(stops.delayed)
        self.statuses_at = time.time()


def progress_from_json(driver_id: str, raw: str | None) -> DriverProgress:
    if not raw:
        return DriverProgress(DriverState(driver_id), DriverMotion())
    data = json.loads(raw)
    fences = DriverState(driver_id, data.get("last_fix_ms"),
                         {k: FenceState(v["since_ms"], v.get("dwell_fired", False))
                          for k, v in data["fences"].items()})
    eta = data.get("eta") or {}
    route = data.get("route") or {}
    still = data.get("still")
    progress = DriverProgress(fences, DriverMotion.from_dict(data.get("motion") or {}), eta.get("at_ms"),
                          eta.get("lat", 0.0), eta.get("lng", 0.0), route.get("id"), route.get("st", ""),
                          set(route.get("dl", [])), float(route.get("at", 0.0)), int(route.get("sv", 0)),
                          StillSince(int(still[0]), float(still[1]), float(still[2]), bool(still[3]))
                          if still else None, route.get("bh"), data.get("pd"), data.get("rp"))
    progress.shown = honesty.shown_from_state(data)
    return progress


def progress_to_json(progress: DriverProgress) -> str:
    state = progress.fences
    data: dict[str, Any] = {
        "last_fix_ms": state.last_fix_ms,
        "fences": {k: {"since_ms": v.since_ms, "dwell_fired": v.dwell_fired} for k, v in state.fences.items()},
        "motion": progress.motion.to_dict(),
        "eta": {"at_ms": progress.eta_at_ms, "lat": progress.eta_lat, "lng": progress.eta_lng},
    }
    if progress.presence_due_ms is not None:
        data["pd"] = progress.presence_due_ms
    if progress.shown:
        data["eh"] = progress.shown
    if progress.reports is not None:
        data["rp"] = progress.reports
    if progress.route_id is not None:
        data["route"] = {"id": progress.route_id, "st": progress.statuses, "dl": sorted(progress.delayed),
                         "at": round(progress.statuses_at, 3), "sv": progress.stops_version}
        if progress.behind_route is not None:
            data["route"]["bh"] = progress.behind_route
    if progress.still is not None:
        still = progress.still
        data["still"] = [still.since_ms, round(still.lat, 6), round(still.lng, 6), int(still.flagged)]
    return json.dumps(data, separators=(",", ":"))


# --- what a driver's fixes mean (pure, given its ports) ----------------------------------


@dataclass(frozen=True)
class Transition:
    shipment_id: str
    from_status: ShipmentStatus
    to_status: ShipmentStatus
    kind: str
    event_id: str
    fix_ms: int


@dataclass
class Effects:
    """What processing a driver's fixes asks the storage to do, in order."""

    transitions: list[Transition] = field(default_factory=list)
    timeline: list[tuple[str, str, str, int]] = field(default_factory=list)  # (shipment id, kind, event id, ms)
    zone_events: list[tuple[GeofenceEvent, str | None]] = field(default_factory=list)  # (event, zone name)
    delayed: list[tuple[str, int]] = field(default_factory=list)  # (shipment id, fix ms)
    eta: tuple[int, list[StopEta]] | None = None  # the last recompute: (fix ms, remaining stops' ETAs)
    exceptions: list[exceptions.Opening] = field(default_factory=list)  # long stops, a route behind plan
    moved_on_ms: int | None = None  # the driver left a stop reported as long: its exception resolves
    events: list[GeofenceEvent] = field(default_factory=list)
    stats: BatchStatistics = field(default_factory=BatchStatistics)


@dataclass
class Ports:
    """What the pure step reads from outside: zones near a fix, a zone by id, the speed table for a route."""

    zones_near: Callable[[str], ZoneCell]
    zone_by_id: Callable[[str], Fence | None]
    speed_table: Callable[[Sequence[Stop], GeoFix], SpeedTable]


def _fix_order(fix: GeoFix) -> tuple[int, float, float, float]:
    acc = fix.accuracy
    return (fix.fix_ms, fix.lat, fix.lng, -1.0 if acc is None or not acc >= 0.0 else acc)


def news_in_order(fixes: Sequence[GeoFix], last_fix_ms: int | None) -> list[GeoFix]:
    """The fixes not seen yet, in fix-time order, one per fix time (chosen by content, not arrival order)."""
    out: list[GeoFix] = []
    for fix in sorted(fixes, key=_fix_order):
        if (out and out[-1].fix_ms == fix.fix_ms) or (last_fix_ms is not None and fix.fix_ms <= last_fix_ms):
            continue
        out.append(fix)
    return out


def advance(progress: DriverProgress, fixes: Sequence[GeoFix], stops: RouteStops | None,
            context: MerchantContext, ports: Ports) -> Effects:
    """Run a driver's fixes (any order, duplicates allowed) through its stop fences and zones, in fix-time
    order; update `progress` and return what to write. Deterministic in the fixes' set and the progress."""
    effects = Effects()
    params = context.geofence_params()
    for fix in news_in_order(fixes, progress.fences.last_fix_ms):
        _advance_one(progress, fix, stops, context, params, ports, effects)
    return effects


def _advance_one(progress: DriverProgress, fix: GeoFix, stops: RouteStops | None, context: MerchantContext,
                 params: GeofenceParams, ports: Ports, effects: Effects) -> None:
    state = progress.fences
    zones = ports.zones_near(str(h3.latlng_to_cell(fix.lat, fix.lng, 10)))
    indexes = [zones.index] if stops is None else [stops.index, zones.index]
    extra = {fid: fence for fid in state.fences if fid.startswith(ZONE_PREFIX)
             and all(index.get(fid) is None for index in indexes)
             for fence in [ports.zone_by_id(fid)] if fence is not None}
    new_state, events = evaluate(fix, state, CombinedLookup(indexes, extra), params)
    effects.events.extend(events)
    stop_events = False
    for event in events:
        if event.fence_id.startswith(ZONE_PREFIX):
            effects.zone_events.append((event, zones.names.get(event.fence_id)))
        elif stops is not None and event.fence_id in stops.where:
            stop_events = True
            _stop_event(progress, stops, event, state, effects)
    if stops is not None:
        stop_events = _arrived_while_inside(progress, stops, new_state, fix, effects) or stop_events
    progress.fences = new_state
    accuracy = fix.accuracy
    # A fix too vague for the geofences (Wi-Fi or cell positioning) must not move anything else either:
    # no approaching by distance, no motion, no ETA from a position that may be kilometres off.
    if accuracy is not None and accuracy > GEOFENCE_MAX_ACCURACY_M:
        return
    motion = progress.motion
    # Time inside a fence (at a door, in the depot) is service time, and its GPS jitter would read as
    # slow driving: only fixes outside every fence teach the speed table.
    if motion.last_ms is not None and not state.fences and not new_state.fences \
            and (accuracy or 0.0) <= SPEED_MAX_ACCURACY_M:
        effects.stats.speeds.observe(GeoFix(fix.driver_id, motion.last_ms, motion.last_lat, motion.last_lng), fix)
    if stops is not None:
        _approach_by_distance(progress, stops, fix, context.settings.approach_metres,
                              context.settings.approach_next_stops, effects)
    motion.update(fix)
    if any(e.kind == "exit" and not e.fence_id.startswith(ZONE_PREFIX) for e in events):
        motion.start_leg(fix.fix_ms, fix.lat, fix.lng)
    moved = haversine_m(progress.eta_lat, progress.eta_lng, fix.lat, fix.lng) if progress.eta_at_ms else 0.0
    if stops is not None and (stop_events or should_recompute(progress.eta_at_ms, fix.fix_ms, moved)):
        recompute(progress, stops, fix, context, ports, effects)


# A stay at a stop is part of its delivery attempt only once the stop has arrived in it: a dwell or an exit
# while the stop was not yet on the way (the driver inside the fence before the route started) is not told.
_ATTEMPTED = frozenset({S.ARRIVED, S.DELIVERED, S.FAILED})


def _stop_event(progress: DriverProgress, stops: RouteStops, event: GeofenceEvent, before: DriverState,
                effects: Effects) -> None:
    index = stops.position(event.fence_id)
    status = progress.status(index)
    if event.kind == "enter":
        if status in _ON_THE_WAY:
            assert status is not None
            effects.transitions.append(Transition(event.fence_id, status, S.ARRIVED, "arrived", event.event_id,
                                                  stops.dated(event.fence_id, event.fix_ms)))
            progress.set_status(index, S.ARRIVED)
        return
    if status not in _ATTEMPTED:
        return
    kind = "departed" if event.kind == "exit" else "dwell"
    effects.timeline.append((event.fence_id, kind, event.event_id, stops.dated(event.fence_id, event.fix_ms)))
    stay = before.fences.get(event.fence_id)
    if kind == "departed" and stay is not None:
        log_dwell = service_dwell_log((event.fix_ms - stay.since_ms) / 1000)
        if log_dwell is not None:  # the stay at the door teaches the merchant's service time
            effects.stats.counters.append(service_time_counter(stops.merchant_id, log_dwell))


def _arrived_while_inside(progress: DriverProgress, stops: RouteStops, inside: DriverState, fix: GeoFix,
                          effects: Effects) -> bool:
    """A stop on the way whose fence the driver is already inside arrives now: the enter happened before the
    stop was on the way (pings timed before the route started, or the route started at the door), so no
    enter event will come. Dated at this fix, never before the stop's floor."""
    arrived = False
    for shipment_id, stay in inside.fences.items():
        if shipment_id not in stops.where:
            continue
        index = stops.position(shipment_id)
        status = progress.status(index)
        if status in _ON_THE_WAY:
            assert status is not None
            effects.transitions.append(Transition(shipment_id, status, S.ARRIVED, "arrived",
                                                  f"inside-{shipment_id}-{stay.since_ms}",
                                                  stops.dated(shipment_id, fix.fix_ms)))
            progress.set_status(index, S.ARRIVED)
            arrived = True
    return arrived


def next_stops(progress: DriverProgress, stops: RouteStops, count: int) -> frozenset[int]:
    """The indexes of the first `count` stops still on the way, in route order, which is ETA order (arrivals
    are cumulative along the route): the only stops 'approaching' may be announced for."""
    out: list[int] = []
    for index in range(len(stops.ids)):
        if len(out) >= count:
            break
        if progress.status(index) in _ON_THE_WAY:
            out.append(index)
    return frozenset(out)


def _approach_by_distance(progress: DriverProgress, stops: RouteStops, fix: GeoFix, radius_m: float,
                          next_count: int, effects: Effects) -> None:
    """Mark the next stops (the merchant's `approach_next_stops`) the driver is within the merchant's metres of
    as approaching (once: no way back). A later stop the driver merely passes on the way is not approached."""
    if radius_m <= 0:
        return
    upcoming = next_stops(progress, stops, next_count)
    # The great-circle distance is at least the latitude difference's arc: a cheap, exact first test for
    # the hundred stops a route may hold, every fix.
    max_dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    for index, shipment_id in enumerate(stops.ids):
        where = stops.where.get(shipment_id)
        if where is None or abs(where[0] - fix.lat) > max_dlat:
            continue
        if progress.status(index) != S.OUT_FOR_DELIVERY or progress.fences.inside(shipment_id) \
                or index not in upcoming:
            continue
        lat, lng = where
        if haversine_m(fix.lat, fix.lng, lat, lng) <= radius_m:
            _approaching(progress, stops, index, shipment_id, fix, effects)


def _approaching(progress: DriverProgress, stops: RouteStops, index: int, shipment_id: str, fix: GeoFix,
                 effects: Effects) -> None:
    effects.transitions.append(Transition(shipment_id, S.OUT_FOR_DELIVERY, S.APPROACHING, "approaching",
                                          f"approach-{shipment_id}", stops.dated(shipment_id, fix.fix_ms)))
    progress.set_status(index, S.APPROACHING)


def recompute(progress: DriverProgress, stops: RouteStops, fix: GeoFix, context: MerchantContext, ports: Ports,
              effects: Effects) -> list[StopEta]:
    """ETA windows for the route's remaining stops (kept for the one write at the end of the batch); 'delayed'
    once when one leaves its promise, 'approaching' for the stops now within the merchant's minutes."""
    progress.eta_at_ms, progress.eta_lat, progress.eta_lng = fix.fix_ms, fix.lat, fix.lng
    remaining = [(i, sid) for i, sid in enumerate(stops.ids) if progress.status(i) in _ON_THE_WAY]
    if not remaining:
        effects.eta = (fix.fix_ms, [])
        return []
    first_lat, first_lng = stops.where[remaining[0][1]]
    if haversine_m(fix.lat, fix.lng, first_lat, first_lng) >= MAX_ESTIMATE_DISTANCE_M:
        # Not on this route's map yet (a phone elsewhere, a stale or wrong position): no estimate, so every
        # reader shows the promised window (geo/day_window.py), and no 'delayed' or 'approaching' from it.
        effects.eta = (fix.fix_ms, [])
        return []
    # A merchant whose drivers wait for the promised window: no stop is served before its window opens.
    waits = context.settings.early_arrival == "wait"
    route_stops_ = [Stop(sid, *stops.where[sid], not_before_ms=stops.promised[sid].start_ms if waits else None)
                    for _, sid in remaining]
    table = ports.speed_table(route_stops_, fix)
    start_ms, motion = fix.fix_ms, progress.motion
    serving = [progress.fences.fences[sid].since_ms for sid in progress.fences.fences
               if sid in stops.where and progress.status(stops.position(sid)) == S.ARRIVED]
    if serving:  # at a door: the next leg starts when its service time is over, and nothing is late yet
        start_ms = max(fix.fix_ms, min(serving) + int(context.service_s * 1000))
        motion = replace(motion, leg_start_ms=None)
    etas = estimate_route((fix.lat, fix.lng), start_ms, route_stops_, table, motion, context.eta_params(),
                          context.errors)
    honesty_rules.remember(progress.shown, etas, fix.fix_ms)
    approach_ms = context.settings.approach_minutes * 60_000
    upcoming = next_stops(progress, stops, context.settings.approach_next_stops)
    for (index, sid), eta in zip(remaining, etas, strict=True):
        if delay_event_due(eta, stops.promised[sid], index in progress.delayed):
            progress.delayed.add(index)
            effects.delayed.append((sid, stops.dated(sid, fix.fix_ms)))
        if approach_ms > 0 and progress.status(index) == S.OUT_FOR_DELIVERY \
                and eta.eta_ms - fix.fix_ms <= approach_ms and not progress.fences.inside(sid) and index in upcoming:
            _approaching(progress, stops, index, sid, fix, effects)
    effects.eta = (fix.fix_ms, etas)
    return etas


def watch_driver(progress: DriverProgress, news: Sequence[GeoFix], route: RouteItem | None,
                 stops: RouteStops | None, context: MerchantContext, effects: Effects) -> None:
    """The dispatcher's exceptions from what the batch already holds (the new fixes, the route's stops and
    statuses, the ETAs just computed): a long stop away from every remaining stop, a route behind its plan."""
    if not news:
        return
    settings = context.settings.exceptions
    for fix in news:
        still = progress.still
        moved = haversine_m(still.lat, still.lng, fix.lat, fix.lng) if still is not None else math.inf
        progress.still = track_still(still, fix.fix_ms, fix.lat, fix.lng, moved)
        if still is not None and still.flagged and progress.still is not still:
            effects.moved_on_ms = fix.fix_ms
    last = news[-1]
    still = progress.still
    assert still is not None
    nearest: float | None = None
    if stops is not None:
        distances = [haversine_m(last.lat, last.lng, *stops.where[sid]) for i, sid in enumerate(stops.ids)
                     if progress.status(i) in _NOT_DONE and sid in stops.where]
        nearest = min(distances) if distances else None
    if long_stop_due(still, last.fix_ms, settings.long_stop_minutes, nearest, context.settings.stop_radius_m):
        progress.still = replace(still, flagged=True)
        minutes = (last.fix_ms - still.since_ms) // 60_000
        effects.exceptions.append(exceptions.Opening(
            ExceptionKind.LONG_STOP, progress.fences.driver_id, str(still.since_ms), _at(still.since_ms),
            {"driver_id": progress.fences.driver_id, "minutes": minutes, "lat": round(still.lat, 6),
             "lng": round(still.lng, 6), "nearest_stop_m": round(nearest or 0.0)},
            driver_id=progress.fences.driver_id, route_id=route.route_id if route else None))
    if route is None or stops is None or effects.eta is None or not effects.eta[1] \
            or progress.behind_route == route.route_id:
        return
    projected = max(e.eta_ms for e in effects.eta[1])
    ends = [w.end_ms for w in stops.promised.values() if w.end_ms is not None]
    planned = max(ends) if ends else None
    if route_behind_due(projected, planned, settings.route_behind_minutes):
        assert planned is not None
        progress.behind_route = route.route_id
        effects.exceptions.append(exceptions.Opening(
            ExceptionKind.ROUTE_BEHIND, route.route_id, route.route_id, _at(last.fix_ms),
            {"route_id": route.route_id, "driver_id": route.driver_id,
             "behind_minutes": (projected - planned) // 60_000, "projected_end": _at(projected).isoformat(),
             "planned_end": _at(planned).isoformat()},
            driver_id=route.driver_id, route_id=route.route_id))


def _at(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


# --- applying it ---------------------------------------------------------------------------


def apply_driver_fixes(r: Repository, merchant_id: str, driver_id: str, fixes: Sequence[GeoFix],
                       batch: BatchStatistics | None = None) -> list[GeofenceEvent]:
    """One driver's fixes of a batch: one state read, the route's stops, the writes they cause, one
    conditional state write. A lost race (another batch saved the state meanwhile) re-reads and re-runs."""
    context = merchant_context(r, merchant_id)
    for _ in range(STATE_ATTEMPTS):
        raw, version, stops_version, declared_offline = r.driver_state(driver_id)
        progress = progress_from_json(driver_id, raw)
        before = progress_to_json(progress)
        news = news_in_order(fixes, progress.fences.last_fix_ms)
        if not news:
            return []  # a redelivered batch: everything in it was processed already
        latest = max(f.fix_ms for f in fixes)
        day = datetime.fromtimestamp(latest / 1000, UTC).date().isoformat()
        route = r.active_route(merchant_id, driver_id, day, attributes=ACTIVE_ROUTE_ATTRIBUTES)
        stops = _stops_for(r, route, progress, context, stops_version) if route is not None else None
        if route is None:
            progress.route_id, progress.statuses, progress.delayed = None, "", set()
        effects = advance(progress, fixes, stops, context, _ports(r, merchant_id, route))
        watch_driver(progress, news, route, stops, context, effects)
        progress.reports = driver_reports.on_fixes(r, merchant_id, driver_id, progress.reports, news,
                                                   list(stops.where.values()) if stops else [],
                                                   context.settings.time_zone)
        _apply_effects(r, merchant_id, route, stops, progress, effects)
        _presence_seen(r, merchant_id, driver_id, latest, context, progress, declared_offline)
        after = progress_to_json(progress)
        try:
            if after != before:
                r.save_geofence_state(driver_id, after, version, stops_version)
        except ConditionFailed:
            continue
        if batch is not None:
            batch.absorb(effects.stats)
        if effects.events:
            metrics.add_metric(name="GeofenceEvents", unit=MetricUnit.Count, value=len(effects.events))
        return effects.events
    raise ConditionFailed(f"driver {driver_id}: state kept changing")


def _presence_seen(r: Repository, merchant_id: str, driver_id: str, latest_fix_ms: int, context: MerchantContext,
                   progress: DriverProgress, declared_offline: bool) -> None:
    """Last seen and the offline due time on the driver's presence item, folded into the batch's state write:
    written only when the due time moves by a minute (presence_rules.due_moves), so a driver pinging every few
    seconds costs one presence write a minute. A driver declared offline since the state was saved (the
    scheduler, or OwnTracks' last will, flags the state item) is written at once: that is its recovery."""
    now = int(time.time() * 1000)
    seen_ms = min(latest_fix_ms, now)  # a phone clock ahead must not keep a silent driver "seen"
    offline_after = context.settings.offline_after_minutes
    due_ms = seen_ms + int(offline_after * 60_000)
    if declared_offline or due_moves(progress.presence_due_ms, due_ms):
        driver_seen(r, merchant_id, driver_id, seen_ms, offline_after, now)
        progress.presence_due_ms = due_ms


def _stops_for(r: Repository, route: RouteItem, progress: DriverProgress, context: MerchantContext,
               stops_version: int) -> RouteStops:
    """The route's stops; the driver's status cache is (re)seeded when the route is new to it or stale. A stop
    changed since they were read (a new location, fence or window: `stops_version` moved) reloads them, and
    the ETAs are recomputed at the next fix rather than when the throttle next allows."""
    changed = progress.stops_version != stops_version
    stale = changed or progress.route_id != route.route_id or time.time() - progress.statuses_at >= STATUS_REFRESH_S
    stops = route_stops(r, route, context.settings.stop_radius_m, fresh=stale, stops_version=stops_version)
    if stale:
        progress.adopt(stops)
    if changed:
        progress.stops_version = stops_version
        progress.eta_at_ms = None
    return stops


def _ports(r: Repository, merchant_id: str, route: RouteItem | None) -> Ports:
    def zone_by_id(fence_id: str) -> Fence | None:
        zone = r.get_zone(merchant_id, fence_id)
        return fence_from_dict(json.loads(zone.fence)) if zone is not None else None  # deleted: state dropped

    def speed_table(stops: Sequence[Stop], fix: GeoFix) -> SpeedTable:
        assert route is not None
        return route_speed_table(r, route.route_id, stops, fix)

    return Ports(lambda cell: zones_near(r, merchant_id, cell), zone_by_id, speed_table)


def _apply_effects(r: Repository, merchant_id: str, route: RouteItem | None, stops: RouteStops | None,
                   progress: DriverProgress, effects: Effects) -> None:
    for zone_event, name in effects.zone_events:
        _record_zone_event(r, merchant_id, zone_event, name)
    for t in effects.transitions:
        shipment = _shipment_ref(merchant_id, t.shipment_id, t.from_status)
        if not _transition(r, shipment, t.to_status, _timeline_event(merchant_id, t.shipment_id, t.kind, t.event_id,
                                                                      t.fix_ms, t.from_status, t.to_status)):
            progress.statuses_at = 0.0  # the shipment moved elsewhere: re-read the statuses next batch
        if t.to_status == S.ARRIVED:  # counted once per arrival even when the transition was made before
            honesty.record_arrival(r, merchant_id, progress.fences.driver_id, progress.shown, t.shipment_id,
                                   t.event_id, t.fix_ms)
    for shipment_id, kind, event_id, fix_ms in effects.timeline:
        r.put_event_once(_timeline_event(merchant_id, shipment_id, kind, event_id, fix_ms))
        logger.info("geofence event", extra={"kind": kind, "shipment_id": shipment_id})
    for shipment_id, fix_ms in effects.delayed:
        event = _timeline_event(merchant_id, shipment_id, "delayed", f"delayed-{shipment_id}", fix_ms)
        if r.mark_stop_delayed(merchant_id, shipment_id, event):
            metrics.add_metric(name="ShipmentsDelayed", unit=MetricUnit.Count, value=1)
    if effects.eta is not None and route is not None and stops is not None:
        at_ms, etas = effects.eta
        write_route_eta(r, route, stops, at_ms, etas)
    if effects.exceptions:  # only when something was found: a ping costs no extra read or write
        exceptions.on_driver_findings(r, merchant_id, effects.exceptions)
    if effects.moved_on_ms is not None:
        exceptions.resolve_automatically(r, merchant_id, ExceptionKind.LONG_STOP, progress.fences.driver_id,
                                         _at(effects.moved_on_ms), "driver moved on")


def write_route_eta(r: Repository, route: RouteItem, stops: RouteStops, at_ms: int, etas: Sequence[StopEta]) -> None:
    """The route's ETA item, replaced whole (one write): what the tracking page, driver app and API read."""
    windows = {stops.position(e.stop_id): (e.low_ms, e.eta_ms, e.high_ms) for e in etas}
    base_ms = at_ms - at_ms % 1000
    expires = datetime.fromtimestamp(at_ms / 1000, UTC) + timedelta(days=ROUTE_ETA_RETENTION_DAYS)
    r.put_route_eta(RouteEtaItem(route_eta_pk(route.route_id), ROUTE_ETA_SK, merchant_id=route.merchant_id,
                                 route_id=route.route_id, at_ms=at_ms, base_ms=base_ms,
                                 etas=encode_etas(base_ms, windows, len(stops.ids)), expires_at=expires))


def _shipment_ref(merchant_id: str, shipment_id: str, status: ShipmentStatus | None) -> ShipmentItem:
    """A shipment by key with the status the cache holds: the conditional writes need nothing else."""
    item = ShipmentItem(merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}", merchant_id=merchant_id,
                        shipment_id=shipment_id)
    if status is not None:
        item.status = str(status)
    return item


def apply_stop_completed(r: Repository, image: dict[str, Any]) -> None:
    """A stop was delivered or failed: the next stops' ETAs change now (the driver's phone may be silent)."""
    merchant_id, shipment_id = str(image["merchant_id"]), str(image["shipment_id"])
    shipment = r.get_shipment(merchant_id, shipment_id)
    if shipment is None or not shipment.route_id or not shipment.driver_id:
        return
    route = r.get_route(merchant_id, shipment.route_id)
    if route is None or route.status != "active":
        return
    driver_id = shipment.driver_id
    context = merchant_context(r, merchant_id)
    for _ in range(STATE_ATTEMPTS):
        raw_state, version, stops_version, declared_offline = r.driver_state(driver_id)
        progress = progress_from_json(driver_id, raw_state)
        stops = _stops_for(r, route, progress, context, stops_version)
        if shipment_id in stops.ids:
            progress.set_status(stops.position(shipment_id), S(shipment.status))
        motion = progress.motion
        if motion.last_ms is not None:  # no position yet: the first ping computes the ETAs
            occurred = image.get("occurred_at")
            occurred_ms = int(datetime.fromisoformat(str(occurred)).timestamp() * 1000) if occurred else motion.last_ms
            here = GeoFix(driver_id, max(motion.last_ms, occurred_ms), motion.last_lat, motion.last_lng)
            motion.start_leg(here.fix_ms, here.lat, here.lng)  # the next leg starts at this door
            effects = Effects()
            recompute(progress, stops, here, context, _ports(r, merchant_id, route), effects)
            _apply_effects(r, merchant_id, route, stops, progress, effects)
        try:
            # a driver declared offline stays flagged for its next fix's recovery
            r.save_geofence_state(driver_id, progress_to_json(progress), version, stops_version, declared_offline)
            return
        except ConditionFailed:
            continue  # a batch of pings saved the state meanwhile: read it again
    logger.warning("stop completion lost the state race", extra={"shipment_id": shipment_id})


def _record_zone_event(r: Repository, merchant_id: str, event: GeofenceEvent, name: str | None) -> None:
    if name is None:  # not indexed near this fix (an exit after a jump): read it by id
        zone = r.get_zone(merchant_id, event.fence_id)
        name = zone.name if zone is not None else event.fence_id
    item = zone_event_item(merchant_id, event.driver_id, event.event_id, event.kind, event.fence_id, name,
                           datetime.fromtimestamp(event.fix_ms / 1000, UTC), event.lat, event.lng)
    if r.put_zone_event_once(item):
        metrics.add_metric(name="ZoneEvents", unit=MetricUnit.Count, value=1)
        logger.info("zone event", extra={"kind": event.kind, "zone_id": event.fence_id})
    # A zone event redelivered after its first put failed later still reaches the rules: they open at most once.
    exceptions.on_zone_event(r, merchant_id, event.driver_id, event.fence_id, name, event.kind,
                             datetime.fromtimestamp(event.fix_ms / 1000, UTC), event.event_id)


_speed_cache: dict[str, tuple[SpeedTable, float]] = {}


def route_speed_table(r: Repository, route_id: str, stops: Sequence[Stop], fix: GeoFix) -> SpeedTable:
    """Observed speeds for the cells along the route's remaining legs and the hours ahead; cached per route."""
    cached = _speed_cache.get(route_id)
    if cached is not None and time.monotonic() - cached[1] < SPEED_CACHE_S:
        return cached[0]
    plan = plan_route(stops)
    first = stops[0]
    cells = {c for legs in plan.leg_cells for c in legs}
    cells.update(leg_cells(fix.lat, fix.lng, first.lat, first.lng, haversine_m(fix.lat, fix.lng, first.lat, first.lng),
                           plan.res))
    hours = {hour_of_week(fix.fix_ms + h * HOUR_MS) for h in range(SPEED_HOURS_AHEAD)}
    table = load_speed_table(r, cells, hours)
    _speed_cache[route_id] = (table, time.monotonic())
    return table


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


def learned_speed_table(r: Repository, cells: Iterable[str], hours: Sequence[int]) -> SpeedTable:
    """The ETA's learned speeds of these cells at these hours of the week (other features plan with them)."""
    return load_speed_table(r, set(cells), list(hours))


def learned_service_time_s(r: Repository, merchant_id: str, default_s: float) -> float:
    """The merchant's learned time spent at a stop, from observed dwells; `default_s` until there are any."""
    return load_service_time_s(r, merchant_id, default_s)
