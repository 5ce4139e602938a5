"""Ping to SMS on the real local stack: moto server, chalice local and the stream runner.

Each trial sets up a fresh driver and a shipment with its own phone number on a started
route (not timed), posts approach fixes outside the merchant's approach distance, then
posts the fix that makes the driver "approaching" and times from that request returning
until the approaching SMS has been handed to SNS: its ledger item reads "sent", which is
written right after SNS accepted the message (polling moto's /moto-api/data.json, a dump
of every emulated service, would cost more than what is measured). Each trial then checks
the SMS is in the emulator's outbox. The path: ping stored -> stream -> pipeline writes
"approaching" -> stream -> notification ledger claim -> SNS -> ledger "sent".
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Result, log, now_ms

NAMES = ("ping_to_sms_p95_ms",)
TRIALS = 15
STOP = (47.6205, -122.3493)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _midday_zone() -> str:
    """A fixed-offset zone where it is about noon: quiet hours never hold the message."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12
    return "Etc/GMT" + (f"-{offset}" if offset > 0 else f"+{-offset}")


def _sms_count(moto_url: str, phone: str) -> int:
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json", timeout=5) as response:
        state = json.load(response)
    return sum(1 for m in state.get("sns", {}).get("SMS", []) if m.get("phone_number") == phone)


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

        import boto3

        env = stack.app_env
        ddb = boto3.client("dynamodb", endpoint_url=stack.moto_url,
                           region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        table = env["DOORSTEP_TABLE_NAME"]
        call("PUT", "/v1/settings", {"approach_minutes": 0, "approach_metres": 500, "time_zone": _midday_zone()})
        latencies: list[float] = []
        for trial in range(trials):
            phone = f"+1415555{trial:04d}"
            driver = call("POST", "/v1/drivers", {"name": f"Bench {trial}"})
            shipment = call("POST", "/v1/shipments", {
                "recipient": {"name": "Bench Recipient", "phone": phone},
                "address": {"line1": "1 Bench St", "city": "Seattle", "country": "US"},
                "location": {"lat": STOP[0], "lng": STOP[1]}})
            t0 = now_ms() - 120_000
            route = call("POST", "/v1/routes", {"driver_id": driver["id"], "day": _iso(t0)[:10],
                                                "planned_start": _iso(t0), "shipment_ids": [shipment["id"]]})
            call("POST", f"/v1/routes/{route['id']}/start")  # sends the out-for-delivery SMS
            approach = [{"lat": STOP[0] - d / 111_320, "lng": STOP[1], "fix_time": _iso(t0 + i * 10_000),
                         "accuracy": 5} for i, d in enumerate(range(1500, 500, -100))]
            call("POST", "/v1/driver/pings", {"pings": approach}, token=driver["token"])
            settle = time.perf_counter() + 10
            while _sms_count(stack.moto_url, phone) < 1 and time.perf_counter() < settle:
                time.sleep(0.05)  # the out-for-delivery message first, so only the approaching one is timed
            near = [{"lat": STOP[0] - 400 / 111_320, "lng": STOP[1], "fix_time": _iso(t0 + 110_000), "accuracy": 5}]
            ledger_key = {"PK": {"S": f"SHIPMENT#{shipment['id']}"},
                   "SK": {"S": f"NOTIFY#{shipment['id']}#approaching#sms#{shipment['delivery_date']}"}}
            call("POST", "/v1/driver/pings", {"pings": near}, token=driver["token"])
            returned = time.perf_counter()
            deadline = returned + 10
            while time.perf_counter() < deadline:
                item = ddb.get_item(TableName=table, Key=ledger_key, ConsistentRead=True).get("Item", {})
                if item.get("state", {}).get("S") == "sent":
                    latencies.append((time.perf_counter() - returned) * 1000)
                    break
                time.sleep(0.01)
            else:
                raise AssertionError(f"trial {trial}: no approaching SMS within 10 s (ledger item {ledger_key})")
            if _sms_count(stack.moto_url, phone) != 2:
                raise AssertionError(f"trial {trial}: expected out-for-delivery and approaching SMS in the outbox")
        p95 = _p95(latencies)
        p50 = sorted(latencies)[len(latencies) // 2]
        log(f"ping_to_sms: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
        return [Result("ping_to_sms_p95_ms", round(p95, 1), "ms", 1500.0,
                       extra={"trials": trials, "p50_ms": round(p50, 1)})]
