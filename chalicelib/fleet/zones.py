"""Polygon zones (depots, restricted areas) and drivers' zone events."""

from __future__ import annotations

import json
from typing import Any

import h3

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.security import (
    new_id,
)
from chalicelib.fleet.models import (
    ZoneCreate,
    ZoneEvent,
    ZoneEvents,
    ZoneKind,
    ZoneOut,
    ZonePage,
)
from chalicelib.fleet.service import require_driver
from chalicelib.geo.geofence import COARSE_INDEX_RES, PolygonFence, fence_cells
from chalicelib.geo.polygons import InvalidPolygon, normalise_polygon
from chalicelib.storage.repository import Repository, now_utc
from chalicelib.storage.tables import (
    ZoneItem,
    merchant_pk,
)

MAX_ZONE_POSITIONS = 2000


MAX_ZONE_INDEX_CELLS = 500


def _zone_out(item: ZoneItem) -> ZoneOut:
    fence = json.loads(item.fence)
    return ZoneOut(id=item.zone_id, name=item.name, kind=ZoneKind(item.kind), geometry=fence["geometry"],
                   exit_buffer_m=float(fence["buffer_m"]), cells=len(item.cells), created_at=item.created_at)


def create_zone(repo: Repository, merchant_id: str, body: ZoneCreate) -> ZoneOut:
    """A polygon zone, indexed under the res-7 cells that cover it out to its exit line."""
    geometry = body.geometry.model_dump()
    if _count_positions(geometry["coordinates"]) > MAX_ZONE_POSITIONS:
        raise errors.validation_failed([errors.FieldProblem("geometry.coordinates",
                                                            f"at most {MAX_ZONE_POSITIONS} positions")])
    try:
        geometry = normalise_polygon(geometry)  # closed, simple rings in RFC 7946 order (chalicelib/geo/polygons)
    except InvalidPolygon as exc:
        raise errors.validation_failed([errors.FieldProblem(f"geometry.{p.where}", p.reason)
                                        for p in exc.problems]) from None
    zone_id = new_id("zon")
    try:
        fence = PolygonFence(zone_id, geometry, body.exit_buffer_m)
        cells = sorted({str(h3.cell_to_parent(c, COARSE_INDEX_RES)) if h3.get_resolution(c) > COARSE_INDEX_RES
                        else c for c in fence_cells(fence)})
    except (ValueError, TypeError) as exc:
        raise errors.validation_failed([errors.FieldProblem("geometry", str(exc))]) from exc
    if len(cells) > MAX_ZONE_INDEX_CELLS:
        raise errors.validation_failed([errors.FieldProblem("geometry", "zone too large: split it into smaller "
                                                                        "zones")])
    item = ZoneItem(merchant_pk(merchant_id), f"ZONE#{zone_id}", merchant_id=merchant_id, zone_id=zone_id,
                    name=body.name, kind=str(body.kind), fence=json.dumps(fence.to_dict()), cells=cells,
                    created_at=now_utc())
    repo.create_zone(item)
    return _zone_out(item)


def _count_positions(value: Any) -> int:
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return 1
    return sum(_count_positions(v) for v in value) if isinstance(value, list) else 0


def _require_zone(repo: Repository, merchant_id: str, zone_id: str) -> ZoneItem:
    item = repo.get_zone(merchant_id, zone_id)
    if item is None:
        raise errors.not_found("Zone")
    return item


def get_zone(repo: Repository, merchant_id: str, zone_id: str) -> ZoneOut:
    return _zone_out(_require_zone(repo, merchant_id, zone_id))


def list_zones(repo: Repository, settings: Settings, merchant_id: str, limit: int, cursor: str | None) -> ZonePage:
    scope = f"zones:{merchant_id}"
    items, last = repo.list_zones(merchant_id, limit, cursor_in(settings, scope, cursor))
    return ZonePage(items=[_zone_out(i) for i in items], next_cursor=cursor_out(settings, scope, last))


def delete_zone(repo: Repository, merchant_id: str, zone_id: str) -> None:
    repo.delete_zone(_require_zone(repo, merchant_id, zone_id))


def driver_zone_events(repo: Repository, merchant_id: str, driver_id: str, limit: int) -> ZoneEvents:
    require_driver(repo, merchant_id, driver_id)
    items = [ZoneEvent(id=e.event_id, type=e.type, zone_id=e.zone_id, zone_name=e.zone_name,  # type: ignore[arg-type]
                       occurred_at=e.occurred_at, lat=float(e.lat), lng=float(e.lng))
             for e in repo.zone_events(driver_id, limit) if e.merchant_id == merchant_id]
    return ZoneEvents(driver_id=driver_id, items=items)
