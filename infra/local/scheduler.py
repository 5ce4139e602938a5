"""Local scheduler: runs every `@app.schedule` function of the Chalice app, as EventBridge would.

Started by the local stack. Each schedule runs at its own rate, but at most
every `--max-interval` seconds (default 5): locally nobody waits a minute for a
deferred message, and the functions are safe to run as often as you like (the
ledger and the reminder markers keep every message to one send).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.local.functions import handler_at

log = logging.getLogger("doorstep.scheduler")

_RATE_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400}


@dataclass
class Job:
    name: str
    handler: Callable[[dict[str, Any], Any], Any]
    interval_s: float
    next_run: float = 0.0


def rate_seconds(expression: Any) -> float | None:
    """Seconds between runs of a chalice Rate; None for a Cron (run at the local maximum interval)."""
    unit = getattr(expression, "unit", None)
    value = getattr(expression, "value", None)
    if unit is None or value is None:
        return None
    return float(value) * _RATE_SECONDS[str(unit)]


def scheduled_event(name: str, now: datetime) -> dict[str, Any]:
    """The event EventBridge delivers to a scheduled Lambda."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": "us-east-1",
            "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{name}"], "detail": {}}


def jobs_of(app_module: Any, max_interval_s: float) -> list[Job]:
    jobs = []
    for source in getattr(app_module.app, "event_sources", []):
        expression = getattr(source, "schedule_expression", None)
        if expression is None:
            continue
        handler = handler_at(source.handler_string)
        rate = rate_seconds(expression)
        jobs.append(Job(source.name, handler, min(rate, max_interval_s) if rate else max_interval_s))
    return jobs


def run_due(jobs: Sequence[Job], now: float) -> list[str]:
    """Run every job whose time has come; a failing job is logged and tried at its next time."""
    ran = []
    for job in jobs:
        if now < job.next_run:
            continue
        job.next_run = now + job.interval_s
        try:
            result = job.handler(scheduled_event(job.name, datetime.now(UTC)), None)
            log.debug("%s: %s", job.name, result)
        except Exception:
            log.exception("scheduled function %s failed", job.name)
        ran.append(job.name)
    return ran


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-interval", type=float, default=5.0, help="seconds between runs at most")
    args = parser.parse_args(argv)
    project_dir = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(project_dir))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(levelname)s %(message)s")
    import app as app_module  # the same handlers the scheduled Lambdas run

    jobs = jobs_of(app_module, args.max_interval)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("running %s", ", ".join(f"{job.name} every {job.interval_s:g} s" for job in jobs))
    while not stop.is_set():
        run_due(jobs, time.monotonic())
        stop.wait(min((job.next_run for job in jobs), default=time.monotonic() + 1.0) - time.monotonic())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
