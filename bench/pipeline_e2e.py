"""Ping to arrival event on the real local stack: DynamoDB Local, moto server, chalice local and the stream runner.

Each trial sets up a fresh driver, a shipment and a started route (not timed), posts
the approach fixes, then posts the fix that enters the stop's geofence and times from
that request returning until "arrived" is readable on the shipment's timeline.
"""

from __future__ import annotations

import time

from bench.common import Result, iso_ms, local_stack_api, log, now_ms, p95

NAMES = ("ping_to_event_p95_ms",)
TRIALS = 20
STOP = (47.6205, -122.3493)


def run(trials: int = TRIALS) -> list[Result]:
    with local_stack_api("Bench Merchant") as (_stack, call):
        latencies: list[float] = []
        for trial in range(trials):
            driver = call("POST", "/v1/drivers", {"name": f"Bench {trial}"})
            shipment = call("POST", "/v1/shipments", {
                "recipient": {"name": "Bench Recipient"},
                "address": {"line1": "1 Bench St", "city": "Seattle", "country": "US"},
                "location": {"lat": STOP[0], "lng": STOP[1]}})
            t0 = now_ms() - 120_000
            route = call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso_ms(t0)[:10],
                                                "planned_start": iso_ms(t0), "shipment_ids": [shipment["id"]]})
            call("POST", f"/v1/routes/{route['id']}/start")
            approach = [{"lat": STOP[0] - d / 111_320, "lng": STOP[1], "fix_time": iso_ms(t0 + i * 10_000),
                         "accuracy": 5} for i, d in enumerate(range(1000, 100, -100))]
            call("POST", "/v1/driver/pings", {"pings": approach}, token=driver["token"])
            time.sleep(0.5)  # let the approach fixes drain so the timed one is the entering fix
            entering = [{"lat": STOP[0], "lng": STOP[1], "fix_time": iso_ms(t0 + 100_000), "accuracy": 5}]
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
        slowest = p95(latencies)
        log(f"ping_to_event: p50 {sorted(latencies)[len(latencies) // 2]:.0f} ms, p95 {slowest:.0f} ms")
        return [Result("ping_to_event_p95_ms", round(slowest, 1), "ms", 1000.0,
                       extra={"trials": trials, "p50_ms": round(sorted(latencies)[len(latencies) // 2], 1)})]
