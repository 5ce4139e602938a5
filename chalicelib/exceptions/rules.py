"""The exception queue's pure rules: kinds, the state machine, deterministic ids, and the detectors the stream
pipeline runs on what it already holds in memory (no storage, no AWS: tested without either)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo


class ExceptionKind(StrEnum):
    LATE = "late"  # a stop's ETA left its promised window (the pipeline's `delayed` event)
    FAILED_ATTEMPT = "failed_attempt"  # a delivery attempt failed
    DRIVER_OFFLINE = "driver_offline"  # no fix while on duty (presence's `driver_offline` event)
    DELIVERED_FAR = "delivered_far"  # marked delivered far from the stop
    LONG_STOP = "long_stop"  # stopped longer than N minutes away from every stop
    ROUTE_BEHIND = "route_behind"  # projected end later than the planned end + N minutes
    ZONE_RULE = "zone_rule"  # a zone's time-of-day rule broken (e.g. movement in the depot after hours)
    PARCEL_MISMATCH = "parcel_mismatch"  # a scanned barcode is not one of the shipment's parcels (custody)


class ExceptionState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# The transitions a person (or the system, for resolve) may make; everything else answers 409.
TRANSITIONS: dict[ExceptionState, frozenset[ExceptionState]] = {
    ExceptionState.OPEN: frozenset({ExceptionState.ACKNOWLEDGED, ExceptionState.RESOLVED}),
    ExceptionState.ACKNOWLEDGED: frozenset({ExceptionState.RESOLVED}),
    ExceptionState.RESOLVED: frozenset(),
}

# The webhook event (and dispatch message) of entering each state.
STATE_EVENTS: dict[ExceptionState, str] = {
    ExceptionState.OPEN: "exception_opened",
    ExceptionState.ACKNOWLEDGED: "exception_acknowledged",
    ExceptionState.RESOLVED: "exception_resolved",
}

STILL_RADIUS_M = 50.0  # a driver within this of where they stopped has not moved on (GPS jitter included)


def allowed(current: ExceptionState, wanted: ExceptionState) -> bool:
    return wanted in TRANSITIONS[current]


def exception_id(merchant_id: str, kind: ExceptionKind, subject: str, episode: str) -> str:
    """The id of one exception: the same (merchant, kind, subject, episode) always names the same exception, so
    a stream record delivered twice (or out of order) cannot open a second one, even after the first is resolved.
    `episode` is what makes a new occurrence new (the triggering event's id, or when the episode began)."""
    digest = hashlib.sha256(f"{merchant_id}|{kind.value}|{subject}|{episode}".encode()).hexdigest()[:24]
    return f"exc_{digest}"


def dedupe_key(kind: ExceptionKind, subject: str) -> str:
    """While an exception is open or acknowledged, its (kind, subject) is claimed: one per driver or stop."""
    return f"{kind.value}#{subject}"


@dataclass(frozen=True)
class StillSince:
    """Where and since when a driver has been within STILL_RADIUS_M of one point; `flagged` once long_stop fired."""

    since_ms: int
    lat: float
    lng: float
    flagged: bool = False


def track_still(still: StillSince | None, fix_ms: int, lat: float, lng: float, distance_m: float) -> StillSince:
    """The driver's stillness after one more fix; `distance_m` is the fix's distance from `still`'s point."""
    if still is None or distance_m > STILL_RADIUS_M or fix_ms < still.since_ms:
        return StillSince(fix_ms, lat, lng)
    return still


def long_stop_due(still: StillSince, now_ms: int, minutes: int, nearest_stop_m: float | None,
                  stop_radius_m: float) -> bool:
    """A long stop opens once per stillness: stopped `minutes` or more, and not at any remaining stop (nearest
    farther than twice the stop radius; None: no stops on the way, e.g. no route: then it does not count)."""
    if still.flagged or nearest_stop_m is None:
        return False
    return now_ms - still.since_ms >= minutes * 60_000 and nearest_stop_m > 2 * stop_radius_m


def route_behind_due(projected_end_ms: int | None, planned_end_ms: int | None, minutes: int) -> bool:
    """The route's last stop is expected more than `minutes` after the plan (the latest promised window's end)."""
    if projected_end_ms is None or planned_end_ms is None:
        return False
    return projected_end_ms > planned_end_ms + minutes * 60_000


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def within_local_hours(moment: datetime, start: str, end: str, zone: str) -> bool:
    """Is `moment` between the local clock times `start` and `end` (HH:MM) in `zone`? A window with end before
    start crosses midnight (22:00-06:00); equal times mean the whole day."""
    local = moment.astimezone(ZoneInfo(zone)).time().replace(second=0, microsecond=0)
    begin, finish = _clock(start), _clock(end)
    if begin == finish:
        return True
    if begin < finish:
        return begin <= local < finish
    return local >= begin or local < finish


def summary(kind: ExceptionKind, details: dict[str, object]) -> str:
    """One line a dispatcher reads in the queue, the email subject and the SMS."""
    who = details.get("driver_name") or details.get("driver_id") or "a driver"
    stop = details.get("external_ref") or details.get("shipment_id") or "a stop"
    match kind:
        case ExceptionKind.LATE:
            return f"Stop {stop} is running late: the ETA is past the promised window"
        case ExceptionKind.FAILED_ATTEMPT:
            reason = details.get("reason")
            return f"Delivery attempt failed at {stop}" + (f" ({reason})" if reason else "")
        case ExceptionKind.DRIVER_OFFLINE:
            reason = details.get("reason")
            return f"Driver {who} is offline while on duty" + (f" ({reason})" if reason else "")
        case ExceptionKind.DELIVERED_FAR:
            distance = details.get("distance_m")
            far = f" {round(float(str(distance)))} m" if distance is not None else ""
            return f"Stop {stop} was marked delivered{far} away from the address"
        case ExceptionKind.LONG_STOP:
            return f"Driver {who} has been stopped for {details.get('minutes')} min away from any stop"
        case ExceptionKind.ROUTE_BEHIND:
            return f"Route {details.get('route_id')} is {details.get('behind_minutes')} min behind plan"
        case ExceptionKind.PARCEL_MISMATCH:
            def listed(name: str) -> str:
                value = details.get(name) or []
                return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)

            what = [f"not ours: {listed('unexpected')}"] if details.get("unexpected") else []
            what += [f"missing: {listed('missing')}"] if details.get("missing") else []
            return f"Parcel scan mismatch at {details.get('stage')} for {stop} ({'; '.join(what)})"
        case ExceptionKind.ZONE_RULE:
            return f"Driver {who} moved in zone {details.get('zone_name') or details.get('zone_id')} outside its hours"
