"""Ping to SMS on the real local stack: DynamoDB Local, moto server, chalice local and the stream runner.

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

import time
from datetime import UTC, datetime

from bench.common import Result, iso_ms, local_stack_api, log, now_ms, p95
from infra.local.outbox import outbox

NAMES = ("ping_to_sms_p95_ms", "notify_dedupe_overhead_ms")
DEDUPE_MESSAGES = 60
TRIALS = 15
STOP = (47.6205, -122.3493)


def _midday_zone() -> str:
    """A fixed-offset zone where it is about noon: quiet hours never hold the message."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12
    return "Etc/GMT" + (f"-{offset}" if offset > 0 else f"+{-offset}")


def _sms_count(moto_url: str, phone: str) -> int:
    return sum(1 for m in outbox(moto_url)["sms"] if m["to"] == phone)


def run(trials: int = TRIALS) -> list[Result]:
    with local_stack_api("Bench Merchant") as (stack, call):
        import boto3

        env = stack.app_env
        ddb = boto3.client("dynamodb", endpoint_url=stack.dynamodb_url,
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
            route = call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso_ms(t0)[:10],
                                                "planned_start": iso_ms(t0), "shipment_ids": [shipment["id"]]})
            call("POST", f"/v1/routes/{route['id']}/start")  # sends the out-for-delivery SMS
            approach = [{"lat": STOP[0] - d / 111_320, "lng": STOP[1], "fix_time": iso_ms(t0 + i * 10_000),
                         "accuracy": 5} for i, d in enumerate(range(1500, 500, -100))]
            call("POST", "/v1/driver/pings", {"pings": approach}, token=driver["token"])
            settle = time.perf_counter() + 10
            while _sms_count(stack.moto_url, phone) < 1 and time.perf_counter() < settle:
                time.sleep(0.05)  # the out-for-delivery message first, so only the approaching one is timed
            near = [{"lat": STOP[0] - 400 / 111_320, "lng": STOP[1], "fix_time": iso_ms(t0 + 110_000), "accuracy": 5}]
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
        slowest = p95(latencies)
        p50 = sorted(latencies)[len(latencies) // 2]
        log(f"ping_to_sms: p50 {p50:.0f} ms, p95 {slowest:.0f} ms")
        dedupe = dedupe_overhead(stack.moto_url, stack.dynamodb_url)
        return [Result("ping_to_sms_p95_ms", round(slowest, 1), "ms", 1500.0,
                       extra={"trials": trials, "p50_ms": round(p50, 1)}), dedupe]


def dedupe_overhead(moto_url: str, dynamodb_url: str, messages: int = DEDUPE_MESSAGES) -> Result:
    """What the exactly-once ledger adds per message on the local stack: the conditional claim and the
    conditional "sent" update (DynamoDB Local) around one SNS publish (moto), against the publish alone
    (interleaved, so both see the same machine load). For information: two conditional writes per message.
    """
    import os

    from bench.common import app_env, median
    from chalicelib.core.config import get_settings

    with app_env():
        os.environ["AWS_ENDPOINT_URL"] = moto_url
        os.environ["DOORSTEP_DYNAMODB_ENDPOINT_URL"] = dynamodb_url
        get_settings.cache_clear()  # the settings of this stack, not of an earlier in-process benchmark
        try:
            import boto3

            from chalicelib.notifications.ledger import Ledger
            from chalicelib.notifications.rules import LedgerState, ledger_key
            from chalicelib.notifications.senders import Notifier

            ledger = Ledger(boto3.client("dynamodb", endpoint_url=dynamodb_url))
            notifier = Notifier()
            alone: list[float] = []
            claimed: list[float] = []
            run_id = f"{time.time_ns():x}"
            for n in range(messages):
                phone = f"+1206556{n % 10_000:04d}"
                start = time.perf_counter()
                notifier.send_sms(phone, "bench: publish alone")
                alone.append((time.perf_counter() - start) * 1000)
                shipment_id, now = f"shp_bench{run_id}{n}", datetime.now(UTC)
                key = ledger_key(shipment_id, "approaching", "sms", "2026-01-01")
                start = time.perf_counter()
                if not ledger.claim(shipment_id, key, f"clm_{n}", now):
                    raise AssertionError("a fresh ledger key could not be claimed")
                sent = notifier.send_sms(phone, "bench: publish with the ledger")
                ledger.finish(shipment_id, key, f"clm_{n}", LedgerState.SENT, now, detail=sent.provider_id)
                claimed.append((time.perf_counter() - start) * 1000)
        finally:
            get_settings.cache_clear()
    overhead = median(claimed) - median(alone)
    log(f"notify_dedupe_overhead: publish alone {median(alone):.1f} ms, with the ledger {median(claimed):.1f} ms")
    return Result("notify_dedupe_overhead_ms", round(overhead, 2), "ms", None, baseline=round(median(alone), 2),
                  extra={"messages": messages, "with_ledger_median_ms": round(median(claimed), 2),
                         "p95_overhead_ms": round(p95(claimed) - p95(alone), 2)})
