"""Driver reports from phone fixes, pure: trips and stops, behaviour events, day totals, the score.

One fold (`step`) over a driver's fixes in fix-time order, with a compact running state (`Running`) that the
stream pipeline keeps on the driver's state item between batches. What closes (a trip, a stop, an event) comes
out as `Closed` items with keys derived from fix times only, so a re-run writes the same items.

Segmentation (Traccar's "motion" model, with guards): the driver is stopped once it stays within
`stop_radius_m` of an anchor fix for `stop_min_s`; it leaves the stop at the first good fix outside that radius.
A trip runs from the end of one stop to the start of the next. Guards, because a parked van's phone jitters by
30-60 m (see the data README) and Wi-Fi/cell fixes are kilometres off:
- a fix with horizontal accuracy worse than `max_accuracy_m` is ignored;
- a fix implying a speed above `max_speed_kmh` from the last good fix is a teleport and ignored (three in a row
  re-anchor there: the earlier fix was the bad one);
- a stop ends only when the driver goes beyond the stop radius plus the worse of the two accuracies;
- a stop is reported only once the trip after it has gone `min_trip_m` (a short hop in a car park is not a
  trip: the stop continues).

Behaviour events:
- speeding: speed over the merchant's threshold for `speeding_s` (once per episode; the episode ends when the
  speed drops 5 km/h below the threshold);
- harsh braking / acceleration: the change of speed between two consecutive good fixes, each at most
  `harsh_max_gap_s` apart, both with accuracy at most `harsh_max_accuracy_m`, over at least `harsh_min_speed_kmh`
  at one end, and below `harsh_max_g` (beyond it the change is GPS noise, not a van): at most one per 10 s;
  speeds are the phone's reported (Doppler) speed when it has one, else from positions (noisier: the
  position-derived speed needs both fixes' accuracy within 10 m);
- long idle: a stop lasting `long_idle_min` further than `idle_away_m` from every stop of the driver's route
  (once per stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from chalicelib.geo.cells import haversine_m

G = 9.80665  # m/s² per g

EventKind = Literal["speeding", "harsh_braking", "harsh_acceleration", "long_idle"]
EVENT_KINDS: tuple[EventKind, ...] = ("speeding", "harsh_braking", "harsh_acceleration", "long_idle")


@dataclass(frozen=True, slots=True)
class Fix:
    ms: int
    lat: float
    lng: float
    accuracy: float | None = None
    speed_mps: float | None = None  # the phone's own speed (Doppler); None or negative: unknown


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A merchant's report settings (defaults in brackets are Traccar's or common fleet-telematics values)."""

    speeding_kmh: float = 90.0
    speeding_s: float = 20.0
    harsh_braking_g: float = 0.45
    harsh_acceleration_g: float = 0.40
    long_idle_min: float = 15.0
    stop_radius_m: float = 60.0
    stop_min_s: float = 120.0
    min_trip_m: float = 300.0
    max_accuracy_m: float = 35.0
    max_speed_kmh: float = 160.0
    harsh_max_gap_s: float = 3.0
    harsh_max_accuracy_m: float = 20.0
    harsh_min_speed_kmh: float = 10.0
    harsh_max_g: float = 1.0
    idle_away_m: float = 150.0


@dataclass
class Totals:
    """A day's sums: distance in metres, driving and stopped time in seconds, counts."""

    key: str = ""
    distance_m: float = 0.0
    driving_s: float = 0.0
    stopped_s: float = 0.0
    trips: int = 0
    stops: int = 0
    max_speed_kmh: float = 0.0
    events: dict[str, int] = field(default_factory=dict)

    def to_list(self) -> list[Any]:
        return [self.key, round(self.distance_m, 2), self.driving_s, self.stopped_s, self.trips, self.stops,
                round(self.max_speed_kmh, 2), [self.events.get(k, 0) for k in EVENT_KINDS]]

    @staticmethod
    def from_list(raw: list[Any]) -> Totals:
        return Totals(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6],
                      {k: n for k, n in zip(EVENT_KINDS, raw[7], strict=True) if n})


@dataclass
class Running:
    """The fold's state between batches (JSON-compact through to_json/from_json: fixes as the chunks hold them,
    sums to the centimetre). About 400 bytes on the pipeline's state item."""

    last: Fix | None = None  # the last good fix
    rejected: int = 0  # teleports in a row
    anchor: Fix | None = None  # first fix of the current still cluster
    stopped: bool = False
    stop_start: Fix | None = None  # the stop in progress (also kept during a too-short hop after it)
    stop_emitted: bool = True  # the stop in progress was already reported (a trip left it)
    idle_fired: bool = False
    trip_start: Fix | None = None
    trip_m: float = 0.0
    pending_m: float = 0.0  # distance since the anchor: jitter if a stop follows, driving otherwise
    trip_max_kmh: float = 0.0
    speeding_since: int | None = None
    speeding_fired: bool = False
    speeding_max_kmh: float = 0.0
    harsh_ms: int = 0  # the last harsh event (debounce)
    day: Totals = field(default_factory=Totals)  # the newest local day's (the scorecard's week sums the days)


