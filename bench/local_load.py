"""The local stack under a day's load: does it stay fast and small? (issue 12)

On a fresh local stack (DynamoDB Local, moto, chalice local, the stream runner and scheduler):
1. 100,000 pings from 20 drivers, POSTed 500 per request by 4 client threads (each driver's requests in
   order, so every fix is new and accepted), while the stream runner feeds them to the pipeline;
2. 1,000 transactions: 500 POST /v1/shipments with an Idempotency-Key (each a TransactWriteItems) and
   the same 500 again, whose replays cancel their transaction on the idempotency item's condition (the
   path where moto copied and restored the whole table, losing concurrent writes);
3. then the figures: `local_create_driver_p95_ms_after_100k`, p95 of 100 sequential POST /v1/drivers (a
   TransactWriteItems each), and `emulator_rss_mb_after_100k`, the resident memory of the local AWS
   processes together: moto's and DynamoDB Local's process groups, summed from /proc (VmRSS).
The stored pings are counted afterwards (a Query per driver, Select=COUNT): none may be missing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Result, driver_trace, log, now_ms, p95

NAMES = ("local_create_driver_p95_ms_after_100k", "emulator_rss_mb_after_100k")
DRIVERS = 20
PINGS = 100_000
BATCH = 500
THREADS = 4
SHIPMENTS = 500  # created, then replayed: 1,000 transactions
CREATE_DRIVER_SAMPLES = 100
CREATE_DRIVER_TARGET_MS = 500.0
RSS_TARGET_MB = 1500.0


def group_rss_mb(pgids: Iterable[int]) -> float:
    """Resident memory of every process in these process groups (the stack starts each child in its own)."""
    wanted = set(pgids)
    total_kib = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields after the parenthesised command: state, ppid, pgrp, ...
            pgrp = int(stat.rsplit(")", 1)[1].split()[2])
            if pgrp not in wanted:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    return total_kib / 1024


def _stored_pings(stack: Any, driver_ids: list[str]) -> int:
    import boto3

    from chalicelib.storage.fix_chunks import decode_fix_times

    env = stack.app_env
    client = boto3.client("dynamodb", endpoint_url=stack.dynamodb_url, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    stored = 0
    for driver_id in driver_ids:
        # the fixes of the driver's chunk items (one per accepted request, storage/fix_chunks.py)
        for page in client.get_paginator("query").paginate(
                TableName=env["DOORSTEP_TABLE_NAME"], ProjectionExpression="f",
                KeyConditionExpression="PK = :pk AND begins_with(SK, :fixes)",
                ExpressionAttributeValues={":pk": {"S": f"DRIVER#{driver_id}"}, ":fixes": {"S": "POINTS#"}}):
            stored += sum(len(decode_fix_times(item["f"]["S"])) for item in page["Items"])
    return stored


def run(pings: int = PINGS, drivers: int = DRIVERS, shipments: int = SHIPMENTS,
        samples: int = CREATE_DRIVER_SAMPLES) -> list[Result]:
    from bench.common import local_stack_api

    with local_stack_api("Bench Load Merchant") as (stack, call):
        started = time.perf_counter()
        fleet = [call("POST", "/v1/drivers", {"name": f"Load {n}"}) for n in range(drivers)]
        per_driver = pings // drivers
        # Fix times end a minute ago, one per second per driver (a van's real rate), all within the 7-day window.
        start_ms = now_ms() - per_driver * 1000 - 60_000
        posted = 0
        lock = threading.Lock()

        def drive(index: int) -> None:
            nonlocal posted
            driver = fleet[index]
            trace = driver_trace(per_driver, start_ms=start_ms, seed=index,
                                 origin=(47.60 + index * 0.01, -122.33))
            for first in range(0, per_driver, BATCH):
                body = {"pings": [p.raw for p in trace[first:first + BATCH]]}
                answer = call("POST", "/v1/driver/pings", body, token=driver["token"])
                if answer.get("accepted") != len(body["pings"]):
                    raise AssertionError(f"driver {index}: {answer}")
                with lock:
                    posted += len(body["pings"])
                    if posted % 20_000 == 0:
                        log(f"local_load: {posted} pings posted, {time.perf_counter() - started:.0f} s")

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(drive, range(drivers)))
        ingest_s = time.perf_counter() - started
        log(f"local_load: {posted} pings in {ingest_s:.0f} s; now {shipments} shipments twice")

        run_id = f"{time.time_ns():x}"

        def shipment(n: int) -> str:
            body = {"recipient": {"name": f"Load Recipient {n}"},
                    "address": {"line1": f"{n} Load St", "city": "Seattle", "country": "US"},
                    "location": {"lat": 47.61, "lng": -122.33}}
            created = call("POST", "/v1/shipments", body, headers={"Idempotency-Key": f"{run_id}-{n}"})
            return str(created["id"])

        with ThreadPoolExecutor(THREADS) as pool:
            first_ids = list(pool.map(shipment, range(shipments)))
            replay_ids = list(pool.map(shipment, range(shipments)))
        if first_ids != replay_ids:
            raise AssertionError("an idempotent replay answered another shipment than the first attempt")

        latencies = []
        for n in range(samples):
            sent = time.perf_counter()
            call("POST", "/v1/drivers", {"name": f"After load {n}"})
            latencies.append((time.perf_counter() - sent) * 1000)
        rss = group_rss_mb(stack.emulator_pids().values())
        per_process = {name: round(group_rss_mb([pid]), 1) for name, pid in stack.emulator_pids().items()}
        stored = _stored_pings(stack, [d["id"] for d in fleet])
    slowest = p95(latencies)
    log(f"local_load: create driver p95 {slowest:.0f} ms; emulators {rss:.0f} MB {per_process}; "
        f"{stored}/{posted} pings stored")
    if stored != posted:
        raise AssertionError(f"{posted - stored} of {posted} accepted pings are missing from the table")
    common = {"pings": posted, "transactions": 2 * shipments, "cancelled_transactions": shipments,
              "ingest_s": round(ingest_s, 1), "pings_stored": stored}
    return [
        Result("local_create_driver_p95_ms_after_100k", round(slowest, 1), "ms", CREATE_DRIVER_TARGET_MS,
               extra={**common, "samples": samples, "p50_ms": round(sorted(latencies)[len(latencies) // 2], 1),
                      "is": "p95 of sequential POST /v1/drivers on the local stack after the load"}),
        Result("emulator_rss_mb_after_100k", round(rss, 1), "MB", RSS_TARGET_MB,
               extra={**common, "by_process_mb": per_process,
                      "is": "VmRSS of the moto and DynamoDB Local process groups together, after the load"}),
    ]


if __name__ == "__main__":
    from bench.common import emit

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for figure in run():
        emit(figure)
