"""Peak memory of a Lambda-like process that imports the app and ingests one 500-ping request.

The child (`python -m bench.rss --child`) builds an API Gateway proxy event and
calls `app.app(event, context)`, as the Lambda runtime does, so Chalice routing,
the middleware, auth, JSON parsing and the response are all included. Storage is
the in-memory `FakeRepository` (moto would dwarf the figure); `app.repo` is
replaced, and the real `authenticate_driver` accepts the fake's token.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import (
    DRIVER_TOKEN,
    PROJECT_ROOT,
    FakeRepository,
    Result,
    apply_env,
    driver_trace,
    emit,
    log,
    now_ms,
    subprocess_env,
    venv_python,
)

NAMES = ("ingest_peak_rss_mb",)
PINGS = 500
RUNS = 3
TARGET_MB = 160.0
MARKER = "BENCH_RSS "  # the app logs JSON to stdout too; this prefix finds our line among them


def proxy_event(body: str) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for POST /v1/driver/pings."""
    return {
        "resource": "/v1/driver/pings",
        "path": "/v1/driver/pings",
        "httpMethod": "POST",
        "headers": {"Authorization": f"Bearer {DRIVER_TOKEN}", "Content-Type": "application/json"},
        "multiValueHeaders": None,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": "/v1/driver/pings", "httpMethod": "POST", "stage": "api",
                           "requestId": "bench-rss-request", "path": "/api/v1/driver/pings"},
        "body": body,
        "isBase64Encoded": False,
    }


def child() -> None:
    """Runs in the measured process: settings, app import, one request, then the peak RSS."""
    apply_env()
    import app

    repo = FakeRepository()
    from chalicelib.storage import use_repository

    use_repository(repo)  # type: ignore[arg-type]
    points = driver_trace(PINGS, start_ms=now_ms() - 3_000_000)
    body = json.dumps({"pings": [p.raw for p in points]})
    context = SimpleNamespace(function_name="doorstep-bench", memory_limit_in_mb=256, aws_request_id="bench",
                              invoked_function_arn="", get_remaining_time_in_millis=lambda: 25_000)
    response = app.app(proxy_event(body), context)
    answer = json.loads(response.get("body") or "null")
    if response.get("statusCode") != 200 or not isinstance(answer, dict) or answer.get("accepted") != PINGS:
        raise SystemExit(f"expected 200 with {PINGS} accepted, got {response.get('statusCode')}: "
                         f"{str(answer)[:500]}")
    stored = sum(item["f"]["S"].count(";") + 1 for item in repo.items.values())  # fixes in the chunk items
    if stored != PINGS:
        raise SystemExit(f"expected {PINGS} stored fixes, the fake's chunks hold {stored}")
    print(MARKER + json.dumps({"peak_mb": _peak_kib() / 1024}), flush=True)


def _peak_kib() -> int:
    """This process's own peak RSS. ru_maxrss keeps the parent's peak across fork+exec on Linux (a bench run
    that built 100,000 fences would leak into it), so read VmHWM, which belongs to this address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def run(runs: int = RUNS) -> list[Result]:
    samples = []
    for i in range(runs):
        done = subprocess.run([venv_python(), "-m", "bench.rss", "--child"], cwd=PROJECT_ROOT,
                              env=subprocess_env(), capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"RSS child failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
                               f"\n{done.stdout[-2000:]}")
        samples.append(json.loads(lines[-1][len(MARKER):])["peak_mb"])
        log(f"rss {i + 1}/{runs}: {samples[-1]:.1f} MB")
    # The largest sample: peak memory is what decides an out-of-memory kill.
    return [Result("ingest_peak_rss_mb", round(max(samples), 1), "MB", TARGET_MB,
                   extra={"is": f"ru_maxrss of a fresh process after one {PINGS}-ping request (MiB)",
                          "samples": [round(s, 1) for s in samples]})]


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        for result in run():
            emit(result)
