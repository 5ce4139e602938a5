"""Route use cases: a driver's ordered stops for a day, created and started."""

from __future__ import annotations

from datetime import date

from chalicelib.core import errors
from chalicelib.core.errors import ErrorKind
from chalicelib.core.security import (
    new_id,
)
from chalicelib.fleet.service import require_driver
from chalicelib.shipments.lifecycle import ALLOWED, ShipmentStatus
from chalicelib.shipments.lifecycle import ShipmentStatus as S
from chalicelib.shipments.models import (
    RouteCreate,
    RouteOut,
    RouteStop,
)
from chalicelib.shipments.store import require_route, timeline_event
from chalicelib.storage.repository import ConditionFailed, Repository, StatusChange, now_utc
from chalicelib.storage.tables import (
    RouteItem,
    ShipmentItem,
    driver_routes_pk,
    merchant_pk,
)


def _route_out(item: RouteItem) -> RouteOut:
    return RouteOut(id=item.route_id, driver_id=item.driver_id, day=date.fromisoformat(item.day),
                    planned_start=item.planned_start, status=item.status,  # type: ignore[arg-type]
                    stops=[RouteStop(sequence=i, shipment_id=str(s)) for i, s in enumerate(item.stops)],
                    started_at=item.started_at, created_at=item.created_at)


def create_route(repo: Repository, merchant_id: str, body: RouteCreate) -> RouteOut:
    require_driver(repo, merchant_id, body.driver_id)
    shipments = repo.get_shipments(merchant_id, body.shipment_ids)
    problems = []
    for index, sid in enumerate(body.shipment_ids):
        found = shipments.get(sid)
        if found is None:
            problems.append(errors.FieldProblem(f"shipment_ids[{index}]", "shipment not found"))
        elif S.ASSIGNED not in ALLOWED[ShipmentStatus(found.status)]:
            problems.append(errors.FieldProblem(f"shipment_ids[{index}]",
                                                f"shipment is {found.status}, not created or rescheduled"))
    if problems:
        kind = ErrorKind.CONFLICT if all(p.reason != "shipment not found" for p in problems) else ErrorKind.NOT_FOUND
        raise errors.DomainError(kind, "shipments_not_assignable", "Some shipments cannot be put on this route.",
                                 problems)
    now = now_utc()
    route_id = new_id("rte")
    route = RouteItem(merchant_pk(merchant_id), f"ROUTE#{route_id}",
                      GSI1PK=driver_routes_pk(merchant_id, body.driver_id), GSI1SK=f"{body.day}#{route_id}",
                      merchant_id=merchant_id, route_id=route_id, driver_id=body.driver_id, day=body.day.isoformat(),
                      planned_start=body.planned_start, stops=list(body.shipment_ids), status="planned",
                      created_at=now)
    repo.put_route(route)
    changes: list[StatusChange] = []
    for index, sid in enumerate(body.shipment_ids):
        shipment = shipments[sid]
        extra = [ShipmentItem.route_id.set(route_id), ShipmentItem.stop_index.set(index),
                 ShipmentItem.driver_id.set(body.driver_id)]
        event = timeline_event(merchant_id, sid, "assigned", "merchant", now, now, shipment.status, S.ASSIGNED)
        changes.append((shipment, S.ASSIGNED, extra, event))
    try:
        repo.change_statuses(changes)
    except ConditionFailed:
        # A shipment changed under us; undo so no shipment points at a half-made route.
        _release_shipments(repo, merchant_id, route_id, body.shipment_ids)
        repo.delete_route(route)
        raise errors.conflict("Some shipments changed meanwhile; read them and retry.") from None
    return _route_out(route)


def _release_shipments(repo: Repository, merchant_id: str, route_id: str, shipment_ids: list[str]) -> None:
    now = now_utc()
    current = repo.get_shipments(merchant_id, shipment_ids)
    changes: list[StatusChange] = [
        (s, S.CREATED, [ShipmentItem.route_id.remove(), ShipmentItem.stop_index.remove(),
                        ShipmentItem.driver_id.remove()],
         timeline_event(merchant_id, s.shipment_id, "unassigned", "system", now, now, s.status, S.CREATED))
        for s in current.values() if s.route_id == route_id and s.status == S.ASSIGNED
    ]
    if changes:
        repo.change_statuses(changes)



def get_route(repo: Repository, merchant_id: str, route_id: str) -> RouteOut:
    return _route_out(require_route(repo, merchant_id, route_id))


def start_route(repo: Repository, merchant_id: str, route_id: str) -> RouteOut:
    """Start a planned route: its assigned shipments go out for delivery."""
    route = require_route(repo, merchant_id, route_id)
    if route.status != "planned":
        raise errors.conflict(f"The route is {route.status}; only a planned route can start.", "status",
                              f"current status is {route.status}")
    now = now_utc()
    try:
        repo.set_route_status(route, "active", "planned", now)
    except ConditionFailed:
        raise errors.conflict("The route was started meanwhile.", "status", "already started") from None
    shipments = repo.get_shipments(merchant_id, [str(s) for s in route.stops])
    changes: list[StatusChange] = [
        (s, S.OUT_FOR_DELIVERY, [],
         timeline_event(merchant_id, s.shipment_id, "out_for_delivery", "merchant", now, now, s.status,
                        S.OUT_FOR_DELIVERY))
        for s in shipments.values() if s.status == S.ASSIGNED and s.route_id == route_id
    ]
    repo.change_statuses(changes)
    route.status, route.started_at = "active", now
    return _route_out(route)
