"""Route sequencing use case: order a planned route's stops, or the stops still to do of an active route.

The new order goes through the route edit path (chalicelib.shipments.routes.edit_route: conditional on the
route's version, one transaction with the shipments' stop_index, the ETA item dropped and the driver's
stops_version bumped so the pipeline rereads the stops), with `route_optimized` as the stops' timeline and
webhook event. An order no better than the current one (fewer late stops first, then less travel) is not written.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Literal

from chalicelib.core import errors
from chalicelib.fleet.service import merchant_settings
from chalicelib.geo.eta import DEFAULT_SERVICE_TIME_S, HOUR_MS, SPEED_RES, hour_of_week
from chalicelib.sequencing.models import PlanTotals, RouteOptimize, RouteOptimized
from chalicelib.sequencing.rules import LearnedSpeeds, Point, Totals, TravelModel, evaluate
from chalicelib.shipments.models import RoutePatch
from chalicelib.shipments.route_rules import ROUTE_STOP_DONE
from chalicelib.shipments.routes import edit_route, get_route, read_route
from chalicelib.storage.repository import Repository, now_utc
from chalicelib.storage.tables import ShipmentItem

IN_PROGRESS = frozenset({"approaching", "arrived"})  # the driver is at or about to reach this stop: it stays first
StartUsed = Literal["depot", "driver", "first_stop", "stop_in_progress"]


def _seconds_from(depart: datetime, at: datetime | None) -> float | None:
    return None if at is None else (at - depart).total_seconds()


def _point(shipment: ShipmentItem, depart: datetime, service_s: float, *, early_deliveries: bool = False) -> Point:
    """The stop as the solver sees it; with `early_deliveries` (the merchant's drivers deliver before a window
    opens: `early_arrival` "deliver") only the window's end binds, so the plan never waits for an opening."""
    start = None if early_deliveries else _seconds_from(depart, shipment.window_start)
    end = _seconds_from(depart, shipment.window_end)
    window = None if start is None and end is None else (start if start is not None else -math.inf,
                                                          end if end is not None else math.inf)
    return Point(shipment.shipment_id, float(shipment.lat), float(shipment.lng), service_s, window)


def _located(shipment: ShipmentItem | None) -> bool:
    if shipment is None:
        return False
    lat, lng = shipment.lat, shipment.lng
    return lat is not None and lng is not None and math.isfinite(float(lat)) and math.isfinite(float(lng))


def learned_speeds(repo: Repository, points: list[Point], depart_ms: int) -> TravelModel:
    """The travel model from the stored speed counters of the stops' cells at the departure's hour (#24)."""
    import h3

    from chalicelib.pipeline.service import learned_speed_table  # the ETA's own reader of the counters

    cells = {str(h3.latlng_to_cell(p.lat, p.lng, SPEED_RES)) for p in points}
    table = learned_speed_table(repo, cells, [hour_of_week(depart_ms), hour_of_week(depart_ms + HOUR_MS)])
    return LearnedSpeeds(table)


def _totals(model_totals: Totals) -> PlanTotals:
    return PlanTotals(distance_m=model_totals.distance_m, travel_s=model_totals.travel_s,
                      duration_s=model_totals.duration_s, late_stops=list(model_totals.late))


