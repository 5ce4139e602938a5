"""After a failed attempt: reschedule, redirect, and the return to the depot (chalicelib.shipments.attempts
holds the rules). The recipient's tracking page and the merchant API share these writes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.core import errors
from chalicelib.core.security import new_id
from chalicelib.fleet.models import MerchantSettings
from chalicelib.shipments.attempts import RedirectKind, redirect_instructions, ring_centre
from chalicelib.shipments.lifecycle import ShipmentStatus, TransitionError, check_transition
from chalicelib.shipments.models import ShipmentRedirect, ShipmentReschedule
from chalicelib.storage.repository import ConditionFailed, Repository
from chalicelib.storage.tables import EventItem, ShipmentItem, as_dict, date_gsi_pk, event_item

S = ShipmentStatus


class NotReschedulable(Exception):
    """The shipment's status does not allow it (or it changed meanwhile); the caller says so in its own words."""


def recipient_zone(shipment: ShipmentItem, settings: MerchantSettings) -> ZoneInfo:
    return ZoneInfo(str(as_dict(shipment.recipient).get("time_zone") or settings.time_zone))


def next_delivery_day(today: date, weekdays: list[int]) -> date:
    """The first day after `today` on one of the merchant's delivery weekdays (ISO, 1 = Monday)."""
    for offset in range(1, 8):
        day = today + timedelta(days=offset)
        if day.isoweekday() in weekdays:
            return day
    return today + timedelta(days=1)


def move(repo: Repository, shipment: ShipmentItem, *, day: date, start: datetime | None, end: datetime | None,
         source: str, now: datetime, redirect: dict[str, Any] | None = None) -> None:
    """Make the shipment `rescheduled` for `day` (and window): the date indexes follow, a shipment planned on a
    route leaves it (the merchant plans it again for the new day), and a redirect becomes the driver's
    instructions. One conditional write with its timeline event."""
    try:
        check_transition(S(shipment.status), S.RESCHEDULED)
    except TransitionError:
        raise NotReschedulable(shipment.status) from None
    sid, iso = shipment.shipment_id, day.isoformat()
    actions: list[Any] = [
        ShipmentItem.delivery_date.set(iso),
        ShipmentItem.GSI1SK.set(f"{iso}#{sid}"),
        ShipmentItem.GSI2PK.set(date_gsi_pk(shipment.merchant_id, iso, sid)),
        ShipmentItem.eta_ms.remove(), ShipmentItem.eta_low_ms.remove(), ShipmentItem.eta_high_ms.remove(),
        ShipmentItem.delayed_at.remove(),
    ]
    if start is not None and end is not None:
        actions += [ShipmentItem.window_start.set(start.astimezone(UTC)),
                    ShipmentItem.window_end.set(end.astimezone(UTC))]
    else:
        actions += [ShipmentItem.window_start.remove(), ShipmentItem.window_end.remove()]
    if shipment.route_id:
        actions += [ShipmentItem.route_id.remove(), ShipmentItem.stop_index.remove(), ShipmentItem.driver_id.remove()]
    if shipment.final_at is not None:  # a failed shipment's link clock stops: it is on its way again
        actions.append(ShipmentItem.final_at.remove())
    data: dict[str, Any] = {"delivery_date": iso}
    if start is not None and end is not None:
        data |= {"window_start": start.astimezone(UTC).isoformat(), "window_end": end.astimezone(UTC).isoformat()}
    if redirect is not None:
        actions.append(ShipmentItem.redirect.set(redirect))
        given = redirect_instructions(RedirectKind(redirect["kind"]), redirect.get("note"),
                                      redirect.get("neighbour_name"))
        previous = as_dict(shipment.recipient_instructions) if shipment.recipient_instructions is not None else {}
        if previous.get("gate_code"):
            given["gate_code"] = previous["gate_code"]
        actions.append(ShipmentItem.recipient_instructions.set({**given, "updated_at": now.isoformat()}))
        data["redirect"] = redirect
    event = event_item(shipment.merchant_id, sid, new_id("evt"), "rescheduled", source, now, now, shipment.status,
                       str(S.RESCHEDULED), data)
    try:
        repo.change_statuses([(shipment, S.RESCHEDULED, actions, event)])
    except ConditionFailed:
        raise NotReschedulable(shipment.status) from None


