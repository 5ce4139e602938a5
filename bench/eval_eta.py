"""ETA accuracy on real movement: GeoLife trips and ride-along delivery legs through Doorstep's ETA engine.

Each data set is evaluated on its own (leave one trip or leg out within it) and every printed line names it
in its `dataset` field ("geolife", "ridealong"); `load_ridealong` explains how the GPX traces become legs.

`python -m bench.eval_eta` (what `make eval` runs) prints one JSON object per figure on
stdout; progress and the per-trip breakdown go to stderr.

Data: ../shared/data/traces/geolife/geolife_long (or $DOORSTEP_SHARED_DATA/...):
`trips.csv` gives each real trip's user, start, real arrival time (`finished_at`, the
start of the destination staypoint) and origin/destination; the users' `.plt` files
give the GPS fixes. The fixes of a trip are those between its start and its arrival.

Protocol (leave one trip out, no leakage):
- For each test trip, everything learned comes from the other trips only: the
  speed table, the engine's parameters, the error model (window) and both baselines.
- From every fix of the test trip (all of them, none skipped) the engine predicts the
  arrival at the destination, a single-stop route. It sees the fixes up to that moment
  and nothing later (its DriverMotion is fed in order, as pings would arrive). The
  destination is known, as a delivery stop is; the trip's own future is not.
- Parameters (circuity, motion weight, lateness weight, approach time) are chosen to
  minimise the MAE on the other trips, each of them predicted with a speed table that
  excludes it as well as the test trip (nested), so the choice is not flattered by
  in-sample speeds; with fewer than MIN_TRIPS_TO_FIT other trips (the ride-along legs),
  the shipped defaults instead, as the product runs them.
- The window (ErrorModel.calibrated) is built from those nested predictions of the
  other trips: p10-p90 of their errors per horizon, widened by a margin calibrated
  conformally, trip by trip: each other trip's errors are scored against the
  window of the remaining ones (leave one trip out, the test trip never in it), and
  the margin is the quantile of those scores at 80% x (1 + 1/n) for n trips, the
  finite-sample correction for the held-out trip. The level is 80% and is not tuned
  on coverage. (The parameters were fitted on all the other trips, including the one
  scored, so its errors are if anything slightly smaller than a new trip's.)
- Baselines, each fitted on the other trips: the LaDe 'SPEED' baseline (straight-line
  distance over the average speed = total straight-line distance / total time of the
  other trips, as LaDe computes a courier's speed), and the strongest constant-speed
  predictor (the pace minimising MAE on the other trips' fixes).
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.geo.cells import haversine_m
from chalicelib.geo.eta import (
    DEFAULT_PARAMS,
    DriverMotion,
    ErrorModel,
    EtaParams,
    SpeedTable,
    Stop,
    estimate_route,
    plan_route,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DOORSTEP_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
GEOLIFE = SHARED_DATA / "traces" / "geolife" / "geolife_long"
RIDEALONG = SHARED_DATA / "traces" / "ridealong"

TARGET_REDUCTION = 0.30
TARGET_GAIN_VS_BEST_CONSTANT = 0.15  # issue 16: the honest baseline is a constant pace tuned on the same data
TARGET_MEDIAN_WIDTH_MIN = 25.0
TARGET_COVERAGE = 0.80  # also the window's level: the 80% window is calibrated to cover 80% of an unseen trip
GRID: dict[str, tuple[float, ...]] = {
    "circuity": (1.0, 1.15, 1.3, 1.5, 1.75, 2.0),
    "motion_weight": (0.0, 0.25, 0.5, 0.75, 1.0),
    "lateness_weight": (0.0, 0.1, 0.2, 0.3, 0.5, 0.75),
}
START = EtaParams(circuity=1.3, motion_weight=0.25, lateness_weight=0.25, approach_s=0.0)
MAX_APPROACH_S = 900.0
MIN_TRIPS_TO_FIT = 10  # fewer training trips than this: the shipped DEFAULT_PARAMS, not a fit


@dataclass(frozen=True)
class Variant:
    """The engine as evaluated, or with one part switched off (`--ablations`)."""

    name: str
    fixed: dict[str, Any] = field(default_factory=dict)  # parameters held at a value instead of fitted
    table_res: int | None = None  # None: the engine's; 0: one cell per ~1,100 km, i.e. no spatial detail

    def grid(self) -> dict[str, tuple[float, ...]]:
        return {k: v for k, v in GRID.items() if k not in self.fixed}

    def start(self) -> EtaParams:
        return replace(START, **self.fixed)


FULL = Variant("engine")
ABLATIONS = (
    Variant("no lateness term", {"lateness_weight": 0.0}),
    Variant("no driver motion", {"motion_weight": 0.0}),
    Variant("no spatial table (one speed per hour of week)", table_res=0),
    Variant("no lateness, no approach fit", {"lateness_weight": 0.0, "approach_s": 0.0}),
)


def log(message: str) -> None:
    print(f"[eval_eta] {message}", file=sys.stderr, flush=True)


# --- data ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    fix_ms: int
    lat: float
    lng: float
    accuracy: float | None = None  # metres, as the phone reported it (the ride-along traces' hacc)


@dataclass
class Trip:
    trip_id: int
    user: int
    start_ms: int
    end_ms: int  # the real arrival
    origin: tuple[float, float]
    dest: tuple[float, float]
    points: list[Point] = field(default_factory=list)
    # Fixes of the same driver before the trip (the earlier legs of a ride-along trace): they feed the
    # driver's recent pace, as the pipeline's DriverMotion carries over from stop to stop; never predicted from.
    before: list[Point] = field(default_factory=list)

    @property
    def od_m(self) -> float:
        return haversine_m(*self.origin, *self.dest)


def _parse_ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _read_plt(path: Path) -> list[Point]:
    """GeoLife .plt: 6 header lines, then lat,lng,0,altitude_ft,days,date,time (UTC)."""
    points = []
    with path.open(encoding="utf-8") as fh:
        for line in fh.read().splitlines()[6:]:
            parts = line.split(",")
            if len(parts) < 7:
                continue
            when = datetime.strptime(f"{parts[5]} {parts[6]}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            points.append(Point(int(when.timestamp() * 1000), float(parts[0]), float(parts[1])))
    return points


def load_trips(folder: Path = GEOLIFE) -> list[Trip]:
    by_user: dict[int, dict[int, Point]] = {}
    for plt in sorted(folder.glob("*/Trajectory/*.plt")):
        fixes = by_user.setdefault(int(plt.parent.parent.name), {})
        for p in _read_plt(plt):
            fixes.setdefault(p.fix_ms, p)  # the same second twice (overlapping files): keep one
    trips = []
    with (folder / "trips.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            coords = row["geom"].strip()[len("MULTIPOINT ("):-1].split(",")
            (o_lng, o_lat), (d_lng, d_lat) = (tuple(float(v) for v in c.split()) for c in coords)
            trip = Trip(int(row["id"]), int(row["user_id"]), _parse_ts(row["started_at"]),
                        _parse_ts(row["finished_at"]), (o_lat, o_lng), (d_lat, d_lng))
            fixes = by_user.get(trip.user, {})
            trip.points = [fixes[ms] for ms in sorted(fixes) if trip.start_ms <= ms <= trip.end_ms]
            if trip.points:
                trips.append(trip)
    return trips


_GPX = "{http://www.topografix.com/GPX/1/1}"
_TRAILS = "{http://trails.io/GPX/1/0}"  # the recording app's extension: hacc, the fix's horizontal accuracy
PARKING_SEARCH_AFTER_S = 60  # a parking's waypoint is dropped at or just after the truck reaches it
# A stay counts as a parking when the phone keeps within REST_RADIUS_M of where it stopped for the
# geofence engine's dwell time (GeofenceParams.dwell_after_s, 120 s): a red light or a stop sign is shorter.
REST_RADIUS_M = 50.0
REST_MIN_S = 120.0
SAME_PARKING_M = 100.0  # a stay this close to a named parking is that parking (the README's 100 m of jitter)


def _rests(points: Sequence[Point]) -> list[tuple[int, float, float]]:
    """(time, lat, lng) where the phone came to rest: it stayed within REST_RADIUS_M for REST_MIN_S or more.

    A stay still going at the end of the trace counts once it has lasted REST_MIN_S (the
    recording stopped with the truck parked). Each stay is reported once, at its first fix.
    """
    rests = []
    i = 0
    while i < len(points):
        anchor = points[i]
        j = i
        while j + 1 < len(points) and haversine_m(anchor.lat, anchor.lng, points[j + 1].lat,
                                                   points[j + 1].lng) <= REST_RADIUS_M:
            j += 1
        if (points[j].fix_ms - anchor.fix_ms) / 1000 >= REST_MIN_S:
            rests.append((anchor.fix_ms, anchor.lat, anchor.lng))
            i = j + 1
        else:
            i += 1
    return rests


def load_ridealong(folder: Path = RIDEALONG) -> list[Trip]:
    """The ride-along delivery traces as legs: from the previous parking (or the trace's start) to the next parking.

    Parkings are the waypoints named `Park` and those named with a street address (the
    stops served; `Photo` waypoints are not), and the places where the truck came to rest
    for the geofence's dwell time (two minutes) away from those: test1.gpx ends with the
    truck parked for over two minutes at its next delivery, unnamed. A parking's arrival
    is the fix nearest to it (the first of equals) among the fixes after the previous
    arrival and up to a minute after the waypoint's own time (a waypoint is dropped at or
    just after arriving; a truck passes within metres of a stop only when it is there).

    A leg whose first fix is already inside the parking's arrival fence (the default
    75 m stop radius) is not a leg: the truck is there already (test1.gpx starts with the
    truck parked at `Park` and the phone walking around it), the product's geofence
    arrives the stop on that first fix and shows no ETA for it. A leg's points are its
    fixes up to the arrival, so each prediction sees only the fixes before it (`replay`).
    One leg per parking, so leave-one-trip-out holds out a whole leg.
    """
    import xml.etree.ElementTree as ET  # only the evaluation reads GPX

    from chalicelib.geo.geofence import DEFAULT_STOP_RADIUS_M

    trips: list[Trip] = []
    for gpx in sorted(folder.glob("*.gpx")):
        root = ET.parse(gpx).getroot()
        points: list[Point] = []
        for pt in root.iter(f"{_GPX}trkpt"):
            when = pt.findtext(f"{_GPX}time")
            if when:
                hacc = pt.findtext(f".//{_TRAILS}hacc")
                fix = Point(_parse_ts(when.replace("Z", "+00:00")), float(pt.get("lat", "nan")),
                            float(pt.get("lon", "nan")), float(hacc) if hacc else None)
                if not points or fix.fix_ms > points[-1].fix_ms:  # repeated seconds in the trace: keep the first
                    points.append(fix)
        parkings = []
        for wpt in root.iter(f"{_GPX}wpt"):
            name, when = (wpt.findtext(f"{_GPX}name") or "").strip(), wpt.findtext(f"{_GPX}time")
            if name and name != "Photo" and when:
                parkings.append((_parse_ts(when.replace("Z", "+00:00")), float(wpt.get("lat", "nan")),
                                 float(wpt.get("lon", "nan"))))
        named = list(parkings)
        parkings += [rest for rest in _rests(points)
                     if all(haversine_m(rest[1], rest[2], lat, lng) > SAME_PARKING_M for _, lat, lng in named)]
        after_ms = -1
        for wpt_ms, lat, lng in sorted(parkings):
            leg = [p for p in points if after_ms < p.fix_ms <= wpt_ms + PARKING_SEARCH_AFTER_S * 1000]
            if not leg:
                continue
            arrival = min(leg, key=lambda p: (haversine_m(p.lat, p.lng, lat, lng), p.fix_ms))
            leg = [p for p in leg if p.fix_ms <= arrival.fix_ms]
            after_ms = arrival.fix_ms
            if haversine_m(leg[0].lat, leg[0].lng, lat, lng) <= DEFAULT_STOP_RADIUS_M:
                continue  # already at the stop when the leg would start: arrived, no ETA to show
            trips.append(Trip(len(trips), 0, leg[0].fix_ms, arrival.fix_ms, (leg[0].lat, leg[0].lng), (lat, lng), leg,
                              [p for p in points if p.fix_ms < leg[0].fix_ms]))
    return trips


# --- the engine on a trip ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One prediction moment: what the engine knows then, and the truth."""

    trip: int
    position: tuple[float, float]
    now_ms: int
    motion: DriverMotion
    actual_s: float
    dist_m: float


