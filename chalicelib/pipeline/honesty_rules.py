"""ETA honesty, pure: what ETA and window a stop was shown 30, 15 and 5 minutes before its arrival, how far off
they were, and the histogram counters that sum such outcomes per merchant-day and driver-day.

The pipeline keeps, per driver, the ETAs shown at those moments (`remember`, compact: epoch seconds); at the
stop's arrival each becomes an outcome (`outcomes`): the absolute error and whether the arrival fell inside the
window then shown. Outcomes become plain counters (`counters`): a count, an inside count, a histogram of the
absolute error in 30-second bins and one of the conformal score (`ErrorModel.score`, the margin the window
would have needed) in 0.05 log-ratio bins, which the daily recalibration reads. Counters add up in any order,
so items of several days or drivers are summed before `summary` reads quantiles from them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from chalicelib.geo.eta import ErrorModel, StopEta

MARKS_MIN: tuple[int, ...] = (30, 15, 5)  # the moments, in minutes before the expected arrival
ERROR_BIN_MIN = 0.5  # 30-second bins of absolute error
ERROR_BINS = 120  # 0 to 60 minutes; the last bin holds everything from 60 minutes on
SCORE_BIN = 0.05  # bins of the conformal score (log ratio), as ErrorModel's
SCORE_MIN, SCORE_MAX = -2.0, 2.0  # scores beyond are clamped (a margin past +-2 in log ratio is not useful)
FORGET_AFTER_S = 6 * 3600  # a stop shown but never arrived at (failed, removed) is dropped from the state
_DEFAULT_ERRORS = ErrorModel()

# One shown moment: (mark minutes, shown at, expected arrival, window low, window high), epoch seconds.
Shown = list[int]


def crossed_mark(remaining_s: float) -> int | None:
    """The mark just crossed with `remaining_s` to go: the smallest mark at or above it (None above 30 minutes).

    A stop first seen 10 minutes out is recorded at 15, not at 30: no ETA was shown 30 minutes before.
    """
    crossed = [m for m in MARKS_MIN if remaining_s <= m * 60]
    return min(crossed) if crossed else None


def remember(shown: MutableMapping[str, list[Shown]], etas: Sequence[StopEta], now_ms: int) -> None:
    """Keep, per stop, the ETA and window of the first computation after each mark is crossed; forget old ones."""
    now_s = now_ms // 1000
    for eta in etas:
        mark = crossed_mark((eta.eta_ms - now_ms) / 1000)
        if mark is None:
            continue
        entries = shown.setdefault(eta.stop_id, [])
        if any(e[0] == mark for e in entries):
            continue
        entries.append([mark, now_s, eta.eta_ms // 1000, eta.low_ms // 1000, eta.high_ms // 1000])
    for stop_id in [s for s, entries in shown.items() if all(e[2] < now_s - FORGET_AFTER_S for e in entries)]:
        del shown[stop_id]


@dataclass(frozen=True, slots=True)
class Outcome:
    mark: int
    abs_error_min: float
    inside: bool
    score: float  # ErrorModel.score of the prediction against the default model (the margin it needed)


def outcomes(entries: Iterable[Shown], arrival_ms: int, errors: ErrorModel = _DEFAULT_ERRORS) -> list[Outcome]:
    arrival_s = arrival_ms / 1000
    out = []
    for mark, at_s, eta_s, low_s, high_s in entries:
        score = errors.score(max(0.0, eta_s - at_s), max(0.0, arrival_s - at_s))
        out.append(Outcome(int(mark), abs(arrival_s - eta_s) / 60, low_s <= arrival_s <= high_s,
                           min(SCORE_MAX, max(SCORE_MIN, score))))
    return out


def counters(results: Iterable[Outcome]) -> dict[str, float]:
    """Counter additions: `n<m>`, `in<m>`, `e<m>_<bin>` (abs error bin), `s<m>_<bin>` (score bin, may be negative)."""
    amounts: dict[str, float] = {}
    for o in results:
        error_bin = min(ERROR_BINS, math.floor(o.abs_error_min / ERROR_BIN_MIN))
        score_bin = math.floor(o.score / SCORE_BIN)
        for name, amount in ((f"n{o.mark}", 1), (f"in{o.mark}", int(o.inside)), (f"e{o.mark}_{error_bin}", 1),
                             (f"s{o.mark}_{score_bin}", 1)):
            amounts[name] = amounts.get(name, 0) + amount
    return {k: v for k, v in amounts.items() if v}


def add(total: MutableMapping[str, float], more: Mapping[str, float]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, 0.0) + amount


def _bins(sums: Mapping[str, float], prefix: str) -> list[tuple[int, float]]:
    out = []
    for name, n in sums.items():
        if name.startswith(prefix) and n > 0:
            try:
                out.append((int(name[len(prefix):]), n))
            except ValueError:
                continue
    return sorted(out)


def nearest_rank(bins: Sequence[tuple[int, float]], q: float) -> int | None:
    """The bin holding the nearest-rank q quantile (rank ceil(q x n), at least 1) of a histogram."""
    total = sum(n for _, n in bins)
    if total <= 0:
        return None
    rank, acc = max(1, math.ceil(q * total - 1e-9)), 0.0
    for index, n in bins:
        acc += n
        if acc >= rank:
            return index
    return bins[-1][0]


def summary(sums: Mapping[str, float]) -> dict[str, dict[str, float | int | None]]:
    """Per mark: n, median and p90 absolute error (minutes; nearest rank, at the middle of its 30-second bin,
    so within 15 s of the exact quantile) and the share of arrivals inside the window shown then."""
    out: dict[str, dict[str, float | int | None]] = {}
    for mark in MARKS_MIN:
        n = int(sums.get(f"n{mark}", 0))
        bins = _bins(sums, f"e{mark}_")
        median, p90 = nearest_rank(bins, 0.5), nearest_rank(bins, 0.9)
        out[str(mark)] = {
            "n": n,
            "median_abs_error_min": None if median is None else round((median + 0.5) * ERROR_BIN_MIN, 2),
            "p90_abs_error_min": None if p90 is None else round((p90 + 0.5) * ERROR_BIN_MIN, 2),
            "inside_window_share": round(sums.get(f"in{mark}", 0) / n, 4) if n else None,
        }
    return out


def calibrated_margin(sums: Mapping[str, float], level: float, *, min_n: int = 50) -> float | None:
    """The window margin (log ratio) that would have held `level` of these arrivals (all marks pooled): the
    nearest-rank `level` quantile of their scores, at the top of its bin. None with fewer than `min_n`."""
    pooled: dict[int, float] = {}
    for mark in MARKS_MIN:
        for index, n in _bins(sums, f"s{mark}_"):
            pooled[index] = pooled.get(index, 0.0) + n
    if sum(pooled.values()) < min_n:
        return None
    top = nearest_rank(sorted(pooled.items()), level)
    return None if top is None else round((top + 1) * SCORE_BIN, 4)


def inside_share(sums: Mapping[str, float]) -> tuple[int, float | None]:
    """(arrivals, share inside the shown window) over all marks: what the tracking page may publish."""
    n = sum(int(sums.get(f"n{m}", 0)) for m in MARKS_MIN)
    inside = sum(sums.get(f"in{m}", 0) for m in MARKS_MIN)
    return n, (inside / n if n else None)
