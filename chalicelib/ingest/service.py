"""Ping ingest: screen a batch against the driver's last fix and store it idempotently.

Per request: one Query (the fix chunks the batch may repeat, and the latest position; a batch older than
fixes already stored may need a second Query of its own span), one BatchWriteItem of the new fixes as chunk items
(`storage/fix_chunks.py`), and the latest position's conditional put when the batch moves it forward.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.config import Settings
from chalicelib.geo import cells as geo
from chalicelib.ingest.models import PingBatchResult, PingItemResult, parse_ping
from chalicelib.ingest.rules import (
    MAX_AGE_MS,
    MAX_FUTURE_MS,
    POSITION_MAX_ACCURACY_M,
    Fix,
    ScreenLimits,
    screen_batch,
)
from chalicelib.storage.repository import Repository


def ingest_pings(repo: Repository, settings: Settings, merchant_id: str, driver_id: str, raw_items: list[Any],
                 now_ms: int) -> PingBatchResult:
    parsed = [parse_ping(i, raw) for i, raw in enumerate(raw_items)]
    # One read before screening (the position for the speed check, the stored fixes for duplicates), over the
    # fix times the clock rule can let through: a bogus far-away time must not widen what is read.
    oldest, newest_allowed = now_ms - MAX_AGE_MS, now_ms + MAX_FUTURE_MS
    candidates = [f.fix_ms for f in parsed if isinstance(f, Fix) and oldest <= f.fix_ms <= newest_allowed]
    last_fix, stored = repo.ingest_reads(driver_id, candidates)
    screening = screen_batch(
        parsed, driver_id=driver_id, merchant_id=merchant_id, now_ms=now_ms,
        limits=ScreenLimits(settings.max_ping_accuracy_m, settings.max_speed_mps),
        last_fix=last_fix,
    )
    if screening.to_store and stored:
        screening.mark_duplicates(stored)
    # Fixes of 100-500 m (Wi-Fi or cell positioning) are kept as history but never become the latest
    # position: the tracking map, nearby search and the next speed check all read it.
    newest = screening.newest(max_accuracy_m=POSITION_MAX_ACCURACY_M)
    if screening.to_store:
        repo.put_pings(list(screening.to_store.values()))
    # The position only moves forward, and it was read at the start: a fix not newer than that one would fail
    # the conditional write (still billed a write unit), so it is not sent. Safe against a stale read: the
    # stored position is at least as new as what was read.
    if newest is not None and (last_fix is None or newest.fix_ms > last_fix.fix_ms):
        repo.advance_position(newest, geo.coarse_cell(newest.lat, newest.lng))
    results = screening.finalize()
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for r in results:
        counts[r.status] += 1
    # Built without validation (`model_construct`): every value comes from the screening, typed already, and
    # validating 100-500 item results per request cost more than storing them.
    item = PingItemResult.model_construct
    return PingBatchResult.model_construct(
        accepted=counts["accepted"], duplicates=counts["duplicate"], rejected=counts["rejected"],
        items=[item(index=r.index, status=r.status, field=r.field, reason=r.reason) for r in results],
    )