@dataclass(frozen=True, slots=True)
class Prediction:
    expected_s: float
    low_s: float
    high_s: float
    late: bool


def build_table(trips: Sequence[Trip], res: int | None = None) -> SpeedTable:
    table = SpeedTable() if res is None else SpeedTable(res=res, parent_res=res)
    for trip in trips:
        for a, b in itertools.pairwise(trip.points):
            table.observe(a, b)
    return table


def replay(trip: Trip) -> list[Case]:
    """The trip as the engine would see it: fixes arrive in order, a prediction after each."""
    motion = DriverMotion()
    for p in trip.before:
        motion.update(p)
    if trip.before:
        motion.start_leg(trip.points[0].fix_ms, trip.points[0].lat, trip.points[0].lng)  # left the last stop
    cases = []
    for p in trip.points:
        motion.update(p)
        cases.append(Case(trip.trip_id, (p.lat, p.lng), p.fix_ms, copy.copy(motion),
                          (trip.end_ms - p.fix_ms) / 1000, haversine_m(p.lat, p.lng, *trip.dest)))
    return cases


def predict(cases: Sequence[Case], tables: dict[int, SpeedTable], stops: dict[int, list[Stop]],
            params: EtaParams, errors: ErrorModel | None = None) -> list[Prediction]:
    """Per case, through estimate_route itself: seconds from now to the expected arrival and the window ends."""
    out = []
    for c in cases:
        eta = estimate_route(c.position, c.now_ms, stops[c.trip], tables[c.trip], c.motion, params, errors)[0]
        out.append(Prediction((eta.eta_ms - c.now_ms) / 1000, (eta.low_ms - c.now_ms) / 1000,
                              (eta.high_ms - c.now_ms) / 1000, eta.late))
    return out


