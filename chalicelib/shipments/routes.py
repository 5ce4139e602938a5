"""Route use cases: a driver's ordered stops for a day, created, listed, edited, reassigned, started, completed.

Every edit is conditional on the route's `version` (and status) and carries its shipments' updates in the same
transaction; each affected shipment gets a timeline event (`route_changed`, `reassigned`, `route_completed`),
which the webhook sender also delivers. At most one active route per driver: starting (or handing an active route
to another driver) claims the driver's ACTIVEROUTE item, completing releases it (docs/data-model.md #75).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.errors import ErrorKind
from chalicelib.core.security import (
    new_id,
)
from chalicelib.fleet import presence
from chalicelib.fleet.service import require_driver
from chalicelib.shipments.lifecycle import ALLOWED, ShipmentStatus
from chalicelib.shipments.lifecycle import ShipmentStatus as S
from chalicelib.shipments.models import (
    RouteCreate,
    RouteOut,
    RoutePage,
    RoutePatch,
    RouteReassign,
    RouteStatus,
    RouteStop,
    StopMove,
)
from chalicelib.shipments.route_rules import ROUTE_STOP_DONE, STOP_RELEASABLE, plan_stop_edit, route_done
from chalicelib.shipments.store import require_route, timeline_event
from chalicelib.storage.repository import (
    ActiveRouteTaken,
    ConditionFailed,
    Repository,
    RouteVersionConflict,
    RouteWrite,
    ShipmentWrite,
    StatusChange,
    now_utc,
    status_actions,
)
from chalicelib.storage.tables import (
    EventItem,
    RouteItem,
    ShipmentItem,
    driver_routes_pk,
    event_item,
    merchant_pk,
    route_day_gsi_pk,
)


def _route_out(item: RouteItem) -> RouteOut:
    return RouteOut(id=item.route_id, driver_id=item.driver_id, day=date.fromisoformat(item.day),
                    planned_start=item.planned_start, status=item.status,  # type: ignore[arg-type]
                    stops=[RouteStop(sequence=i, shipment_id=str(s)) for i, s in enumerate(item.stops)],
                    started_at=item.started_at, completed_at=item.completed_at, created_at=item.created_at,
                    version=int(item.version or 0))


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
                      GSI2PK=route_day_gsi_pk(merchant_id, body.day.isoformat()), GSI2SK=f"planned#{route_id}",
                      planned_start=body.planned_start, stops=list(body.shipment_ids), status="planned",
                      created_at=now, version=0)
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


def read_route(repo: Repository, merchant_id: str, route_id: str) -> RouteItem:
    """The merchant's route as stored (404 when it is not the merchant's), for features that plan on it."""
    return require_route(repo, merchant_id, route_id)


def start_route(repo: Repository, merchant_id: str, route_id: str) -> RouteOut:
    """Start a planned route: its assigned shipments go out for delivery, and its driver's active-route item is
    claimed (409 naming the other route if the driver is on one already)."""
    route = require_route(repo, merchant_id, route_id)
    if route.status != "planned":
        raise errors.conflict(f"The route is {route.status}; only a planned route can start.", "status",
                              f"current status is {route.status}")
    now = now_utc()
    version = int(route.version or 0)
    shipments = repo.get_shipments(merchant_id, [str(s) for s in route.stops])
    writes: list[ShipmentWrite] = [
        (s, status_actions(s, S.OUT_FOR_DELIVERY, now),
         [timeline_event(merchant_id, s.shipment_id, "out_for_delivery", "merchant", now, now, s.status,
                         S.OUT_FOR_DELIVERY)])
        for s in shipments.values() if s.status == S.ASSIGNED and s.route_id == route_id
    ]
    actions = [RouteItem.status.set("active"), RouteItem.started_at.set(now), RouteItem.version.set(version + 1),
               RouteItem.GSI2SK.set(f"active#{route_id}")]
    _commit(repo, [RouteWrite(route, actions, version, ("planned",))], writes,
            claim=(merchant_id, route.driver_id, route_id))
    route.status, route.started_at, route.version = "active", now, version + 1
    presence.route_started(repo, merchant_id, route.driver_id, route_id)
    from chalicelib.custody.service import on_closed

    for shipment, _, _ in writes:  # the handover to the driver, in each shipment's chain of custody
        on_closed(repo, merchant_id, shipment.shipment_id, "out_for_delivery", now, f"driver:{route.driver_id}",
                  {"route_id": route_id})
    return _route_out(route)


def _commit(repo: Repository, routes: list[RouteWrite], writes: list[ShipmentWrite],
            claim: tuple[str, str, str] | None = None, release: list[tuple[str, str, str]] | None = None) -> None:
    """The edit's one transaction, its failures as the merchant's 409s."""
    try:
        repo.commit_route_edit(routes, writes, claim=claim, release=release or [])
    except RouteVersionConflict:
        raise errors.conflict("The route changed since it was read; read it again and retry.", "version",
                              "stale version") from None
    except ActiveRouteTaken as taken:
        other = taken.route_id or "another route"
        raise errors.conflict(f"The driver is already on active route {other}; complete it first.", "driver_id",
                              f"driver has active route {other}") from None
    except ConditionFailed:
        raise errors.conflict("Some shipments changed meanwhile; read them and retry.") from None


def list_routes(repo: Repository, settings: Settings, merchant_id: str, *, day: date | None,
                driver_id: str | None, status: RouteStatus | None, limit: int, cursor: str | None) -> RoutePage:
    scope = f"routes:{merchant_id}:{day}:{driver_id}:{status}"
    items, last = repo.list_routes(merchant_id, day=day.isoformat() if day else None, driver_id=driver_id,
                                   status=status, limit=limit, start=cursor_in(settings, scope, cursor))
    return RoutePage(items=[_route_out(i) for i in items], next_cursor=cursor_out(settings, scope, last))


def _require_editable(route: RouteItem, version: int | None) -> None:
    if route.status not in ("planned", "active"):
        raise errors.conflict(f"The route is {route.status}; only a planned or active route can change.", "status",
                              f"current status is {route.status}")
    if version is not None and version != int(route.version or 0):
        raise errors.conflict("The route changed since it was read; read it again and retry.", "version",
                              f"stale version: the route is at version {int(route.version or 0)}")


def _ids(shipment_ids: list[str]) -> Any:
    """A stop list as pynamodb's ListAttribute takes it (its stubs type the elements as attributes)."""
    return shipment_ids


