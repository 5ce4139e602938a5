"""Request and answer of POST /v1/routes/{route_id}/optimize."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from chalicelib.core.types import Model_, Strict_
from chalicelib.shipments.models import RouteOut

StartKind = Literal["auto", "depot", "driver", "first_stop"]


class RouteOptimize(Strict_):
    version: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="If given, the version the change is based on (409 if the route changed since)")
    start: StartKind = Field(
        default="auto", description="Where the order starts: `auto` is the stop in progress (active route), else "
                                    "the driver's last position (active route), else the merchant's depot zone, "
                                    "else the route's first stop (kept first)")
    return_to_depot: bool = Field(default=False, description="The tour ends back at the depot zone (counted in "
                                                             "the totals)")


class PlanTotals(Model_):
    distance_m: int = Field(description="Road metres (straight line x circuity, or a road network's)")
    travel_s: int = Field(description="Seconds driving")
    duration_s: int = Field(description="Seconds from departure to the last stop's end: driving, service, waiting")
    late_stops: list[str] = Field(description="Shipments reached after their time window closes")


class RouteOptimized(Model_):
    route: RouteOut
    changed: bool = Field(description="The order changed (the route's version moved; a `route_optimized` event)")
    start: Literal["depot", "driver", "first_stop", "stop_in_progress"]
    before: PlanTotals
    after: PlanTotals
    unmet_windows: list[str] = Field(description="Shipments whose time window the new order cannot meet")
    solve_ms: int
