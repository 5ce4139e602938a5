"""CPU per custody event appended to a shipment's hash chain: `custody.service.append_event` end to end.

The real repository and its botocore client (`Repository.hot_client`) run: the head read (GetItem) and the
conditional transaction (TransactWriteItems) are built, serialized, signed and their answers parsed; only the
network is replaced, by a `before-send` hook answering what DynamoDB would (the head as the last append left it).
Six events per shipment appended in a row by one container (a delivered stop's chain), so five of six reuse the
head this container wrote (`custody.service._heads`) and send only the transaction; `cold_head_read_us` (extra)
is an append that reads the head first, as a container that did not write the previous event does.
Included: canonical JSON, SHA-256, request building and signing, response parsing. Left out: the network round
trips themselves (two per event) and DynamoDB's own time. CPU time (`time.process_time`), median of repeats.
"""

from __future__ import annotations

import gc
import json
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import MERCHANT_ID, RawBody, Result, app_env, log, median

NAMES = ("custody_append_us",)
WARMUP = 50
MEASURED = 2000
REPEATS = 5
TARGET_US = 300.0
EVENTS_PER_SHIPMENT = 6  # a delivered stop: created, out_for_delivery, loaded, scanned, proof_attached, delivered


def run(measured: int = MEASURED) -> list[Result]:
    with app_env():
        from botocore.awsrequest import AWSResponse

        from chalicelib.custody import service
        from chalicelib.storage.repository import Repository

        repo = Repository()
        head: dict[str, Any] = {"seq": 0, "hash": None}
        sent: list[str] = []

        def answer(request: Any, **_: Any) -> AWSResponse:
            target = request.headers.get("X-Amz-Target", b"")
            target = target.decode() if isinstance(target, bytes) else str(target)
            operation = target.rsplit(".", 1)[-1]
            sent.append(operation)
            if operation == "GetItem":
                body = {} if head["seq"] == 0 else {"Item": {"seq": {"N": str(head["seq"])},
                                                             "hash": {"S": head["hash"]}}}
            elif operation == "TransactWriteItems":
                items = json.loads(request.body)["TransactItems"]
                head["seq"] += 1
                head["hash"] = items[0]["Put"]["Item"]["hash"]["S"]
                body = {}
            else:
                raise AssertionError(f"unexpected call {operation}")
            return AWSResponse(request.url, 200, {"content-type": "application/x-amz-json-1.0"},
                               RawBody(json.dumps(body).encode()))

        repo.hot_client.meta.events.register_first("before-send.dynamodb", answer)
        at = datetime.now(UTC)
        data = {"stage": "delivery", "barcodes": ["PKG-000123", "PKG-000124"], "lat": 52.52, "lng": 13.405}

        for k in range(WARMUP):
            service.append_event(repo, MERCHANT_ID, f"shp_warm{k}", "scanned", at, "driver:drv_bench", data)
        runs = []
        for _ in range(REPEATS):
            gc.collect()
            started = time.process_time()
            for k in range(measured):
                shipment_id = f"shp_bench{k // EVENTS_PER_SHIPMENT}"
                service.append_event(repo, MERCHANT_ID, shipment_id, "scanned", at, "driver:drv_bench", data)
            runs.append((time.process_time() - started) / measured * 1e6)
        cold = []  # every append reads the head first: a container that did not write the previous event
        for k in range(measured // 4):
            service._heads.clear()
            started = time.process_time()
            service.append_event(repo, MERCHANT_ID, f"shp_cold{k}", "scanned", at, "driver:drv_bench", data)
            cold.append(time.process_time() - started)
        if sent.count("TransactWriteItems") != WARMUP + REPEATS * measured + measured // 4:
            raise AssertionError("the appends did not all reach the (stubbed) transaction")
    value = round(median(runs), 1)
    cold_us = round(median(cold) * 1e6, 1)
    log(f"custody: {value} us per appended event (runs {[round(r) for r in runs]}), {cold_us} us with a head read")
    return [Result("custody_append_us", value, "us", TARGET_US,
                   extra={"events_per_shipment": EVENTS_PER_SHIPMENT, "cold_head_read_us": cold_us})]