def fit_params(cases: Sequence[Case], tables: dict[int, SpeedTable], stops: dict[int, list[Stop]],
               variant: Variant = FULL) -> EtaParams:
    """Coordinate descent on MAE over the grid; the approach time, additive, is solved exactly (`_approach_s`)."""

    def score(params: EtaParams) -> tuple[float, EtaParams]:
        preds = predict(cases, tables, stops, replace(params, approach_s=0.0))
        approach = variant.fixed.get("approach_s", _approach_s(cases, preds))
        mae = sum(abs(p.expected_s + approach - c.actual_s) for c, p in zip(cases, preds, strict=True)) / len(cases)
        return mae, replace(params, approach_s=approach)

    best_mae, best = score(variant.start())
    for _ in range(2):
        improved = False
        for name, values in variant.grid().items():
            for value in values:
                if value == getattr(best, name):
                    continue
                change: dict[str, Any] = {name: value}
                mae, candidate = score(replace(best, **change))
                if mae < best_mae - 1e-9:
                    best_mae, best, improved = mae, candidate, True
        if not improved:
            break
    return best


def _approach_s(cases: Sequence[Case], preds: Sequence[Prediction]) -> float:
    """The additive approach time: the median over trips of each trip's median residual.

    Trip by trip rather than pooled, because residuals come in per-trip clumps: pooled,
    the few trips that linger near their destination for most of an hour outvote the
    rest, and a held-out ordinary trip pays minutes for it.
    """
    per_trip: dict[int, list[float]] = {}
    for c, p in zip(cases, preds, strict=True):
        per_trip.setdefault(c.trip, []).append(c.actual_s - p.expected_s)
    return min(MAX_APPROACH_S, max(0.0, statistics.median(statistics.median(r) for r in per_trip.values())))