def optimize_route(repo: Repository, merchant_id: str, route_id: str, body: RouteOptimize, *,
                   model: TravelModel | None = None) -> RouteOptimized:
    route = read_route(repo, merchant_id, route_id)
    if route.status not in ("planned", "active"):
        raise errors.conflict(f"The route is {route.status}; only a planned or active route can be optimized.",
                              "status", f"current status is {route.status}")
    version = int(route.version or 0)
    if body.version is not None and body.version != version:
        raise errors.conflict("The route changed since it was read; read it again and retry.", "version",
                              f"stale version: the route is at version {version}")
    ids = [str(s) for s in route.stops]
    shipments = repo.get_shipments(merchant_id, ids)
    active = route.status == "active"
    done = [sid for sid in ids if active and sid in shipments and shipments[sid].status in ROUTE_STOP_DONE]
    todo = [sid for sid in ids if sid not in done]
    unlocated = [f"stops[{ids.index(sid)}]" for sid in todo if not _located(shipments.get(sid))]
    if unlocated:
        raise errors.invalid("stops_without_location", "Some stops have no coordinates to sequence.",
                             [errors.FieldProblem(f, "stop has no location") for f in unlocated])
    pinned = next((sid for sid in todo if shipments[sid].status in IN_PROGRESS), None) if active else None
    free = [sid for sid in todo if sid != pinned]
    if len(todo) < 2:
        raise errors.invalid("too_few_stops", "At least 2 stops still to do are needed to choose an order.",
                             [errors.FieldProblem("stops", f"{len(todo)} stop(s) to order")])
    now = now_utc()
    depart = now if active else route.planned_start  # an active route leaves from here, now
    depart_ms = int(depart.timestamp() * 1000)
    service_s = _service_time_s(repo, merchant_id)
    early = merchant_settings(repo, merchant_id).early_arrival == "deliver"  # the ETA's own rule: one policy
    stop_points = {sid: _point(shipments[sid], depart, service_s, early_deliveries=early) for sid in todo}

    start_used: StartUsed
    start_point: Point | None = None
    depot: Point | None = None
    if body.return_to_depot or body.start in ("auto", "depot"):
        depot = _depot_point(repo, merchant_id)
        if depot is None and (body.return_to_depot or body.start == "depot"):
            raise errors.invalid("no_depot", "The merchant has no depot zone to start or end at.",
                                 [errors.FieldProblem("return_to_depot" if body.return_to_depot else "start",
                                                      "no zone of kind depot")])
    if pinned is not None and body.start == "auto":
        start_used, start_point = "stop_in_progress", stop_points[pinned]
    elif body.start in ("auto", "driver") and (active or body.start == "driver") \
            and (position := repo.get_position(route.driver_id)) is not None:
        start_used, start_point = "driver", Point("driver", float(position.lat), float(position.lng))
    elif body.start == "driver":
        raise errors.invalid("no_driver_position", "The driver has no known position yet.",
                             [errors.FieldProblem("start", "no position reported")])
    elif depot is not None and body.start in ("auto", "depot"):
        start_used, start_point = "depot", depot
    else:
        start_used = "first_stop"
    if start_used == "first_stop":
        first = pinned or free[0]
        start_point = stop_points[first]
        pinned = first
        free = [sid for sid in free if sid != first]
    assert start_point is not None

    points = [start_point, *(stop_points[sid] for sid in free)]
    end: int | None = None
    if body.return_to_depot and depot is not None:
        if start_used == "depot":
            end = 0
        else:
            points.append(depot)
            end = len(points) - 1
    model = model or learned_speeds(repo, points, depart_ms)
    matrix = model.matrix(points, depart_ms)
    current = [0, *range(1, len(free) + 1)]
    before = evaluate(points, current, matrix, return_to=end)
    started = time.perf_counter()
    from chalicelib.sequencing.solver import solve

    order = solve(points, matrix, stops=list(range(1, len(free) + 1)), end=end)
    solve_ms = round((time.perf_counter() - started) * 1000)
    after = evaluate(points, order, matrix, return_to=end)
    if (len(after.late), after.travel_s) >= (len(before.late), before.travel_s):
        order, after = current, before  # never worse than what the merchant has
    new_free = [free[i - 1] for i in order[1:]]
    head = [pinned] if pinned is not None else []
    new_ids = [*done, *head, *new_free]
    changed = new_ids != ids
    if changed:
        details = {"travel_s_before": before.travel_s, "travel_s_after": after.travel_s}
        out = edit_route(repo, merchant_id, route_id, RoutePatch(version=version, shipment_ids=new_ids),
                         kind="route_optimized", details=details)
    else:
        out = get_route(repo, merchant_id, route_id)
    return RouteOptimized(route=out, changed=changed, start=start_used, before=_totals(before),
                          after=_totals(after), unmet_windows=list(after.late), solve_ms=solve_ms)


def _service_time_s(repo: Repository, merchant_id: str) -> float:
    """The merchant's learned time per stop (the ETA's, from observed dwells), else the default 70 s."""
    from chalicelib.pipeline.service import learned_service_time_s

    return learned_service_time_s(repo, merchant_id, DEFAULT_SERVICE_TIME_S)


def _depot_point(repo: Repository, merchant_id: str) -> Point | None:
    from chalicelib.shipments.redelivery import depot_of

    depot = depot_of(repo, merchant_id)
    if depot.get("depot_lat") is None:
        return None
    return Point(str(depot.get("depot_zone_id") or "depot"), float(depot["depot_lat"]), float(depot["depot_lng"]))