def _fix_list(f: Fix | None) -> list[Any] | None:
    if f is None:
        return None
    return [f.ms, f.lat, f.lng, f.accuracy, f.speed_mps]  # unrounded: a batch boundary changes nothing


def _fix_of(raw: list[Any] | None) -> Fix | None:
    return None if raw is None else Fix(int(raw[0]), float(raw[1]), float(raw[2]), raw[3], raw[4])


def to_json(r: Running) -> dict[str, Any]:
    return {"l": _fix_list(r.last), "rj": r.rejected, "a": _fix_list(r.anchor), "s": int(r.stopped),
            "ss": _fix_list(r.stop_start), "se": int(r.stop_emitted), "if": int(r.idle_fired),
            "ts": _fix_list(r.trip_start), "tm": round(r.trip_m, 2), "pm": round(r.pending_m, 2),
            "tx": round(r.trip_max_kmh, 2),
            "sp": [r.speeding_since, int(r.speeding_fired), round(r.speeding_max_kmh, 2)],
            "hm": r.harsh_ms, "d": r.day.to_list()}


def from_json(raw: dict[str, Any] | None) -> Running:
    if not raw:
        return Running()
    sp = raw["sp"]
    return Running(_fix_of(raw["l"]), raw["rj"], _fix_of(raw["a"]), bool(raw["s"]), _fix_of(raw["ss"]),
                   bool(raw["se"]), bool(raw["if"]), _fix_of(raw["ts"]), raw["tm"], raw["pm"], raw["tx"], sp[0],
                   bool(sp[1]), sp[2], raw["hm"], Totals.from_list(raw["d"]))


# --- what closes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Trip:
    start: Fix
    end: Fix
    distance_m: float
    max_speed_kmh: float

    @property
    def driving_s(self) -> float:
        return (self.end.ms - self.start.ms) / 1000

    @property
    def average_speed_kmh(self) -> float:
        return self.distance_m / self.driving_s * 3.6 if self.driving_s > 0 else 0.0


@dataclass(frozen=True)
class Stop:
    start: Fix
    end: Fix

    @property
    def duration_s(self) -> float:
        return (self.end.ms - self.start.ms) / 1000


@dataclass(frozen=True)
class BehaviourEvent:
    kind: EventKind
    at: Fix
    value: float  # km/h for speeding (the episode's max so far), g for harsh events, minutes for long idle
    threshold: float


Closed = Trip | Stop | BehaviourEvent


@dataclass
class Outcome:
    closed: list[Closed] = field(default_factory=list)
    days: dict[str, Totals] = field(default_factory=dict)  # every day whose totals changed


def local_day(ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).date()


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _speed_kmh(a: Fix, b: Fix) -> float:
    dt = (b.ms - a.ms) / 1000
    return haversine_m(a.lat, a.lng, b.lat, b.lng) / dt * 3.6 if dt > 0 else 0.0


def _reported_kmh(f: Fix) -> float | None:
    return f.speed_mps * 3.6 if f.speed_mps is not None and f.speed_mps >= 0 else None


def _acc(f: Fix) -> float:
    return f.accuracy if f.accuracy is not None and f.accuracy >= 0 else 0.0


# --- the fold ----------------------------------------------------------------------------


def step(r: Running, fixes: list[Fix], t: Thresholds, zone: ZoneInfo,
         route_stops: list[tuple[float, float]] | None = None) -> Outcome:
    """Fold new fixes (fix-time order, none at or before `r.last`) into `r`; return what closed and which
    day totals changed. Deterministic in (r, fixes)."""
    out = Outcome()
    for fix in fixes:
        _one(r, fix, t, zone, route_stops or [], out)
    return out


def _count(r: Running, now_ms: int, zone: ZoneInfo, out: Outcome, *, distance_m: float = 0.0, driving_s: float = 0.0,
           stopped_s: float = 0.0, trips: int = 0, stops: int = 0, max_kmh: float = 0.0,
           event: str | None = None) -> None:
    # Counted on the local day of the fix that closes it (trips by their end, stops when the trip after them
    # proves real): always the newest day, so a day's totals, once left, are final and its item never rewritten.
    key = local_day(now_ms, zone).isoformat()
    totals = r.day
    if totals.key != key:
        totals = r.day = Totals(key)
    totals.distance_m += distance_m
    totals.driving_s += driving_s
    totals.stopped_s += stopped_s
    totals.trips += trips
    totals.stops += stops
    totals.max_speed_kmh = max(totals.max_speed_kmh, max_kmh)
    if event is not None:
        totals.events[event] = totals.events.get(event, 0) + 1
    out.days[key] = replace(totals, events=dict(totals.events))