# --- baselines -----------------------------------------------------------------------


def lade_speed_pace(train: Sequence[Trip]) -> float:
    """LaDe SPEED: total straight-line distance / total time of the history, as a pace (s/m)."""
    return sum((t.end_ms - t.start_ms) / 1000 for t in train) / sum(t.od_m for t in train)


def best_constant_pace(train_cases: Sequence[Case]) -> float:
    """The pace p minimising sum |actual - p * distance|: the distance-weighted median of actual/distance."""
    ratios = sorted((c.actual_s / c.dist_m, c.dist_m) for c in train_cases if c.dist_m > 0)
    half, acc = sum(w for _, w in ratios) / 2, 0.0
    for ratio, weight in ratios:
        acc += weight
        if acc >= half:
            return ratio
    return ratios[-1][0]


# --- metrics -------------------------------------------------------------------------


def metrics(errors_s: Sequence[float]) -> dict[str, float]:
    minutes = [abs(e) / 60 for e in errors_s]
    n = len(minutes)
    return {"mae": sum(minutes) / n, "rmse": math.sqrt(sum(m * m for m in minutes) / n),
            "acc5": sum(m <= 5 for m in minutes) / n, "acc10": sum(m <= 10 for m in minutes) / n}


@dataclass
class FoldResult:
    trip: Trip
    params: EtaParams
    margin: float  # the window's calibrated margin (log ratio)
    engine: list[Prediction]
    actual: list[float]
    lade: list[float]
    best_const: list[float]


