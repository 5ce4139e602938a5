"""ETA engine: wall time to recompute the ETAs of a 200-stop route, as a driver's pings arrive.

* `eta_route_ms`: `estimate_route` for all 200 remaining stops (cumulative arrivals,
  table lookups along every leg at the hour it is driven, windows), median of 500
  recomputes after 20 warm-up ones. Between recomputes the driver moves 30 s along the
  first leg and the clock advances 30 s (the throttle's interval), so the first leg is
  re-measured every time while the later legs come from the RoutePlan prepared once,
  as in a warm Lambda. The speed table holds a realistic history: fixes every 5 s along
  every leg of the route, at its real departure hour, observed into the table.

Stops are a real ALMRRC route when ../shared/data is present (the largest route,
DCH4, in the order the driver served it, topped up to 200 with the next stops of the
other route from the same station), else a synthetic 200-stop route in Berlin.
The cold recompute (a table fresh from its stored dict, no plan yet) is reported as an
extra field. Nothing from chalicelib is imported at module level (see bench/common.py);
`run()` returns plain dicts whose keys are `bench.common.Result`'s fields.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import PROJECT_ROOT, log, median

if TYPE_CHECKING:
    from chalicelib.geo.eta import Stop

NAMES = ("eta_route_ms",)
STOPS = 200
WARMUP = 20
MEASURED = 500
STEP_S = 30
TARGET_MS = 2.0
SHARED_DATA = Path(os.environ.get("DOORSTEP_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
ROUTES = SHARED_DATA / "routes" / "almrrc2021"


def real_route(folder: Path = ROUTES, count: int = STOPS) -> tuple[list[tuple[str, float, float]], int] | None:
    """(stop id, lat, lng) of the largest real route in driven order, topped up from a sibling route; departure ms."""
    try:
        with (folder / "new_route_data.json").open(encoding="utf-8") as fh:
            routes = json.load(fh)
        with (folder / "new_actual_sequences.json").open(encoding="utf-8") as fh:
            sequences = json.load(fh)
    except OSError:
        return None
    by_size = sorted(routes, key=lambda r: len(routes[r]["stops"]), reverse=True)
    main = by_size[0]
    siblings = [r for r in by_size[1:] if routes[r]["station_code"] == routes[main]["station_code"]]
    stops: list[tuple[str, float, float]] = []
    for route_id in [main, *siblings]:
        order = sequences[route_id]["actual"]
        for stop_id in sorted(routes[route_id]["stops"], key=order.__getitem__):
            stop = routes[route_id]["stops"][stop_id]
            if stop["type"] != "Station":
                stops.append((f"{route_id[-6:]}:{stop_id}", float(stop["lat"]), float(stop["lng"])))
    route = routes[main]
    departure = datetime.fromisoformat(f"{route['date_YYYY_MM_DD']}T{route['departure_time_utc']}+00:00")
    return stops[:count], int(departure.timestamp() * 1000)


def synthetic_route(count: int = STOPS, seed: int = 11) -> tuple[list[tuple[str, float, float]], int]:
    """A Berlin route: stops 150-900 m apart, drifting as a real delivery area does."""
    rng = random.Random(seed)
    lat, lng, heading = 52.52, 13.40, 0.0
    stops = []
    for i in range(count):
        heading += rng.gauss(0, 40)
        step = rng.uniform(150, 900)
        lat += step * math.cos(math.radians(heading)) / 111_320
        lng += step * math.sin(math.radians(heading)) / (111_320 * math.cos(math.radians(lat)))
        stops.append((f"S{i:03d}", lat, lng))
    return stops, 1_700_000_000_000


def run(measured: int = MEASURED) -> list[dict[str, Any]]:
    from chalicelib.geo.eta import DriverMotion, ErrorModel, SpeedTable, Stop, estimate_route

    found = real_route()
    source = "ALMRRC route (real stops)" if found else "synthetic (no ../shared/data)"
    raw, depart_ms = found if found else synthetic_route()
    stops = [Stop(stop_id, lat, lng) for stop_id, lat, lng in raw]
    log(f"eta: {len(stops)} stops from {source}")

    table = SpeedTable()
    _drive(table, stops, depart_ms)
    errors = ErrorModel()
    rng = random.Random(5)
    for _ in range(2000):  # a learned error model, so windows come from histograms rather than defaults
        predicted = rng.uniform(60, 8 * 3600)
        errors.observe(predicted, predicted * math.exp(rng.gauss(0.05, 0.2)), late=rng.random() < 0.3)

    start = (stops[0].lat + 0.01, stops[0].lng + 0.01)  # ~1.4 km before the first stop
    motion = DriverMotion(speed_mps=7.5)
    motion.start_leg(depart_ms, *start)

    # Cold: a table just loaded from storage (empty caches) and a route never planned.
    cold_table = SpeedTable.from_dict(table.to_dict())
    gc.collect()
    began = time.perf_counter()
    estimate_route(start, depart_ms, list(stops), cold_table, motion, errors=errors)
    cold_ms = (time.perf_counter() - began) * 1000

    timings = []
    for i in range(WARMUP + measured):
        f = min(1.0, i / (WARMUP + measured))  # the driver closes in on the first stop
        position = (start[0] + (stops[0].lat - start[0]) * f, start[1] + (stops[0].lng - start[1]) * f)
        now_ms = depart_ms + i * STEP_S * 1000
        began = time.perf_counter()
        result = estimate_route(position, now_ms, stops, table, motion, errors=errors)
        elapsed = time.perf_counter() - began
        if i >= WARMUP:
            timings.append(elapsed * 1000)
    if len(result) != len(stops) or any(b.eta_ms < a.eta_ms for a, b in itertools.pairwise(result)):
        raise AssertionError("estimate_route did not return cumulative ETAs for every stop")
    timings.sort()
    value = median(timings)
    span_h = (result[-1].eta_ms - now_ms) / 3_600_000
    log(f"eta: {value:.3f} ms per 200-stop recompute (p95 {timings[int(0.95 * len(timings))]:.3f} ms, "
        f"cold {cold_ms:.2f} ms); the route spans {span_h:.1f} h")
    return [{"name": "eta_route_ms", "value": round(value, 3), "unit": "ms", "target": TARGET_MS,
             "extra": {"stops": len(stops), "source": source, "recomputes": measured,
                       "p95_ms": round(timings[int(0.95 * len(timings))], 3), "cold_ms": round(cold_ms, 3),
                       "table_keys": len(table), "route_span_h": round(span_h, 1)}}]


def _drive(table: Any, stops: list[Stop], depart_ms: int, speed_mps: float = 8.0, every_s: int = 5) -> None:
    """Observe fixes every `every_s` along the straight legs at `speed_mps`, as a past run of this route would."""
    from chalicelib.geo.cells import haversine_m
    from chalicelib.ingest.rules import LastFix

    now_ms = depart_ms
    previous = LastFix(now_ms, stops[0].lat, stops[0].lng)
    for a, b in itertools.pairwise(stops):
        steps = max(1, int(haversine_m(a.lat, a.lng, b.lat, b.lng) / (speed_mps * every_s)))
        for k in range(1, steps + 1):
            now_ms += every_s * 1000
            fix = LastFix(now_ms, a.lat + (b.lat - a.lat) * k / steps, a.lng + (b.lng - a.lng) * k / steps)
            table.observe(previous, fix)
            previous = fix
        now_ms += 70_000  # the service time at the stop
        previous = LastFix(now_ms, previous.lat, previous.lng)


if __name__ == "__main__":
    for figure in run():
        print(json.dumps(figure), flush=True)
