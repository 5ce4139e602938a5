"""CPU per ping of ingest through the REAL repository, only the network answered in process.

`chalicelib.ingest.service.ingest_pings` runs with the real `Repository` (pynamodb and botocore build, sign
and parse every request); botocore's HTTP session is replaced by an in-process responder that answers each
DynamoDB operation as DynamoDB would for a driver on shift (the last position found, as the first item of the
one Query a batch makes; no fix stored yet in the batch's range; every write accepted). So the figure includes
request serialisation, SigV4 signing, response parsing and pynamodb, which the in-memory `ingest_us_per_ping`
leaves out; it leaves out only the network round trips.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from bench.common import (
    DRIVER_ID,
    MERCHANT_ID,
    RawBody,
    Result,
    app_env,
    batches_of,
    driver_trace,
    log,
    median,
    now_ms,
)

NAMES = ("ingest_us_per_ping_real", "ingest_us_per_ping_real_batch10")
TARGET_US = 40.0
BASELINE_US = 101.0  # measured the same way on the repository before this benchmark existed (issue 13)


class Responder:
    """Answers botocore's HTTP requests to DynamoDB by operation (X-Amz-Target)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.position: dict[str, Any] = {}
        self.calls = 0

    def send(self, request: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        self.calls += 1
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else str(target)).rsplit(".", 1)[-1]
        body: dict[str, Any]
        if operation == "GetItem":
            body = {"Item": self.position} if self.position else {}
        elif operation == "Query":  # down from the position item to the batch's range: no chunk stored there
            high = json.loads(request.body)["ExpressionAttributeValues"][":hi"]["S"]
            items = [self.position] if high == "POSITION" and self.position else []
            body = {"Items": items, "Count": len(items), "ScannedCount": len(items)}
        elif operation == "BatchGetItem":
            body = {"Responses": {self.table: []}, "UnprocessedKeys": {}}
        elif operation == "BatchWriteItem":
            body = {"UnprocessedItems": {}}
        else:
            body = {}
        raw = json.dumps(body).encode()
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0",
                                              "x-amzn-RequestId": "bench", "Content-Length": str(len(raw))},
                           RawBody(raw))


def measure(batch: int, batches: int = 60, warmup: int = 10) -> tuple[float, int]:
    import botocore.httpsession

    from chalicelib.core.config import get_settings
    from chalicelib.ingest import service as ingest
    from chalicelib.storage.repository import Repository

    settings = get_settings()
    responder = Responder(settings.table_name)
    original = botocore.httpsession.URLLib3Session.send
    botocore.httpsession.URLLib3Session.send = lambda self, request: responder.send(request)  # type: ignore[method-assign]
    try:
        repo = Repository()
        count = (batches + warmup) * batch + 1
        trace = driver_trace(count, start_ms=now_ms() - count * 1000 - 60_000)
        first = trace[0]
        responder.position = {"PK": {"S": f"DRIVER#{DRIVER_ID}"}, "SK": {"S": "POSITION"},
                              "fix_ms": {"N": str(first.fix_ms)}, "lat": {"N": repr(first.lat)},
                              "lng": {"N": repr(first.lng)}}
        times: list[float] = []
        gc.collect()
        for k, chunk in enumerate(batches_of(trace[1:], batch)):
            raw = [p.raw for p in chunk]
            started = time.process_time()
            result = ingest.ingest_pings(repo, settings, MERCHANT_ID, DRIVER_ID, raw, now_ms())
            elapsed = time.process_time() - started
            if result.accepted != len(chunk):
                raise RuntimeError(f"only {result.accepted} of {len(chunk)} accepted")
            if k >= warmup:
                times.append(elapsed / batch * 1e6)
            last = chunk[-1]
            responder.position["fix_ms"] = {"N": str(last.fix_ms)}
            responder.position["lat"], responder.position["lng"] = {"N": repr(last.lat)}, {"N": repr(last.lng)}
        return median(times), responder.calls
    finally:
        botocore.httpsession.URLLib3Session.send = original  # type: ignore[method-assign]


def run() -> list[Result]:
    with app_env():
        us100, calls = measure(100)
        us10, _ = measure(10, batches=200)
    log(f"ingest real: {us100:.1f} us/ping at 100, {us10:.1f} at 10")
    return [
        Result("ingest_us_per_ping_real", round(us100, 1), "us/ping", TARGET_US, baseline=BASELINE_US,
               extra={"batch": 100, "http_requests": calls}),
        Result("ingest_us_per_ping_real_batch10", round(us10, 1), "us/ping", None, extra={"batch": 10}),
    ]
