"""`console_fleet_ms_p95`: the console's fleet endpoint (`GET /v1/fleet`) for a merchant with 500 on-duty drivers.

A child process against a fresh DynamoDB Local (started here on a free port of 127.0.0.1, stopped after, failed
or not; the table from infra/resources.json; S3, SNS, SES on in-process moto): a merchant and 500 drivers made
through the real code (`fleet.service.create_driver`), each put on duty (`presence.start_duty`, as the driver
app's "start shift"), with a latest position (battery, speed) and a pipeline state holding a 40-stop route's
cached statuses (some done, some delayed), written as the ingest and the pipeline write them. Then 10 warm-up
and 60 timed sequential `GET /v1/fleet` through chalice's test client (the app, middleware, auth, the real
Repository over loopback HTTP to DynamoDB Local): the figure is the p95 (nearest rank) in ms; `p50_ms`,
`dynamodb_calls` per request and the answer's size are extra fields. Each answer is checked: 500 drivers, all on
duty, each with a position and route progress.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench.common import Result, child_on_dynamodb_local, log, median, p95

NAMES = ("console_fleet_ms_p95",)
DRIVERS = 500
STOPS = 40
WARMUP = 10
REQUESTS = 60
TARGET_MS = 300.0
_MARK = "CONSOLE_FLEET "


def run() -> list[Result]:
    log(f"console_fleet: {DRIVERS} on-duty drivers on a fresh DynamoDB Local")
    data = child_on_dynamodb_local(["bench.console_fleet"], _MARK, "console_fleet")
    times = data["times_ms"]
    return [Result("console_fleet_ms_p95", round(p95(times), 1), "ms", TARGET_MS,
                   extra={"p50_ms": round(median(times), 1), "drivers": DRIVERS, "requests": len(times),
                          "dynamodb_calls": data["calls"], "body_kb": data["body_kb"]})]


def _seed(merchant_id: str, driver_ids: list[str], table: str) -> None:
    import boto3

    from chalicelib.fleet.presence import start_duty
    from chalicelib.storage import get_repository

    client = boto3.client("dynamodb")
    now = int(time.time() * 1000)
    repo = get_repository()
    items: list[dict[str, Any]] = []
    for n, driver_id in enumerate(driver_ids):
        start_duty(repo, merchant_id, driver_id, now - 3_600_000, 5, route_id=f"rte_bench{n}")
        items.append({"PK": {"S": f"DRIVER#{driver_id}"}, "SK": {"S": "POSITION"},
                      "merchant_id": {"S": merchant_id}, "driver_id": {"S": driver_id},
                      "fix_ms": {"N": str(now - 5000)}, "lat": {"N": str(52.5 + n * 0.0005)},
                      "lng": {"N": str(13.4 + n * 0.0003)}, "accuracy": {"N": "8"}, "speed": {"N": str(n % 12)},
                      "battery": {"N": str(20 + n % 80)}, "cell": {"S": "8a1f1d48992ffff"},
                      "received_ms": {"N": str(now - 4000)}})
        statuses = "d" * (n % STOPS) + "o" * (STOPS - n % STOPS)
        state = {"last_fix_ms": now - 5000, "fences": {}, "motion": {}, "eta": {"at_ms": now - 5000},
                 "route": {"id": f"rte_bench{n}", "st": statuses, "dl": [STOPS - 1], "at": now / 1000, "sv": 0}}
        items.append({"PK": {"S": f"DRIVER#{driver_id}"}, "SK": {"S": "GEOFENCE"},
                      "state": {"S": json.dumps(state, separators=(",", ":"))}, "version": {"N": "1"}})
    for i in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}


def child() -> dict[str, Any]:
    import boto3
    import botocore.session
    from moto import mock_aws

    from tests.conftest import TEST_ENV  # noqa: F401  (the test environment: moto-safe settings)

    if not os.environ.get("DOORSTEP_DYNAMODB_ENDPOINT_URL"):
        raise SystemExit("run through bench.console_fleet.run(), which starts DynamoDB Local for the child")
    table = os.environ["DOORSTEP_TABLE_NAME"]
    with mock_aws():
        from chalice.test import Client

        import app as app_module
        from chalicelib.fleet import service as fleet
        from chalicelib.fleet.models import DriverCreate
        from chalicelib.storage import get_repository
        from infra.local.resources import create_table

        create_table(boto3.client("dynamodb"), table)
        repo = get_repository()
        merchant_id, key = fleet.create_merchant(repo, "Bench Console")
        driver_ids = [fleet.create_driver(repo, merchant_id, DriverCreate(name=f"Driver {n}")).id
                      for n in range(DRIVERS)]
        _seed(merchant_id, driver_ids, table)
        calls = {"n": 0}
        original = botocore.session.Session.create_client

        def counted(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
            client = original(self, service_name, *args, **kwargs)
            if service_name == "dynamodb":
                client.meta.events.register("after-call.dynamodb", lambda **_: calls.__setitem__("n", calls["n"] + 1))
            return client

        botocore.session.Session.create_client = counted  # type: ignore[method-assign]
        # clients made before the patch: count on them too
        repo.client.meta.events.register("after-call.dynamodb", lambda **_: calls.__setitem__("n", calls["n"] + 1))
        headers = {"Authorization": f"Bearer {key}"}
        times: list[float] = []
        per_request: list[int] = []
        body_kb = 0.0
        with Client(app_module.app) as client:
            for n in range(WARMUP + REQUESTS):
                before = calls["n"]
                started = time.perf_counter()
                response = client.http.get("/v1/fleet", headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"GET /v1/fleet: {response.status_code} {response.body[:300]!r}")
                drivers = response.json_body["drivers"]
                if len(drivers) != DRIVERS or not all(d["on_duty"] and d["position"] and d["route"] for d in drivers):
                    raise RuntimeError("the fleet view is missing drivers, positions or routes")
                body_kb = len(response.body) / 1024
                if n >= WARMUP:
                    times.append(elapsed)
                    per_request.append(calls["n"] - before)
    return {"times_ms": times, "calls": max(per_request) if per_request else None, "body_kb": round(body_kb, 1)}


if __name__ == "__main__":
    print(_MARK + json.dumps(child()), flush=True)
    sys.exit(0)
