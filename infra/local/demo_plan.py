"""The demo's plan, pure (stdlib only): the GPX trace `make simulate` plays, the stops `make run` puts along it,
the city and time zone they are in, and the day's clock (the route's planned start, each stop's promised window).

Why the demo is planned from the trace: the newcomer runs `make run`, then `make simulate`, and must see the
driver really reach the stops on the tracking pages. So the stops are where the trace's driver stays (parks),
the route's first stops in the order the trace visits them, and the route continues with stops beyond the
trace's end (the rest of the day, "on the way"). The trace is the one `make simulate` plays by default: the
real ride-along trace of ../shared/data when present, else the bundled synthetic one; both are in Seattle's
University District, so the demo merchant is in America/Los_Angeles.

The day's clock (all in the merchant's zone, so "today" is the recipient's today):
    * planned start = now - the trace's length - 10 minutes, never before the local day's start: the
      simulated drive then falls inside the route's day and after its planned start;
    * promised windows: two-hour slots from the planned start's hour, one slot later for every
      `STOPS_PER_SLOT` stops, each clipped to end before the local midnight (at least `MIN_WINDOW`
      long), so no stop is ever promised a window that spans two days.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

PROJECT_DIR = Path(__file__).resolve().parents[2]
BUILTIN_TRACE = PROJECT_DIR / "events" / "demo_trace.gpx"
REAL_TRACE = ("traces", "ridealong", "test1.gpx")

# Where a stop counts as "stayed at": fixes within STAY_RADIUS_M of the stay's first fix for at least
# STAY_MIN_S (a parked truck's 10-60 m jitter stays inside; a passing one does not), and stays closer
# than MERGE_M to the previous stop are the same stop (one parking, the geofences would overlap).
STAY_RADIUS_M = 40.0
STAY_MIN_S = 45.0
MERGE_M = 150.0
# A trace with fewer stays gets pass-by stops on its path (the driver drives through their geofence), at
# least this far from every other stop, so the demo always has a delivered, a failed and an arrived stop.
MIN_VISITED = 3
PASS_BY_GAP_M = 250.0
PASS_BY_MAX_ACCURACY_M = 30.0

LEAD_TIME = timedelta(minutes=10)
SLOT = timedelta(hours=2)
STOPS_PER_SLOT = 3
MIN_WINDOW = timedelta(hours=1)

# Areas the bundled and shared traces and routes lie in: (city, IANA zone, south, north, west, east).
AREAS: tuple[tuple[str, str, float, float, float, float], ...] = (
    ("Seattle", "America/Los_Angeles", 47.2, 48.0, -122.6, -121.9),
    ("Oakland", "America/Los_Angeles", 37.5, 38.0, -122.5, -121.9),
    ("Los Angeles", "America/Los_Angeles", 33.6, 34.5, -118.8, -117.6),
    ("Chicago", "America/Chicago", 41.5, 42.3, -88.3, -87.4),
    ("Boston", "America/New_York", 42.1, 42.6, -71.4, -70.8),
    ("Austin", "America/Chicago", 30.0, 30.6, -98.0, -97.5),
)
# ALMRRC station codes ("D" + metro code + number) -> the metro's zone.
STATION_ZONES = {"CH": "America/Chicago", "LA": "America/Los_Angeles", "SE": "America/Los_Angeles",
                 "BO": "America/New_York", "AU": "America/Chicago"}


@dataclass(frozen=True)
class TraceStop:
    """A place the trace's driver reaches: where it stays (`stay`) or drives through (`pass-by`)."""

    lat: float
    lng: float
    first_fix: int  # index of the trace's first fix inside it: the order of the visits
    kind: str


@dataclass(frozen=True)
class TraceFix:
    time: datetime
    lat: float
    lng: float
    speed: float | None = None
    accuracy: float | None = None
    heading: float | None = None
    altitude: float | None = None


# --- GPX ----------------------------------------------------------------------------------


def _local_name(tag: str) -> str:
    # "{http://www.topografix.com/GPX/1/1}trkpt" -> "trkpt": GPX 1.0/1.1 and every extension
    # vendor (Garmin gpxtpx, trails.io, ...) use their own namespaces for the same ideas.
    return tag.rsplit("}", 1)[-1]


