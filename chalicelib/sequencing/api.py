"""Route sequencing route: POST /v1/routes/{route_id}/optimize (the solver loads on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalice.app import Blueprint

from chalicelib.http.routes import Call, Routes
from chalicelib.storage import get_repository

if TYPE_CHECKING:
    from chalicelib.sequencing.models import RouteOptimized

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.sequencing.models")


@routes.route("/v1/routes/{route_id}/optimize", "POST", summary="Put a planned route's stops (or an active route's "
              "stops still to do, the one in progress first) in the order of least travel time within their time "
              "windows", tag="routes", body="RouteOptimize", optional_body=True, response="RouteOptimized",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def optimize_route(call: Call, route_id: str) -> RouteOptimized:
    from chalicelib.sequencing import service

    return service.optimize_route(get_repository(), call.merchant_id, route_id, call.body)