def _on_route_status(route: RouteItem) -> S:
    return S.OUT_FOR_DELIVERY if route.status == "active" else S.ASSIGNED


def _joining(merchant_id: str, route: RouteItem, shipment: ShipmentItem, index: int, kind: str, now: datetime,
             data: dict[str, Any]) -> ShipmentWrite:
    """A shipment joins `route` at `index`: assigned (planned route) or out for delivery (active route). Its
    timeline gets the status event the recipient's messages follow (as when a route is made or started) and the
    route event (`kind`) the merchant's webhook follows."""
    wanted = _on_route_status(route)
    status = S(shipment.status)
    actions = [ShipmentItem.route_id.set(route.route_id), ShipmentItem.stop_index.set(index),
               ShipmentItem.driver_id.set(route.driver_id), ShipmentItem.updated_at.set(now)]
    events = [timeline_event(merchant_id, shipment.shipment_id, kind, "merchant", now, now, None, None, data)]
    if status != wanted:
        actions = [*status_actions(shipment, wanted, now), *actions[:3]]
        events.insert(0, timeline_event(merchant_id, shipment.shipment_id, str(wanted), "merchant", now, now,
                                        str(status), str(wanted), {"route_id": route.route_id}))
    return shipment, actions, events


def _leaving(merchant_id: str, route: RouteItem, shipment: ShipmentItem, now: datetime,
             data: dict[str, Any]) -> ShipmentWrite:
    """A shipment leaves `route`: back to created (to be planned again), or as it is if its attempt is done."""
    if shipment.status in STOP_RELEASABLE:
        actions = [*status_actions(shipment, S.CREATED, now), ShipmentItem.route_id.remove(),
                   ShipmentItem.stop_index.remove(), ShipmentItem.driver_id.remove()]
        return (shipment, actions, [timeline_event(merchant_id, shipment.shipment_id, "route_changed", "merchant",
                                                   now, now, shipment.status, S.CREATED, data)])
    return (shipment, [ShipmentItem.route_id.remove(), ShipmentItem.stop_index.remove(),
                       ShipmentItem.updated_at.set(now)],
            [timeline_event(merchant_id, shipment.shipment_id, "route_changed", "merchant", now, now, None, None,
                            data)])