def _one(r: Running, fix: Fix, t: Thresholds, zone: ZoneInfo, route_stops: list[tuple[float, float]],
         out: Outcome) -> None:
    if fix.accuracy is not None and fix.accuracy > t.max_accuracy_m:
        return
    last = r.last
    if last is None:
        r.last = r.anchor = fix
        return
    if fix.ms <= last.ms:
        return
    derived = _speed_kmh(last, fix)
    if derived > t.max_speed_kmh:
        if r.rejected < 2:
            r.rejected += 1
            return
        # A third in a row: the earlier fix was the bad one. Start again from here: no distance, no speed,
        # no behaviour from the jump (a stop under way ends if this is beyond it, at the next fix).
        r.rejected = 0
        r.last = fix
        if not r.stopped:
            r.anchor, r.pending_m = fix, 0.0
        return
    step_m = haversine_m(last.lat, last.lng, fix.lat, fix.lng)
    r.rejected = 0
    reported = _reported_kmh(fix)
    speed = reported if reported is not None else derived
    _behaviour(r, last, fix, speed, t, zone, out)
    r.last = fix
    anchor = r.anchor or fix
    away = haversine_m(anchor.lat, anchor.lng, fix.lat, fix.lng)
    if r.stopped:
        if away <= t.stop_radius_m + max(_acc(anchor), _acc(fix)):
            _idle(r, fix, t, zone, route_stops, out)
            return
        r.stopped = False  # leaving: a trip starts at the last fix of the stop
        r.trip_start, r.trip_m, r.trip_max_kmh = last, step_m, speed
        r.anchor, r.pending_m = fix, 0.0
        _maybe_emit_stop(r, t, zone, out, fix.ms)
        return
    r.trip_max_kmh = max(r.trip_max_kmh, speed)
    if away <= t.stop_radius_m:
        r.pending_m += step_m
        if fix.ms - anchor.ms >= t.stop_min_s * 1000:
            _stop_begins(r, anchor, t, zone, out, fix.ms)
        return
    r.trip_m += r.pending_m + step_m
    r.pending_m = 0.0
    r.anchor = fix
    if r.trip_start is None:
        r.trip_start = anchor  # the first movement seen: the trip starts where the fixes began
    _maybe_emit_stop(r, t, zone, out, fix.ms)


def _maybe_emit_stop(r: Running, t: Thresholds, zone: ZoneInfo, out: Outcome, now_ms: int) -> None:
    """The stop before the current trip is reported once the trip is long enough to be one."""
    if r.stop_emitted or r.stop_start is None or r.trip_start is None or r.trip_m < t.min_trip_m:
        return
    stop = Stop(r.stop_start, r.trip_start)
    out.closed.append(stop)
    _count(r, now_ms, zone, out, stopped_s=stop.duration_s, stops=1)
    r.stop_emitted = True


def _stop_begins(r: Running, anchor: Fix, t: Thresholds, zone: ZoneInfo, out: Outcome, now_ms: int) -> None:
    r.stopped = True
    r.pending_m = 0.0
    trip_start = r.trip_start
    if trip_start is not None and r.trip_m >= t.min_trip_m:
        trip = Trip(trip_start, anchor, r.trip_m, r.trip_max_kmh)
        out.closed.append(trip)
        _count(r, now_ms, zone, out, distance_m=trip.distance_m, driving_s=trip.driving_s, trips=1,
               max_kmh=trip.max_speed_kmh)
        r.stop_start, r.stop_emitted, r.idle_fired = anchor, False, False
    elif r.stop_start is None or trip_start is None:
        r.stop_start, r.stop_emitted, r.idle_fired = anchor, False, False  # the first stop seen
    # else: a hop shorter than a trip: the previous stop goes on (its start, emitted flag and idle flag stay)
    r.trip_start, r.trip_m, r.trip_max_kmh = None, 0.0, 0.0


def _idle(r: Running, fix: Fix, t: Thresholds, zone: ZoneInfo, route_stops: list[tuple[float, float]],
          out: Outcome) -> None:
    start = r.stop_start
    if r.idle_fired or start is None or fix.ms - start.ms < t.long_idle_min * 60_000:
        return
    if any(haversine_m(start.lat, start.lng, lat, lng) <= t.idle_away_m for lat, lng in route_stops):
        return
    r.idle_fired = True
    event = BehaviourEvent("long_idle", start, round((fix.ms - start.ms) / 60_000, 1), t.long_idle_min)
    out.closed.append(event)
    _count(r, fix.ms, zone, out, event="long_idle")


