"""Cold start to the first answered ping: a fresh process that imports the app and handles one real 10-ping POST.

The child (`python -m bench.cold_ping --child`, the request body on stdin) replaces botocore's HTTP send
(`URLLib3Session.send`) with an in-process responder, imports `app` and calls `app.app(event, context)` with
an API Gateway proxy event for `POST /v1/driver/pings`, as the Lambda runtime would: Chalice routing, the
middleware, auth (the token lookup), parsing, screening and the REAL `Repository` (pynamodb and botocore
build, sign and parse every DynamoDB request) all run; only the network round trips are left out. The
baseline is a fresh `python -c "import boto3"`. Runs alternate (ping, boto3, ...) after one unrecorded pair,
so both medians see the same load; interpreter start-up is included on both sides.

This module imports only the standard library at module level: the child must pay for the app, not for
the benchmark harness.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import Result

NAMES = ("cold_first_ping_ratio", "cold_first_ping_ms")
RUNS = 11
PINGS = 10
TARGET_RATIO = 2.5
MARKER = "BENCH_COLD_PING "
TOKEN = "dtk_bench-cold-token-not-a-secret"
MERCHANT_ID, DRIVER_ID = "mer_coldbench", "drv_coldbench"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self.body


def answer(operation: str, request: dict[str, Any], table: str) -> dict[str, Any]:
    """What DynamoDB answers a driver's first request: its token is known, no position or ping stored yet,
    every write accepted."""
    if operation == "GetItem":
        pk = request.get("Key", {}).get("PK", {}).get("S", "")
        if pk.startswith("DRIVERTOKEN#"):
            return {"Item": {"PK": {"S": pk}, "SK": {"S": "DRIVERTOKEN"}, "merchant_id": {"S": MERCHANT_ID},
                             "driver_id": {"S": DRIVER_ID}}}
        return {}
    if operation == "BatchGetItem":
        return {"Responses": {table: []}, "UnprocessedKeys": {}}
    if operation == "BatchWriteItem":
        return {"UnprocessedItems": {}}
    return {}


def child() -> None:
    """The measured process: responder, `import app`, one request, a check of the answer."""
    import os

    import botocore.httpsession
    from botocore.awsrequest import AWSResponse

    table = os.environ["DOORSTEP_TABLE_NAME"]
    operations: list[str] = []

    def send(_session: Any, request: Any) -> AWSResponse:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else str(target)).rsplit(".", 1)[-1]
        operations.append(operation)
        raw = json.dumps(answer(operation, json.loads(request.body or b"{}"), table)).encode()
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0",
                                              "x-amzn-RequestId": "bench", "Content-Length": str(len(raw))},
                           _Raw(raw))

    botocore.httpsession.URLLib3Session.send = send  # type: ignore[assignment]
    body = sys.stdin.read()
    import app

    event = {
        "resource": "/v1/driver/pings", "path": "/v1/driver/pings", "httpMethod": "POST",
        "headers": {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        "multiValueHeaders": None, "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": "/v1/driver/pings", "httpMethod": "POST", "stage": "api",
                           "requestId": "bench-cold-ping", "path": "/api/v1/driver/pings"},
        "body": body, "isBase64Encoded": False,
    }

    class Context:
        function_name, memory_limit_in_mb, aws_request_id, invoked_function_arn = "doorstep-bench", 256, "b", ""

        def get_remaining_time_in_millis(self) -> int:
            return 25_000

    response = app.app(event, Context())
    result = json.loads(response.get("body") or "null")
    if response.get("statusCode") != 200 or not isinstance(result, dict) or result.get("accepted") != PINGS:
        raise SystemExit(f"expected 200 with {PINGS} accepted, got {response.get('statusCode')}: {str(result)[:500]}")
    if "BatchWriteItem" not in operations:
        raise SystemExit(f"the pings were not written through the repository: {operations}")
    print(MARKER + json.dumps({"operations": operations}), flush=True)


def run(runs: int = RUNS) -> list[Result]:
    from bench.common import cold_start_env

    with cold_start_env() as env:  # bytecode as a deployed package ships it (infra/package.py)
        return _measure(env, runs)


def _measure(env: dict[str, str], runs: int) -> list[Result]:
    import subprocess

    from bench.common import PROJECT_ROOT, Result, driver_trace, log, median, now_ms, venv_python

    python = venv_python()
    trace = driver_trace(PINGS, start_ms=now_ms() - 600_000)
    body = json.dumps({"pings": [p.raw for p in trace]})
    operations: list[str] = []

    cpu: dict[str, list[float]] = {"ping": [], "boto3": []}

    def timed(argv: list[str], stdin: str = "", side: str = "") -> float:
        nonlocal operations
        started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([python, *argv], cwd=PROJECT_ROOT, env=env, input=stdin, capture_output=True,
                              text=True, check=False)
        elapsed = (time.perf_counter() - started) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if side:  # the child's own CPU time (user + system): what the machine's load does not stretch
            cpu[side].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} failed (exit {done.returncode}):\n{done.stderr[-2000:]}{done.stdout[-1000:]}")
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
        if lines:
            operations = json.loads(lines[-1][len(MARKER):])["operations"]
        return elapsed

    ping = ["-m", "bench.cold_ping", "--child"]
    boto3 = ["-c", "import boto3"]
    timed(ping, body)  # warm-up pair: fills the file cache, rewrites stale .pyc files
    timed(boto3)
    ping_ms: list[float] = []
    boto3_ms: list[float] = []
    for i in range(runs):
        ping_ms.append(timed(ping, body, "ping"))
        boto3_ms.append(timed(boto3, side="boto3"))
        log(f"cold first ping {i + 1}/{runs}: app + ping {ping_ms[-1]:.0f} ms, boto3 {boto3_ms[-1]:.0f} ms")
    ping_median, boto3_median = median(ping_ms), median(boto3_ms)
    return [
        Result("cold_first_ping_ratio", round(ping_median / boto3_median, 3), "ratio", TARGET_RATIO,
               baseline=round(boto3_median, 1),
               extra={"baseline_unit": "ms", "baseline_is": "median wall time of a fresh `python -c 'import boto3'`",
                      "runs": runs, "dynamodb_operations": operations,
                      "cpu_ratio": round(median(cpu["ping"]) / median(cpu["boto3"]), 3),
                      "cpu_ms": {side: round(median(values), 1) for side, values in cpu.items()}}),
        Result("cold_first_ping_ms", round(ping_median, 1), "ms", None,
               extra={"is": f"median wall time of a fresh process: import app + one {PINGS}-ping POST through "
                            "the real Repository, network answered in process",
                      "min": round(min(ping_ms), 1), "max": round(max(ping_ms), 1), "runs": runs}),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        from bench.common import emit

        for figure in run():
            emit(figure)
