"""What a recipient's tracking link may show and do: pure rules, no AWS, no HTTP.

* A link expires `expiry_days` after the shipment reached a closing status
  (delivered, failed, returned, cancelled); revocation is a token version bump
  and needs no rule here.
* The driver is visible only while the shipment is live (out for delivery,
  approaching, arrived) and this stop is next, or within the merchant's
  `driver_visible_stops` (1: only when next; 0: never).
* "N stops before yours" counts the route's earlier stops that are still to be
  served (live), in the route's planned order.
* Recipients reschedule only before the parcel is out for delivery, or after a
  failed attempt (the attempt limit turns the last one into `returned`), to one
  of the windows the merchant offers on the coming delivery days; after a failed
  attempt they may also redirect it (safe place or neighbour).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from chalicelib.shipments.lifecycle import CLOSED, DRIVER_VISIBLE, FINAL, ShipmentStatus

S = ShipmentStatus

# The live statuses: the driver, the ETA window and "N stops before yours" make sense only then.
LIVE = DRIVER_VISIBLE
# Recipients may move the delivery before it is out for delivery, and after a failed attempt.
RESCHEDULABLE = frozenset({S.CREATED, S.ASSIGNED, S.RESCHEDULED, S.FAILED})
# ...and redirect it (safe place, neighbour) after a failed attempt.
REDIRECTABLE = frozenset({S.FAILED})
# Instructions are useful until the parcel is delivered, returned or cancelled.
INSTRUCTABLE = frozenset(set(ShipmentStatus) - FINAL)
# Timeline entries a recipient sees (the rest, such as geofence dwell or link revocation, is for the merchant).
RECIPIENT_EVENTS = frozenset({
    "created", "assigned", "out_for_delivery", "approaching", "arrived", "delivered", "failed", "rescheduled",
    "returned", "cancelled", "instructions_updated", "rated",
})


def link_expired(status: ShipmentStatus, closed_at: datetime | None, expiry_days: int, now: datetime) -> bool:
    """True once `expiry_days` have passed since the shipment reached a closing status."""
    return status in CLOSED and closed_at is not None and now >= closed_at + timedelta(days=expiry_days)


def stops_before(route_stops: Sequence[str], shipment_id: str, statuses: Mapping[str, ShipmentStatus]) -> int | None:
    """How many stops planned before this one are still to be served; None when it is not on the route."""
    if shipment_id not in route_stops:
        return None
    earlier = route_stops[:route_stops.index(shipment_id)]
    return sum(1 for sid in earlier if statuses.get(sid) in LIVE)


def driver_visible(status: ShipmentStatus, stops_ahead: int | None, visible_stops: int) -> bool:
    """The driver's position may be shown: live, and at most `visible_stops - 1` stops come first."""
    return status in LIVE and stops_ahead is not None and stops_ahead < visible_stops


def first_name(full_name: object) -> str:
    parts = str(full_name or "").split()
    return parts[0] if parts else ""


@dataclass(frozen=True, slots=True)
class WindowOffer:
    """A daily delivery window the merchant offers, in local time."""

    id: str
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Slot:
    """One concrete choice: a window on a day. `id` is `<yyyy-mm-dd>_<window id>`."""

    id: str
    day: date
    start: datetime
    end: datetime


def reschedule_slots(now: datetime, tz: tzinfo, *, days_ahead: int, weekdays: Iterable[int],
                     windows: Sequence[WindowOffer],
                     current: tuple[datetime | None, datetime | None] = (None, None)) -> list[Slot]:
    """The windows offered on the next `days_ahead` calendar days after today (in `tz`), on ISO `weekdays`
    (1 = Monday), earliest first; the shipment's `current` (start, end) window is left out."""
    today = now.astimezone(tz).date()
    allowed_days = set(weekdays)
    slots = []
    for offset in range(1, days_ahead + 1):
        day = today + timedelta(days=offset)
        if day.isoweekday() not in allowed_days:
            continue
        for window in windows:
            start = datetime.combine(day, window.start, tzinfo=tz)
            end = datetime.combine(day, window.end, tzinfo=tz)
            if (start, end) == current:
                continue
            slots.append(Slot(f"{day.isoformat()}_{window.id}", day, start, end))
    return sorted(slots, key=lambda s: (s.start, s.id))