def _behaviour(r: Running, last: Fix, fix: Fix, speed_kmh: float, t: Thresholds, zone: ZoneInfo,
               out: Outcome) -> None:
    # speeding, sustained, once per episode
    if speed_kmh > t.speeding_kmh:
        if r.speeding_since is None:
            r.speeding_since, r.speeding_fired, r.speeding_max_kmh = fix.ms, False, speed_kmh
        r.speeding_max_kmh = max(r.speeding_max_kmh, speed_kmh)
        if not r.speeding_fired and fix.ms - r.speeding_since >= t.speeding_s * 1000:
            r.speeding_fired = True
            out.closed.append(BehaviourEvent("speeding", replace(fix, ms=r.speeding_since),
                                             round(r.speeding_max_kmh, 1), t.speeding_kmh))
            _count(r, fix.ms, zone, out, event="speeding")
    elif speed_kmh < t.speeding_kmh - 5 or fix.ms - last.ms > 60_000:
        r.speeding_since, r.speeding_fired, r.speeding_max_kmh = None, False, 0.0
    # harsh braking / acceleration from consecutive good fixes
    g = harsh_g(last, fix, t)
    if g is None or fix.ms - r.harsh_ms < 10_000:
        return
    kind: EventKind | None = None
    if g <= -t.harsh_braking_g:
        kind, threshold = "harsh_braking", t.harsh_braking_g
    elif g >= t.harsh_acceleration_g:
        kind, threshold = "harsh_acceleration", t.harsh_acceleration_g
    if kind is not None:
        r.harsh_ms = fix.ms
        out.closed.append(BehaviourEvent(kind, fix, round(abs(g), 2), threshold))
        _count(r, fix.ms, zone, out, event=kind)


def harsh_g(a: Fix, b: Fix, t: Thresholds) -> float | None:
    """Longitudinal acceleration in g between two fixes, or None when the pair is not good enough to tell."""
    dt = (b.ms - a.ms) / 1000
    if not 0 < dt <= t.harsh_max_gap_s or _acc(a) > t.harsh_max_accuracy_m or _acc(b) > t.harsh_max_accuracy_m:
        return None
    va, vb = _reported_kmh(a), _reported_kmh(b)
    if va is None or vb is None:
        return None  # positions alone: a speed needs two fixes, a change three; 5 m of error is 18 km/h in 1 s
    if max(va, vb) < t.harsh_min_speed_kmh:
        return None
    g = (vb - va) / 3.6 / dt / G
    return g if abs(g) <= t.harsh_max_g else None


# --- the scorecard -------------------------------------------------------------------------

EVENT_WEIGHTS: dict[str, float] = {"speeding": 1.0, "harsh_braking": 1.0, "harsh_acceleration": 1.0,
                                   "long_idle": 0.5}
SCORE_MIN_KM = 10.0  # below this a rate per 100 km says nothing


def events_per_100km(events: dict[str, int], distance_m: float) -> float | None:
    if distance_m / 1000 < SCORE_MIN_KM:
        return None
    weighted = sum(EVENT_WEIGHTS.get(kind, 1.0) * n for kind, n in events.items())
    return weighted / (distance_m / 100_000)


def score(events: dict[str, int], distance_m: float) -> int | None:
    """100 for no events; 10 points off per weighted event per 100 km (a speeding episode, a harsh brake or
    start count 1, a long idle 0.5), floored at 0; None under 10 km (too little driving to score)."""
    rate = events_per_100km(events, distance_m)
    return None if rate is None else max(0, round(100 - 10 * rate))


def on_duty_ms_by_day(shifts: list[tuple[int, int]], zone: ZoneInfo) -> dict[str, int]:
    """Milliseconds on duty per local day from (start ms, end ms) shifts, a shift over midnight split."""
    out: dict[str, int] = {}
    for start, end in shifts:
        at = start
        while at < end:
            day = local_day(at, zone)
            after = day + timedelta(days=1)  # the local midnight (days of 23 or 25 hours included)
            midnight = int(datetime(after.year, after.month, after.day, tzinfo=zone).timestamp() * 1000)
            upto = min(end, midnight)
            out[day.isoformat()] = out.get(day.isoformat(), 0) + (upto - at)
            at = upto
    return out


def fold(fixes: list[Fix], t: Thresholds, zone: ZoneInfo | None = None,
         route_stops: list[tuple[float, float]] | None = None, batch: int = 0) -> tuple[Running, list[Closed]]:
    """A whole trace at once (or in batches of `batch`, through the JSON round trip, as the pipeline does)."""
    running, closed = Running(), []
    ordered = sorted(fixes, key=lambda f: f.ms)
    size = batch or len(ordered) or 1
    for i in range(0, len(ordered), size):
        running = from_json(to_json(running))
        closed.extend(step(running, ordered[i:i + size], t, zone or ZoneInfo("UTC"), route_stops).closed)
    return running, closed
