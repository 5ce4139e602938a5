"""The shipments feature's reads that every use case starts from, and its timeline items."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.core import errors
from chalicelib.core.security import new_id
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import EventItem, RouteItem, ShipmentItem, event_item


def require_shipment(repo: Repository, merchant_id: str, shipment_id: str, *,
                     consistent: bool = False) -> ShipmentItem:
    """The merchant's shipment, or not found (another merchant's id is not found too)."""
    item = repo.get_shipment(merchant_id, shipment_id, consistent=consistent)
    if item is None:
        raise errors.not_found("Shipment")
    return item


def require_route(repo: Repository, merchant_id: str, route_id: str) -> RouteItem:
    item = repo.get_route(merchant_id, route_id)
    if item is None:
        raise errors.not_found("Route")
    return item


def timeline_event(merchant_id: str, shipment_id: str, kind: str, source: str, occurred: datetime,
                   recorded: datetime, from_status: str | None = None, to_status: str | None = None,
                   data: dict[str, Any] | None = None) -> EventItem:
    """A new timeline item (a fresh event id), written with the change it records."""
    return event_item(merchant_id, shipment_id, new_id("evt"), kind, source, occurred, recorded, from_status,
                      to_status, data)
