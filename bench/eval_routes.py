"""Route sequencing on the 13 real Amazon routes (ALMRRC 2021): the drivers' order, the input order, ours.

`python -m bench.eval_routes` (what `make eval-routes` runs) prints one JSON object per route, then the summary
figures, on stdout; progress goes to stderr.

Data: ../shared/data/routes/almrrc2021 (or $DOORSTEP_SHARED_DATA/routes/almrrc2021). The data has no travel times:
all three orders are scored with one travel-time model, Doorstep's own (chalicelib.sequencing.rules.LearnedSpeeds
with no learned speeds yet: straight line x 1.3 circuity at 7 m/s), from the station at the route's departure time,
as an open path (the drivers' sequences end at their last stop). Per stop: its service time is the sum of its
packages' planned_service_time_seconds; its window is the intersection of its packages' windows (most have none).

* (a) `actual`: the order the driver served the stops (new_actual_sequences.json);
* (b) `input`: the stops in the order the route data lists them (what a merchant would send unsorted);
* (c) `ours`: chalicelib.sequencing.solver.solve from the station, every stop free.

Summary: `route_opt_time_vs_actual` (median over the routes of our travel time / the drivers', target <= 0.90),
`route_opt_window_violations` (stops reached after their window closed, summed over the routes; target: no more
than the drivers' order, given as `target` and `baseline`), `route_opt_solve_ms_max`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PROJECT_ROOT, Result, emit, log

SHARED_DATA = Path(os.environ.get("DOORSTEP_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
ROUTES_DIR = SHARED_DATA / "routes" / "almrrc2021"
TARGET_TIME_RATIO = 0.90


@dataclass(frozen=True)
class AlmrrcRoute:
    route_id: str
    depart_ms: int
    points: list[Any]  # chalicelib.sequencing.rules.Point: the station first
    actual: list[int]  # indexes into points, the station first
    given: list[int]


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def load_routes(directory: Path = ROUTES_DIR) -> list[AlmrrcRoute]:
    """The routes as sequencing problems; [] when the data is absent."""
    from chalicelib.sequencing.rules import Point

    try:
        with (directory / "new_route_data.json").open(encoding="utf-8") as fh:
            route_data = json.load(fh)
        with (directory / "new_package_data.json").open(encoding="utf-8") as fh:
            packages = json.load(fh)
        with (directory / "new_actual_sequences.json").open(encoding="utf-8") as fh:
            sequences = json.load(fh)
    except OSError:
        return []
    routes = []
    for route_id, route in route_data.items():
        depart = _utc(f"{route['date_YYYY_MM_DD']} {route['departure_time_utc']}")
        stops = route["stops"]
        station = [s for s, v in stops.items() if v["type"] == "Station"]
        ids = station + [s for s, v in stops.items() if v["type"] != "Station"]
        points = []
        for stop_id in ids:
            parcels = packages.get(route_id, {}).get(stop_id, {}).values()
            service = sum(float(p["planned_service_time_seconds"]) for p in parcels)
            opens, closes = -math.inf, math.inf
            for parcel in parcels:
                window = parcel.get("time_window") or {}
                start, end = window.get("start_time_utc"), window.get("end_time_utc")
                if isinstance(start, str) and isinstance(end, str):  # NaN (a float) when there is none
                    opens = max(opens, (_utc(start) - depart).total_seconds())
                    closes = min(closes, (_utc(end) - depart).total_seconds())
            window = (opens, closes) if math.isfinite(opens) or math.isfinite(closes) else None
            points.append(Point(stop_id, stops[stop_id]["lat"], stops[stop_id]["lng"], service, window))
        position = sequences[route_id]["actual"]
        actual = sorted(range(len(ids)), key=lambda i: position[ids[i]])
        routes.append(AlmrrcRoute(route_id, int(depart.timestamp() * 1000), points, actual, list(range(len(ids)))))
    return routes


def score(route: AlmrrcRoute, threads: int = 2) -> dict[str, Any]:
    from chalicelib.sequencing.rules import LearnedSpeeds, evaluate
    from chalicelib.sequencing.solver import solve

    matrix = LearnedSpeeds().matrix(route.points, route.depart_ms)
    started = time.perf_counter()
    ours = solve(route.points, matrix, stops=list(range(1, len(route.points))), threads=threads)
    solve_ms = (time.perf_counter() - started) * 1000
    out: dict[str, Any] = {"name": "route_opt_route", "route_id": route.route_id, "stops": len(route.points) - 1,
                           "windows": sum(1 for p in route.points if p.window is not None),
                           "solve_ms": round(solve_ms, 1)}
    for label, order in (("actual", route.actual), ("input", route.given), ("ours", ours)):
        totals = evaluate(route.points, order, matrix)
        out[label] = {"travel_s": totals.travel_s, "distance_m": totals.distance_m,
                      "duration_s": totals.duration_s, "window_violations": len(totals.late)}
    out["time_vs_actual"] = round(out["ours"]["travel_s"] / out["actual"]["travel_s"], 4)
    return out


def main() -> int:
    routes = load_routes()
    if not routes:
        log(f"skipped: ALMRRC routes not found at {ROUTES_DIR} (a fresh clone has no ../shared/data)")
        return 0
    import bench.common  # noqa: F401  (the app's environment, as every bench)

    rows = []
    for route in routes:
        row = score(route)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratio = statistics.median(r["time_vs_actual"] for r in rows)
    ours_late = sum(r["ours"]["window_violations"] for r in rows)
    actual_late = sum(r["actual"]["window_violations"] for r in rows)
    emit(Result("route_opt_time_vs_actual", round(ratio, 4), "ratio", TARGET_TIME_RATIO,
                extra={"routes": len(rows), "input_vs_actual": round(statistics.median(
                    r["input"]["travel_s"] / r["actual"]["travel_s"] for r in rows), 4)}))
    emit(Result("route_opt_window_violations", ours_late, "stops", actual_late, baseline=actual_late,
                extra={"input": sum(r["input"]["window_violations"] for r in rows),
                       "stops_with_windows": sum(r["windows"] for r in rows)}))
    emit(Result("route_opt_solve_ms_max", round(max(r["solve_ms"] for r in rows), 1), "ms", None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
