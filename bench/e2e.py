"""End-to-end ingest throughput against the real local stack (DynamoDB Local, moto_server, `chalice local`).

For information only: everything (client, chalice local, moto) shares the same
two cores, and the local engines are slower than DynamoDB, so the figure tracks regressions
in the whole path, not production capacity.
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import Result, batches_of, driver_trace, log, median, now_ms

NAMES = ("ingest_e2e_pings_per_s",)
BATCH = 100
BATCHES = 20
UNIT = "pings/s"


def _post(url: str, token: str, pings: list[dict[str, Any]]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps({"pings": pings}).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    answer: dict[str, Any] = json.loads(body or b"null") if body else {}
    if status != 200 or answer.get("accepted") != len(pings):
        raise AssertionError(f"POST {url} answered {status}: {body[:500]!r}")
    return answer


def _skipped(reason: str) -> list[Result]:
    log(f"e2e skipped: {reason}")
    return [Result("ingest_e2e_pings_per_s", None, UNIT, None, extra={"skipped": reason})]


def run(batches: int = BATCHES) -> list[Result]:
    try:
        from infra.local.stack import LocalStack, seed_demo
    except ImportError as exc:
        return _skipped(f"infra/local/stack.py is not usable yet: {exc}")

    with ExitStack() as scope:  # stops the stack and removes its logs however we leave, skipped or failed
        # Own log folder: a developer's `make run` may be using .local/logs right now.
        log_dir = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="doorstep-bench-")))
        try:
            stack = scope.enter_context(LocalStack(port=0, moto_port=0, log_dir=log_dir))
        except Exception:
            return _skipped("the local stack did not start: " + traceback.format_exc(limit=3)[-600:])
        try:
            # demo_path=None leaves .local/demo.json (a running `make run`'s) alone; isolated=True
            # because this process already imported chalicelib with other settings (the ingest benchmark).
            demo = seed_demo(stack.base_url, stack.app_env, demo_path=None, stops=3, isolated=True)
            token = demo["driver_token"]
        except Exception:
            return _skipped("seed_demo failed: " + traceback.format_exc(limit=3)[-600:])
        # The driver starts at the first stop of the seeded route, so pings fall where its shipments are.
        first_stop = demo["stops"][0]
        # One batch more than measured: the first request pays chalice local's lazy imports.
        trace = driver_trace((batches + 1) * BATCH, start_ms=now_ms() - 3_300_000,
                             origin=(first_stop["lat"], first_stop["lng"]))
        payloads = [[p.raw for p in b] for b in batches_of(trace, BATCH)]
        url = stack.base_url.rstrip("/") + "/v1/driver/pings"
        _post(url, token, payloads[0])
        latencies = []
        started = time.perf_counter()
        for pings in payloads[1:]:
            sent = time.perf_counter()
            _post(url, token, pings)
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    rate = batches * BATCH / elapsed
    log(f"e2e: {rate:.0f} pings/s, median batch {median(latencies) * 1000:.0f} ms")
    return [Result("ingest_e2e_pings_per_s", round(rate, 1), UNIT, None,
                   extra={"batch": BATCH, "batches": batches,
                          "median_batch_ms": round(median(latencies) * 1000, 1),
                          "is": "sequential POST /v1/driver/pings through chalice local and DynamoDB Local"})]
