"""Route sequencing rules: the travel-time matrix, an order's totals and window misses, and the solver's budget.

Pure domain code (stdlib, h3 through chalicelib.geo): the solver (solver.py) and the use case (service.py) build on
it, and `make eval-routes` scores the drivers' order, the input order and ours with these same functions, so the
three are compared under one travel-time model.

Times are seconds from the route's departure; a point's `window` is (earliest, latest) arrival in those seconds,
None when it has none. Point 0 of a problem is where the vehicle starts (depot, driver or a pinned first stop).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chalicelib.geo.eta import DEFAULT_SPEED_MPS, SPEED_RES, SpeedTable, hour_of_week

CIRCUITY = 1.3  # road metres per straight metre in towns (1.2-1.4 measured): the same factor as the ETA model
# VROOM's exploration level per route size: the time budget. Measured on the ALMRRC routes (2 threads): level 0
# solves 193 stops in ~0.6 s within 1-2 % of level 2's travel time (2-3x slower); deeper search is kept for
# small routes, where it costs milliseconds (`make bench` route_opt_ms_200_stops watches the 200-stop case).
_EXPLORATION = ((40, 5), (80, 3), (120, 1), (300, 0))
FEW_HEURISTICS_ABOVE = 120  # past this many stops the solver runs two chosen heuristics, not level 0's set


@dataclass(frozen=True, slots=True)
class Point:
    """A place the vehicle visits: its id, where it is, how long it stays and when it may arrive."""

    point_id: str
    lat: float
    lng: float
    service_s: float = 0.0
    window: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Matrix:
    """Travel seconds and road metres between every pair of points (row: from, column: to)."""

    seconds: list[list[int]]
    metres: list[list[int]]


class TravelModel(Protocol):
    """Where travel times come from: the learned speeds today, a road network (a route-matrix service) later."""

    def matrix(self, points: Sequence[Point], depart_ms: int) -> Matrix: ...


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 12_742_000.0 * math.asin(math.sqrt(min(1.0, a)))


@dataclass(slots=True)
class LearnedSpeeds:
    """Straight distance x circuity, at the pace the project learned per H3 cell and hour (SpeedTable), else
    at the default speed. A leg's pace is the mean of its two ends' cells at the departure's hour of week: one
    lookup per point keeps a 300-stop matrix (90,000 legs) cheap; the ETA model samples cells along the leg."""

    speeds: SpeedTable | None = None
    circuity: float = CIRCUITY
    default_speed_mps: float = DEFAULT_SPEED_MPS
    res: int = SPEED_RES

    def matrix(self, points: Sequence[Point], depart_ms: int) -> Matrix:
        how = hour_of_week(depart_ms)
        if self.speeds is None:
            paces = [1.0 / self.default_speed_mps] * len(points)
        else:
            paces = [self.speeds.pace(self.speeds.cell(p.lat, p.lng), how) for p in points]
        seconds: list[list[int]] = []
        metres: list[list[int]] = []
        for i, a in enumerate(points):
            row_s, row_m = [], []
            for j, b in enumerate(points):
                road = 0.0 if i == j else haversine_m(a.lat, a.lng, b.lat, b.lng) * self.circuity
                row_m.append(round(road))
                row_s.append(round(road * (paces[i] + paces[j]) / 2))
            seconds.append(row_s)
            metres.append(row_m)
        return Matrix(seconds, metres)


def exploration_level(stops: int) -> int:
    """The solver's search depth for a route of this size (the time budget: deeper search on small routes)."""
    for limit, level in _EXPLORATION:
        if stops <= limit:
            return level
    return 0


@dataclass(frozen=True, slots=True)
class Totals:
    """An order driven from point 0: road metres and travel seconds, the whole duration (with service and
    waiting for windows to open), and the points reached after their window closed."""

    distance_m: int
    travel_s: int
    duration_s: int
    late: tuple[str, ...]


def evaluate(points: Sequence[Point], order: Sequence[int], matrix: Matrix, *, return_to: int | None = None
             ) -> Totals:
    """Drive `order` (indexes into `points`, point 0 first) and add it up; `return_to` closes the tour there."""
    legs = list(order) + ([return_to] if return_to is not None else [])
    clock = points[legs[0]].service_s
    travel = distance = 0
    late: list[str] = []
    for prev, nxt in itertools.pairwise(legs):
        travel += matrix.seconds[prev][nxt]
        distance += matrix.metres[prev][nxt]
        clock += matrix.seconds[prev][nxt]
        point = points[nxt]
        if point.window is not None and nxt != return_to:
            start, end = point.window
            if clock > end:
                late.append(point.point_id)
            clock = max(clock, start)
        if nxt != return_to:
            clock += point.service_s
    return Totals(distance, travel, round(clock), tuple(late))


def cheapest_insertion(order: list[int], missing: Sequence[int], matrix: Matrix) -> list[int]:
    """Put each stop the solver left out (its window cannot be met) where it adds the least travel; the start
    (order[0]) stays first."""
    result = list(order)
    for point in missing:
        best, best_cost = len(result), math.inf
        for pos in range(1, len(result) + 1):
            prev = result[pos - 1]
            added = matrix.seconds[prev][point]
            if pos < len(result):
                nxt = result[pos]
                added += matrix.seconds[point][nxt] - matrix.seconds[prev][nxt]
            if added < best_cost:
                best, best_cost = pos, added
        result.insert(best, point)
    return result


def solver_window(window: tuple[float, float] | None) -> tuple[int, int] | None:
    """A window the solver can hold: opens no earlier than departure; None if none, or if it closed before
    departure (impossible: the stop is sequenced without it and reported late)."""
    if window is None:
        return None
    start, end = window
    if end < 0 or end < start:
        return None
    opens = math.floor(start) if math.isfinite(start) and start > 0 else 0
    return opens, math.ceil(end) if math.isfinite(end) else NO_END


NO_END = 10**9  # an open-ended window's end for the solver (~31 years of seconds)
