"""Geofence engine: cost per ping with 100,000 fences loaded, and the H3 index against a linear scan.

100,000 stop fences (circles of 30-300 m, uniformly over a 50 x 50 km metro area,
so about 40 fences per km2 and neighbouring fences share cells) are indexed once.

* `geofence_us_per_ping`: CPU time (`time.process_time`, as ingest_us_per_ping:
  the machine is shared and another process taking the core must not count
  against us; GC settled before each run) of `process_batch` per ping: H3 cell, candidate lookup, exact tests and the
  enter/exit/dwell state machine with deterministic event ids. 20,000 fixes from
  100 simulated drivers (random walks at ~10 m/s, a fix every 5 s, accuracy
  4-30 m) in batches of 100, from empty states; median of the repeats.
* `geofence_index_speedup`: a containment query ("which fences contain this
  point") through the index (`FenceIndex.containing`) against a linear haversine
  scan of the same fences, on the same uniformly random points, in the same run:
  linear us / indexed us. The two answers are compared point by point first.

Index build time, cells per fence and candidates per fix are reported as extra
fields (no target). Nothing from chalicelib is imported at module level (see
bench/common.py). `run()` returns plain dicts whose keys are `bench.common.Result`'s
fields, so `Result(**d)` wires them in; the speedup target is a minimum, so its
dict carries its own `met` in `extra`.
"""

from __future__ import annotations

import gc
import math
import random
import time
from typing import TYPE_CHECKING, Any

from bench.common import log, median

if TYPE_CHECKING:
    from chalicelib.geo.geofence import CircleFence, FenceIndex, GeoFix

NAMES = ("geofence_us_per_ping", "geofence_index_speedup")
FENCES = 100_000
FIXES = 20_000
DRIVERS = 100
BATCH = 100
LINEAR_SAMPLE = 50
REPEATS = 5
TARGET_US = 20.0
TARGET_SPEEDUP = 100.0

# Seattle-sized metro area: 50 km x 50 km around downtown.
CENTRE_LAT, CENTRE_LNG = 47.6062, -122.3321
HALF_SIDE_M = 25_000.0
M_PER_DEG = 111_195.08


def _area_point(rng: random.Random) -> tuple[float, float]:
    dy = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)
    dx = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)
    return (CENTRE_LAT + dy / M_PER_DEG,
            CENTRE_LNG + dx / (M_PER_DEG * math.cos(math.radians(CENTRE_LAT))))


def make_fences(count: int, seed: int = 11) -> list[CircleFence]:
    from chalicelib.geo.geofence import CircleFence

    rng = random.Random(seed)
    return [CircleFence(f"stop_{i:06d}", *_area_point(rng), rng.uniform(30.0, 300.0)) for i in range(count)]


def make_trace_fixes(drivers: int, per_driver: int, seed: int = 12) -> list[GeoFix]:
    """Drivers wandering through the area: ~10 m/s, a fix every 5 s, phone-like accuracy."""
    from chalicelib.geo.geofence import GeoFix

    rng = random.Random(seed)
    out: list[GeoFix] = []
    cos_lat = math.cos(math.radians(CENTRE_LAT))
    for d in range(drivers):
        lat, lng = _area_point(rng)
        heading = rng.uniform(0, 2 * math.pi)
        for i in range(per_driver):
            heading += rng.gauss(0, 0.4)
            step = rng.uniform(0.0, 14.0) * 5  # stops and slow streets included
            lat += step * math.cos(heading) / M_PER_DEG
            lng += step * math.sin(heading) / (M_PER_DEG * cos_lat)
            out.append(GeoFix(f"drv_{d:03d}", 1_750_000_000_000 + i * 5000, lat, lng, rng.uniform(4.0, 30.0)))
    # Batches as a stream would deliver them: interleaved drivers, in time order.
    out.sort(key=lambda f: (f.fix_ms, f.driver_id))
    return out


def _linear_containing(fences: list[CircleFence], lat: float, lng: float) -> list[str]:
    """The baseline: haversine to every fence, as a scan without an index would do."""
    from chalicelib.geo.cells import haversine_m

    return [f.id for f in fences if haversine_m(f.lat, f.lng, lat, lng) <= f.radius_m]


