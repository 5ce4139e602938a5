"""Delivery analytics: what counting one lifecycle event costs in CPU, and how fast a month of figures answers.

- analytics_update_us_per_event: CPU (process time) per `delivered` event through
  `chalicelib.analytics.service.on_lifecycle` with the REAL `Repository` (pynamodb and botocore build, sign and
  parse every request); botocore's HTTP session is replaced by an in-process responder (as bench.ingest_real):
  the shipment's GetItem answers a stored shipment, the merchant profile and zone index reads answer nothing
  (the defaults, no zone), the counters' TransactWriteItems is accepted. Includes: the shipment read, the
  merchant's day, the zone lookup (cached), the transaction of 4 items. Leaves out the network round trips
  (2 per event: one read, one transaction) and the stream function's batch overhead.
- analytics_query_ms_p95: wall time of `GET /v1/analytics/deliveries` through the app (chalice's test client:
  authentication, query parsing, the service, JSON) against DynamoDB Local (a fresh one on a free port) seeded
  with 30 days x 200 drivers (6,000 driver-day items and their 1,000 driver-week rollups, 120 merchant-day shard
  items, 120 zone items, every counter set); the p95 of 40 requests alternating `group_by=driver` (a range from
  a Thursday: 10 items a driver, 2,000 items, the most a 30-day range reads) and
  `group_by=day` (120 items). Leaves out API
  Gateway and a real network; DynamoDB Local on this machine is slower than DynamoDB per item.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench.common import RawBody, Result, app_env, child_on_dynamodb_local, log, median, p95

NAMES = ("analytics_update_us_per_event", "analytics_query_ms_p95")
UPDATE_TARGET_US = 200.0
QUERY_TARGET_MS = 300.0
DAYS, DRIVERS = 30, 200
BATCH = 25  # lifecycle events in one stream batch (the mapping's BatchSize is 100; pings share it)
_MARK = "ANALYTICS_QUERY_RESULT "


class Responder:
    """Answers botocore's DynamoDB requests by operation: the shipment on GetItem, nothing else found."""

    def __init__(self, shipment: dict[str, Any]) -> None:
        self.shipment = shipment
        self.calls = 0

    def send(self, request: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        self.calls += 1
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else str(target)).rsplit(".", 1)[-1]
        body: dict[str, Any] = {}
        if operation == "BatchGetItem":  # every shipment asked for, as stored
            (table, asked), = json.loads(request.body)["RequestItems"].items()
            items = [{**self.shipment, "shipment_id": {"S": k["SK"]["S"].removeprefix("SHIPMENT#")},
                      "driver_id": {"S": f"drv_{n % 5}"}} for n, k in enumerate(asked["Keys"])]
            body = {"Responses": {table: items}, "UnprocessedKeys": {}}
        elif operation == "Query":
            body = {"Items": [], "Count": 0, "ScannedCount": 0}
        raw = json.dumps(body).encode()
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0",
                                              "x-amzn-RequestId": "bench", "Content-Length": str(len(raw))},
                           RawBody(raw))


def _shipment_item(now: datetime) -> dict[str, Any]:
    def s(v: str) -> dict[str, str]:
        return {"S": v}

    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    window_start = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    window_end = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    return {"PK": s("MERCHANT#mer_bench"), "SK": s("SHIPMENT#shp_bench"), "GSI1PK": s("x"), "GSI1SK": s("x"),
            "GSI2PK": s("x"), "GSI2SK": s("x"), "merchant_id": s("mer_bench"), "shipment_id": s("shp_bench"),
            "status": s("delivered"), "recipient": {"M": {"name": s("Ada")}},
            "address": {"M": {"line1": s("1 Main St"), "city": s("Seattle")}}, "lat": {"N": "47.61"},
            "lng": {"N": "-122.33"}, "window_start": s(window_start), "window_end": s(window_end),
            "delivery_date": s(now.date().isoformat()), "driver_id": s("drv_bench"), "route_id": s("rte_bench"),
            "token_version": {"N": "1"}, "final_at": s(stamp), "created_at": s(stamp), "updated_at": s(stamp),
            "proof": {"M": {"keys": {"L": [s("proof/key")]}, "far_from_stop": {"BOOL": False}}}}


def measure_update(batches: int = 40, warmup: int = 5, batch: int = BATCH) -> tuple[float, int]:
    """CPU per event over stream batches of `batch` lifecycle events (delivered, 25 shipments of 5 drivers)."""
    import botocore.httpsession

    from chalicelib.analytics import service
    from chalicelib.core.observability import metrics
    from chalicelib.storage.repository import Repository

    now = datetime.now(UTC)
    responder = Responder(_shipment_item(now))
    original = botocore.httpsession.URLLib3Session.send
    botocore.httpsession.URLLib3Session.send = lambda self, request: responder.send(request)  # type: ignore[method-assign]
    try:
        repo = Repository()
        times: list[float] = []
        gc.collect()
        for k in range(batches + warmup):
            images = [{"PK": f"SHIPMENT#shp_{n}", "SK": f"EVENT#{k}-{n}", "merchant_id": "mer_bench",
                       "shipment_id": f"shp_{n}", "event_id": f"evt_{k}_{n}", "type": "delivered",
                       "to_status": "delivered", "from_status": "arrived", "occurred_at": now.isoformat(),
                       "data": {"far_from_stop": False}} for n in range(batch)]
            started = time.process_time()
            counted = service.on_lifecycle_batch(repo, images)
            elapsed = time.process_time() - started
            if counted != batch:
                raise RuntimeError(f"{counted} of {batch} events counted")
            if k >= warmup:
                times.append(elapsed / batch * 1e6)
            metrics.clear_metrics()  # powertools prints them at 100 otherwise (stdout is for the figures)
        return median(times), responder.calls
    finally:
        botocore.httpsession.URLLib3Session.send = original  # type: ignore[method-assign]


