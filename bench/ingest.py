"""CPU cost of ingesting pings: ingest.ingest_pings on batches of 100, storage in memory.

The real function runs end to end (pydantic parse, screening, H3 cells, DynamoDB
wire items); only the network calls are replaced by `FakeRepository`. CPU time
(`time.process_time`) rather than wall time, because the machine is shared and
another process taking the core would otherwise count against us.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench.common import (
    DRIVER_ID,
    MERCHANT_ID,
    FakeRepository,
    Result,
    app_env,
    batches_of,
    driver_trace,
    log,
    median,
    now_ms,
)

NAMES = ("ingest_us_per_ping",)
BATCH = 100
DISTINCT_BATCHES = 20  # 2000 fixes at 1 Hz: the whole trace stays within the last hour
WARMUP = 20
MEASURED = 200
TARGET_US = 30.0
GOAL_US = 10.0


def run(measured: int = MEASURED) -> list[Result]:
    with app_env():
        from chalicelib.core.config import get_settings
        from chalicelib.ingest import service as ingest
        from chalicelib.ingest.models import PingIn
        from chalicelib.ingest.rules import LastFix

        settings = get_settings()
    # One extra point before the first batch: the driver's last known position, so
    # the implied-speed rule runs on every batch as it does for a driver on shift.
    trace = driver_trace(DISTINCT_BATCHES * BATCH + 1, start_ms=now_ms() - 3_500_000)
    before = trace[0]
    batches = batches_of(trace[1:], BATCH)
    starts = [LastFix(before.fix_ms, before.lat, before.lng)] + [
        LastFix(b[-1].fix_ms, b[-1].lat, b[-1].lng) for b in batches[:-1]]
    raw_batches: list[list[Any]] = [[p.raw for p in b] for b in batches]
    repo = FakeRepository()

    def one_batch(k: int) -> float:
        index = k % len(raw_batches)
        repo.reset(DRIVER_ID, starts[index])  # untimed: each batch meets a fresh, consistent store
        started = time.process_time()
        result = ingest.ingest_pings(repo, settings, MERCHANT_ID, DRIVER_ID,  # type: ignore[arg-type]
                                       raw_batches[index], now_ms())
        elapsed = time.process_time() - started
        # Loud if the path under test stopped storing: a fast no-op must not pass for a fast ingest.
        stored = sum(item["f"]["S"].count(";") + 1 for item in repo.items.values())  # fixes in the chunks
        if result.accepted != BATCH or stored != BATCH:
            raise AssertionError(f"expected {BATCH} accepted and stored pings, got {result.accepted} accepted, "
                                 f"{stored} stored")
        return elapsed

    for k in range(WARMUP):  # imports on first use, pydantic and H3 caches
        one_batch(k)
    gc.collect()  # start from the same heap state every run; the collector stays on, as in production
    times = [one_batch(k) for k in range(measured)]
    per_ping_us = median(times) / BATCH * 1e6
    log(f"ingest: median {per_ping_us:.1f} us/ping over {measured} batches of {BATCH}")

    # Reference point: pydantic's validation alone, the floor of a pydantic-based parse.
    parse_times = []
    for k in range(measured):
        raw = raw_batches[k % len(raw_batches)]
        started = time.process_time()
        for item in raw:
            PingIn.model_validate(item)
        parse_times.append(time.process_time() - started)
    parse_us = median(parse_times) / BATCH * 1e6
    log(f"ingest: PingIn.model_validate alone {parse_us:.1f} us/ping")

    return [Result("ingest_us_per_ping", round(per_ping_us, 2), "us", TARGET_US, baseline=round(parse_us, 2),
                   extra={"goal": GOAL_US, "baseline_unit": "us",
                          "baseline_is": "PingIn.model_validate alone, per ping",
                          "batch": BATCH, "batches": measured,
                          "p90": round(sorted(times)[int(len(times) * 0.9)] / BATCH * 1e6, 2)})]
