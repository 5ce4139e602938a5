"""ETA honesty and per-merchant window calibration, in storage (docs/data-model.md rows 110-117).

Items (all counters: numbers that only ever get ADDed, so any order of arrivals gives the same sums):

- `ETAHONESTY#<mid>` / `DAY#<YYYY-MM-DD>`: the merchant's arrivals of a day (UTC), with the sparse
  GSI1 keys `ETAHONESTY_DAY#<day>` / `<mid>`: the index of merchants with arrivals on a day, which the
  daily recalibration Queries (never a Scan);
- `ETAHONESTY#<mid>` / `DRIVER#<day>#<did>`: the same per driver and day;
- `SHIPMENT#<sid>` / `ETAHONESTY#<attempt>`: the marker that makes an arrival count once (TTL 90 days);
- `MERCHANT#<mid>` / `STATS#ETAWINDOW`: the merchant's calibrated window (`margin`, `n`, `at`; when the
  schedule learned the merchant's own error model, also `learned` = 1 and its `r<slot>_<bin>` histograms),
  written by the daily schedule and read by the pipeline with the merchant's context (cached).

Counter names are those of `honesty_rules.counters`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import MutableMapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cachetools import TTLCache

from chalicelib.geo.eta import ErrorModel
from chalicelib.pipeline import honesty_rules as rules
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import merchant_pk

MARKER_TTL_DAYS = 90
CALIBRATION_SK = "STATS#ETAWINDOW"
CALIBRATION_DAYS = 30
CALIBRATION_LEVEL = 0.8  # the window's promise: 8 arrivals in 10 inside it
CALIBRATION_MIN_ARRIVALS = 50  # fewer: keep the default window (too few arrivals to move it)
RECENT_DAYS = 7  # the merchant's own model learns from the days before these and is calibrated on these
PUBLISH_MIN_ARRIVALS = 50  # the tracking page's sentence needs at least this many arrivals
MAX_RANGE_DAYS = 366
_CACHE_S = 300.0


def honesty_pk(merchant_id: str) -> str:
    return f"ETAHONESTY#{merchant_id}"


def day_sk(day: str) -> str:
    return f"DAY#{day}"


def driver_day_sk(day: str, driver_id: str) -> str:
    return f"DRIVER#{day}#{driver_id}"


def arrivals_index_pk(day: str) -> str:
    return f"ETAHONESTY_DAY#{day}"


# --- recording (the stream pipeline) ---------------------------------------------------------------


def record_arrival(r: Repository, merchant_id: str, driver_id: str, shown: MutableMapping[str, list[rules.Shown]],
                   shipment_id: str, attempt: str, arrival_ms: int) -> bool:
    """A stop arrived: the ETAs shown for it become outcomes, added once to the merchant-day and driver-day
    items (the marker `SHIPMENT#<sid>` / `ETAHONESTY#<attempt>` is put in the same transaction). The stop's
    entries leave the driver's state either way; False when nothing was added (none shown, or counted before;
    DynamoDB may instead acknowledge an identical retry by its ClientRequestToken, adding nothing again)."""
    entries = shown.pop(shipment_id, None)
    if not entries:
        return False
    amounts = rules.counters(rules.outcomes(entries, arrival_ms))
    day = datetime.fromtimestamp(arrival_ms / 1000, UTC).date().isoformat()
    expires = int(arrival_ms / 1000) + MARKER_TTL_DAYS * 86_400
    pk = honesty_pk(merchant_id)
    return r.add_to_counters_once(
        (f"SHIPMENT#{shipment_id}", f"ETAHONESTY#{attempt}"), expires,
        [(pk, day_sk(day), amounts, {"GSI1PK": arrivals_index_pk(day), "GSI1SK": merchant_id}),
         (pk, driver_day_sk(day, driver_id), amounts, {})])


def shown_from_state(data: dict[str, Any]) -> dict[str, list[rules.Shown]]:
    raw = data.get("eh") or {}
    return {str(k): [[int(x) for x in e] for e in v] for k, v in raw.items()}


# --- reading (analytics) ---------------------------------------------------------------------------


def _days(day_from: date, day_to: date) -> tuple[str, str] | None:
    if day_to < day_from or (day_to - day_from).days > MAX_RANGE_DAYS:
        return None
    return day_from.isoformat(), day_to.isoformat()


def eta_honesty(repo: Repository, merchant_id: str, day_from: date, day_to: date,
                group_by: str) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """ETA honesty of a merchant's arrivals from `day_from` to `day_to` (UTC days, inclusive), grouped by ISO
    day (`group_by="day"`) or driver id (`"driver"`); {} for another grouping or an empty or inverted range.
    Per group and mark ("30", "15", "5" minutes before arrival): n, median and p90 absolute error in minutes,
    share of arrivals inside the window shown then. One Query of the merchant's own partition, never a Scan."""
    days = _days(day_from, day_to)
    if days is None or group_by not in ("day", "driver"):
        return {}
    pk = honesty_pk(merchant_id)
    groups: dict[str, dict[str, float]] = {}
    if group_by == "day":
        for sk, sums in repo.query_counter_range(pk, day_sk(days[0]), day_sk(days[1])):
            rules.add(groups.setdefault(sk.removeprefix("DAY#"), {}), sums)
    else:
        for sk, sums in repo.query_counter_range(pk, f"DRIVER#{days[0]}#", f"DRIVER#{days[1]}#~"):
            driver_id = sk.split("#", 2)[2]
            rules.add(groups.setdefault(driver_id, {}), sums)
    return {key: rules.summary(sums) for key, sums in sorted(groups.items())}