def _time_engine(index: FenceIndex, batches: list[list[GeoFix]]) -> tuple[float, int]:
    from chalicelib.geo.geofence import DriverState, GeofenceParams, process_batch

    params = GeofenceParams()
    states: dict[str, DriverState] = {}
    events = 0
    gc.collect()
    started = time.process_time()
    for batch in batches:
        new_states, new_events = process_batch(batch, states, index, params)
        states.update(new_states)
        events += len(new_events)
    return time.process_time() - started, events


def _time_query(index: FenceIndex, points: list[tuple[float, float]]) -> tuple[float, int]:
    found = 0
    gc.collect()
    started = time.process_time()
    for lat, lng in points:
        found += len(index.containing(lat, lng))
    return time.process_time() - started, found


def run(fences: int = FENCES, fixes: int = FIXES, repeats: int = REPEATS,
        linear_sample: int = LINEAR_SAMPLE) -> list[dict[str, Any]]:
    from chalicelib.geo.geofence import FenceIndex

    fence_list = make_fences(fences)
    gc.collect()
    started = time.process_time()
    index = FenceIndex(fence_list)
    build_s = time.process_time() - started
    log(f"geofence: indexed {fences} fences in {build_s:.1f} s "
        f"({index.cell_entries / fences:.1f} cells per fence, {index.cells} distinct cells)")

    # --- per ping: the whole engine on driver traces ---
    trace = make_trace_fixes(DRIVERS, max(1, fixes // DRIVERS))
    batches = [trace[i:i + BATCH] for i in range(0, len(trace), BATCH)]
    _time_engine(index, batches[:20])  # warm-up: H3 and interpreter caches
    engine_runs = [_time_engine(index, batches) for _ in range(repeats)]
    per_ping_us = median([t for t, _ in engine_runs]) / len(trace) * 1e6
    events_per_ping = engine_runs[0][1] / len(trace)
    candidates = sum(len(index.candidates(f.lat, f.lng)) for f in trace) / len(trace)
    log(f"geofence: {per_ping_us:.2f} us/ping through process_batch, {events_per_ping:.3f} events and "
        f"{candidates:.1f} candidate fences per ping")

    # --- index against a linear scan: same question, same points ---
    rng = random.Random(13)
    points = [_area_point(rng) for _ in range(fixes)]
    sample = points[:linear_sample]
    for lat, lng in sample:
        indexed = sorted(f.id for f in index.containing(lat, lng))
        if indexed != sorted(_linear_containing(fence_list, lat, lng)):
            raise AssertionError(f"index and linear scan disagree at {lat},{lng}")
    query_runs = [_time_query(index, points) for _ in range(repeats)]
    query_us = median([t for t, _ in query_runs]) / len(points) * 1e6
    containing = query_runs[0][1] / len(points)
    linear_runs = []
    for _ in range(max(1, repeats // 2)):
        gc.collect()
        started = time.process_time()
        for lat, lng in sample:
            _linear_containing(fence_list, lat, lng)
        linear_runs.append(time.process_time() - started)
    linear_us = median(linear_runs) / len(sample) * 1e6
    speedup = linear_us / query_us
    log(f"geofence: containment query {query_us:.2f} us indexed vs {linear_us:.0f} us linear: x{speedup:.0f}")

    return [
        {"name": "geofence_us_per_ping", "value": round(per_ping_us, 2), "unit": "us", "target": TARGET_US,
         "baseline": round(query_us, 2),
         "extra": {"baseline_unit": "us", "baseline_is": "index lookup + exact test alone (containment query)",
                   "fences": fences, "pings": len(trace), "drivers": DRIVERS, "batch": BATCH,
                   "repeats": repeats, "events_per_ping": round(events_per_ping, 3),
                   "candidates_per_ping": round(candidates, 1), "index_build_s": round(build_s, 1),
                   "cells_per_fence": round(index.cell_entries / fences, 1), "index_cells": index.cells}},
        {"name": "geofence_index_speedup", "value": round(speedup, 1), "unit": "x", "target": TARGET_SPEEDUP,
         "baseline": round(linear_us, 1),
         "higher_is_better": True,
         "extra": {"baseline_unit": "us", "baseline_is": "linear haversine scan of all fences, per point",
                   "indexed_us": round(query_us, 2), "linear_points": len(sample), "query_points": len(points),
                   "fences_containing_per_point": round(containing, 2)}},
    ]


if __name__ == "__main__":
    import json

    for figure in run():
        print(json.dumps(figure), flush=True)