def _check_assignable(shipments: dict[str, ShipmentItem], ids: list[str], field: str,
                      positions: dict[str, int]) -> None:
    problems = []
    for sid in ids:
        found = shipments.get(sid)
        where = f"{field}[{positions[sid]}]"
        if found is None:
            problems.append(errors.FieldProblem(where, "shipment not found"))
        elif S.ASSIGNED not in ALLOWED[ShipmentStatus(found.status)]:
            problems.append(errors.FieldProblem(where, f"shipment is {found.status}, not created or rescheduled"))
    if problems:
        kind = ErrorKind.CONFLICT if all(p.reason != "shipment not found" for p in problems) else ErrorKind.NOT_FOUND
        raise errors.DomainError(kind, "shipments_not_assignable", "Some shipments cannot be put on this route.",
                                 problems)


def edit_route(repo: Repository, merchant_id: str, route_id: str, body: RoutePatch, *,
               kind: str = "route_changed", details: dict[str, Any] | None = None) -> RouteOut:
    """Replace a planned or active route's stop list: add, remove and reorder in one conditional change.

    `kind` is the timeline event of the stops that stay (`route_optimized` when the sequencing reordered them),
    with `details` added to its data."""
    route = require_route(repo, merchant_id, route_id)
    _require_editable(route, body.version)
    old = [str(s) for s in route.stops]
    new = list(body.shipment_ids)
    plan = plan_stop_edit(old, new)
    if not plan.added and not plan.removed and not plan.reordered:
        return _route_out(route)
    shipments = repo.get_shipments(merchant_id, list(dict.fromkeys(old + new)))
    _check_assignable(shipments, list(plan.added), "shipment_ids", {sid: i for i, sid in enumerate(new)})
    now = now_utc()
    data: dict[str, Any] = {"route_id": route_id, "added": list(plan.added), "removed": list(plan.removed),
                            "reordered": plan.reordered, **(details or {})}
    writes: list[ShipmentWrite] = []
    for index, sid in enumerate(new):
        shipment = shipments[sid]
        if sid in plan.added:
            writes.append(_joining(merchant_id, route, shipment, index, "route_changed", now, data))
        elif shipment.route_id == route_id:
            writes.append((shipment, [ShipmentItem.stop_index.set(index), ShipmentItem.updated_at.set(now)],
                           [timeline_event(merchant_id, sid, kind, "merchant", now, now, None, None,
                                           {**data, "sequence": index})]))
    for sid in plan.removed:
        found = shipments.get(sid)
        if found is not None and found.route_id == route_id:
            writes.append(_leaving(merchant_id, route, found, now, data))
    version = int(route.version or 0)
    _commit(repo, [RouteWrite(route, [RouteItem.stops.set(_ids(new)), RouteItem.version.set(version + 1)], version)],
            writes)
    _after_edit(repo, route, now)
    route.stops, route.version = _ids(new), version + 1
    _complete_if_done(repo, route)  # only done stops left (the others were removed): the route is over
    return _route_out(route)


def _after_edit(repo: Repository, route: RouteItem, now: datetime) -> None:
    """The stop order changed: the ETA item (aligned with the old order) goes, and the pipeline rereads the
    route's stops at the driver's next ping."""
    repo.delete_route_eta(route.route_id)
    repo.flag_route_edited(route.driver_id)


