"""ETA honesty, pure: what ETA and window a stop was shown 30, 15 and 5 minutes before its arrival, how far off
they were, and the histogram counters that sum such outcomes per merchant-day and driver-day.

The pipeline keeps, per driver, the ETAs shown at those moments (`remember`, compact: epoch seconds); at the
stop's arrival each becomes an outcome (`outcomes`): the absolute error and whether the arrival fell inside the
window then shown. Outcomes become plain counters (`counters`): a count, an inside count, a histogram of the
absolute error in 30-second bins, and a histogram of the error as the window model measures it
(`ErrorModel.ratio`, 0.05 log-ratio bins) per horizon bucket of the model (`ErrorModel.slot`), which the daily
recalibration reads: completed stops feed the merchant's error model (`learned_window`), and the default
model's margin when there are too few of them (`calibrated_margin`). Counters add up in any order, so items of
several days or drivers are summed before `summary` reads quantiles from them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from chalicelib.geo.eta import ErrorModel, StopEta

MARKS_MIN: tuple[int, ...] = (30, 15, 5)  # the moments, in minutes before the expected arrival
ERROR_BIN_MIN = 0.5  # 30-second bins of absolute error
ERROR_BINS = 120  # 0 to 60 minutes; the last bin holds everything from 60 minutes on
RATIO_BIN = ErrorModel.BIN  # bins of the error's log ratio, as the model's own histograms
RATIO_MAX = 2.0  # errors beyond are clamped (arriving e^2 = 7x later than predicted, or sooner)
FORGET_AFTER_S = 6 * 3600  # a stop shown but never arrived at (failed, removed) is dropped from the state
_DEFAULT_ERRORS = ErrorModel()

Key = TypeVar("Key", int, float)

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
    slot: int  # the window model's horizon bucket of the prediction (`ErrorModel.slot`, on-time side)
    ratio: float  # the error as the window model measures it (`ErrorModel.ratio`), clamped to +-RATIO_MAX


def outcomes(entries: Iterable[Shown], arrival_ms: int) -> list[Outcome]:
    arrival_s = arrival_ms / 1000
    out = []
    for mark, at_s, eta_s, low_s, high_s in entries:
        predicted_s, actual_s = max(0.0, eta_s - at_s), max(0.0, arrival_s - at_s)
        ratio = _DEFAULT_ERRORS.ratio(predicted_s, actual_s)
        out.append(Outcome(int(mark), abs(arrival_s - eta_s) / 60, low_s <= arrival_s <= high_s,
                           _DEFAULT_ERRORS.slot(predicted_s), min(RATIO_MAX, max(-RATIO_MAX, ratio))))
    return out


def counters(results: Iterable[Outcome]) -> dict[str, float]:
    """Counter additions: `n<m>`, `in<m>`, `e<m>_<bin>` (abs error bin), `r<slot>_<bin>` (log-ratio bin, may be
    negative)."""
    amounts: dict[str, float] = {}
    for o in results:
        error_bin = min(ERROR_BINS, math.floor(o.abs_error_min / ERROR_BIN_MIN))
        ratio_bin = math.floor(o.ratio / RATIO_BIN + 1e-9)
        for name, amount in ((f"n{o.mark}", 1), (f"in{o.mark}", int(o.inside)), (f"e{o.mark}_{error_bin}", 1),
                             (f"r{o.slot}_{ratio_bin}", 1)):
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


def nearest_rank(bins: Sequence[tuple[Key, float]], q: float) -> Key | None:
    """The key holding the nearest-rank q quantile (rank ceil(q x n), at least 1) of (key, count) pairs sorted
    by key: a histogram's bin, or a score."""
    total = sum(n for _, n in bins)
    if total <= 0:
        return None
    rank, acc = max(1, math.ceil(q * total - 1e-9)), 0.0
    for key, n in bins:
        acc += n
        if acc >= rank:
            return key
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


def ratio_bins(sums: Mapping[str, float]) -> list[tuple[int, float, float]]:
    """(slot, ratio, count) of the `r<slot>_<bin>` counters; the ratio at the bin's edge away from zero, so a
    window built or scored from it is never narrower than the errors counted."""
    out = []
    for name, n in sums.items():
        if not name.startswith("r") or n <= 0 or "_" not in name:
            continue
        slot_text, _, bin_text = name[1:].partition("_")
        try:
            slot, index = int(slot_text), int(bin_text)
        except ValueError:
            continue
        if 0 <= slot < len(ErrorModel.CENTRES_S):
            out.append((slot, (index + 1) * RATIO_BIN if index >= 0 else index * RATIO_BIN, n))
    return sorted(out)


def calibrated_margin(sums: Mapping[str, float], level: float, *, min_n: int = 50) -> float | None:
    """The margin (log ratio) of the default window model that would have held `level` of these arrivals' ETAs
    (every mark counted): the nearest-rank `level` quantile of their scores against it. None with fewer than
    `min_n` outcomes."""
    bins = ratio_bins(sums)
    if sum(n for _, _, n in bins) < min_n:
        return None
    scores = [(_DEFAULT_ERRORS.score_ratio(ErrorModel.CENTRES_S[slot], r), n) for slot, r, n in bins]
    margin = nearest_rank(sorted(scores), level)
    return None if margin is None else round(max(-ErrorModel.MAX_R, margin), 4)


def window_model(sums: Mapping[str, float], margin: float, level: float) -> ErrorModel:
    """A window model fed with these arrivals' errors (each bin observed at its bucket's centre horizon)."""
    model = ErrorModel(level=level, margin=margin)
    for slot, r, n in ratio_bins(sums):
        model.observe_ratio(ErrorModel.CENTRES_S[slot], r, weight=n)
    return model


def learned_window(older: Mapping[str, float], recent: Mapping[str, float], level: float, *,
                   min_older: int = 100, min_recent: int = 30) -> tuple[dict[str, float], float] | None:
    """The merchant's own window: its error histograms of the whole period and the margin that makes it hold
    `level` of arrivals it has not seen. (r-bin counters, margin), or None with too few outcomes either side.

    Split in time, as conformal calibration wants: the quantiles of the `older` days (their shortest window
    holding `level`, `ErrorModel`) score the `recent` days' errors, and the margin is the `level` quantile of
    those scores: what the window needed to hold the days after the ones it learned from. The model then
    learns from every day, older and recent, with that margin.
    """
    if sum(n for _, _, n in ratio_bins(older)) < min_older:
        return None
    recent_bins = ratio_bins(recent)
    if sum(n for _, _, n in recent_bins) < min_recent:
        return None
    learned_from = window_model(older, 0.0, level)
    margin = nearest_rank(sorted((learned_from.score_ratio(ErrorModel.CENTRES_S[slot], r), n)
                                 for slot, r, n in recent_bins), level)
    if margin is None:
        return None
    both: dict[str, float] = {}
    add(both, {k: v for k, v in older.items() if k.startswith("r")})
    add(both, {k: v for k, v in recent.items() if k.startswith("r")})
    return both, round(max(-ErrorModel.MAX_R, margin), 4)


def inside_share(sums: Mapping[str, float]) -> tuple[int, float | None]:
    """(arrivals, share inside the shown window) over all marks: what the tracking page may publish."""
    n = sum(int(sums.get(f"n{m}", 0)) for m in MARKS_MIN)
    inside = sum(sums.get(f"in{m}", 0) for m in MARKS_MIN)
    return n, (inside / n if n else None)
