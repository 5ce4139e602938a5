"""What a merchant's PATCH of a shipment may change, and what a change means: pure, no I/O.

The editable part of a shipment is `EDITABLE` (recipient contact, address, location, time window,
instructions, geofence radius); it is patched as one JSON document with `chalicelib.core.patch.merge_patch`
and validated whole. Everything else is set by the product (status, route, driver, ...) or names the shipment
for good (`external_ref`, `delivery_date`: moving the day is a reschedule).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.shipments.lifecycle import FINAL, ShipmentStatus

EDITABLE = ("recipient", "address", "location", "time_window", "instructions", "geofence_radius_m")

# Fields a PATCH names but may not change, and why (422 naming the field with this reason).
READ_ONLY: dict[str, str] = {
    "external_ref": "cannot be changed: it names this shipment for good (create a new shipment for a new ref)",
    "delivery_date": "cannot be changed by PATCH: reschedule the shipment to move its day",
}

# Changes the pipeline's cached stops of the shipment's route must follow (fence, ETA, promised window).
STOP_FIELDS = frozenset({"location", "geofence_radius_m", "time_window"})


def refused_status(status: ShipmentStatus) -> bool:
    """A delivered, returned or cancelled shipment is history: it is no longer edited."""
    return status in FINAL


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The dotted names of the fields that differ, sorted: a nested object is compared member by member
    (`recipient.phone`), any other value whole (`time_window`, `location` when either side is not an object).
    Names only, never values: they go into the timeline and webhooks, which must not carry personal data."""
    out: list[str] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping) and name != "time_window" and name != "location":
            out += [f"{name}.{inner}" for inner in changed_fields(old, new)]
        else:
            out.append(name)
    return out


def top_level(fields: list[str]) -> set[str]:
    return {f.split(".", 1)[0] for f in fields}


def window_day_problem(start: datetime, delivery_date: date, time_zone: str) -> str | None:
    """Why a new time window does not fit the shipment's delivery day, or None: its start must fall on the
    delivery date where the recipient lives (a window on another day is a reschedule, not an edit)."""
    local_day = start.astimezone(ZoneInfo(time_zone)).date()
    if local_day != delivery_date:
        return (f"must start on the delivery date {delivery_date.isoformat()} ({time_zone}); "
                f"it starts on {local_day.isoformat()}: reschedule to move the day")
    return None
