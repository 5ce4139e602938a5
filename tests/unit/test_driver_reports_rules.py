"""Driver reports' pure rules: trips and stops, behaviour events with their guards, the score; and what fires
on the real ride-along traces (../shared/data/traces/ridealong)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chalicelib.driver_reports.rules import (
    BehaviourEvent,
    Fix,
    Running,
    Stop,
    Thresholds,
    Trip,
    fold,
    from_json,
    on_duty_ms_by_day,
    score,
    step,
    to_json,
)

T0 = 1_780_000_000_000  # a Thursday
LAT, LNG = 47.66, -122.31
M_PER_DEG_LAT = 111_195.0
UTC_ZONE = ZoneInfo("UTC")


def north(metres: float) -> float:
    return LAT + metres / M_PER_DEG_LAT


def drive(start_s: int, seconds: int, from_m: float, speed_mps: float, every_s: int = 2,
          accuracy: float = 5.0, reported: bool = True) -> list[Fix]:
    return [Fix(T0 + (start_s + i) * 1000, north(from_m + speed_mps * i), LNG, accuracy,
                speed_mps if reported else None) for i in range(0, seconds, every_s)]


def park(start_s: int, seconds: int, at_m: float, every_s: int = 5, jitter_m: float = 0.0,
         accuracy: float = 10.0) -> list[Fix]:
    return [Fix(T0 + (start_s + i) * 1000, north(at_m + (jitter_m if (i // every_s) % 2 else -jitter_m)), LNG,
                accuracy, None) for i in range(0, seconds, every_s)]  # no Doppler speed: no harsh edge


def kinds(closed: list) -> list[str]:
    return [c.kind if isinstance(c, BehaviourEvent) else type(c).__name__ for c in closed]


def test_a_stop_then_a_trip_then_a_stop() -> None:
    fixes = park(0, 300, 0) + drive(300, 200, 0, 10.0) + park(500, 300, 2000)
    running, closed = fold(fixes, Thresholds())
    assert kinds(closed) == ["Stop", "Trip"]
    stop, trip = closed
    assert isinstance(stop, Stop) and isinstance(trip, Trip)
    assert stop.start.ms == T0 and stop.end.ms == T0 + 306_000  # the last fix within the stop's radius
    assert trip.distance_m == pytest.approx(1940, abs=5)  # from where it left the stop (60 m) to the next
    assert trip.max_speed_kmh == pytest.approx(36, rel=0.01)
    assert trip.average_speed_kmh == pytest.approx(trip.distance_m / trip.driving_s * 3.6)
    assert running.stopped and running.day.trips == 1 and running.day.stops == 1


def test_a_parked_phone_jittering_40m_stays_one_stop() -> None:
    fixes = park(0, 600, 0, jitter_m=20.0, accuracy=30.0) + drive(600, 100, 0, 10.0)
    _, closed = fold(fixes, Thresholds())
    assert kinds(closed) == ["Stop"]


def test_vague_fixes_and_teleports_are_ignored() -> None:
    fixes = park(0, 300, 0)
    fixes.insert(10, Fix(T0 + 51_000, north(5000), LNG, 10.0, 0.0))  # 5 km in a second: a teleport
    fixes.insert(20, Fix(T0 + 101_000, north(900), LNG, 900.0, 0.0))  # a cell-tower fix
    running, closed = fold(fixes, Thresholds())
    assert closed == [] and running.stopped and running.trip_start is None


def test_a_bad_fix_before_a_jump_re_anchors_without_distance_or_speed() -> None:
    """A wrong first cluster (e.g. a cold GPS start 5 km off): three fixes in a row at 'impossible' speed from it
    mean the earlier one was wrong; the trace restarts there, with no 5 km trip, no 600 km/h, no speeding."""
    t = Thresholds()
    wrong = [Fix(T0, north(5000), LNG, 10.0, None)]
    right = drive(30, 200, 0, 10.0)
    running, closed = fold(wrong + right, t)
    assert [c for c in closed if isinstance(c, BehaviourEvent)] == []
    assert running.trip_max_kmh == pytest.approx(36, abs=0.5)
    assert running.trip_m < 2100


def test_a_short_hop_does_not_split_the_stop() -> None:
    fixes = park(0, 300, 0) + drive(300, 10, 0, 10.0) + park(310, 300, 100) + drive(610, 200, 100, 10.0)
    _, closed = fold(fixes, Thresholds())
    assert kinds(closed) == ["Stop"]
    assert closed[0].start.ms == T0


def test_speeding_sustained_fires_once_per_episode() -> None:
    t = Thresholds(speeding_kmh=90, speeding_s=20)
    brief = drive(0, 10, 0, 30.0)  # 108 km/h for 10 s: not sustained
    between = drive(10, 40, 300, 20.0)
    long = drive(50, 60, 1100, 30.0)
    slow = drive(110, 30, 2900, 20.0)  # 72 km/h: the episode ends
    again = drive(140, 40, 3500, 30.0)
    _, closed = fold(brief + between + long + slow + again, t)
    speeding = [c for c in closed if isinstance(c, BehaviourEvent) and c.kind == "speeding"]
    assert len(speeding) == 2
    assert speeding[0].value == pytest.approx(108.0)


def test_harsh_braking_needs_good_close_fixes() -> None:
    t = Thresholds()
    # 15 m/s to 9 m/s in 1 s: 0.61 g
    fixes = [*drive(0, 20, 0, 15.0, every_s=1), Fix(T0 + 20_000, north(300), LNG, 5.0, 9.0),
             *drive(21, 20, 309, 9.0, every_s=1)]
    _, closed = fold(fixes, t)
    assert kinds(closed) == ["harsh_braking"]
    assert closed[0].value == pytest.approx(6 / 9.80665, rel=0.01)
    # the same drop over 5 s (too far apart to tell), or with 30 m accuracy, or without Doppler speed: nothing
    gappy = [*drive(0, 20, 0, 15.0, every_s=5), Fix(T0 + 20_000, north(300), LNG, 5.0, 9.0)]
    vague = [Fix(f.ms, f.lat, f.lng, 30.0, f.speed_mps) for f in fixes]
    positions = [Fix(f.ms, f.lat, f.lng, f.accuracy, None) for f in fixes]
    for trace in (gappy, vague, positions):
        assert [c for c in fold(trace, t)[1] if isinstance(c, BehaviourEvent)] == []


def test_harsh_acceleration_and_implausible_jumps() -> None:
    t = Thresholds()
    start = [Fix(T0 + 1000, LAT, LNG, 5.0, 2.0), Fix(T0 + 2000, north(3), LNG, 5.0, 7.0)]  # +5 m/s in 1 s: 0.51 g
    assert kinds(fold(start, t)[1]) == ["harsh_acceleration"]
    glitch = [Fix(T0 + 1000, LAT, LNG, 5.0, 2.0), Fix(T0 + 2000, north(3), LNG, 5.0, 20.0)]  # 1.8 g: a glitch
    assert fold(glitch, t)[1] == []


def test_long_idle_away_from_route_stops_only() -> None:
    t = Thresholds(long_idle_min=15)
    fixes = drive(0, 100, 0, 10.0) + park(100, 1200, 1000)
    _, closed = fold(fixes, t)
    assert "long_idle" in kinds(closed)
    _, near_stop = fold(fixes, t, route_stops=[(north(1000), LNG)])
    assert "long_idle" not in kinds(near_stop)


def summary(c: object) -> tuple[object, ...]:
    if isinstance(c, Trip):
        return ("trip", c.start.ms, c.end.ms, round(c.distance_m), round(c.max_speed_kmh, 1))
    if isinstance(c, Stop):
        return ("stop", c.start.ms, c.end.ms)
    assert isinstance(c, BehaviourEvent)
    return (c.kind, c.at.ms, c.value)


def test_batches_and_the_json_round_trip_give_the_same_answer() -> None:
    fixes = park(0, 300, 0) + drive(300, 200, 0, 30.0, every_s=1) + park(500, 1200, 6000)
    whole, closed = fold(fixes, Thresholds())
    for size in (1, 7, 50):
        batched, closed_b = fold(fixes, Thresholds(), batch=size)
        assert [summary(c) for c in closed_b] == [summary(c) for c in closed]
        assert to_json(batched) == to_json(whole)
    assert to_json(from_json(to_json(whole))) == to_json(whole)
    assert from_json(None) == Running()


def test_step_reports_changed_days_in_the_merchant_zone() -> None:
    zone = ZoneInfo("America/Los_Angeles")
    running = Running()
    out = step(running, park(0, 300, 0) + drive(300, 200, 0, 10.0) + park(500, 300, 2000), Thresholds(), zone)
    day = datetime.fromtimestamp(T0 / 1000, zone).date().isoformat()
    assert list(out.days) == [day] and out.days[day].trips == 1


def test_score() -> None:
    assert score({}, 5_000) is None  # under 10 km
    assert score({}, 100_000) == 100
    assert score({"speeding": 2, "harsh_braking": 1}, 100_000) == 70
    assert score({"long_idle": 2}, 200_000) == 95
    assert score({"speeding": 50}, 100_000) == 0


def test_on_duty_split_at_local_midnight() -> None:
    zone = ZoneInfo("Europe/Berlin")
    start = int(datetime(2026, 3, 28, 22, 0, tzinfo=zone).timestamp() * 1000)
    end = int(datetime(2026, 3, 29, 4, 0, tzinfo=zone).timestamp() * 1000)  # the night clocks go forward
    assert on_duty_ms_by_day([(start, end)], zone) == {"2026-03-28": 2 * 3_600_000, "2026-03-29": 3 * 3_600_000}


# --- the real ride-along traces --------------------------------------------------------------

RIDEALONG = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces" / "ridealong"
GPX = {"g": "http://www.topografix.com/GPX/1/1", "x": "http://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd",
       "t": "http://trails.io/GPX/1/0"}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def ridealong(name: str) -> list[Fix]:
    path = RIDEALONG / name
    if not path.exists():
        pytest.skip(f"real ride-along trace {path} absent (../shared/data is not in a fresh clone)")
    fixes = []
    for p in ET.parse(path).getroot().iter(f"{{{GPX['g']}}}trkpt"):
        speed, hacc = p.findtext(".//x:speed", None, GPX), p.findtext(".//t:hacc", None, GPX)
        fixes.append(Fix(_ms(p.findtext("g:time", "", GPX)), float(p.attrib["lat"]), float(p.attrib["lon"]),
                         None if hacc is None else float(hacc), None if speed is None else float(speed)))
    return fixes


def test_ridealong_seattle_parking_trip_and_one_hard_stop() -> None:
    """test1.gpx, 13.5 min in Seattle's University District (accuracy 8-64 m; 2 s median between fixes).
    - One stop 23:20:48-23:25:37 (289 s): the truck crawls around the parking by the `Park` waypoint and parks
      (the 64 m and 48 m fixes of the first minute are ignored; the 30-60 m jitter does not split it).
    - One trip 23:25:37-23:30:43: 1.59 km, max 37.5 km/h (the phone's speed), average 19 km/h; then a stop in
      progress at the end (not reported: no trip has left it yet).
    - One harsh braking at 23:28:40: the phone's speed fell from 6.66 to 2.13 m/s in one second (0.46 g over
      the 0.45 g default) between two 16 m fixes: a hard stop in a residential street.
    - No speeding (37.5 km/h max), no long idle (the trace is 13.5 min)."""
    running, closed = fold(ridealong("test1.gpx"), Thresholds(), ZoneInfo("America/Los_Angeles"), batch=10)
    assert kinds(closed) == ["Stop", "harsh_braking", "Trip"]
    stop, braking, trip = closed
    assert isinstance(stop, Stop) and stop.duration_s == 289
    assert isinstance(trip, Trip) and trip.distance_m == pytest.approx(1593, abs=5)
    assert trip.max_speed_kmh == pytest.approx(37.5, abs=0.05) and round(trip.average_speed_kmh) == 19
    assert isinstance(braking, BehaviourEvent) and braking.value == pytest.approx(0.46, abs=0.005)
    assert running.stopped


def test_ridealong_oakland_freeway_speeding_twice() -> None:
    """nighttime_drive.gpx, 10 min in Oakland/San Leandro (accuracy 5-14 m). The served stops are drive-bys
    of a few seconds (the truck is still 11:59:09-11:59:14), far below the 2-minute stop: no stop, one trip in
    progress (9.1 km). On the freeway the phone reads up to 104.8 km/h: two speeding episodes over 90 km/h
    for 20 s (12:01:40, max 104.8 km/h; after dropping to 68 km/h at 12:02:22, again at 12:02:41, max 100.1).
    From positions alone (no Doppler speed) the dip is smoothed over: one episode (104.0 km/h). No harsh event:
    of the 159 fix pairs good enough to judge (at most 3 s apart, accuracy within 20 m, Doppler speed at both
    ends), the hardest braking is 0.37 g and the hardest acceleration 0.36 g, under 0.45 g and 0.40 g. (In
    test1.gpx only 24 pairs qualify: its fixes are 16 m and 2+ s apart.)"""
    fixes = ridealong("nighttime_drive.gpx")
    running, closed = fold(fixes, Thresholds(), ZoneInfo("America/Los_Angeles"), batch=10)
    assert kinds(closed) == ["speeding", "speeding"]
    assert [c.value for c in closed if isinstance(c, BehaviourEvent)] == [104.8, 100.1]
    assert running.trip_m == pytest.approx(9133, abs=10) and not running.stopped
    positions = [Fix(f.ms, f.lat, f.lng, f.accuracy, None) for f in fixes]
    assert kinds(fold(positions, Thresholds(), batch=10)[1]) == ["speeding"]
    assert not math.isnan(running.trip_max_kmh)
