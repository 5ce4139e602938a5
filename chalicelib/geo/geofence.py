"""Geofences: circles around stops, merchant polygon zones, an H3 cell index and the enter/exit/dwell machine.

Pure domain code (H3 and the standard library only), so the stream function, the
tests and the benchmarks run the same rules.

Geometry
    * A circle contains a point when the haversine distance to its centre is at
      most its radius.
    * Polygon and corridor edges are straight lines in lon/lat space (the reading
      of Traccar and Tile38, and of GeoJSON without a CRS). Tests run in a local
      equirectangular plane centred on the point: x = dlon * cos(lat) * m/deg,
      y = dlat * m/deg. That map is affine in (lon, lat), so ray casting there is
      exactly ray casting on lon/lat, and distances to edges are in metres with
      an error of about d^2 * tan(lat) / R (centimetres within the few hundred
      metres where the rules look at them, ~15 m at 10 km). Longitudes are
      compared modulo 360, so fences across the antimeridian work (each edge must
      span less than 180 degrees of longitude).
    * Ray casting is half-open: a point exactly on an edge may fall either side.
      The state machine never decides on the boundary (an accuracy circle of any
      positive radius straddles it); `contains` treats the boundary (within 1 mm)
      as inside, for every shape.

Signed distance
    Every fence answers `signed_distance_m(lat, lng)`: metres to its boundary,
    positive inside, negative outside, and has an `exit_margin_m`: how far
    outside the boundary the exit line lies (the hysteresis). The state machine
    uses only these two numbers, so the rules are the same for every shape.

State machine (per driver and fence), for a fix with accuracy radius `a`
    * enter when s >= a: the whole accuracy circle is inside the fence;
    * exit  when s < -(exit_margin + a): the whole accuracy circle is beyond the
      exit line;
    * anything in between (a straddling fix, or a fix between the fence and its
      exit line) changes nothing;
    * dwell fires once per stay, at the first fix at least `dwell_after_s` after
      the enter;
    * fixes worse than `max_accuracy_m` change no fence state;
    * a fix not newer than the driver's last processed fix changes nothing.
    No "N confirming fixes" or minimum-time rule is used: on the real ride-along
    traces the accuracy rule plus the exit margin already give one arrival per
    parking (see tests/unit/test_geofence.py), and a count-based rule would
    delay every arrival and depend on the phone's sampling rate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any, Literal, Protocol

import h3
from h3.api import basic_int as h3i

from chalicelib.geo.cells import EARTH_RADIUS_M, FINE_RES, haversine_m

# The fence index uses the ping's own cell resolution (res 10, ~66-76 m edge):
# a stored ping already carries its cell, so the stream function finds candidate
# fences without another H3 call, and cells about the size of the smallest stop
# fences keep the candidate list short (bench/geofence.py, 100,000 stops over a
# metro area: 15 candidates per ping at res 10, 29 at res 9; ~30 cells per fence).
# Zones over 50 km2 (thousands of res-10 cells, one storage item each) are
# indexed at res 7 (~5 km2 cells) instead: a lookup then also tries the fix's
# res-7 parent, which costs nothing while no such zone is loaded.
INDEX_RES = FINE_RES
COARSE_INDEX_RES = 7
LARGE_FENCE_M2 = 50e6

DEFAULT_STOP_RADIUS_M = 75.0
# Exit line for circles and corridors: max(radius * 1.5, radius + 50 m). The
# absolute gap exceeds the 30-60 m urban jitter that phones do not always admit
# in their accuracy figure; the factor keeps it proportionate for large fences.
EXIT_FACTOR = 1.5
MIN_EXIT_GAP_M = 50.0
DEFAULT_POLYGON_BUFFER_M = 50.0
# Larger than a big metro area (~10,000 res-7 cells, one storage item each): refused.
MAX_FENCE_M2 = 50_000e6

M_PER_DEG = math.pi * EARTH_RADIUS_M / 180.0
_TWO_R = 2.0 * EARTH_RADIUS_M
_sin, _asin, _sqrt = math.sin, math.asin, math.sqrt  # module globals: cheaper than attribute lookups per call
_BOUNDARY_EPS_M = 0.001

EventKind = Literal["enter", "exit", "dwell"]


# --- fences --------------------------------------------------------------------------


def _check_id(fence_id: str) -> None:
    if not isinstance(fence_id, str) or not fence_id:
        raise ValueError("fence id must be a non-empty string")


def _check_lat_lng(lat: float, lng: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lng)) or not -90.0 <= lat <= 90.0:
        raise ValueError(f"invalid coordinates lat={lat!r} lng={lng!r}")


def _default_exit(distance_m: float) -> float:
    return max(distance_m * EXIT_FACTOR, distance_m + MIN_EXIT_GAP_M)


def _wrap_deg(d: float) -> float:
    """A longitude difference brought into [-180, 180)."""
    return (d + 180.0) % 360.0 - 180.0


# A fix's position with what every circle test needs, computed once per fix:
# (lat, lng, lat in radians, lng in radians, cos(lat)).
Point = tuple[float, float, float, float, float]


def _point(lat: float, lng: float) -> Point:
    lat_r = math.radians(lat)
    return (lat, lng, lat_r, math.radians(lng), math.cos(lat_r))


@dataclass(frozen=True, slots=True)
class CircleFence:
    """A stop's geofence: a circle with an exit radius larger than its enter radius.

    `exit_radius_m` defaults to max(1.5 * radius, radius + 50 m).
    """

    id: str
    lat: float
    lng: float
    radius_m: float
    exit_radius_m: float | None = None
    exit_margin_m: float = field(init=False, repr=False, compare=False)
    _exit_r: float = field(init=False, repr=False, compare=False)
    _lat_r: float = field(init=False, repr=False, compare=False)
    _lng_r: float = field(init=False, repr=False, compare=False)
    _cos: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_lat_lng(self.lat, self.lng)
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError("radius_m must be a positive number")
        exit_r = _default_exit(self.radius_m) if self.exit_radius_m is None else self.exit_radius_m
        if not (math.isfinite(exit_r) and exit_r > self.radius_m):
            raise ValueError("exit_radius_m must be larger than radius_m")
        object.__setattr__(self, "exit_radius_m", float(exit_r))
        object.__setattr__(self, "exit_margin_m", float(exit_r) - self.radius_m)
        object.__setattr__(self, "_exit_r", float(exit_r))
        object.__setattr__(self, "_lat_r", math.radians(self.lat))
        object.__setattr__(self, "_lng_r", math.radians(self.lng))
        object.__setattr__(self, "_cos", math.cos(math.radians(self.lat)))

    def _distance(self, p: Point) -> float:
        """Haversine distance to the centre, with the trigonometry of both ends precomputed."""
        s1 = _sin((p[2] - self._lat_r) * 0.5)
        s2 = _sin((p[3] - self._lng_r) * 0.5)
        a = s1 * s1 + self._cos * p[4] * s2 * s2
        return _TWO_R * _asin(_sqrt(a) if a < 1.0 else 1.0)

    def signed_distance_m(self, lat: float, lng: float) -> float:
        return self.radius_m - self._distance(_point(lat, lng))

    def contains(self, lat: float, lng: float) -> bool:
        return self.signed_distance_m(lat, lng) >= -_BOUNDARY_EPS_M

    # Hot path: most calls are settled by bounds of the distance that need no
    # trigonometry. Lower bound: the latitude difference. Upper bound: the length
    # of a path along the meridian, then along the fix's parallel (a great circle
    # is never longer). Haversine settles the rest.

    def _enters(self, p: Point, acc: float) -> bool:
        limit = self.radius_m - acc
        low = abs(p[0] - self.lat) * M_PER_DEG
        if low > limit:
            return False
        if low + abs((p[1] - self.lng + 180.0) % 360.0 - 180.0) * p[4] * M_PER_DEG <= limit:
            return True
        return self._distance(p) <= limit

    def _exits(self, p: Point, acc: float) -> bool:
        reach = self._exit_r + acc
        low = abs(p[0] - self.lat) * M_PER_DEG
        if low > reach:
            return True
        if low + abs((p[1] - self.lng + 180.0) % 360.0 - 180.0) * p[4] * M_PER_DEG <= reach:
            return False  # the usual case while parked inside
        return self._distance(p) > reach

    def to_dict(self) -> dict[str, Any]:
        return {"type": "circle", "id": self.id, "lat": self.lat, "lng": self.lng,
                "radius_m": self.radius_m, "exit_radius_m": self.exit_radius_m}


Ring = tuple[tuple[float, float], ...]  # (lat, lng) vertices, closed (first == last)


def _parse_ring(raw: Any, where: str) -> Ring:
    """A GeoJSON linear ring ([lng, lat] positions) as closed (lat, lng) tuples."""
    if not isinstance(raw, list | tuple):
        raise ValueError(f"{where}: a ring must be a list of [lng, lat] positions")
    points: list[tuple[float, float]] = []
    for pos in raw:
        if not isinstance(pos, list | tuple) or len(pos) < 2:
            raise ValueError(f"{where}: a position must be [lng, lat]")
        lng, lat = float(pos[0]), float(pos[1])
        _check_lat_lng(lat, lng)
        points.append((lat, lng))
    if points and points[0] != points[-1]:
        points.append(points[0])  # GeoJSON wants closed rings; be lenient, close it
    if len(set(points)) < 3:
        raise ValueError(f"{where}: a ring needs at least 3 distinct positions")
    return tuple(points)


class _EdgeDistanceRules:
    """Enter/exit rules for fences measured by signed distance to their edge (positive inside)."""

    __slots__ = ()
    exit_margin_m: float

    def signed_distance_m(self, lat: float, lng: float) -> float:
        raise NotImplementedError

    def contains(self, lat: float, lng: float) -> bool:
        return self.signed_distance_m(lat, lng) >= -_BOUNDARY_EPS_M

    def _enters(self, p: Point, acc: float) -> bool:
        return self.signed_distance_m(p[0], p[1]) >= acc

    def _exits(self, p: Point, acc: float) -> bool:
        return self.signed_distance_m(p[0], p[1]) < -(self.exit_margin_m + acc)


@dataclass(frozen=True, slots=True)
class PolygonFence(_EdgeDistanceRules):
    """A merchant zone from a GeoJSON Polygon or MultiPolygon (holes allowed).

    Exit needs the point `buffer_m` metres outside the polygon (the hysteresis).
    """

    id: str
    geometry: Mapping[str, Any]
    buffer_m: float = DEFAULT_POLYGON_BUFFER_M
    parts: tuple[tuple[Ring, ...], ...] = field(init=False, repr=False, compare=False)
    exit_margin_m: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id(self.id)
        kind = self.geometry.get("type") if isinstance(self.geometry, Mapping) else None
        coords = self.geometry.get("coordinates") if isinstance(self.geometry, Mapping) else None
        if kind == "Polygon":
            polygons = [coords]
        elif kind == "MultiPolygon" and isinstance(coords, list | tuple):
            polygons = list(coords)
        else:
            raise ValueError("geometry must be a GeoJSON Polygon or MultiPolygon")
        parts: list[tuple[Ring, ...]] = []
        for i, poly in enumerate(polygons):
            if not isinstance(poly, list | tuple) or not poly:
                raise ValueError(f"polygon {i}: needs an exterior ring")
            parts.append(tuple(_parse_ring(ring, f"polygon {i} ring {j}") for j, ring in enumerate(poly)))
        if not parts:
            raise ValueError("MultiPolygon has no polygons")
        if not (math.isfinite(self.buffer_m) and self.buffer_m > 0):
            raise ValueError("buffer_m must be a positive number")
        object.__setattr__(self, "parts", tuple(parts))
        object.__setattr__(self, "exit_margin_m", float(self.buffer_m))

    def signed_distance_m(self, lat: float, lng: float) -> float:
        inside = False
        best = math.inf
        for part in self.parts:
            crossings, dist = _rings_crossings_and_distance(lat, lng, part)
            inside = inside or crossings % 2 == 1  # even-odd over exterior + holes
            best = min(best, dist)
        return best if inside else -best

    def to_dict(self) -> dict[str, Any]:
        return {"type": "polygon", "id": self.id, "geometry": dict(self.geometry), "buffer_m": self.buffer_m}


@dataclass(frozen=True, slots=True)
class CorridorFence(_EdgeDistanceRules):
    """A stretch of road: points within `half_width_m` of a polyline (Traccar's LINESTRING geofence).

    `exit_half_width_m` defaults to max(1.5 * half width, half width + 50 m).
    """

    id: str
    line: tuple[tuple[float, float], ...]  # (lat, lng) vertices
    half_width_m: float
    exit_half_width_m: float | None = None
    exit_margin_m: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id(self.id)
        line = tuple((float(lat), float(lng)) for lat, lng in self.line)
        if len(line) < 2:
            raise ValueError("a corridor needs at least 2 points")
        for lat, lng in line:
            _check_lat_lng(lat, lng)
        if not (math.isfinite(self.half_width_m) and self.half_width_m > 0):
            raise ValueError("half_width_m must be a positive number")
        exit_w = _default_exit(self.half_width_m) if self.exit_half_width_m is None else self.exit_half_width_m
        if not (math.isfinite(exit_w) and exit_w > self.half_width_m):
            raise ValueError("exit_half_width_m must be larger than half_width_m")
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "exit_half_width_m", float(exit_w))
        object.__setattr__(self, "exit_margin_m", float(exit_w) - self.half_width_m)

    def signed_distance_m(self, lat: float, lng: float) -> float:
        return self.half_width_m - _polyline_distance_m(lat, lng, self.line)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "corridor", "id": self.id, "line": [list(p) for p in self.line],
                "half_width_m": self.half_width_m, "exit_half_width_m": self.exit_half_width_m}


Fence = CircleFence | PolygonFence | CorridorFence


def fence_from_dict(data: Mapping[str, Any]) -> Fence:
    """The inverse of `Fence.to_dict`, for the storage layer."""
    kind = data.get("type")
    if kind == "circle":
        return CircleFence(data["id"], float(data["lat"]), float(data["lng"]), float(data["radius_m"]),
                           None if data.get("exit_radius_m") is None else float(data["exit_radius_m"]))
    if kind == "polygon":
        return PolygonFence(data["id"], data["geometry"], float(data.get("buffer_m", DEFAULT_POLYGON_BUFFER_M)))
    if kind == "corridor":
        exit_w = data.get("exit_half_width_m")
        return CorridorFence(data["id"], tuple((float(p[0]), float(p[1])) for p in data["line"]),
                             float(data["half_width_m"]), None if exit_w is None else float(exit_w))
    raise ValueError(f"unknown fence type {kind!r}")


def stop_fence(stop_id: str, lat: float, lng: float, radius_m: float | None = None) -> CircleFence:
    """The circle around a stop; `radius_m` is the shipment's or merchant's setting when it has one."""
    return CircleFence(stop_id, lat, lng, DEFAULT_STOP_RADIUS_M if radius_m is None else radius_m)


# --- planar helpers ----------------------------------------------------------------------


def _local_xy(lat0: float, lng0: float, lat: float, lng: float) -> tuple[float, float]:
    """(lat, lng) in metres in the equirectangular plane centred on (lat0, lng0)."""
    return (_wrap_deg(lng - lng0) * math.cos(math.radians(lat0)) * M_PER_DEG, (lat - lat0) * M_PER_DEG)


def _segment_distance(px: float, py: float, x1: float, y1: float, x2: float, y2: float) -> float:
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0.0 else max(0.0, min(1.0, ((px - x1) * dx + (py - y1) * dy) / length2))
    return math.hypot(px - x1 - t * dx, py - y1 - t * dy)


def _rings_crossings_and_distance(lat: float, lng: float, rings: Sequence[Ring]) -> tuple[int, float]:
    """Ray-casting crossings (ray towards +x) and the distance in metres from the point to the rings."""
    kx = math.cos(math.radians(lat)) * M_PER_DEG
    crossings = 0
    best = math.inf
    for ring in rings:
        x1 = _wrap_deg(ring[0][1] - lng) * kx
        y1 = (ring[0][0] - lat) * M_PER_DEG
        for vlat, vlng in ring[1:]:
            x2 = _wrap_deg(vlng - lng) * kx
            y2 = (vlat - lat) * M_PER_DEG
            if (y1 > 0.0) != (y2 > 0.0) and x1 + (x2 - x1) * (-y1) / (y2 - y1) > 0.0:
                crossings += 1
            d = _segment_distance(0.0, 0.0, x1, y1, x2, y2)
            if d < best:
                best = d
            x1, y1 = x2, y2
    return crossings, best


def _polyline_distance_m(lat: float, lng: float, line: Sequence[tuple[float, float]]) -> float:
    points = [_local_xy(lat, lng, vlat, vlng) for vlat, vlng in line]
    return min(_segment_distance(0.0, 0.0, *a, *b) for a, b in pairwise(points))


def _segments_cross(a: tuple[float, float], b: tuple[float, float],
                    c: tuple[float, float], d: tuple[float, float]) -> bool:
    """Closed segments ab and cd intersect (touching counts)."""
    def orient(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> bool:
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    if ((o1 > 0) != (o2 > 0)) and ((o3 > 0) != (o4 > 0)) and 0 not in (o1, o2, o3, o4):
        return True
    return ((o1 == 0 and on(a, b, c)) or (o2 == 0 and on(a, b, d))
            or (o3 == 0 and on(c, d, a)) or (o4 == 0 and on(c, d, b)))


def segment_intersects(fence: Fence, start: tuple[float, float], end: tuple[float, float]) -> bool:
    """Does the path start -> end ((lat, lng) each) touch the fence?

    The path is a straight line in lon/lat space, as in Tile38's "cross" detection
    and Traccar's segment tests, not a great circle. Between two fixes seconds
    apart the two readings differ by centimetres; over 1,500 km (Tile38's test)
    they differ by tens of kilometres, and this function follows Tile38.
    """
    if fence.contains(*start) or fence.contains(*end):
        return True
    if isinstance(fence, CircleFence):
        # Affine plane around the centre: the lon/lat line stays a straight line there.
        a = _local_xy(fence.lat, fence.lng, *start)
        b = _local_xy(fence.lat, fence.lng, *end)
        return _segment_distance(0.0, 0.0, *a, *b) <= fence.radius_m
    lat0, lng0 = start
    a, b = (0.0, 0.0), _local_xy(lat0, lng0, *end)
    if isinstance(fence, CorridorFence):
        line = [_local_xy(lat0, lng0, *p) for p in fence.line]
        # Outside at both ends and within the width somewhere: either the path crosses the
        # centre line, or its closest approach is at an end of one of the two polylines.
        for p, q in pairwise(line):
            if _segments_cross(a, b, p, q):
                return True
            if min(_segment_distance(*p, *a, *b), _segment_distance(*q, *a, *b)) <= fence.half_width_m:
                return True
        return False
    for part in fence.parts:
        for ring in part:
            pts = [_local_xy(lat0, lng0, *v) for v in ring]
            if any(_segments_cross(a, b, p, q) for p, q in pairwise(pts)):
                return True
    return False


def polygon_area_m2(fence: PolygonFence) -> float:
    """Area on the sphere (exterior rings minus holes), by the spherical-excess formula GeoJSON tools use."""
    total = 0.0
    for part in fence.parts:
        for i, ring in enumerate(part):
            s = 0.0
            for (lat1, lng1), (lat2, lng2) in pairwise(ring):
                s += math.radians(_wrap_deg(lng2 - lng1)) * (
                    2 + math.sin(math.radians(lat1)) + math.sin(math.radians(lat2)))
            area = abs(s) * EARTH_RADIUS_M * EARTH_RADIUS_M / 2
            total += area if i == 0 else -area
    return total


# --- H3 cover --------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _grid_metrics(parent: int, res: int) -> tuple[float, float]:
    """(circumradius, centre spacing) of cells of `res` near a res-5 cell, with 10% safety each way.

    H3 cell sizes vary across the globe but barely within a res-5 cell (~250 km2),
    so one measurement serves every fence there.
    """
    centre = h3i.cell_to_center_child(parent, res)
    clat, clng = h3i.cell_to_latlng(centre)
    circ = max(haversine_m(clat, clng, vlat, vlng) for vlat, vlng in h3i.cell_to_boundary(centre))
    spacing = min(haversine_m(clat, clng, *h3i.cell_to_latlng(c)) for c in h3i.grid_ring(centre, 1))
    return circ * 1.1, spacing * 0.9


def _metrics_at(lat: float, lng: float, res: int) -> tuple[float, float]:
    return _grid_metrics(h3i.latlng_to_cell(lat, lng, 5), res)


def _cells_near(lat: float, lng: float, distance_m: float, res: int, out: set[int]) -> None:
    """Add every cell of `res` whose centre lies within `distance_m` of the point.

    Cells k grid steps apart have centres at least k * spacing * sqrt(3)/2 apart,
    and the point is within one circumradius of its own cell's centre, hence k.
    """
    circ, spacing = _metrics_at(lat, lng, res)
    origin = h3i.latlng_to_cell(lat, lng, res)
    k = math.ceil((distance_m + circ) / (spacing * math.sqrt(3) / 2))
    cos0 = math.cos(math.radians(lat))
    limit2 = (distance_m / M_PER_DEG) ** 2
    for cell in h3i.grid_disk(origin, k):
        clat, clng = h3i.cell_to_latlng(cell)
        dx = _wrap_deg(clng - lng) * cos0
        dy = clat - lat
        # Planar prefilter with 1% slack, haversine only near the limit.
        d2 = dx * dx + dy * dy
        if d2 <= limit2 * 0.98 or (d2 <= limit2 * 1.02 and haversine_m(lat, lng, clat, clng) <= distance_m):
            out.add(cell)


def _densify(points: Sequence[tuple[float, float]], step_m: float) -> list[tuple[float, float]]:
    """Points along a lon/lat polyline no more than `step_m` apart (the vertices included)."""
    out = [points[0]]
    for (lat1, lng1), (lat2, lng2) in pairwise(points):
        dlng = _wrap_deg(lng2 - lng1)
        x, y = _local_xy(lat1, lng1, lat2, lng2)
        n = max(1, math.ceil(math.hypot(x, y) / step_m))
        out.extend((lat1 + (lat2 - lat1) * i / n, lng1 + dlng * i / n) for i in range(1, n + 1))
    return out


def _extent_m2(fence: Fence) -> float:
    """Area of the bounding box of the fence's exit extent: an upper estimate, before any H3 work."""
    if isinstance(fence, CircleFence):
        r = fence.radius_m + fence.exit_margin_m
        return 4 * r * r
    points = [p for part in fence.parts for ring in part for p in ring] if isinstance(fence, PolygonFence) \
        else list(fence.line)
    lat0, lng0 = points[0]
    xy = [_local_xy(lat0, lng0, lat, lng) for lat, lng in points]
    pad = 2 * (fence.exit_margin_m + (fence.half_width_m if isinstance(fence, CorridorFence) else 0.0))
    width = max(x for x, _ in xy) - min(x for x, _ in xy) + pad
    height = max(y for _, y in xy) - min(y for _, y in xy) + pad
    return width * height


def index_resolution(fence: Fence) -> int:
    """INDEX_RES for ordinary fences; COARSE_INDEX_RES for zones too large for thousands of small cells."""
    return INDEX_RES if _extent_m2(fence) <= LARGE_FENCE_M2 else COARSE_INDEX_RES


def _fence_cells_int(fence: Fence) -> set[int]:
    res = index_resolution(fence)
    if _extent_m2(fence) > MAX_FENCE_M2:
        raise ValueError(f"fence {fence.id} is too large to index (more than {MAX_FENCE_M2 / 1e6:.0f} km2)")
    cells: set[int] = set()
    if isinstance(fence, CircleFence):
        circ, _ = _metrics_at(fence.lat, fence.lng, res)
        # A cell meets the exit circle only if its centre is within exit radius + circumradius.
        _cells_near(fence.lat, fence.lng, fence.radius_m + fence.exit_margin_m + circ, res, cells)
        return cells
    ref = fence.parts[0][0][0] if isinstance(fence, PolygonFence) else fence.line[0]
    circ, _ = _metrics_at(*ref, res)
    step = circ  # sample spacing along the boundary
    # A point P within W of the boundary (or line) is within W + step/2 of a sample S,
    # so P's cell centre is within W + step/2 + circ of S.
    width = fence.exit_margin_m + (fence.half_width_m if isinstance(fence, CorridorFence) else 0.0)
    reach = width + step / 2 + circ
    lines = [ring for part in fence.parts for ring in part] if isinstance(fence, PolygonFence) else [fence.line]
    for line in lines:
        for lat, lng in _densify(line, step):
            _cells_near(lat, lng, reach, res, cells)
    if isinstance(fence, PolygonFence):
        # The interior: cells whose centre is inside an exterior ring (holes are kept:
        # a superset is safe). A point inside whose cell centre is outside lies within
        # circ of the boundary, which the band above covers.
        for part in fence.parts:
            shell = [(lat, _wrap_deg(lng)) for lat, lng in part[0][:-1]]
            cells.update(h3i.h3shape_to_cells(h3.LatLngPoly(shell), res))
    return cells


def fence_cells(fence: Fence) -> set[str]:
    """The H3 cells that together cover the fence out to its exit line (what storage keys by cell).

    Res-10 cells, or res-7 cells for a zone larger than LARGE_FENCE_M2 (see `index_resolution`).
    """
    return {h3.int_to_str(c) for c in _fence_cells_int(fence)}


class FenceLookup(Protocol):
    """What the state machine needs from an index: candidates by position, fences by id."""

    def candidates(self, lat: float, lng: float) -> Sequence[Fence]: ...

    def get(self, fence_id: str) -> Fence | None: ...


class FenceIndex:
    """cell -> fences covering it. A candidate lookup is one H3 call and one dict lookup
    (two when a zone indexed at res 7 is loaded), whatever the number of fences.

    Candidates are a superset: every fence whose exit extent contains the point is
    among them, and the exact test decides.
    """

    __slots__ = ("_by_cell", "_cell_count", "_fences", "_has_coarse")

    def __init__(self, fences: Iterable[Fence]) -> None:
        self._fences: dict[str, Fence] = {}
        by_cell: dict[int, list[Fence]] = {}
        count = 0
        has_coarse = False
        for fence in fences:
            if fence.id in self._fences:
                raise ValueError(f"duplicate fence id {fence.id!r}")
            self._fences[fence.id] = fence
            has_coarse = has_coarse or index_resolution(fence) != INDEX_RES
            for cell in _fence_cells_int(fence):
                by_cell.setdefault(cell, []).append(fence)
                count += 1
        # Res-10 and res-7 cells share one dict: an H3 index encodes its resolution.
        self._by_cell: dict[int, tuple[Fence, ...]] = {c: tuple(fs) for c, fs in by_cell.items()}
        self._cell_count = count
        self._has_coarse = has_coarse

    def candidates(self, lat: float, lng: float) -> tuple[Fence, ...]:
        return self._lookup(h3i.latlng_to_cell(lat, lng, INDEX_RES))

    def candidates_for_cell(self, cell: str) -> tuple[Fence, ...]:
        """Candidates for a ping that already carries its res-10 cell."""
        return self._lookup(h3.str_to_int(cell))

    def _lookup(self, cell: int) -> tuple[Fence, ...]:
        found = self._by_cell.get(cell, ())
        if self._has_coarse:
            found += self._by_cell.get(h3i.cell_to_parent(cell, COARSE_INDEX_RES), ())
        return found

    def containing(self, lat: float, lng: float) -> list[Fence]:
        """The fences that contain the point (no accuracy, no hysteresis): `contains`, through the index."""
        p = _point(lat, lng)
        return [f for f in self.candidates(lat, lng) if f._enters(p, -_BOUNDARY_EPS_M)]

    def get(self, fence_id: str) -> Fence | None:
        return self._fences.get(fence_id)

    def __len__(self) -> int:
        return len(self._fences)

    @property
    def cell_entries(self) -> int:
        """(cell, fence) pairs stored: what the DynamoDB index items would number."""
        return self._cell_count

    @property
    def cells(self) -> int:
        return len(self._by_cell)


# --- state machine --------------------------------------------------------------------------


class FixLike(Protocol):
    """A fix as the engine needs it; `chalicelib.domain.pings.Ping` qualifies."""

    @property
    def driver_id(self) -> str: ...

    @property
    def fix_ms(self) -> int: ...

    @property
    def lat(self) -> float: ...

    @property
    def lng(self) -> float: ...

    @property
    def accuracy(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class GeoFix:
    driver_id: str
    fix_ms: int
    lat: float
    lng: float
    accuracy: float | None = None
    speed: float | None = None  # m/s as the phone reported it (Doppler); driver reports' harsh events read it


@dataclass(frozen=True, slots=True)
class GeofenceParams:
    """Settings of the state machine (fence sizes and hysteresis live on the fences).

    max_accuracy_m: fixes reporting worse accuracy are ignored. 100 m: phones
        report that or worse only without GPS (Wi-Fi or cell positioning), where
        the error is not even bounded by the figure; no decision about a stop
        fence of 30-300 m should rest on such a fix. The enter rule already keeps
        a fix with accuracy larger than a fence's radius from entering it.
    unknown_accuracy_m: assumed when a fix carries no accuracy (dedicated trackers
        often send none; their GPS is typically good to ~10 m).
    dwell_after_s: a dwell event fires once per stay after this long inside.
    """

    max_accuracy_m: float = 100.0
    unknown_accuracy_m: float = 10.0
    dwell_after_s: float = 120.0

    def __post_init__(self) -> None:
        if not (self.max_accuracy_m > 0 and self.unknown_accuracy_m >= 0 and self.dwell_after_s > 0):
            raise ValueError("max_accuracy_m and dwell_after_s must be positive, unknown_accuracy_m not negative")


@dataclass(frozen=True, slots=True)
class FenceState:
    """A driver inside a fence (since the fix time `since_ms`). No FenceState means outside.

    It changes only on an event (enter, dwell; exit removes it), so the storage
    layer writes fence states only when something happened; the time of the last
    processed fix is kept once per driver, in DriverState.
    """

    since_ms: int
    dwell_fired: bool = False


@dataclass(frozen=True, slots=True)
class DriverState:
    """A driver's geofence state: the last fix processed and the fences they are inside."""

    driver_id: str
    last_fix_ms: int | None = None
    fences: Mapping[str, FenceState] = field(default_factory=dict)

    def inside(self, fence_id: str) -> bool:
        return fence_id in self.fences


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    event_id: str
    kind: EventKind
    driver_id: str
    fence_id: str
    fix_ms: int
    lat: float
    lng: float

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "kind": self.kind, "driver_id": self.driver_id,
                "fence_id": self.fence_id, "fix_ms": self.fix_ms, "lat": self.lat, "lng": self.lng}


def event_id(driver_id: str, fence_id: str, kind: str, fix_ms: int) -> str:
    """Deterministic: the same transition seen again (a redelivered batch) has the same id."""
    raw = f"{driver_id}\x1f{fence_id}\x1f{kind}\x1f{fix_ms}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _event(kind: EventKind, fix: FixLike, fence_id: str) -> GeofenceEvent:
    return GeofenceEvent(event_id(fix.driver_id, fence_id, kind, fix.fix_ms), kind, fix.driver_id, fence_id,
                         fix.fix_ms, fix.lat, fix.lng)


def evaluate(fix: FixLike, state: DriverState, index: FenceLookup,
             params: GeofenceParams) -> tuple[DriverState, list[GeofenceEvent]]:
    """Apply one fix to one driver's state. Pure: `state` is not modified.

    Events of one fix come exits first, then enters, then dwells, each sorted by
    fence id (Tile38 also reports exits before enters).
    """
    if state.driver_id != fix.driver_id:
        raise ValueError("state belongs to another driver")
    if state.last_fix_ms is not None and fix.fix_ms <= state.last_fix_ms:
        return state, []  # a duplicate or a late fix: history, not news
    acc = fix.accuracy
    if acc is None or not acc >= 0.0:  # None, negative or NaN: the phone did not say
        acc = params.unknown_accuracy_m
    if acc > params.max_accuracy_m:
        # Decides nothing, but counts as processed: each fix time is looked at once,
        # so how a stream is cut into batches cannot change the outcome.
        return DriverState(state.driver_id, fix.fix_ms, state.fences), []
    lat, lng, now = fix.lat, fix.lng, fix.fix_ms
    p = _point(lat, lng)
    current = state.fences
    updated: dict[str, FenceState] = {}
    left: list[str] = []
    entered: list[str] = []
    dwelt: list[str] = []
    dwell_ms = params.dwell_after_s * 1000.0

    # Fences the driver is inside are checked whatever the fix's cell: a jump far
    # away (a gap in the data) must still produce the exit.
    for fence_id, fs in current.items():
        fence = index.get(fence_id)
        if fence is None:
            continue  # the fence was deleted: forget the state, no event
        if fence._exits(p, acc):
            left.append(fence_id)
        elif not fs.dwell_fired and now - fs.since_ms >= dwell_ms:
            dwelt.append(fence_id)
            updated[fence_id] = FenceState(fs.since_ms, True)
        else:
            updated[fence_id] = fs

    for fence in index.candidates(lat, lng):
        if fence.id in current:
            continue
        if fence._enters(p, acc):
            entered.append(fence.id)
            updated[fence.id] = FenceState(now)

    events: list[GeofenceEvent] = []
    events.extend(_event("exit", fix, fid) for fid in sorted(left))
    events.extend(_event("enter", fix, fid) for fid in sorted(entered))
    events.extend(_event("dwell", fix, fid) for fid in sorted(dwelt))
    return DriverState(state.driver_id, now, updated), events


def _fix_order(fix: FixLike) -> tuple[int, float, float, float]:
    acc = fix.accuracy
    return (fix.fix_ms, fix.lat, fix.lng, -1.0 if acc is None or not acc >= 0.0 else acc)


def process_batch(fixes: Iterable[FixLike], states: Mapping[str, DriverState], index: FenceLookup,
                  params: GeofenceParams) -> tuple[dict[str, DriverState], list[GeofenceEvent]]:
    """Apply a batch of fixes (any drivers, any order, duplicates allowed).

    Per driver the fixes are sorted by fix time; of several fixes with the same
    time one is kept, chosen by content so the choice does not depend on the
    order of arrival; fixes not newer than the driver's stored last fix are
    dropped. Returns the states of the drivers in the batch (unchanged ones
    included) and the events in fix-time order per driver, drivers by id. The
    same batch in any order, with duplicates, gives the same result, and
    processing it again from the returned states gives no events.
    """
    by_driver: dict[str, list[FixLike]] = {}
    for fix in fixes:
        by_driver.setdefault(fix.driver_id, []).append(fix)
    new_states: dict[str, DriverState] = {}
    events: list[GeofenceEvent] = []
    for driver_id in sorted(by_driver):
        state = states.get(driver_id) or DriverState(driver_id)
        last = state.last_fix_ms
        previous_ms: int | None = None
        for fix in sorted(by_driver[driver_id], key=_fix_order):
            if fix.fix_ms == previous_ms or (last is not None and fix.fix_ms <= last):
                continue
            previous_ms = fix.fix_ms
            state, fix_events = evaluate(fix, state, index, params)
            events.extend(fix_events)
        new_states[driver_id] = state
    return new_states, events

