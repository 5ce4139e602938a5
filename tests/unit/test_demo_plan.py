"""The demo's plan (infra/local/demo_plan.py): stops the simulated driver really reaches, the merchant's zone,
a planned start inside the local day, promised windows that never span two days, and the proof photo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.geo.geofence import DEFAULT_STOP_RADIUS_M, EXIT_FACTOR, MIN_EXIT_GAP_M
from chalicelib.shipments.rules import MIN_BYTES, sniff_image
from infra.local.demo_plan import (
    BUILTIN_TRACE,
    MIN_VISITED,
    MIN_WINDOW,
    PASS_BY_GAP_M,
    SLOT,
    TraceFix,
    area_of,
    distance_m,
    local_day_bounds,
    parse_gpx,
    planned_start,
    promised_window,
    stops_along_trace,
)
from infra.local.simulate import demo_photo, playback_offset
from tests.conftest import shared_path

SEATTLE = ZoneInfo("America/Los_Angeles")


def _entered(fixes: list[TraceFix], lat: float, lng: float) -> bool:
    """The geofence's enter rule (chalicelib/geo/geofence.py): the whole accuracy circle inside the stop's circle."""
    return any(distance_m(lat, lng, f.lat, f.lng) + (f.accuracy or 0.0) <= DEFAULT_STOP_RADIUS_M for f in fixes)


def _started_outside(fixes: list[TraceFix], lat: float, lng: float) -> bool:
    return distance_m(lat, lng, fixes[0].lat, fixes[0].lng) > DEFAULT_STOP_RADIUS_M


@pytest.mark.parametrize("trace", ["builtin", "ridealong"])
def test_the_simulated_driver_enters_every_stop_on_the_trace_in_visit_order(trace: str) -> None:
    path = BUILTIN_TRACE if trace == "builtin" else shared_path("traces", "ridealong", "test1.gpx")
    fixes = parse_gpx(path)
    stops = stops_along_trace(fixes)
    assert len(stops) >= MIN_VISITED
    assert [s.first_fix for s in stops] == sorted(s.first_fix for s in stops)
    for stop in stops:
        assert _entered(fixes, stop.lat, stop.lng), stop
        assert _started_outside(fixes, stop.lat, stop.lng), stop  # so "arrived" fires, not a start inside
    # The trace ends at its last stop: once in, no later fix crosses the exit line (max(1.5 r, r + 50 m)
    # beyond the accuracy circle), so the demo's last stop stays "arrived": the driver is at that door now.
    last = stops[-1]
    exit_line = max(DEFAULT_STOP_RADIUS_M * EXIT_FACTOR, DEFAULT_STOP_RADIUS_M + MIN_EXIT_GAP_M)
    entry = next(i for i, f in enumerate(fixes)
                 if distance_m(last.lat, last.lng, f.lat, f.lng) + (f.accuracy or 0.0) <= DEFAULT_STOP_RADIUS_M)
    assert all(distance_m(last.lat, last.lng, f.lat, f.lng) <= exit_line + (f.accuracy or 0.0) for f in fixes[entry:])
    for a, b in pairwise(stops):  # geofences never overlap
        assert distance_m(a.lat, a.lng, b.lat, b.lng) >= 2 * DEFAULT_STOP_RADIUS_M


def test_the_bundled_trace_yields_its_five_parkings() -> None:
    stops = stops_along_trace(parse_gpx(BUILTIN_TRACE))
    assert [s.kind for s in stops] == ["stay"] * 5


def test_a_trace_with_one_stay_gets_pass_by_stops_on_its_path() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    # 20 minutes driving north at ~8 m/s (a fix a 10 s), then a 2-minute stay.
    fixes = [TraceFix(start + timedelta(seconds=10 * i), 47.60 + 0.00072 * i, -122.33, accuracy=8.0)
             for i in range(120)]
    fixes += [TraceFix(fixes[-1].time + timedelta(seconds=10 * i), fixes[-1].lat, -122.33, accuracy=8.0)
              for i in range(1, 13)]
    stops = stops_along_trace(fixes)
    assert [s.kind for s in stops].count("stay") == 1 and len(stops) == MIN_VISITED
    for i, a in enumerate(stops):
        assert _entered(fixes, a.lat, a.lng)
        for b in stops[i + 1:]:
            assert distance_m(a.lat, a.lng, b.lat, b.lng) >= PASS_BY_GAP_M


def test_a_trace_shorter_than_the_gap_keeps_what_it_has() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    parked = [TraceFix(start + timedelta(seconds=10 * i), 47.6, -122.33, accuracy=5.0) for i in range(12)]
    assert len(stops_along_trace(parked)) == 1


def test_the_traces_are_in_seattle_time() -> None:
    first = parse_gpx(BUILTIN_TRACE)[0]
    assert area_of(first.lat, first.lng) == ("Seattle", "America/Los_Angeles")
    assert area_of(41.88, -87.63) == ("Chicago", "America/Chicago")
    assert area_of(0.0, 0.0) is None


def test_planned_start_precedes_the_simulated_drive_on_the_local_day() -> None:
    now = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)  # 12:00 in Seattle
    assert planned_start(now, timedelta(minutes=13), SEATTLE) == now - timedelta(minutes=23)
    just_after_midnight = datetime(2026, 12, 4, 8, 5, tzinfo=UTC)  # 00:05 in Seattle: clipped to the day's start
    clipped = planned_start(just_after_midnight, timedelta(minutes=13), SEATTLE)
    assert clipped == datetime(2026, 12, 4, 0, 0, tzinfo=SEATTLE)
    # 17:30 in Seattle is already tomorrow in UTC: the local date is what counts.
    evening = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)
    assert planned_start(evening, timedelta(minutes=13), SEATTLE).date().isoformat() == "2026-12-04"


@settings(max_examples=300, deadline=None)
@given(now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
       minutes=st.integers(0, 180), position=st.integers(0, 300),
       zone=st.sampled_from(["America/Los_Angeles", "America/Chicago", "America/New_York", "UTC"]))
def test_every_promised_window_lies_inside_the_route_s_local_day(now: datetime, minutes: int, position: int,
                                                                 zone: str) -> None:
    tz = ZoneInfo(zone)
    start = planned_start(now, timedelta(minutes=minutes), tz)
    opens, closes = promised_window(start, position, tz)
    day_start, day_end = local_day_bounds(start, tz)
    assert day_start <= opens < closes < day_end
    assert MIN_WINDOW <= closes - opens <= SLOT
    assert opens.astimezone(tz).date() == closes.astimezone(tz).date() == start.date()


def test_windows_move_one_slot_every_three_stops() -> None:
    start = datetime(2026, 12, 4, 9, 40, tzinfo=SEATTLE)
    opened = [promised_window(start, i, SEATTLE)[0].astimezone(SEATTLE).hour for i in range(7)]
    assert opened == [9, 9, 9, 11, 11, 11, 13]


def test_the_demo_photo_is_a_real_png_the_api_accepts() -> None:
    photo = demo_photo()
    assert sniff_image(photo[:16]) == "image/png"
    assert len(photo) >= MIN_BYTES


def test_the_drive_ends_now_unless_the_driver_has_a_later_fix() -> None:
    fixes = parse_gpx(BUILTIN_TRACE)
    length = fixes[-1].time - fixes[0].time
    now = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    assert fixes[-1].time + playback_offset(fixes, now, None) == now
    assert fixes[-1].time + playback_offset(fixes, now, now - timedelta(hours=1)) == now
    # A ping posted by hand 2 minutes ago: the drive starts just after it, and ends in the future
    # (play() posts those fixes as real time reaches them).
    recent = now - timedelta(minutes=2)
    offset = playback_offset(fixes, now, recent)
    assert fixes[0].time + offset == recent + timedelta(seconds=1)
    assert fixes[-1].time + offset == recent + timedelta(seconds=1) + length


class _FakeClock:
    """time.monotonic / time.sleep / datetime.now for play(): sleeping advances the wall clock."""

    def __init__(self, wall: datetime) -> None:
        self.wall, self.elapsed = wall, 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.elapsed += seconds

    def now(self) -> datetime:
        return self.wall + timedelta(seconds=self.elapsed)


def test_a_drive_after_the_route_start_is_posted_as_real_time_reaches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from infra.local import simulate
    from infra.local.stack import HttpResult

    fixes = parse_gpx(BUILTIN_TRACE)
    length = fixes[-1].time - fixes[0].time
    wall = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
    clock = _FakeClock(wall)
    posted: list[tuple[datetime, list[datetime]]] = []

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: object = None) -> FakeDatetime:  # type: ignore[override]
            return clock.now()  # type: ignore[return-value]

    def fake_post(url: str, token: str, pings: list[dict[str, object]]) -> HttpResult:
        posted.append((clock.now(), [datetime.fromisoformat(str(p["fix_time"])) for p in pings]))
        return HttpResult(200, {}, {"accepted": len(pings), "duplicates": 0, "rejected": 0, "items": []})

    monkeypatch.setattr(simulate, "time", clock)
    monkeypatch.setattr(simulate, "datetime", FakeDatetime)
    monkeypatch.setattr(simulate, "_post", fake_post)
    route_start = wall - timedelta(minutes=3)  # `make simulate` three minutes after `make run`
    out = io.StringIO()
    tally = simulate.play({"base_url": "http://x", "driver_token": "t"}, fixes, speed=1000.0, batch=25,
                          out=out, not_before=route_start)
    assert tally.accepted == len(fixes)
    sent = [moment for _, moments in posted for moment in moments]
    assert min(sent) > route_start  # nothing before the route started
    assert max(sent) == route_start + timedelta(seconds=1) + length
    for at, moments in posted:  # a phone never reports the future (beyond the API's slack)
        assert max(moments) <= at + simulate.FUTURE_SLACK
    assert "plays in real time" in out.getvalue()
    # It took about the part of the drive that was still ahead, not the whole trace at 1000x.
    assert clock.elapsed >= (length - timedelta(minutes=3) - simulate.FUTURE_SLACK).total_seconds() - 1
