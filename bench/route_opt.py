"""Route sequencing solve time for a 200-stop route (`route_opt_ms_200_stops`, p95, target <= 1000 ms).

200 stops uniformly in a 12 x 12 km town, the depot 8 km outside it, service 30-150 s, one stop in twelve with a
4-hour window starting in the first 6 hours of the day (as the ALMRRC routes: 128 of their 2,000 stops have a
window, most of them 4 to 8 hours wide; seeded: the same problem each run). Timed: `solver.solve` alone, as the
API runs it (VROOM at the exploration level `rules.exploration_level` gives 200 stops, 2 threads), over 12 solves
after one warm-up (which pays the lazy import of vroom, numpy and pandas, ~0.25 s, reported as `first_solve_ms`).
Left out: building the matrix (reported as `matrix_ms`), reading the route and its speed counters, the write.
Wall-clock (`perf_counter`): the solver's threads make CPU time overcount; the machine is shared, so p95 is noisy:
`load_average` (1 minute, at the end) and `matrix_ms` (single-threaded pure Python, ~25 ms on an idle core) say how
busy it was.
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import Any

from bench.common import log

NAMES = ("route_opt_ms_200_stops",)
STOPS = 200
RUNS = 12
TARGET_MS = 1000.0


def problem(seed: int = 19, stops: int = STOPS) -> list[Any]:
    from chalicelib.sequencing.rules import Point

    rng = random.Random(seed)
    lat0, lng0 = 47.6, -122.33
    per_km_lat, per_km_lng = 1 / 111.0, 1 / (111.0 * math.cos(math.radians(lat0)))
    points = [Point("depot", lat0 - 8 * per_km_lat, lng0)]
    for n in range(stops):
        window = None
        if rng.random() < 1 / 12:
            opens = rng.uniform(0, 6) * 3600
            window = (opens, opens + 4 * 3600)
        points.append(Point(f"s{n}", lat0 + rng.uniform(-6, 6) * per_km_lat, lng0 + rng.uniform(-6, 6) * per_km_lng,
                            rng.uniform(30, 150), window))
    return points


def run() -> list[dict[str, Any]]:
    started = time.perf_counter()
    from chalicelib.sequencing.rules import LearnedSpeeds, evaluate, exploration_level
    from chalicelib.sequencing.solver import solve

    points = problem()
    t = time.perf_counter()
    matrix = LearnedSpeeds().matrix(points, 0)
    matrix_ms = (time.perf_counter() - t) * 1000
    stops = list(range(1, len(points)))
    solve(points, matrix, stops=stops)
    first_ms = (time.perf_counter() - started) * 1000
    times = []
    late = 0
    for _ in range(RUNS):
        t = time.perf_counter()
        order = solve(points, matrix, stops=stops)
        times.append((time.perf_counter() - t) * 1000)
        late = len(evaluate(points, order, matrix).late)
    times.sort()
    p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
    log(f"route_opt: 200 stops, solves {[round(x) for x in times]} ms")
    return [{"name": "route_opt_ms_200_stops", "value": round(p95, 1), "unit": "ms", "target": TARGET_MS,
             "extra": {"median_ms": round(times[len(times) // 2], 1), "matrix_ms": round(matrix_ms, 1),
                       "first_solve_ms": round(first_ms, 1), "exploration_level": exploration_level(STOPS),
                       "late_stops": late, "runs": RUNS, "load_average": round(os.getloadavg()[0], 2)}}]
