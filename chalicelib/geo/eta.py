"""ETA engine: when the driver will reach each remaining stop of a route, as a window.

Pure Python plus h3 (it runs inside Lambda: no numpy, no AWS). The pieces:

- `SpeedTable`: observed travel pace (seconds per metre) per H3 cell and hour of
  week, built from consecutive fixes and pooled upward (cell+hour -> cell ->
  parent cell -> fleet -> default) by shrinkage, so thin cells borrow from wider ones.
- `DriverMotion`: the driver's recent moving speed and where the current leg started.
- `estimate_route`: cumulative arrivals in route order: straight-line leg distance
  x circuity x pace, an approach allowance per stop, the service time of every
  earlier stop, and a lateness term on the current leg.
- `ErrorModel`: the window, as quantiles of the observed error ratio per horizon, widened
  by a margin calibrated on routes the model has not seen (`ErrorModel.calibrated`).
- `ServiceTimes`: service time per merchant learned from observed dwell.
- Small rules for the callers: `should_recompute`, `delay_check`, `delay_event_due`.

All state objects round-trip through plain dicts (`to_dict` / `from_dict`) for storage.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h3

from chalicelib.geo.cells import COARSE_RES, haversine_m

# Median planned service time of a delivery stop in the 13 real Amazon routes of
# ../shared/data/routes/almrrc2021: per stop, the sum of planned_service_time_seconds
# over its packages (2,038 stops with packages; stations have none and are skipped);
# quartiles 49 s and 115 s. Computed once with default_service_time_s() and baked in
# so Lambda never needs the shared folder.
DEFAULT_SERVICE_TIME_S = 70.0
DEFAULT_SPEED_MPS = 7.0  # ~25 km/h, an urban van's average while moving, before any history
SPEED_RES = 8  # ~530 m edge, 0.74 km2: a few blocks, enough pings per cell to mean something
PARENT_RES = COARSE_RES  # ~3.7 km edge: the district the cell borrows from when thin
HOUR_MS = 3_600_000
HOURS_PER_WEEK = 168
_EPOCH_HOUR_OF_WEEK = 72  # 1970-01-01 was a Thursday: epoch hour 0 is hour 72 of a Monday-based week
_GLOBAL_KEY = "*"


def hour_of_week(epoch_ms: int) -> int:
    """0 = Monday 00:00-00:59 UTC ... 167 = Sunday 23:00 UTC."""
    return (epoch_ms // HOUR_MS + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK


class FixLike(Protocol):
    """Anything with a position and a fix time: domain.pings.Fix, Ping, LastFix."""

    @property
    def lat(self) -> float: ...

    @property
    def lng(self) -> float: ...

    @property
    def fix_ms(self) -> int: ...


# --- parameters and results ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EtaParams:
    """Knobs of the travel-time model. The defaults suit a van; `make eval` fits its own on real trips."""

    circuity: float = 1.3  # road distance / straight line; urban networks measure 1.2-1.4
    # Geometric blend of the table's pace and the driver's recent pace: today's traffic,
    # this driver. On GeoLife the fitted weight is ~0 (people change mode mid-trip).
    motion_weight: float = 0.25
    lateness_weight: float = 0.3  # share of the current leg's overrun assumed to persist (GeoLife fits 0.3-0.5)
    max_lateness_s: float = 3600.0  # caps the lateness term when a leg start was never recorded
    approach_s: float = 30.0  # parking and the last metres, per stop
    default_service_s: float = DEFAULT_SERVICE_TIME_S
    min_speed_mps: float = 0.5
    max_speed_mps: float = 40.0
    leg_sample_m: float = 1000.0  # one table lookup per this many metres of leg
    max_leg_samples: int = 8


DEFAULT_PARAMS = EtaParams()


@dataclass(frozen=True, slots=True)
class Stop:
    """A remaining stop. `service_s` None: `EtaParams.default_service_s` (set that from `ServiceTimes.estimate`).

    `not_before_ms`: the driver does not serve the stop before this instant (a merchant that has its drivers wait
    for the promised window to open): an earlier arrival waits for it, and so does every stop after it.
    """

    stop_id: str
    lat: float
    lng: float
    service_s: float | None = None
    not_before_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StopEta:
    """Expected arrival at a stop and its window, epoch milliseconds.

    `late` says the current leg was running behind plan when this was computed (the
    lateness term was applied); keep it with the prediction to feed `ErrorModel.observe`.
    """

    stop_id: str
    eta_ms: int
    low_ms: int
    high_ms: int
    late: bool = False


# --- speed table ---------------------------------------------------------------------


class SpeedTable:
    """Travel pace per (H3 cell, hour of week), aggregated from consecutive fixes.

    Each key holds running sums [seconds, metres, segments], so the pace of a key is
    total time over total distance (a distance-weighted mean of pace, which is what
    adds up to travel time, unlike a mean of speeds). Sums are additive: a stream batch
    can build a small table and `merge` it into the stored one.

    Lookups shrink each level toward the one above with `prior_m` pseudo-metres:
    pace = (seconds + prior_m * pace_above) / (metres + prior_m). A key with no data
    is exactly its parent (the fallback chain); a key with much data speaks for itself.
    """

    def __init__(self, *, res: int = SPEED_RES, parent_res: int = PARENT_RES, prior_m: float = 1000.0,
                 default_speed_mps: float = DEFAULT_SPEED_MPS, max_gap_s: float = 120.0,
                 min_speed_mps: float = 0.5, max_speed_mps: float = 60.0) -> None:
        self.res = res
        self.parent_res = parent_res
        self.prior_m = prior_m
        self.default_speed_mps = default_speed_mps
        self.max_gap_s = max_gap_s
        self.min_speed_mps = min_speed_mps
        self.max_speed_mps = max_speed_mps
        self._agg: dict[str, list[float]] = {}
        self._pace_cache: dict[tuple[str, int], float] = {}
        self._parent_cache: dict[str, str] = {}

    # --- building

    def observe(self, a: FixLike, b: FixLike) -> bool:
        """Add the segment between two consecutive fixes of one driver; False when it tells nothing about travel.

        Skipped: gaps longer than `max_gap_s` (the phone was off: we do not know what
        happened), slower than `min_speed_mps` (parked or serving a stop: that time is
        service time, modelled separately) and impossible speeds (a bad fix).
        """
        dt_s = (b.fix_ms - a.fix_ms) / 1000
        if dt_s <= 0 or dt_s > self.max_gap_s:
            return False
        metres = haversine_m(a.lat, a.lng, b.lat, b.lng)
        speed = metres / dt_s
        if speed < self.min_speed_mps or speed > self.max_speed_mps:
            return False
        cell = str(h3.latlng_to_cell((a.lat + b.lat) / 2, (a.lng + b.lng) / 2, self.res))
        self.add(cell, hour_of_week(a.fix_ms), dt_s, metres)
        return True

    def add(self, cell: str, how: int, seconds: float, metres: float, segments: int = 1) -> None:
        for key in (f"{cell}@{how}", cell, self._parent(cell), _GLOBAL_KEY):
            agg = self._agg.get(key)
            if agg is None:
                self._agg[key] = [seconds, metres, float(segments)]
            else:
                agg[0] += seconds
                agg[1] += metres
                agg[2] += segments
        self._pace_cache.clear()

    def merge(self, other: SpeedTable) -> None:
        """Add another table's sums (e.g. the delta built from one stream batch)."""
        for key, (seconds, metres, segments) in other._agg.items():
            agg = self._agg.setdefault(key, [0.0, 0.0, 0.0])
            agg[0] += seconds
            agg[1] += metres
            agg[2] += segments
        self._pace_cache.clear()

    # --- lookups

    def global_pace(self) -> float:
        return self._shrink(self._agg.get(_GLOBAL_KEY), 1.0 / self.default_speed_mps)

    def pace(self, cell: str, how: int) -> float:
        """Seconds per metre in `cell` at hour of week `how`, pooled upward when data is thin."""
        cached = self._pace_cache.get((cell, how))
        if cached is not None:
            return cached
        agg = self._agg
        pace = self.global_pace()
        pace = self._shrink(agg.get(self._parent(cell)), pace)
        pace = self._shrink(agg.get(cell), pace)
        pace = self._shrink(agg.get(f"{cell}@{how}"), pace)
        self._pace_cache[(cell, how)] = pace
        return pace

    def pace_at(self, lat: float, lng: float, epoch_ms: int) -> float:
        return self.pace(self.cell(lat, lng), hour_of_week(epoch_ms))

    def speed_at(self, lat: float, lng: float, epoch_ms: int) -> float:
        return 1.0 / self.pace_at(lat, lng, epoch_ms)

    def leg_pace(self, cells: Sequence[str], how: int) -> float:
        """Mean pace over cells sampled at equal distances along a leg (so time = distance x mean pace)."""
        if len(cells) == 1:
            return self.pace(cells[0], how)
        return sum(self.pace(c, how) for c in cells) / len(cells)

    def cell(self, lat: float, lng: float) -> str:
        return str(h3.latlng_to_cell(lat, lng, self.res))

    def local_metres(self, cells: Sequence[str]) -> float:
        """Metres of history in the districts (parent cells) of these cells, averaged: how much the table knows here."""
        if not cells:
            return 0.0
        agg = self._agg
        return sum(a[1] for a in (agg.get(self._parent(c)) for c in cells) if a is not None) / len(cells)

    def segments(self, key: str = _GLOBAL_KEY) -> int:
        agg = self._agg.get(key)
        return int(agg[2]) if agg else 0

    def metres(self, key: str = _GLOBAL_KEY) -> float:
        agg = self._agg.get(key)
        return agg[1] if agg else 0.0

    def __len__(self) -> int:
        return len(self._agg)

    def sums(self) -> Iterator[tuple[str, float, float, int]]:
        """(key, seconds, metres, segments) of every key: 'cell@hour', 'cell', a parent cell, or '*' (all).

        What the stream function adds to storage after a batch; `from_sums` reads it back.
        """
        for key, (seconds, metres, segments) in self._agg.items():
            yield key, seconds, metres, int(segments)

    @classmethod
    def from_sums(cls, sums: Iterable[tuple[str, float, float, float]], **options: Any) -> SpeedTable:
        """A table holding exactly these sums (keys as `sums` yields them), e.g. the stored rows of a route's cells."""
        table = cls(**options)
        for key, seconds, metres, segments in sums:
            agg = table._agg.setdefault(key, [0.0, 0.0, 0.0])
            agg[0] += seconds
            agg[1] += metres
            agg[2] += segments
        return table

    def _shrink(self, agg: list[float] | None, prior_pace: float) -> float:
        if agg is None:
            return prior_pace
        return (agg[0] + self.prior_m * prior_pace) / (agg[1] + self.prior_m)

    def _parent(self, cell: str) -> str:
        parent = self._parent_cache.get(cell)
        if parent is None:
            parent = str(h3.cell_to_parent(cell, self.parent_res))
            self._parent_cache[cell] = parent
        return parent

    # --- storage

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1, "res": self.res, "parent_res": self.parent_res, "prior_m": self.prior_m,
            "default_speed_mps": self.default_speed_mps,
            "agg": {k: [round(s, 1), round(m, 1), int(n)] for k, (s, m, n) in self._agg.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeedTable:
        table = cls(res=int(data.get("res", SPEED_RES)), parent_res=int(data.get("parent_res", PARENT_RES)),
                    prior_m=float(data.get("prior_m", 1000.0)),
                    default_speed_mps=float(data.get("default_speed_mps", DEFAULT_SPEED_MPS)))
        table._agg = {str(k): [float(v[0]), float(v[1]), float(v[2])] for k, v in data.get("agg", {}).items()}
        return table


# --- the driver's own motion ---------------------------------------------------------


@dataclass(slots=True)
class DriverMotion:
    """Per-driver state: recent moving speed (EWMA) and where the current leg started.

    Only fixes moving faster than `moving_mps` (2.5 m/s, 9 km/h: above a brisk walk) feed
    the speed, so a stop at a door, and the walk to it and back, does not drag it toward
    walking pace (service time covers stops), and only steps longer than the two
    fixes' reported accuracy: a parked phone's positions jitter by 30-60 m, which would read
    as driving at 10-30 m/s (a fix without accuracy counts as exact). The EWMA is
    time-weighted with time constant `tau_s`, so irregular ping intervals weigh by the
    time they cover.
    """

    speed_mps: float | None = None
    last_ms: int | None = None
    last_lat: float = 0.0
    last_lng: float = 0.0
    last_accuracy_m: float = 0.0
    leg_start_ms: int | None = None
    leg_start_lat: float = 0.0
    leg_start_lng: float = 0.0
    tau_s: float = 180.0
    moving_mps: float = 2.5
    max_gap_s: float = 120.0
    max_speed_mps: float = 60.0

    def update(self, fix: FixLike) -> float:
        """Take the driver's next fix; returns metres moved since the previous one (0 when older or first)."""
        if self.last_ms is not None and fix.fix_ms <= self.last_ms:
            return 0.0  # out of order: the history is ordered elsewhere, motion only moves forward
        accuracy_m = getattr(fix, "accuracy", None) or 0.0
        moved = 0.0
        if self.last_ms is not None:
            dt_s = (fix.fix_ms - self.last_ms) / 1000
            moved = haversine_m(self.last_lat, self.last_lng, fix.lat, fix.lng)
            speed = moved / dt_s
            if dt_s <= self.max_gap_s and self.moving_mps < speed <= self.max_speed_mps \
                    and moved > max(accuracy_m, self.last_accuracy_m):
                if self.speed_mps is None:
                    self.speed_mps = speed
                else:
                    self.speed_mps += (1.0 - math.exp(-dt_s / self.tau_s)) * (speed - self.speed_mps)
        if self.leg_start_ms is None:
            self.start_leg(fix.fix_ms, fix.lat, fix.lng)
        self.last_ms, self.last_lat, self.last_lng, self.last_accuracy_m = fix.fix_ms, fix.lat, fix.lng, accuracy_m
        return moved

    def start_leg(self, epoch_ms: int, lat: float, lng: float) -> None:
        """The driver left a stop (or started the route) here and now: lateness is measured from this point."""
        self.leg_start_ms, self.leg_start_lat, self.leg_start_lng = epoch_ms, lat, lng

    def to_dict(self) -> dict[str, Any]:
        return {"speed_mps": self.speed_mps, "last_ms": self.last_ms, "last_lat": self.last_lat,
                "last_lng": self.last_lng, "last_accuracy_m": self.last_accuracy_m, "leg_start_ms": self.leg_start_ms,
                "leg_start_lat": self.leg_start_lat, "leg_start_lng": self.leg_start_lng}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriverMotion:
        def opt_float(v: Any) -> float | None:
            return None if v is None else float(v)

        def opt_int(v: Any) -> int | None:
            return None if v is None else int(v)

        return cls(speed_mps=opt_float(data.get("speed_mps")), last_ms=opt_int(data.get("last_ms")),
                   last_lat=float(data.get("last_lat", 0.0)), last_lng=float(data.get("last_lng", 0.0)),
                   last_accuracy_m=float(data.get("last_accuracy_m") or 0.0),
                   leg_start_ms=opt_int(data.get("leg_start_ms")),
                   leg_start_lat=float(data.get("leg_start_lat", 0.0)),
                   leg_start_lng=float(data.get("leg_start_lng", 0.0)))


# --- the error model: windows --------------------------------------------------------


class ErrorModel:
    """Windows from the observed error distribution, per horizon and lateness state, calibrated for unseen routes.

    An error is r = ln((actual + k) / (predicted + k)) with k = `offset_s`: relative at
    long horizons, absolute (about k seconds) near arrival, where a ratio would explode.
    Errors are kept apart for predictions made while the current leg ran late (the
    lateness term was active) and on time: a leg that has already gone off plan is
    less predictable both ways. Each (state, horizon bucket) keeps a histogram of r
    (bins of 0.05), so the model is small, additive and serialisable.

    The window is [q_lo - margin, q_hi + margin] in r, mapped back to seconds, and
    always contains the prediction. q_lo and q_hi are the quantiles holding `level` of
    the errors between them with the shortest window in seconds (`_shortest_interval`:
    errors are skewed, so the tails left out need not be equal), taken per bucket and
    interpolated linearly in
    log-horizon between the centres of the buckets either side (`CENTRES_S`), so the
    window grows smoothly with the horizon instead of jumping at bucket edges; in r
    it widens with the horizon. A histogram with fewer than `min_samples` borrows its
    state's pooled histogram, then everything pooled, then the defaults.

    `margin` (log ratio, 0 by default) is the conformal correction of conformalized
    quantile regression. Quantiles of errors already seen describe those errors; a
    new route, driver or day differs from them more than they differ from each
    other (errors come in clumps per trip), so plain p10-p90 covers fewer than 80%
    of an unseen route's arrivals. `calibrated` sets the margin from how far each
    group's errors fall outside the window of a model built from the other groups.
    """

    EDGES_S: tuple[float, ...] = (120.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0)
    # Where each bucket's quantiles sit on the horizon axis: the geometric middle of its edges; the
    # first bucket (0-2 min) at 1 min, the last at 4800 s x sqrt 2 (as if it ended at double its
    # start, as the others about do). Below the first and above the last centre the window is flat.
    CENTRES_S: tuple[float, ...] = (60.0, *(math.sqrt(a * b) for a, b in itertools.pairwise(EDGES_S)),
                                    EDGES_S[-1] * math.sqrt(2.0))
    BIN = 0.05
    MAX_R = 4.0
    # Default log-ratio quantiles (p10, p90): late is likelier and longer than early.
    DEFAULT_R = (-0.25, 0.35)

    def __init__(self, *, level: float = 0.8, offset_s: float = 120.0, min_samples: int = 50,
                 margin: float = 0.0) -> None:
        self.level = level
        self.offset_s = offset_s
        self.min_samples = min_samples
        self.margin = margin
        self._per_state = len(self.EDGES_S) + 1
        self._log_centres = [math.log(c) for c in self.CENTRES_S]
        self._hist: list[dict[int, float]] = [{} for _ in range(2 * self._per_state)]
        self._bounds: list[tuple[float, float]] | None = None  # per slot: (q_lo, q_hi), margin excluded

    def slot(self, predicted_s: float, late: bool = False) -> int:
        return bisect.bisect_right(self.EDGES_S, predicted_s) + (self._per_state if late else 0)

    def observe(self, predicted_s: float, actual_s: float, late: bool = False, weight: float = 1.0) -> None:
        """Record how long it really took against what was predicted (both from the same moment)."""
        self.observe_ratio(predicted_s, self.ratio(predicted_s, actual_s), late, weight)

    def observe_ratio(self, predicted_s: float, r: float, late: bool = False, weight: float = 1.0) -> None:
        """Record an error already expressed as a log ratio (`ratio`), e.g. a stored histogram bin's."""
        r = min(self.MAX_R, max(-self.MAX_R, r))
        hist = self._hist[self.slot(predicted_s, late)]
        index = math.floor(r / self.BIN)
        hist[index] = hist.get(index, 0.0) + weight
        self._bounds = None

    def merge(self, other: ErrorModel) -> None:
        """Add another model's counts (same offset and buckets): histograms are additive."""
        for mine, theirs in zip(self._hist, other._hist, strict=True):
            for index, n in theirs.items():
                mine[index] = mine.get(index, 0.0) + n
        self._bounds = None

    def without(self, other: ErrorModel) -> ErrorModel:
        """A copy with another model's counts taken out (`other` merged in earlier): everything but that group."""
        out = ErrorModel(level=self.level, offset_s=self.offset_s, min_samples=self.min_samples, margin=self.margin)
        for bucket, (mine, theirs) in enumerate(zip(self._hist, other._hist, strict=True)):
            left = {i: n - theirs.get(i, 0.0) for i, n in mine.items()}
            out._hist[bucket] = {i: n for i, n in left.items() if n > 1e-9}
        return out

    def set_level(self, level: float) -> None:
        self.level = level
        self._bounds = None

    def set_margin(self, margin: float) -> None:
        self.margin = margin

    def count(self) -> float:
        return sum(sum(h.values()) for h in self._hist)

    def quantiles(self, slot: int) -> tuple[float, float]:
        """(low, high) log-ratio quantiles for a slot at the model's level (the margin not applied)."""
        state = slot // self._per_state * self._per_state
        for hists in ([self._hist[slot]], self._hist[state:state + self._per_state], self._hist):
            hist = _pooled(hists)
            if sum(hist.values()) >= self.min_samples:
                return _shortest_interval(hist, self.level, self.BIN)
        return self.DEFAULT_R

    def bounds(self, predicted_s: float, late: bool = False) -> tuple[float, float]:
        """(q_lo, q_hi) log-ratio quantiles at this horizon, interpolated between bucket centres; no margin."""
        per_slot = self._bounds
        if per_slot is None:
            per_slot = self._bounds = [self.quantiles(s) for s in range(len(self._hist))]
        state = self._per_state if late else 0
        if predicted_s <= self.CENTRES_S[0]:
            return per_slot[state]
        x = math.log(predicted_s)
        i = bisect.bisect_right(self._log_centres, x)
        if i == self._per_state:
            return per_slot[state + i - 1]
        c0, c1 = self._log_centres[i - 1], self._log_centres[i]
        f = (x - c0) / (c1 - c0)
        (lo0, hi0), (lo1, hi1) = per_slot[state + i - 1], per_slot[state + i]
        return lo0 + f * (lo1 - lo0), hi0 + f * (hi1 - hi0)

    def window(self, predicted_s: float, late: bool = False) -> tuple[float, float]:
        """(earliest, latest) seconds from now for a prediction of `predicted_s`; always contains it."""
        lo, hi = self.bounds(predicted_s, late)
        base = predicted_s + self.offset_s
        return (min(predicted_s, max(0.0, base * math.exp(lo - self.margin) - self.offset_s)),
                max(predicted_s, base * math.exp(hi + self.margin) - self.offset_s))

    def score(self, predicted_s: float, actual_s: float, late: bool = False) -> float:
        """The smallest margin whose window holds `actual_s` (the nonconformity score of conformal prediction).

        The window with margin m contains the arrival exactly when score <= m; -inf when the
        arrival is the prediction itself (every window holds it).
        """
        return self.score_ratio(predicted_s, self.ratio(predicted_s, actual_s), late)

    def score_ratio(self, predicted_s: float, r: float, late: bool = False) -> float:
        """`score` of an error already expressed as a log ratio."""
        lo, hi = self.bounds(predicted_s, late)
        if r > 0:
            return r - hi
        if r < 0:
            return lo - r
        return -math.inf

    @classmethod
    def calibrated(cls, groups: Iterable[Sequence[tuple[float, float, bool]]], *, level: float = 0.8,
                   offset_s: float = 120.0, min_samples: int = 50) -> ErrorModel:
        """All groups' errors, the margin calibrated leave-one-group-out to cover `level` of an unseen group.

        A group is a unit that errors cluster by: a route, a driver's day, a trip; each holds
        (predicted_s, actual_s, late) triples. Every group is scored (`score`) by the model of
        the other groups, never by one that saw it, and the margin is `conformal_margin` of
        those scores. With a single group there is nothing to calibrate on: margin 0.
        """
        groups = [list(g) for g in groups]
        parts = []
        for triples in groups:
            part = cls(level=level, offset_s=offset_s, min_samples=min_samples)
            for predicted_s, actual_s, late in triples:
                part.observe(predicted_s, actual_s, late)
            parts.append(part)
        model = cls(level=level, offset_s=offset_s, min_samples=min_samples)
        for part in parts:
            model.merge(part)
        if len(groups) > 1:
            scores = []
            for triples, part in zip(groups, parts, strict=True):
                others = model.without(part)
                scores.append([others.score(p, a, late) for p, a, late in triples])
            model.set_margin(conformal_margin(scores, level))
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "level": self.level, "offset_s": self.offset_s, "min_samples": self.min_samples,
                "margin": round(self.margin, 4),
                "hist": [{str(i): round(n, 3) for i, n in sorted(h.items())} for h in self._hist]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorModel:
        model = cls(level=float(data.get("level", 0.8)), offset_s=float(data.get("offset_s", 120.0)),
                    min_samples=int(data.get("min_samples", 50)), margin=float(data.get("margin", 0.0)))
        for bucket, hist in enumerate(data.get("hist", [])[: len(model._hist)]):
            model._hist[bucket] = {int(i): float(n) for i, n in hist.items()}
        return model

    def ratio(self, predicted_s: float, actual_s: float) -> float:
        """The error as the model measures it: ln((actual + k) / (predicted + k)), k = `offset_s`."""
        k = self.offset_s
        return math.log((max(0.0, actual_s) + k) / (max(0.0, predicted_s) + k))


def conformal_margin(scores_by_group: Iterable[Sequence[float]], level: float) -> float:
    """The margin expected to cover `level` of the predictions of a group not seen yet (split conformal, by group).

    Each score must come from a model that did not see its group (`ErrorModel.score`).
    The quantile is over all scores pooled, each prediction counting once as coverage
    counts them, at level x (1 + 1/n) for n groups: conformal prediction's finite-sample
    correction, the unseen group counted as one more group of average size whose scores
    could be anything. For exchangeable groups, the expected share of the new group's
    predictions inside the window is then at least `level`. When that quantile is past
    the largest score (few groups), the largest; never below -MAX_R (all predictions exact).
    """
    groups = [g for g in scores_by_group if len(g)]
    if not groups:
        return 0.0
    pooled = sorted(s for g in groups for s in g)
    rank = math.ceil(level * (1.0 + 1.0 / len(groups)) * len(pooled) - 1e-9)
    return max(-ErrorModel.MAX_R, pooled[min(len(pooled), max(1, rank)) - 1])


def _pooled(hists: Sequence[Mapping[int, float]]) -> Mapping[int, float]:
    if len(hists) == 1:
        return hists[0]
    pooled: dict[int, float] = {}
    for hist in hists:
        for index, n in hist.items():
            pooled[index] = pooled.get(index, 0.0) + n
    return pooled


SHORTEST_STEP = 0.01  # the low tail is searched in steps of this share


def _shortest_interval(hist: Mapping[int, float], level: float, width: float) -> tuple[float, float]:
    """(lo, hi) log ratios holding `level` of the histogram with the shortest window in seconds.

    A window of [e^lo, e^hi] x (predicted + k) is shortest when e^hi - e^lo is, so the split of the
    (1 - level) left outside between the two tails is searched rather than fixed at half each: errors are
    skewed (late runs longer than early), and an equal-tailed window pays for the long tail twice.
    """
    best_span, best = math.inf, (0.0, 0.0)
    for i in range(round((1.0 - level) / SHORTEST_STEP) + 1):
        low_share = i * SHORTEST_STEP
        lo, hi = _hist_quantile(hist, low_share, width), _hist_quantile(hist, min(1.0, low_share + level), width)
        span = math.exp(hi) - math.exp(lo)
        if span < best_span - 1e-12:
            best_span, best = span, (lo, hi)
    return best


def _hist_quantile(hist: Mapping[int, float], q: float, width: float) -> float:
    """Quantile of a histogram of bins [i*width, (i+1)*width), interpolating inside the bin."""
    total = sum(hist.values())
    target = q * total
    acc = 0.0
    for index in sorted(hist):
        n = hist[index]
        if acc + n >= target:
            inside = (target - acc) / n if n else 0.0
            return (index + inside) * width
        acc += n
    return (max(hist) + 1) * width


# --- service times -------------------------------------------------------------------


class ServiceTimes:
    """Service time per merchant, learned from observed dwell (arrive -> depart).

    A time-weighted geometric mean: the log-dwell average starts at the prior
    (the ALMRRC median) with `prior_weight` pseudo-observations, then moves by
    1/(n + prior_weight) per stop, never slower than `min_alpha` so it follows change.
    Log space because dwell is skewed: one 20-minute stop should not double the estimate.
    """

    def __init__(self, *, prior_s: float = DEFAULT_SERVICE_TIME_S, prior_weight: float = 5.0,
                 min_alpha: float = 0.05, min_dwell_s: float = 5.0, max_dwell_s: float = 3600.0) -> None:
        self.prior_s = prior_s
        self.prior_weight = prior_weight
        self.min_alpha = min_alpha
        self.min_dwell_s = min_dwell_s
        self.max_dwell_s = max_dwell_s
        self._state: dict[str, list[float]] = {}  # merchant -> [observations, mean log dwell]

    def observe(self, merchant_id: str, dwell_s: float) -> None:
        dwell = min(self.max_dwell_s, max(self.min_dwell_s, dwell_s))
        state = self._state.setdefault(merchant_id, [0.0, math.log(self.prior_s)])
        alpha = max(self.min_alpha, 1.0 / (state[0] + 1.0 + self.prior_weight))
        state[1] += alpha * (math.log(dwell) - state[1])
        state[0] += 1.0

    def estimate(self, merchant_id: str) -> float:
        state = self._state.get(merchant_id)
        return self.prior_s if state is None else math.exp(state[1])

    def to_dict(self) -> dict[str, Any]:
        merchants = {m: [n, round(mu, 5)] for m, (n, mu) in self._state.items()}
        return {"v": 1, "prior_s": self.prior_s, "merchants": merchants}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceTimes:
        model = cls(prior_s=float(data.get("prior_s", DEFAULT_SERVICE_TIME_S)))
        model._state = {str(m): [float(v[0]), float(v[1])] for m, v in data.get("merchants", {}).items()}
        return model


def learned_service_s(count: float, log_dwell_sum: float, *, prior_s: float = DEFAULT_SERVICE_TIME_S,
                      prior_weight: float = 5.0) -> float:
    """Service time from stored sums of observed dwells: a geometric mean shrunk toward the prior.

    The storage-friendly form of ServiceTimes: `count` and the sum of log(dwell) are
    plain counters (added atomically by any worker, in any order), and the prior
    counts as `prior_weight` observations of `prior_s`.
    """
    if count <= 0:
        return prior_s
    return math.exp((prior_weight * math.log(prior_s) + log_dwell_sum) / (prior_weight + count))


def service_dwell_log(dwell_s: float, *, min_dwell_s: float = 15.0, max_dwell_s: float = 3600.0) -> float | None:
    """log(dwell) to add to the sums, or None for a stay too short to be a service (a drive-by)."""
    if not math.isfinite(dwell_s) or dwell_s < min_dwell_s:
        return None
    return math.log(min(max_dwell_s, dwell_s))


def default_service_time_s(routes_dir: str | Path | None) -> float:
    """Median planned service time per stop of the ALMRRC routes in `routes_dir`, else the baked-in value.

    Per stop, the planned_service_time_seconds of its packages are summed (one stop
    may take several parcels); stops without packages (the stations) are skipped.
    """
    if routes_dir is None:
        return DEFAULT_SERVICE_TIME_S
    try:
        with (Path(routes_dir) / "new_package_data.json").open(encoding="utf-8") as fh:
            routes = json.load(fh)
        per_stop = [sum(float(p["planned_service_time_seconds"]) for p in packages.values())
                    for stops in routes.values() for packages in stops.values() if packages]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return DEFAULT_SERVICE_TIME_S
    per_stop = [s for s in per_stop if math.isfinite(s) and s > 0]
    return float(statistics.median(per_stop)) if per_stop else DEFAULT_SERVICE_TIME_S


# --- the route -----------------------------------------------------------------------


class RoutePlan:
    """What does not change between pings: legs between consecutive stops and the cells along them.

    Leg i runs from stop i-1 to stop i; leg 0 starts at the driver and is measured per call.
    """

    __slots__ = ("leg_cells", "leg_m", "res", "stops")

    def __init__(self, stops: Sequence[Stop], *, res: int = SPEED_RES, params: EtaParams = DEFAULT_PARAMS) -> None:
        self.stops = tuple(stops)
        self.res = res
        self.leg_m: list[float] = [0.0]
        self.leg_cells: list[tuple[str, ...]] = [()]
        for prev, stop in itertools.pairwise(self.stops):
            metres = haversine_m(prev.lat, prev.lng, stop.lat, stop.lng)
            self.leg_m.append(metres)
            self.leg_cells.append(leg_cells(prev.lat, prev.lng, stop.lat, stop.lng, metres, res, params))


def leg_cells(lat1: float, lng1: float, lat2: float, lng2: float, metres: float, res: int,
              params: EtaParams = DEFAULT_PARAMS) -> tuple[str, ...]:
    """Cells at the midpoints of equal slices of the straight leg (linear in lat/lng: legs are short)."""
    n = max(1, min(params.max_leg_samples, math.ceil(metres / params.leg_sample_m)))
    return tuple(str(h3.latlng_to_cell(lat1 + (lat2 - lat1) * f, lng1 + (lng2 - lng1) * f, res))
                 for f in ((i + 0.5) / n for i in range(n)))


_PLANS: dict[tuple[int, float, int, tuple[Stop, ...]], RoutePlan] = {}
_MAX_PLANS = 256


def plan_route(stops: Sequence[Stop], res: int = SPEED_RES, params: EtaParams = DEFAULT_PARAMS) -> RoutePlan:
    """A RoutePlan, reused while the stops are the same (a warm Lambda recomputes without re-measuring legs)."""
    key = (res, params.leg_sample_m, params.max_leg_samples, tuple(stops))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = RoutePlan(key[3], res=res, params=params)
    return plan


LATE_AFTER_S = 60.0  # overrun below this is noise (a red light), not a leg going off plan
_DEFAULT_ERRORS = ErrorModel()  # never observed into: the defaults only


def estimate_route(
    position: tuple[float, float],
    now_ms: int,
    stops: Sequence[Stop] | RoutePlan,
    speed_table: SpeedTable,
    motion: DriverMotion | None = None,
    params: EtaParams = DEFAULT_PARAMS,
    errors: ErrorModel | None = None,
) -> list[StopEta]:
    """Expected arrival and window at each remaining stop, in route order.

    Cumulative: arrival(i) = departure(i-1) + leg travel + approach, departure(i) =
    arrival(i) + service(i); the first leg starts at the driver's position now. Leg
    travel = straight-line metres x circuity x pace, the pace being the table's along
    the leg at the hour the leg is driven, blended geometrically with the driver's
    recent pace. On the current leg, the time spent beyond what the progress made so
    far should have taken (the overrun) is partly assumed to persist: a leg already
    running late tends to keep running late. A stop with `not_before_ms` is served no
    earlier than that: arrival(i) = max(drive arrival, not_before), and its window's
    early end is not_before too.
    """
    plan = stops if isinstance(stops, RoutePlan) else plan_route(stops, speed_table.res, params)
    if plan.res != speed_table.res:  # cells of another resolution would all miss the table
        plan = plan_route(plan.stops, speed_table.res, params)
    if not plan.stops:
        return []
    errors = errors if errors is not None else _DEFAULT_ERRORS
    circuity = params.circuity
    min_pace, max_pace = 1.0 / params.max_speed_mps, 1.0 / params.min_speed_mps
    # Speed sources in order of trust: the table, the driver's recent speed, the default.
    # A table with no real history yet (less than its prior) would only be the default,
    # so then the driver's own speed, when known, takes over entirely.
    # The table's weight also shrinks where it knows little: a district with less history than
    # the table's prior (a new city, a new area) is mostly the fleet-wide pace, which says less
    # about this driver here than the driver's own recent pace does.
    lat, lng = position
    first = plan.stops[0]
    metres = haversine_m(lat, lng, first.lat, first.lng)
    cells = leg_cells(lat, lng, first.lat, first.lng, metres, speed_table.res, params)
    driver_speed = motion.speed_mps if motion is not None else None
    if not driver_speed:
        w = 0.0
    elif speed_table.metres() < speed_table.prior_m:
        w = 1.0
    else:
        local_m = speed_table.local_metres(cells)
        w = 1.0 - (1.0 - params.motion_weight) * local_m / (local_m + speed_table.prior_m)
    motion_pace_w = (1.0 / driver_speed) ** w if w and driver_speed else 1.0
    table_w = 1.0 - w
    approach_s = params.approach_s

    pace = speed_table.leg_pace(cells, hour_of_week(now_ms)) ** table_w * motion_pace_w
    pace = min(max_pace, max(min_pace, pace))
    travel_s = metres * circuity * pace
    late = False
    if motion is not None and motion.leg_start_ms is not None and params.lateness_weight > 0:
        elapsed_s = (now_ms - motion.leg_start_ms) / 1000
        start_m = haversine_m(motion.leg_start_lat, motion.leg_start_lng, first.lat, first.lng)
        overrun_s = elapsed_s - max(0.0, start_m - metres) * circuity * pace
        if overrun_s > LATE_AFTER_S:
            travel_s += params.lateness_weight * min(overrun_s, params.max_lateness_s)
            late = True

    out: list[StopEta] = []
    window = errors.window
    default_service_s = params.default_service_s
    arrive_ms = now_ms + (travel_s + approach_s) * 1000
    index = 0
    stops_ = plan.stops
    # The window's clock: from now, or from a wait the drive surely ends early (its time is then known); no stop
    # is reached before `floor_ms` (a window the driver waited for, plus that stop's service).
    clock_ms: float = now_ms
    floor_ms: float = now_ms
    while True:
        stop = stops_[index]
        lo_s, hi_s = window((arrive_ms - clock_ms) / 1000, late)
        low_ms, high_ms = clock_ms + lo_s * 1000, clock_ms + hi_s * 1000
        if low_ms < floor_ms:
            low_ms = floor_ms
        opens_ms = stop.not_before_ms
        service_ms = (default_service_s if stop.service_s is None else stop.service_s) * 1000
        if opens_ms is not None and low_ms < opens_ms:
            # The driver waits for the window: served when it opens unless the drive itself is later.
            arrive_ms, low_ms = max(arrive_ms, opens_ms), opens_ms
            if high_ms <= opens_ms:
                high_ms = clock_ms = opens_ms
            floor_ms = opens_ms + service_ms
        out.append(StopEta(stop.stop_id, int(arrive_ms), int(low_ms), int(high_ms), late))
        index += 1
        if index == len(stops_):
            return out
        depart_ms = arrive_ms + service_ms
        how = (int(depart_ms) // HOUR_MS + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK
        pace = speed_table.leg_pace(plan.leg_cells[index], how) ** table_w * motion_pace_w
        pace = min(max_pace, max(min_pace, pace))
        arrive_ms = depart_ms + (plan.leg_m[index] * circuity * pace + approach_s) * 1000


# --- rules for the callers -----------------------------------------------------------

RECOMPUTE_INTERVAL_S = 30.0
RECOMPUTE_MOVE_M = 200.0


def should_recompute(last_ms: int | None, now_ms: int, moved_m: float, *,
                     interval_s: float = RECOMPUTE_INTERVAL_S, move_m: float = RECOMPUTE_MOVE_M) -> bool:
    """Throttle per driver: recompute when never done, every `interval_s`, or after `move_m` metres moved
    since the last recompute. A completed stop always recomputes (the caller does not ask)."""
    return last_ms is None or now_ms - last_ms >= interval_s * 1000 or moved_m >= move_m


@dataclass(frozen=True, slots=True)
class PromisedWindow:
    """The delivery window promised to the recipient; either end may be open."""

    start_ms: int | None = None
    end_ms: int | None = None


def delay_check(eta: StopEta, promised: PromisedWindow) -> bool:
    """True when the ETA left the promised window on the late side: the expected arrival is after its end.

    The expected arrival, not the window's high end: "delayed" should mean late is now
    the likelier outcome, not merely possible. Arriving early is not a delay.
    """
    return promised.end_ms is not None and eta.eta_ms > promised.end_ms


def delay_event_due(eta: StopEta, promised: PromisedWindow, already_emitted: bool) -> bool:
    """Emit 'delayed' once per shipment: the caller stores the flag once it has emitted the event."""
    return not already_emitted and delay_check(eta, promised)