def _number(text: str | None) -> float | None:
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _timestamp(text: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat((text or "").strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # GPX times are UTC


def parse_gpx(path: Path) -> list[TraceFix]:
    """Track points with a time, in time order: lat/lon, ele, and speed/hacc/course from extensions."""
    root = ET.parse(path).getroot()
    fixes: list[TraceFix] = []
    for point in root.iter():
        if _local_name(point.tag) != "trkpt":
            continue
        lat, lng = _number(point.get("lat")), _number(point.get("lon"))
        when = altitude = None
        for child in point:
            name = _local_name(child.tag)
            if name == "time":
                when = _timestamp(child.text)
            elif name == "ele":
                altitude = _number(child.text)
        found: dict[str, float | None] = {}
        for element in point.iter():
            name = _local_name(element.tag)
            if name in {"speed", "hacc", "course"}:
                found[name] = _number(element.text)
        if when is None or lat is None or lng is None:
            continue
        speed, accuracy, heading = found.get("speed"), found.get("hacc"), found.get("course")
        fixes.append(TraceFix(
            time=when, lat=lat, lng=lng,
            speed=speed if speed is not None and speed >= 0 else None,  # -1 means "unknown"
            accuracy=accuracy if accuracy is not None and accuracy >= 0 else None,
            heading=heading if heading is not None and 0 <= heading <= 360 else None,
            altitude=altitude,
        ))
    fixes.sort(key=lambda f: f.time)  # stable: equal times keep file order (the API dedupes them)
    return fixes


def parse_waypoints(path: Path) -> list[tuple[str, float, float]]:
    """GPX waypoints (name, lat, lng): in the ride-along traces these are where the truck parked at a stop."""
    points = []
    for element in ET.parse(path).getroot().iter():
        if _local_name(element.tag) != "wpt":
            continue
        lat, lng = _number(element.get("lat")), _number(element.get("lon"))
        name = next((c.text or "" for c in element if _local_name(c.tag) == "name"), "")
        if lat is not None and lng is not None:
            points.append((name.strip() or "stop", lat, lng))
    return points


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 6_371_000.0 * 2 * math.asin(math.sqrt(a))


def default_trace(data_dir: Path) -> Path:
    """The trace `make simulate` plays and `make run` plans the demo along: the real one when present."""
    real = data_dir.joinpath(*REAL_TRACE)
    return real if real.is_file() else BUILTIN_TRACE


def area_of(lat: float, lng: float) -> tuple[str, str] | None:
    """(city, IANA zone) of a known demo area, None elsewhere."""
    for city, zone, south, north, west, east in AREAS:
        if south <= lat <= north and west <= lng <= east:
            return city, zone
    return None


# --- stops along a trace --------------------------------------------------------------------


def _stays(fixes: Sequence[TraceFix]) -> list[TraceStop]:
    found: list[TraceStop] = []
    i = 0
    while i < len(fixes):
        j = i
        while j + 1 < len(fixes) and distance_m(fixes[i].lat, fixes[i].lng,
                                                fixes[j + 1].lat, fixes[j + 1].lng) <= STAY_RADIUS_M:
            j += 1
        if (fixes[j].time - fixes[i].time).total_seconds() >= STAY_MIN_S:
            group = fixes[i:j + 1]
            lat = sum(f.lat for f in group) / len(group)
            lng = sum(f.lng for f in group) / len(group)
            if not found or distance_m(found[-1].lat, found[-1].lng, lat, lng) >= MERGE_M:
                found.append(TraceStop(round(lat, 6), round(lng, 6), i, "stay"))
            i = j + 1
        else:
            i += 1
    return found


def stops_along_trace(fixes: Sequence[TraceFix], wanted: int = MIN_VISITED) -> list[TraceStop]:
    """The places the trace visits, in visit order: its stays, plus pass-by points on its path (good fixes,
    at least PASS_BY_GAP_M from every other stop, latest gap first filled at its middle) until `wanted`."""
    stops = _stays(fixes)
    while len(stops) < wanted:
        candidates = [(i, f) for i, f in enumerate(fixes)
                      if (f.accuracy is None or f.accuracy <= PASS_BY_MAX_ACCURACY_M)
                      and all(distance_m(s.lat, s.lng, f.lat, f.lng) >= PASS_BY_GAP_M for s in stops)]
        if not candidates:
            break
        # The candidate farthest (in time) from every visited stop: the middle of the longest drive.
        visits = [s.first_fix for s in stops]
        index, fix = max(candidates, key=lambda c: min((abs(c[0] - v) for v in visits), default=c[0]))
        stops.append(TraceStop(round(fix.lat, 6), round(fix.lng, 6), index, "pass-by"))
        stops.sort(key=lambda s: s.first_fix)
    return stops


# --- the day's clock --------------------------------------------------------------------------


def local_day_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of the local day holding `moment`, as aware datetimes in `zone`."""
    day: date = moment.astimezone(zone).date()
    start = datetime.combine(day, dtime(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), dtime(0), tzinfo=zone)
    return start, end


def planned_start(now: datetime, trace_length: timedelta, zone: ZoneInfo) -> datetime:
    """Now - the trace's length - LEAD_TIME, not before the local day's start (see the module docstring)."""
    day_start, _ = local_day_bounds(now, zone)
    return max(day_start, (now - trace_length - LEAD_TIME).astimezone(zone))


def promised_window(start: datetime, position: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The window promised to the stop at `position` (0-based) of a route planned to start at `start`:
    a SLOT-long slot, one slot later every STOPS_PER_SLOT stops, inside the local day of `start`."""
    local = start.astimezone(zone)
    _, day_end = local_day_bounds(local, zone)
    last_second = day_end - timedelta(seconds=1)
    slot_start = local.replace(minute=0, second=0, microsecond=0) + SLOT * (position // STOPS_PER_SLOT)
    opens = min(slot_start, last_second - MIN_WINDOW)
    closes = min(opens + SLOT, last_second)
    return opens.astimezone(UTC), closes.astimezone(UTC)
