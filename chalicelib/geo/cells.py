"""Distances and H3 cells."""

from __future__ import annotations

import math

import h3

EARTH_RADIUS_M = 6_371_008.8
FINE_RES = 10  # ~66 m edge: ping history, geofence candidate lookup
COARSE_RES = 6  # ~3.7 km edge: "drivers near a point" index
MAX_NEARBY_RADIUS_M = 25_000.0


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def fine_cell(lat: float, lng: float) -> str:
    return str(h3.latlng_to_cell(lat, lng, FINE_RES))


def coarse_cell(lat: float, lng: float) -> str:
    return str(h3.latlng_to_cell(lat, lng, COARSE_RES))


def cells_within(lat: float, lng: float, radius_m: float) -> list[str]:
    """Coarse cells that together cover every point within `radius_m` of (lat, lng).

    A point P within R of Q lies in a cell whose centre is at most
    R + 2 * circumradius from Q's cell centre. In a hexagonal grid, cells k
    steps apart have centres at least k * spacing * sqrt(3)/2 apart, where
    spacing is the centre-to-centre distance of neighbours. Spacing is
    measured locally (H3 cells vary in size across the globe) and shrunk by
    10% for safety.
    """
    origin = h3.latlng_to_cell(lat, lng, COARSE_RES)
    olat, olng = h3.cell_to_latlng(origin)
    neighbours = [c for c in h3.grid_ring(origin, 1)]
    spacing = min(haversine_m(olat, olng, *h3.cell_to_latlng(c)) for c in neighbours) * 0.9
    circumradius = spacing / math.sqrt(3) / 0.9 * 1.1
    k = math.ceil((radius_m + 2 * circumradius) / (spacing * math.sqrt(3) / 2))
    return [str(c) for c in h3.grid_disk(origin, k)]
