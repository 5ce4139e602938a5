"""Driver reports in the stream pipeline: CPU per fix and the extra DynamoDB requests per ping.

A simulated van day (8 hours, a fix every 2 s with the phone's speed and 5-15 m accuracy: drives of 3-10 min at
8-16 m/s, stops of 2-8 min with 10 m jitter, a freeway stretch over the speeding threshold now and then) goes
through `chalicelib.driver_reports.service.on_fixes` in batches of 10 fixes (a phone posting every 20 s), each
batch from the running state's JSON as the pipeline stores it. DynamoDB is a counting stub (every request
answered at once), so the figures are the step's own CPU and the requests and write units it adds.

* `driver_reports_us_per_fix`: CPU time (`time.process_time`) of `on_fixes` per fix: the JSON state in and out,
  the fold (segmentation, guards, behaviour), building the items of what closed; the DynamoDB calls themselves
  are stubbed (their network time is not included). Median of 5 runs of the day.
* `driver_reports_requests_per_ping`: DynamoDB requests `on_fixes` makes per fix over the day (a BatchWriteItem
  and an UpdateItem per batch that closes something, the thresholds' GetItem once). Extra fields: write units
  per fix (items written, each under 1 KB), the state's JSON size, and what the day closed. The pipeline's
  own requests (state read and write, route Query) are not included: reports add none to them.
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from bench.common import app_env, log, median

NAMES = ("driver_reports_us_per_fix", "driver_reports_requests_per_ping")
BATCH = 10
REPEATS = 5
TARGET_US = 50.0
TARGET_REQUESTS = 0.05
M_PER_DEG = 111_195.0


class CountingClient:
    """The low-level DynamoDB client's calls the report store makes, answered at once."""

    def __init__(self) -> None:
        self.requests = 0
        self.items_written = 0

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        self.items_written += sum(len(v) for v in RequestItems.values())
        return {}

    def update_item(self, **_: Any) -> dict[str, Any]:
        self.requests += 1
        self.items_written += 1
        return {}

    def get_item(self, **_: Any) -> dict[str, Any]:
        self.requests += 1
        return {}


class _Quiet:
    def add_metric(self, **_: Any) -> None:
        pass


class Repo:
    def __init__(self) -> None:
        self.client = CountingClient()


def van_day(seed: int = 5) -> list[tuple[int, float, float, float, float]]:
    """(fix ms, lat, lng, accuracy, speed m/s) every 2 s for 8 hours."""
    rng = random.Random(seed)
    t, lat, lng, heading = 1_780_000_000_000, 47.61, -122.33, 0.0
    out: list[tuple[int, float, float, float, float]] = []
    end = t + 8 * 3_600_000
    while t < end:
        fast = rng.random() < 0.15
        speed = rng.uniform(26, 30) if fast else rng.uniform(8, 16)
        steps = int(rng.uniform(90, 300))
        for i in range(steps):  # driving, speeding up and slowing down over 12 s
            heading += rng.uniform(-0.2, 0.2)
            v = max(0.0, speed * min(1.0, (i + 1) / 6, (steps - i) / 6) + rng.gauss(0, 0.8))
            lat += v * 2 * math.cos(heading) / M_PER_DEG
            lng += v * 2 * math.sin(heading) / (M_PER_DEG * math.cos(math.radians(lat)))
            out.append((t, round(lat, 7), round(lng, 7), round(rng.uniform(5, 15), 1), round(v, 2)))  # as chunks
            t += 2000
        for _ in range(int(rng.uniform(60, 240))):  # stopped, jittering
            out.append((t, round(lat + rng.gauss(0, 10) / M_PER_DEG, 7), round(lng + rng.gauss(0, 10) / M_PER_DEG, 7),
                        round(rng.uniform(5, 15), 1), round(abs(rng.gauss(0, 0.3)), 2)))
            t += 2000
    return out


def run() -> list[dict[str, Any]]:
    with app_env():
        from chalicelib.driver_reports import rules, service
        from chalicelib.geo.geofence import GeoFix

        metrics = service.__dict__["metrics"]
        setattr(service, "metrics", _Quiet())  # noqa: B010 (powertools would print its flushes on stdout)
        try:
            return _run(rules, service, GeoFix)
        finally:
            setattr(service, "metrics", metrics)  # noqa: B010


def _run(rules: Any, service: Any, GeoFix: Any) -> list[dict[str, Any]]:
    day = [GeoFix("drv_bench", ms, la, ln, acc, v) for ms, la, ln, acc, v in van_day()]
    batches = [day[i:i + BATCH] for i in range(0, len(day), BATCH)]
    log(f"driver reports: {len(day)} fixes in {len(batches)} batches")
    timings: list[float] = []
    repo = Repo()
    state_bytes = 0
    closed: dict[str, int] = {}
    for run_index in range(REPEATS):
        service.forget_cached_thresholds()
        repo = Repo()
        state: dict[str, Any] | None = None
        started = time.process_time()
        for batch in batches:
            state = service.on_fixes(repo, "mer_bench", "drv_bench", state, batch, [], "America/Los_Angeles")
            state = json.loads(json.dumps(state))  # as the state item stores it
        timings.append((time.process_time() - started) / len(day) * 1e6)
        if run_index == 0:
            state_bytes = len(json.dumps(state, separators=(",", ":")))
            running = rules.from_json(state)
            closed = {"trips": running.day.trips, "stops": running.day.stops, **running.day.events}
    per_fix = median(timings)
    requests = repo.client.requests / len(day)
    return [
        {"name": "driver_reports_us_per_fix", "value": round(per_fix, 2), "unit": "us", "target": TARGET_US,
         "extra": {"fixes": len(day), "batch": BATCH}},
        {"name": "driver_reports_requests_per_ping", "value": round(requests, 4), "unit": "requests",
         "target": TARGET_REQUESTS,
         "extra": {"wru_per_ping": round(repo.client.items_written / len(day), 4), "state_bytes": state_bytes,
                   "requests": repo.client.requests, "day_closed": closed}},
    ]