def _merchant_days(repo: Repository, merchant_id: str, today: date,
                   days: int) -> list[tuple[str, dict[str, float]]]:
    """(day SK, counters) of the merchant's last `days` days up to `today` (one Query)."""
    start = today - timedelta(days=days - 1)
    return repo.query_counter_range(honesty_pk(merchant_id), day_sk(start.isoformat()), day_sk(today.isoformat()))


def merchant_sums(repo: Repository, merchant_id: str, today: date, days: int = CALIBRATION_DAYS) -> dict[str, float]:
    """The merchant's counters of the last `days` days up to `today`, summed (one Query)."""
    total: dict[str, float] = {}
    for _, sums in _merchant_days(repo, merchant_id, today, days):
        rules.add(total, sums)
    return total


def published_accuracy(repo: Repository, merchant_id: str, today: date) -> tuple[int, int] | None:
    """(k, of 10) arrivals inside the shown window over the last 30 days, for the tracking page; None when
    fewer than PUBLISH_MIN_ARRIVALS arrivals were measured (too few to mean something)."""
    n, share = rules.inside_share(merchant_sums(repo, merchant_id, today))
    if n < PUBLISH_MIN_ARRIVALS or share is None:
        return None
    return int(share * 10 + 1e-9), 10  # rounded down: a promise should not flatter


_published: TTLCache[tuple[str, str], tuple[int, int] | None] = TTLCache(maxsize=1024, ttl=600)
_published_lock = threading.Lock()


def cached_published_accuracy(repo: Repository, merchant_id: str, today: date) -> tuple[int, int] | None:
    """published_accuracy, kept 10 minutes per warm container: a busy tracking page costs one Query a while."""
    key = (merchant_id, today.isoformat())
    with _published_lock:
        if key in _published:
            return _published[key]
    value = published_accuracy(repo, merchant_id, today)
    with _published_lock:
        _published[key] = value
    return value


# --- calibration (the daily schedule, and the pipeline's read) -----------------------------------------


def recalibrate_all(repo: Repository, today: date, days: int = CALIBRATION_DAYS) -> dict[str, float | None]:
    """Each merchant with arrivals in the last `days` days (a Query of the sparse index per day) gets its window
    recalibrated from its own arrivals then: with enough of them on both sides of RECENT_DAYS, its own error
    model (`honesty_rules.learned_window`: the window learns the shape of its errors, narrower where they are
    tight or lopsided); with fewer, the default window's margin that would have held CALIBRATION_LEVEL of them;
    with fewer still, left as it is. Returns each merchant's margin (None: left as it is)."""
    merchants: set[str] = set()
    for back in range(days):
        merchants.update(repo.gsi1_sort_keys(arrivals_index_pk((today - timedelta(days=back)).isoformat())))
    done: dict[str, float | None] = {}
    recent_from = day_sk((today - timedelta(days=RECENT_DAYS - 1)).isoformat())
    for merchant_id in sorted(merchants):
        older: dict[str, float] = {}
        recent: dict[str, float] = {}
        total: dict[str, float] = {}
        for sk, sums in _merchant_days(repo, merchant_id, today, days):
            rules.add(recent if sk >= recent_from else older, sums)
            rules.add(total, sums)
        n, _ = rules.inside_share(total)
        stamp = {"n": n, "at": int(time.time())}
        learned = rules.learned_window(older, recent, CALIBRATION_LEVEL)
        if learned is not None:
            bins, margin = learned
            repo.put_numbers(merchant_pk(merchant_id), CALIBRATION_SK,
                             {**bins, "margin": margin, "learned": 1, **stamp})
            done[merchant_id] = margin
            continue
        default_margin = rules.calibrated_margin(total, CALIBRATION_LEVEL, min_n=CALIBRATION_MIN_ARRIVALS)
        if default_margin is not None:
            repo.put_numbers(merchant_pk(merchant_id), CALIBRATION_SK, {"margin": default_margin, **stamp})
        done[merchant_id] = default_margin
    return done


_errors: TTLCache[str, ErrorModel] = TTLCache(maxsize=1024, ttl=_CACHE_S)
_errors_lock = threading.Lock()


def merchant_errors(r: Repository, merchant_id: str) -> ErrorModel:
    """The window model for a merchant's ETAs: its own learned error model when the schedule has learned one,
    else the default with the merchant's calibrated margin (0 until calibrated); read at most every 5 minutes
    per warm container."""
    with _errors_lock:
        model = _errors.get(merchant_id)
    if model is None:
        key = (merchant_pk(merchant_id), CALIBRATION_SK)
        item = r.get_counters([key]).get(key, {})
        margin = item.get("margin", 0.0)
        model = (rules.window_model(item, margin, CALIBRATION_LEVEL) if item.get("learned")
                 else ErrorModel(margin=margin))
        with _errors_lock:
            _errors[merchant_id] = model
    return model


def forget_cached_errors() -> None:
    with _errors_lock:
        _errors.clear()
    with _published_lock:
        _published.clear()