def run_fold(k: int, trips: Sequence[Trip], stops: dict[int, list[Stop]],
             replays: dict[int, list[Case]], tables: Callable[[frozenset[int]], SpeedTable],
             variant: Variant = FULL) -> FoldResult:
    test = trips[k]
    train = [t for t in trips if t.trip_id != test.trip_id]
    # Nested: each training trip predicted with a table that excludes it and the test trip.
    nested_tables = {t.trip_id: tables(frozenset({t.trip_id, test.trip_id})) for t in train}
    train_cases = [c for t in train for c in replays[t.trip_id]]
    # Four parameters fitted on a handful of legs fit their quirks (three ride-along legs: a freeway leg held
    # out gets the circuity of a slow city leg); below MIN_TRIPS_TO_FIT the engine runs the shipped
    # defaults, as the product does for a merchant without that much history.
    if len(train) >= MIN_TRIPS_TO_FIT:
        params = fit_params(train_cases, nested_tables, stops, variant)
    else:
        params = replace(DEFAULT_PARAMS, **variant.fixed)
    preds = predict(train_cases, nested_tables, stops, params)
    by_trip: dict[int, list[tuple[float, float, bool]]] = {t.trip_id: [] for t in train}
    for c, p in zip(train_cases, preds, strict=True):
        by_trip[c.trip].append((p.expected_s, c.actual_s, p.late))
    errors = ErrorModel.calibrated(by_trip.values(), level=TARGET_COVERAGE)
    test_cases = replays[test.trip_id]
    engine = predict(test_cases, {test.trip_id: tables(frozenset({test.trip_id}))}, stops, params, errors)
    lade = lade_speed_pace(train)
    best = best_constant_pace(train_cases)
    return FoldResult(test, params, errors.margin, engine, [c.actual_s for c in test_cases],
                      [lade * c.dist_m for c in test_cases], [best * c.dist_m for c in test_cases])


def evaluate(trips: Sequence[Trip], variant: Variant = FULL, verbose: bool = True) -> list[FoldResult]:
    stops = {t.trip_id: [Stop(f"trip-{t.trip_id}", *t.dest)] for t in trips}
    for trip_stops in stops.values():
        plan_route(trip_stops)  # warm the plan cache once per destination
    replays = {t.trip_id: replay(t) for t in trips}
    cache: dict[frozenset[int], SpeedTable] = {}

    def tables(excluded: frozenset[int]) -> SpeedTable:
        if excluded not in cache:
            cache[excluded] = build_table([t for t in trips if t.trip_id not in excluded], variant.table_res)
        return cache[excluded]

    results = []
    for k, trip in enumerate(trips):
        started = time.perf_counter()
        fold = run_fold(k, trips, stops, replays, tables, variant)
        results.append(fold)
        if not verbose:
            continue
        p = fold.params
        log(f"trip {trip.trip_id:>2} ({len(trip.points):>3} fixes, {(trip.end_ms - trip.start_ms) / 60000:5.1f} min, "
            f"O-D {trip.od_m:5.0f} m): MAE engine {metrics(_err(fold.engine, fold.actual))['mae']:5.1f}, "
            f"LaDe {metrics(_diff(fold.lade, fold.actual))['mae']:5.1f}, "
            f"best-constant {metrics(_diff(fold.best_const, fold.actual))['mae']:5.1f} min | "
            f"circuity {p.circuity}, motion {p.motion_weight}, lateness {p.lateness_weight}, "
            f"approach {p.approach_s:.0f} s, window margin {fold.margin:.2f} ({time.perf_counter() - started:.1f} s)")
    return results


