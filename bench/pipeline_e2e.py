"""Ping to arrival event on the real local stack: moto server, chalice local and the stream runner.

Each trial sets up a fresh driver, a shipment and a started route (not timed), posts
the approach fixes, then posts the fix that enters the stop's geofence and times from
that request returning until "arrived" is readable on the shipment's timeline.
"""

from __future__ import annotations

import math
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import Result, log, now_ms

NAMES = ("ping_to_event_p95_ms",)
TRIALS = 20
STOP = (47.6205, -122.3493)


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def run(trials: int = TRIALS) -> list[Result]:
    from infra.local.stack import LocalStack, create_merchant, http_json

    with ExitStack() as scope:
        log_dir = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="doorstep-bench-")))
        stack = scope.enter_context(LocalStack(port=0, moto_port=0, log_dir=log_dir))
        _merchant_id, key = create_merchant(stack.app_env, "Bench Merchant", isolated=True)
        base = stack.base_url

        def call(method: str, path: str, body: Any = None, token: str = key) -> Any:
            result = http_json(method, f"{base}{path}", body, token=token)
            if result.status >= 300:
                raise AssertionError(f"{method} {path}: {result.status} {result.body}")
            return result.body

        latencies: list[float] = []
        for trial in range(trials):
            driver = call("POST", "/v1/drivers", {"name": f"Bench {trial}"})
            shipment = call("POST", "/v1/shipments", {
                "recipient": {"name": "Bench Recipient"},
                "address": {"line1": "1 Bench St", "city": "Seattle", "country": "US"},
                "location": {"lat": STOP[0], "lng": STOP[1]}})
            t0 = now_ms() - 120_000
            route = call("POST", "/v1/routes", {"driver_id": driver["id"], "day": _iso(t0)[:10],
                                                "planned_start": _iso(t0), "shipment_ids": [shipment["id"]]})
            call("POST", f"/v1/routes/{route['id']}/start")
            approach = [{"lat": STOP[0] - d / 111_320, "lng": STOP[1], "fix_time": _iso(t0 + i * 10_000),
                         "accuracy": 5} for i, d in enumerate(range(1000, 100, -100))]
            call("POST", "/v1/driver/pings", {"pings": approach}, token=driver["token"])
            time.sleep(0.5)  # let the approach fixes drain so the timed one is the entering fix
            entering = [{"lat": STOP[0], "lng": STOP[1], "fix_time": _iso(t0 + 100_000), "accuracy": 5}]
            call("POST", "/v1/driver/pings", {"pings": entering}, token=driver["token"])
            returned = time.perf_counter()
            deadline = returned + 10
            while time.perf_counter() < deadline:
                timeline = call("GET", f"/v1/shipments/{shipment['id']}/timeline")
                if any(e["type"] == "arrived" for e in timeline["items"]):
                    latencies.append((time.perf_counter() - returned) * 1000)
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"trial {trial}: no arrival within 10 s")
        p95 = _p95(latencies)
        log(f"ping_to_event: p50 {sorted(latencies)[len(latencies) // 2]:.0f} ms, p95 {p95:.0f} ms")
        return [Result("ping_to_event_p95_ms", round(p95, 1), "ms", 1000.0,
                       extra={"trials": trials, "p50_ms": round(sorted(latencies)[len(latencies) // 2], 1)})]