def redirect_record(kind: str, note: str | None, neighbour_name: str | None, source: str,
                    now: datetime) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": str(RedirectKind(kind)), "source": source, "at": now.astimezone(UTC).isoformat()}
    if note:
        record["note"] = note
    if neighbour_name and kind == RedirectKind.NEIGHBOUR:
        record["neighbour_name"] = neighbour_name
    return record


def depot_of(repo: Repository, merchant_id: str) -> dict[str, Any]:
    """The merchant's first depot zone as part of a return leg ({} when it has none)."""
    start: dict[str, Any] | None = None
    for _ in range(5):  # at most 250 zones looked at: depots are created first in practice
        zones, start = repo.list_zones(merchant_id, 50, start)
        for zone in zones:
            if zone.kind == "depot":
                found: dict[str, Any] = {"depot_zone_id": zone.zone_id, "depot_name": zone.name}
                try:
                    centre = ring_centre(json.loads(zone.fence).get("geometry") or {})
                except ValueError:
                    centre = None
                if centre is not None:
                    found |= {"depot_lat": centre[0], "depot_lng": centre[1]}
                return found
        if start is None:
            break
    return {}


def returned_event(shipment: ShipmentItem, failed_at: datetime, now: datetime, attempts: int,
                   leg: dict[str, Any]) -> EventItem:
    """The return, right after the attempt that reached the limit (1 ms later: it follows from it)."""
    return event_item(shipment.merchant_id, shipment.shipment_id, new_id("evt"), "returned", "system",
                      failed_at + timedelta(milliseconds=1), now, str(S.FAILED), str(S.RETURNED),
                      {"attempts": attempts, "return_leg": leg})


def not_reschedulable(status: str) -> errors.DomainError:
    return errors.conflict(f"The shipment is {status}; it cannot be rescheduled or redirected.", "status",
                           f"current status is {status}")


# --- the merchant's API ------------------------------------------------------------------


def merchant_reschedule(repo: Repository, merchant_id: str, shipment_id: str, body: ShipmentReschedule,
                        now: datetime) -> None:
    from chalicelib.fleet.service import merchant_settings
    from chalicelib.shipments.store import require_shipment

    shipment = require_shipment(repo, merchant_id, shipment_id)
    zone = recipient_zone(shipment, merchant_settings(repo, merchant_id))
    today = now.astimezone(zone).date()
    if body.delivery_date <= today:
        raise errors.validation_failed([errors.FieldProblem(
            "delivery_date", f"must be after today ({today.isoformat()} in {zone.key})")])
    window = body.time_window
    if window is not None and (window.start.astimezone(zone).date() != body.delivery_date
                               or window.end.astimezone(zone).date() != body.delivery_date):
        raise errors.validation_failed([errors.FieldProblem(
            "time_window", f"must lie within delivery_date in {zone.key}")])
    try:
        move(repo, shipment, day=body.delivery_date, start=window.start if window else None,
             end=window.end if window else None, source="merchant", now=now)
    except NotReschedulable:
        raise not_reschedulable(shipment.status) from None


def merchant_redirect(repo: Repository, merchant_id: str, shipment_id: str, body: ShipmentRedirect,
                      now: datetime) -> None:
    from chalicelib.fleet.service import merchant_settings
    from chalicelib.shipments.store import require_shipment

    shipment = require_shipment(repo, merchant_id, shipment_id)
    if shipment.status != S.FAILED:
        raise errors.conflict(f"The shipment is {shipment.status}; only a failed shipment can be redirected.",
                              "status", f"current status is {shipment.status}")
    settings = merchant_settings(repo, merchant_id)
    zone = recipient_zone(shipment, settings)
    today = now.astimezone(zone).date()
    day = body.delivery_date or next_delivery_day(today, settings.reschedule_options.weekdays)
    if day <= today:
        raise errors.validation_failed([errors.FieldProblem(
            "delivery_date", f"must be after today ({today.isoformat()} in {zone.key})")])
    record = redirect_record(body.kind, body.note, body.neighbour_name, "merchant", now)
    try:
        move(repo, shipment, day=day, start=None, end=None, source="merchant", now=now, redirect=record)
    except NotReschedulable:
        raise not_reschedulable(shipment.status) from None