def query_child() -> dict[str, Any]:
    """In a fresh interpreter whose DOORSTEP_DYNAMODB_ENDPOINT_URL is the parent's DynamoDB Local."""
    import boto3
    from moto import mock_aws

    from tests.conftest import TEST_ENV  # noqa: F401  (the test environment: moto-safe settings)

    table = os.environ["DOORSTEP_TABLE_NAME"]
    with mock_aws():  # DynamoDB's endpoint is DynamoDB Local, which moto passes through
        from chalice.test import Client

        from chalicelib.analytics.rules import COUNTERS, DAY_SHARDS
        from chalicelib.fleet import service as fleet
        from chalicelib.storage import get_repository
        from infra.local.resources import create_table

        client = boto3.client("dynamodb")
        create_table(client, table)
        merchant_id, key = fleet.create_merchant(get_repository(), "Analytics Bench")
        # A Thursday: 30 days from it read the most items a month can need (service.driver_read_plan: 10 a
        # driver: 3 weeks, 4 days, the last week's rollup minus its 2 days after the range).
        first = date(2026, 11, 5)
        items: list[dict[str, Any]] = []

        def counters(seed: int) -> dict[str, Any]:
            return {name: {"N": str((seed * 7 + i) % 13)} for i, name in enumerate(COUNTERS)}

        for d in range(DAYS + 2):  # and the 2 days after the range that its last week subtracts
            day = (first + timedelta(days=d)).isoformat()
            base = {"merchant_id": {"S": merchant_id}, "d": {"S": day}}
            items += [{"PK": {"S": f"ANL#{merchant_id}#DRIVER"}, "SK": {"S": f"{day}#drv_{n:04d}"},
                       "g": {"S": f"drv_{n:04d}"}, **base, **counters(d + n)} for n in range(DRIVERS)]
            if (first + timedelta(days=d)).weekday() == 0 or d == 0:  # the week rollups (#120)
                week = (first + timedelta(days=d - (first + timedelta(days=d)).weekday())).isoformat()
                items += [{"PK": {"S": f"ANL#{merchant_id}#DRIVERWEEK"}, "SK": {"S": f"{week}#drv_{n:04d}"},
                           "g": {"S": f"drv_{n:04d}"}, "merchant_id": {"S": merchant_id}, "d": {"S": week},
                           **counters(d + n)} for n in range(DRIVERS)]
            items += [{"PK": {"S": f"ANL#{merchant_id}#DAY"}, "SK": {"S": f"{day}#{s}"}, "g": {"S": day}, **base,
                       **counters(d + s)} for s in range(DAY_SHARDS)]
            items += [{"PK": {"S": f"ANL#{merchant_id}#ZONE"}, "SK": {"S": f"{day}#none#{s}"}, "g": {"S": "none"},
                       **base, **counters(d + s)} for s in range(DAY_SHARDS)]
        for start in range(0, len(items), 25):
            pending: dict[str, Any] = {table: [{"PutRequest": {"Item": i}} for i in items[start:start + 25]]}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        import app as app_module

        last = (first + timedelta(days=DAYS - 1)).isoformat()
        timings: dict[str, list[float]] = {"driver": [], "day": []}
        with Client(app_module.app) as http:
            for k in range(46):
                group_by = ("driver", "day")[k % 2]
                started = time.perf_counter()
                r = http.http.get(f"/v1/analytics/deliveries?from={first}&to={last}&group_by={group_by}&limit=500",
                                  headers={"Authorization": f"Bearer {key}"})
                elapsed = (time.perf_counter() - started) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.body[:300]!r}")
                rows = json.loads(r.body)["items"]
                if len(rows) != (DRIVERS if group_by == "driver" else DAYS):
                    raise RuntimeError(f"{len(rows)} rows for {group_by}")
                if k >= 6:  # warm: the merchant's caches, the first connections
                    timings[group_by].append(elapsed)
        return {"items": len(items), "timings": timings}


def measure_query() -> dict[str, Any]:
    return child_on_dynamodb_local(["bench.analytics", "query"], _MARK, "analytics query", 900)  # type: ignore[no-any-return]


def run() -> list[Result]:
    with app_env():
        update_us, calls = measure_update()
    log(f"analytics update: {update_us:.1f} us/event ({calls} HTTP requests answered in process)")
    found = measure_query()
    every = found["timings"]["driver"] + found["timings"]["day"]
    log(f"analytics query: p95 {p95(every):.1f} ms over {len(every)} requests")
    return [
        Result("analytics_update_us_per_event", round(update_us, 1), "us/event", UPDATE_TARGET_US,
               extra={"http_requests_per_batch": round(calls / 45, 2), "events_per_batch": BATCH,
                      "event": "delivered"}),
        Result("analytics_query_ms_p95", round(p95(every), 1), "ms", QUERY_TARGET_MS,
               extra={"days": DAYS, "drivers": DRIVERS, "items_seeded": found["items"],
                      "p95_group_by_driver_ms": round(p95(found["timings"]["driver"]), 1),
                      "p95_group_by_day_ms": round(p95(found["timings"]["day"]), 1),
                      "engine": "DynamoDB Local over loopback"}),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["query"]:
        print(_MARK + json.dumps(query_child()), flush=True)