def reassign_route(repo: Repository, merchant_id: str, route_id: str, body: RouteReassign) -> RouteOut:
    """Give a planned or active route (all its stops) to another driver; an active route claims the new driver's
    active-route item and releases the old one's."""
    route = require_route(repo, merchant_id, route_id)
    _require_editable(route, body.version)
    require_driver(repo, merchant_id, body.driver_id)
    old_driver = route.driver_id
    if body.driver_id == old_driver:
        raise errors.conflict("The route is already this driver's.", "driver_id", "same driver")
    now = now_utc()
    version = int(route.version or 0)
    data = {"route_id": route_id, "from_driver_id": old_driver, "to_driver_id": body.driver_id}
    shipments = repo.get_shipments(merchant_id, [str(s) for s in route.stops])
    writes: list[ShipmentWrite] = [
        (s, [ShipmentItem.driver_id.set(body.driver_id), ShipmentItem.updated_at.set(now)],
         [timeline_event(merchant_id, s.shipment_id, "reassigned", "merchant", now, now, None, None, data)])
        for s in shipments.values() if s.route_id == route_id
    ]
    actions = [RouteItem.driver_id.set(body.driver_id), RouteItem.version.set(version + 1),
               RouteItem.GSI1PK.set(driver_routes_pk(merchant_id, body.driver_id))]
    active = route.status == "active"
    _commit(repo, [RouteWrite(route, actions, version)], writes,
            claim=(merchant_id, body.driver_id, route_id) if active else None,
            release=[(merchant_id, old_driver, route_id)] if active else None)
    repo.flag_route_edited(old_driver)
    repo.flag_route_edited(body.driver_id)
    route.driver_id, route.version = body.driver_id, version + 1
    if active:  # the route's duty moves with it: the old driver's shift for it ends, the new driver's starts
        presence.route_completed(repo, merchant_id, old_driver, route_id)
        presence.route_started(repo, merchant_id, body.driver_id, route_id)
    return _route_out(route)


def move_stop(repo: Repository, merchant_id: str, route_id: str, shipment_id: str, body: StopMove) -> RouteOut:
    """Move one stop to the end of another planned or active route (another driver's, usually); answers the
    route that took it."""
    if body.route_id == route_id:
        raise errors.bad_request("The stop is already on this route.", "route_id", "same route")
    source = require_route(repo, merchant_id, route_id)
    target = repo.get_route(merchant_id, body.route_id)
    if target is None:
        raise errors.DomainError(ErrorKind.NOT_FOUND, "not_found", "Route not found.",
                                 [errors.FieldProblem("route_id", "route not found")])
    _require_editable(source, None)
    _require_editable(target, None)
    old = [str(s) for s in source.stops]
    if shipment_id not in old:
        raise errors.not_found("Stop")
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or shipment.route_id != route_id:
        raise errors.not_found("Stop")
    if shipment.status not in STOP_RELEASABLE:
        raise errors.conflict(f"The stop is {shipment.status}; only a stop still to do can move.", "status",
                              f"current status is {shipment.status}")
    now = now_utc()
    remaining = [s for s in old if s != shipment_id]
    taken = [*(str(s) for s in target.stops), shipment_id]
    data = {"route_id": target.route_id, "from_route_id": route_id, "from_driver_id": source.driver_id,
            "to_driver_id": target.driver_id}
    writes: list[ShipmentWrite] = [_joining(merchant_id, target, shipment, len(taken) - 1, "reassigned", now, data)]
    others = repo.get_shipments(merchant_id, remaining) if remaining else {}
    for index, sid in enumerate(remaining):
        other = others.get(sid)
        if other is not None and other.route_id == route_id and int(other.stop_index or 0) != index:
            writes.append((other, [ShipmentItem.stop_index.set(index), ShipmentItem.updated_at.set(now)], []))
    sv, tv = int(source.version or 0), int(target.version or 0)
    _commit(repo, [RouteWrite(source, [RouteItem.stops.set(_ids(remaining)), RouteItem.version.set(sv + 1)], sv),
                   RouteWrite(target, [RouteItem.stops.set(_ids(taken)), RouteItem.version.set(tv + 1)], tv)], writes)
    _after_edit(repo, source, now)
    _after_edit(repo, target, now)
    source.stops, source.version = _ids(remaining), sv + 1
    _complete_if_done(repo, source)  # the moved stop was its last one still to do
    target.stops, target.version = _ids(taken), tv + 1
    return _route_out(target)