def _err(engine: Sequence[Prediction], actual: Sequence[float]) -> list[float]:
    return [e.expected_s - a for e, a in zip(engine, actual, strict=True)]


def _diff(pred: Sequence[float], actual: Sequence[float]) -> list[float]:
    return [p - a for p, a in zip(pred, actual, strict=True)]


def figures(results: Sequence[FoldResult], dataset: str = "geolife") -> list[dict[str, Any]]:
    engine = [e for r in results for e in r.engine]
    actual = [a for r in results for a in r.actual]
    m = metrics(_err(engine, actual))
    lade = metrics(_diff([x for r in results for x in r.lade], actual))
    best = metrics(_diff([x for r in results for x in r.best_const], actual))
    coverage = sum(p.low_s <= a <= p.high_s for p, a in zip(engine, actual, strict=True)) / len(actual)
    widths_min = [(p.high_s - p.low_s) / 60 for p in engine]
    red_lade = 1 - m["mae"] / lade["mae"]
    red_best = 1 - m["mae"] / best["mae"]
    common = {"trips": len(results), "points": len(actual)}

    def line(name: str, value: float, unit: str, target: float | None, better: str, **extra: Any) -> dict[str, Any]:
        met = None if target is None else (value <= target if better == "lower" else value >= target)
        return {"name": name, "dataset": dataset, "value": round(value, 3), "unit": unit, "target": target,
                "met": met, "better": better, **extra}

    return [
        # The issue 16 figures first, per data set (the `dataset` field names it).
        line("eta_mae_best_constant_min", best["mae"], "min", None, "lower",
             of="straight-line distance x the constant pace minimising MAE on the other trips of this data set",
             **common),
        line("eta_gain_vs_best_constant", red_best, "ratio", TARGET_GAIN_VS_BEST_CONSTANT, "higher",
             engine_mae_min=round(m["mae"], 3), best_constant_mae_min=round(best["mae"], 3)),
        line("eta_window_median_width_min", statistics.median(widths_min), "min", TARGET_MEDIAN_WIDTH_MIN, "lower",
             coverage=round(coverage, 3)),
        line("eta_mae_min", m["mae"], "min", round((1 - TARGET_REDUCTION) * lade["mae"], 3), "lower",
             baseline=round(lade["mae"], 3), baseline_best_constant=round(best["mae"], 3), **common),
        line("eta_rmse_min", m["rmse"], "min", None, "lower", baseline=round(lade["rmse"], 3),
             baseline_best_constant=round(best["rmse"], 3)),
        line("eta_acc5", m["acc5"], "share", None, "higher", baseline=round(lade["acc5"], 3),
             baseline_best_constant=round(best["acc5"], 3)),
        line("eta_acc10", m["acc10"], "share", None, "higher", baseline=round(lade["acc10"], 3),
             baseline_best_constant=round(best["acc10"], 3)),
        line("eta_mae_reduction_vs_baseline", red_lade, "ratio", TARGET_REDUCTION, "higher",
             baseline_is="LaDe SPEED: straight-line distance / average speed of the other trips"),
        line("eta_mae_reduction_vs_best_constant", red_best, "ratio", TARGET_REDUCTION, "higher",
             baseline_is="straight-line distance x the constant pace minimising MAE on the other trips"),
        line("eta_window_coverage", coverage, "share", TARGET_COVERAGE, "higher", window_level=TARGET_COVERAGE,
             window_margins=[round(min(r.margin for r in results), 3), round(max(r.margin for r in results), 3)],
             median_width_min=round(statistics.median(widths_min), 2)),
        line("eta_window_width_min", statistics.fmean(widths_min), "min", None, "lower",
             median=round(statistics.median(widths_min), 2),
             p90=round(statistics.quantiles(widths_min, n=10)[-1] if len(widths_min) > 1 else widths_min[0], 2),
             of="mean width of the predicted window (latest - earliest arrival) over all predictions"),
    ]


