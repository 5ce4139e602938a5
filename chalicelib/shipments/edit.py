"""A merchant's PATCH of a shipment: JSON merge patch of its editable part, validated whole, written only
where it changed, conditional on what was read (a lost race merges again into what won)."""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

from pydantic import ValidationError

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.patch import merge_patch
from chalicelib.core.types import field_problems
from chalicelib.fleet.service import merchant_settings
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.models import ShipmentEditable, ShipmentOut, TimeWindow
from chalicelib.shipments.patching import STOP_FIELDS, changed_fields, refused_status, top_level, window_day_problem
from chalicelib.shipments.service import get_shipment
from chalicelib.shipments.store import timeline_event
from chalicelib.storage.repository import ConditionFailed, Repository, now_utc
from chalicelib.storage.tables import ShipmentItem, as_dict, recipient_contacts

_ABSENT = object()
PATCH_ATTEMPTS = 5  # each lost race re-reads and merges again; five lost races in a row is a conflict


def editable_of(item: ShipmentItem) -> dict[str, Any]:
    """The stored shipment's editable part as the JSON a patch merges into (absent: not set)."""
    doc: dict[str, Any] = {
        "recipient": as_dict(item.recipient), "address": as_dict(item.address),
        "location": {"lat": float(item.lat), "lng": float(item.lng)},
    }
    if item.window_start is not None and item.window_end is not None:
        doc["time_window"] = {"start": item.window_start.isoformat(), "end": item.window_end.isoformat()}
    if item.instructions is not None:
        doc["instructions"] = item.instructions
    if item.geofence_radius_m is not None:
        doc["geofence_radius_m"] = float(item.geofence_radius_m)
    return doc


def _canonical(model: ShipmentEditable) -> dict[str, Any]:
    """One spelling per value, so that only real changes count: windows in UTC, unset members left out."""
    if model.time_window is not None:
        window = model.time_window
        model = model.model_copy(update={"time_window": TimeWindow(start=window.start.astimezone(UTC),
                                                                   end=window.end.astimezone(UTC))})
    return model.model_dump(mode="json", exclude_none=True)


def _actions(item: ShipmentItem, after: ShipmentEditable, changed: set[str]) -> list[Any]:
    actions: list[Any] = []
    if "recipient" in changed:
        actions.append(ShipmentItem.recipient.set(after.recipient.model_dump(exclude_none=True)))
    if "address" in changed:
        actions.append(ShipmentItem.address.set(after.address.model_dump(exclude_none=True)))
    if "location" in changed:
        actions += [ShipmentItem.lat.set(after.location.lat), ShipmentItem.lng.set(after.location.lng)]
    if "time_window" in changed:
        window = after.time_window
        actions += ([ShipmentItem.window_start.set(window.start.astimezone(UTC)),
                     ShipmentItem.window_end.set(window.end.astimezone(UTC))] if window is not None
                    else [ShipmentItem.window_start.remove(), ShipmentItem.window_end.remove()])
        if item.delayed_at is not None:  # "delayed" was judged against the old window: judge it again
            actions.append(ShipmentItem.delayed_at.remove())
    if "instructions" in changed:
        actions.append(ShipmentItem.instructions.set(after.instructions) if after.instructions is not None
                       else ShipmentItem.instructions.remove())
    if "geofence_radius_m" in changed:
        actions.append(ShipmentItem.geofence_radius_m.set(after.geofence_radius_m)
                       if after.geofence_radius_m is not None else ShipmentItem.geofence_radius_m.remove())
    return actions


def patch_shipment(repo: Repository, settings: Settings, merchant_id: str, shipment_id: str,
                   patch: dict[str, Any]) -> ShipmentOut:
    """Apply a JSON merge patch to the shipment's editable part (`chalicelib.shipments.patching`).

    409 naming the status when the shipment is delivered, returned or cancelled; 422 naming the field when the
    merged shipment is invalid. A patch that changes nothing writes nothing. Otherwise the changed attributes,
    `updated_at` and an `updated` timeline event (naming the fields, never their values) are written in one
    transaction conditional on the status and `updated_at` read; a location, fence or window change of a stop
    on a route also tells the pipeline to reload that route's stops (the next fix uses them).
    """
    custody = patch.pop("custody", _ABSENT)
    for _ in range(PATCH_ATTEMPTS):
        item = repo.get_shipment(merchant_id, shipment_id, consistent=True)
        if item is None:
            raise errors.not_found("Shipment")
        status = ShipmentStatus(item.status)
        if refused_status(status):
            raise errors.conflict(f"The shipment is {status}; it can no longer be changed.", "status",
                                  f"current status is {status}")
        if custody is not _ABSENT:  # the chain of custody's spec, in its own item (and an event in the chain)
            from chalicelib.custody.service import patch_custody

            patch_custody(repo, merchant_id, shipment_id, custody)
            custody = _ABSENT
        try:
            before = _canonical(ShipmentEditable.model_validate(editable_of(item)))
            after_model = ShipmentEditable.model_validate(merge_patch(before, patch))
        except ValidationError as exc:
            raise errors.validation_failed(field_problems(exc)) from None
        after = _canonical(after_model)
        changed = changed_fields(before, after)
        if not changed:
            return get_shipment(repo, settings, merchant_id, shipment_id, consistent=True)
        names = top_level(changed)
        if "time_window" in names and after_model.time_window is not None:
            zone = after_model.recipient.time_zone or merchant_settings(repo, merchant_id).time_zone
            problem = window_day_problem(after_model.time_window.start, date.fromisoformat(item.delivery_date), zone)
            if problem is not None:
                raise errors.validation_failed([errors.FieldProblem("time_window.start", problem)])
        now = now_utc()
        event = timeline_event(merchant_id, shipment_id, "updated", "merchant", now, now, None, None,
                               {"fields": changed})
        refresh = item.driver_id if item.route_id and item.driver_id and names & STOP_FIELDS else None
        contacts = None
        if "recipient" in names:  # the recipient search index (docs/data-model.md row 103) follows the contact
            old_contacts = recipient_contacts(as_dict(item.recipient))
            new_contacts = recipient_contacts(after_model.recipient.model_dump(exclude_none=True))
            if old_contacts != new_contacts:
                contacts = (old_contacts - new_contacts, new_contacts - old_contacts)
        try:
            repo.update_shipment(item, [*_actions(item, after_model, names), ShipmentItem.updated_at.set(now)],
                                 event, stops_changed_for=refresh, contacts=contacts)
        except ConditionFailed:
            continue
        return get_shipment(repo, settings, merchant_id, shipment_id, consistent=True)
    raise errors.conflict("The shipment kept changing while this PATCH was applied; send it again.",
                          code="shipment_changed")