def complete_route(repo: Repository, merchant_id: str, route_id: str) -> RouteOut:
    """The merchant ends an active route: stops still to do go back to created (to be planned again), the
    driver's active-route item is released, every stop gets a `route_completed` event."""
    route = require_route(repo, merchant_id, route_id)
    if route.status != "active":
        raise errors.conflict(f"The route is {route.status}; only an active route can be completed.", "status",
                              f"current status is {route.status}")
    now = now_utc()
    shipments = repo.get_shipments(merchant_id, [str(s) for s in route.stops])
    data = {"route_id": route_id, "ended_by": "merchant"}
    writes = [_leaving(merchant_id, route, s, now, data) for s in shipments.values()
              if s.route_id == route_id and s.status in STOP_RELEASABLE]
    version = int(route.version or 0)
    _commit(repo, [RouteWrite(route, [RouteItem.status.set("completed"), RouteItem.completed_at.set(now),
                                      RouteItem.GSI2SK.set(f"completed#{route_id}"),
                                      RouteItem.version.set(version + 1)], version, ("active",))],
            writes, release=[(merchant_id, route.driver_id, route_id)])
    route.status, route.completed_at, route.version = "completed", now, version + 1
    _announce_completed(repo, route, [s.shipment_id for s in shipments.values() if s.route_id == route_id], now,
                        "merchant")
    presence.route_completed(repo, merchant_id, route.driver_id, route_id)
    return _route_out(route)


def _announce_completed(repo: Repository, route: RouteItem, shipment_ids: list[str], now: datetime,
                        source: str) -> None:
    """A `route_completed` event per stop, under a deterministic id: written once however often this runs."""
    for sid in shipment_ids:
        repo.put_event_once(event_item(route.merchant_id, sid, f"route-completed-{route.route_id}",
                                       "route_completed", source, now, now, None, None,
                                       {"route_id": route.route_id}))


def complete_route_if_done(repo: Repository, merchant_id: str, shipment_id: str) -> bool:
    """The stream pipeline, after a stop reached a done status: complete its route if that was the last one.

    Idempotent under redelivery: the route's completion is conditional on it being active, and when it was
    completed already (an earlier delivery of this record), its events are written again under their fixed ids,
    which only fills in any a crash left out. True when this call completed the route.
    """
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or not shipment.route_id or shipment.status not in ROUTE_STOP_DONE:
        return False
    route = repo.get_route(merchant_id, shipment.route_id)
    return route is not None and _complete_if_done(repo, route)


def _complete_if_done(repo: Repository, route: RouteItem) -> bool:
    """Complete an active route whose every remaining stop is done (and announce it, again if need be)."""
    if route.status not in ("active", "completed"):
        return False
    merchant_id = route.merchant_id
    ids = [str(s) for s in route.stops]
    stops = repo.get_shipments(merchant_id, ids, attributes=("shipment_id", "status", "route_id"))
    on_route = [s for s in stops.values() if s.route_id == route.route_id]
    if not route_done(s.status for s in on_route):
        return False
    completed_now = False
    if route.status == "active":
        completed_now = repo.complete_route(route, now_utc())
        if not completed_now:
            route = repo.get_route(merchant_id, route.route_id) or route
    if route.status == "completed":
        _announce_completed(repo, route, [s.shipment_id for s in on_route], route.completed_at or now_utc(),
                            "system")
        presence.route_completed(repo, merchant_id, route.driver_id, route.route_id)
    return completed_now

__all__ = ["EventItem", "complete_route", "complete_route_if_done", "create_route", "edit_route", "get_route",
           "list_routes", "move_stop", "reassign_route", "start_route"]