def in_sample_bound(trips: Sequence[Trip], dataset: str = "geolife") -> dict[str, Any] | None:
    """What the engine's model family reaches on this data at best: parameters fitted with hindsight.

    The parameters (and the best constant) are fitted on every trip, the scored one included; only the speed
    table still leaves each trip out (a table that saw the trip would score its own fixes). Not an estimate of
    accuracy on new trips: an upper bound on the gain a better fit of these four parameters could give, which
    tells a model change from a tuning change. None below MIN_TRIPS_TO_FIT trips (nothing is fitted there).
    """
    if len(trips) < MIN_TRIPS_TO_FIT:
        return None
    stops = {t.trip_id: [Stop(f"trip-{t.trip_id}", *t.dest)] for t in trips}
    tables = {t.trip_id: build_table([u for u in trips if u.trip_id != t.trip_id]) for t in trips}
    cases = [c for t in trips for c in replay(t)]
    params = fit_params(cases, tables, stops)
    engine_s = sum(abs(p.expected_s - c.actual_s) for p, c in zip(predict(cases, tables, stops, params), cases,
                                                                  strict=True))
    pace = best_constant_pace(cases)
    best_s = sum(abs(pace * c.dist_m - c.actual_s) for c in cases)
    gain = round(1 - engine_s / best_s, 3) if best_s else None  # None: the constant is exact, nothing to gain
    return {"name": "eta_gain_vs_best_constant_in_sample", "dataset": dataset, "value": gain,
            "unit": "ratio", "target": None, "better": "higher",
            "engine_mae_min": round(engine_s / len(cases) / 60, 3),
            "best_constant_mae_min": round(best_s / len(cases) / 60, 3),
            "params": {"circuity": params.circuity, "motion_weight": params.motion_weight,
                       "lateness_weight": params.lateness_weight, "approach_s": round(params.approach_s, 1)},
            "of": "parameters and constant fitted on all trips, the scored ones included: the model family's ceiling"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_eta", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=GEOLIFE, help="the geolife_long folder")
    parser.add_argument("--ridealong", type=Path, default=RIDEALONG, help="the ride-along GPX folder")
    parser.add_argument("--ablations", action="store_true",
                        help="also refit with one part of the engine switched off and report its MAE (stderr)")
    args = parser.parse_args(argv)
    datasets: list[tuple[str, list[Trip]]] = []
    if (args.data / "trips.csv").exists():
        datasets.append(("geolife", load_trips(args.data)))
    else:
        log(f"skipped: GeoLife trips not found at {args.data} (a fresh clone has no ../shared/data)")
        print(json.dumps({"name": "eta_mae_min", "dataset": "geolife", "value": None,
                          "skipped": f"no data at {args.data}"}), flush=True)
    if any(args.ridealong.glob("*.gpx")):
        datasets.append(("ridealong", load_ridealong(args.ridealong)))
    else:
        log(f"skipped: ride-along traces not found at {args.ridealong}")
        print(json.dumps({"name": "eta_mae_min", "dataset": "ridealong", "value": None,
                          "skipped": f"no data at {args.ridealong}"}), flush=True)
    for dataset, trips in datasets:
        log(f"{dataset}: {len(trips)} trips, {sum(len(t.points) for t in trips)} fixes; "
            "leave-one-trip-out, a prediction from every fix")
        started = time.perf_counter()
        results = evaluate(trips)
        log(f"{dataset}: done in {time.perf_counter() - started:.0f} s")
        for figure in figures(results, dataset):
            print(json.dumps(figure), flush=True)
        bound = in_sample_bound(trips, dataset)
        if bound is not None:
            print(json.dumps(bound), flush=True)
        if args.ablations:
            for variant in ABLATIONS:
                fig = {f["name"]: f["value"] for f in figures(evaluate(trips, variant, verbose=False), dataset)}
                log(f"{dataset} ablation '{variant.name}': MAE {fig['eta_mae_min']:.2f} min, "
                    f"coverage {fig['eta_window_coverage']:.3f} (mean width {fig['eta_window_width_min']:.1f} min), "
                    f"reduction vs LaDe {fig['eta_mae_reduction_vs_baseline']:.3f}, "
                    f"vs best constant {fig['eta_mae_reduction_vs_best_constant']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
