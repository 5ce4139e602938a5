"""The window people are shown (geo/day_window.py): bounded, same local day, labelled, the promise before start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.core.times import to_ms
from chalicelib.geo.day_window import (
    MAX_WIDTH_S,
    MIN_WIDTH_S,
    before_window,
    bounded_estimate,
    max_width_s,
    shown_window,
    zone_label,
)

CHICAGO = ZoneInfo("America/Chicago")
ZONES = [CHICAGO, ZoneInfo("America/Los_Angeles"), ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata"),
         ZoneInfo("Pacific/Auckland"), ZoneInfo("UTC")]
MIN = 60_000
HOUR = 3_600_000


def test_width_rule() -> None:
    assert max_width_s(0) == MIN_WIDTH_S
    assert max_width_s(60 * 60) == MIN_WIDTH_S  # a quarter of an hour is under the floor
    assert max_width_s(4 * 3600) == 3600
    assert max_width_s(3 * 86400) == MAX_WIDTH_S


def test_the_demo_s_multi_day_window_becomes_a_same_day_labelled_one() -> None:
    # Computed at 07:00 CST on Tue 8 Dec; the engine said "07:00 Tue - 01:49 Sat" (a ping 2,800 km away).
    now = datetime(2026, 12, 8, 7, 0, tzinfo=CHICAGO)
    at = to_ms(now)
    shown = shown_window((at, at + 5 * HOUR, at + 90 * HOUR), at, (None, None), CHICAGO)
    assert shown is not None and shown.kind == "estimate" and shown.zone_label == "CST"
    assert shown.earliest is not None and shown.latest is not None
    assert shown.earliest.astimezone(CHICAGO).date() == shown.latest.astimezone(CHICAGO).date() == now.date()
    assert shown.latest - shown.earliest <= timedelta(seconds=MAX_WIDTH_S)


def test_an_expected_arrival_past_midnight_is_later_today_not_tomorrow() -> None:
    now = datetime(2026, 12, 8, 22, 30, tzinfo=CHICAGO)
    at = to_ms(now)
    shown = shown_window((at + HOUR, at + 2 * HOUR, at + 3 * HOUR), at, (None, None), CHICAGO)
    assert shown is not None and shown.kind == "later_today"
    assert shown.earliest is None and shown.latest is None and shown.zone_label == "CST"


def test_an_edge_past_midnight_is_clipped_to_the_day() -> None:
    now = datetime(2026, 12, 8, 23, 30, tzinfo=CHICAGO)
    at = to_ms(now)
    shown = shown_window((at + 5 * MIN, at + 20 * MIN, at + 45 * MIN), at, (None, None), CHICAGO)
    assert shown is not None and shown.kind == "estimate" and shown.latest is not None
    assert shown.latest.astimezone(CHICAGO) == datetime(2026, 12, 8, 23, 59, tzinfo=CHICAGO)


def test_before_the_route_starts_the_promise_is_shown() -> None:
    start = datetime(2026, 12, 8, 15, 0, tzinfo=UTC)
    shown = shown_window(None, None, (start, start + timedelta(hours=3)), CHICAGO)
    assert shown is not None and shown.kind == "promised" and shown.expected is None
    assert (shown.earliest, shown.latest, shown.zone_label) == (start, start + timedelta(hours=3), "CST")
    assert shown_window(None, None, (None, None), CHICAGO) is None


def test_a_stale_estimate_of_a_past_day_shows_the_promise() -> None:
    at = to_ms(datetime(2026, 12, 8, 12, 0, tzinfo=CHICAGO))
    start = datetime(2026, 12, 9, 15, 0, tzinfo=UTC)
    shown = shown_window((at - 30 * HOUR, at - 29 * HOUR, at - 28 * HOUR), at, (start, start + timedelta(hours=2)),
                         CHICAGO)
    assert shown is not None and shown.kind == "promised"


def test_zone_labels() -> None:
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert zone_label(summer, CHICAGO) == "CDT"
    assert zone_label(summer, ZoneInfo("Europe/Berlin")) == "CEST"
    assert zone_label(summer, ZoneInfo("UTC")) == "UTC"


@given(st.integers(to_ms(datetime(2024, 1, 1, tzinfo=UTC)), to_ms(datetime(2030, 1, 1, tzinfo=UTC))),
       st.integers(-2 * HOUR, 200 * HOUR), st.integers(0, 100 * HOUR), st.integers(0, 100 * HOUR),
       st.sampled_from(ZONES))
def test_any_estimate_shows_bounded_same_day_or_later_today(at: int, ahead: int, early: int, late: int,
                                                            zone: ZoneInfo) -> None:
    expected = at + ahead
    shown = shown_window((expected - early, expected, expected + late), at, (None, None), zone)
    day = datetime.fromtimestamp(at / 1000, UTC).astimezone(zone).date()
    if shown is None:  # an estimate for a local day already over: nothing computed is shown (no promise here)
        assert datetime.fromtimestamp(expected / 1000, UTC).astimezone(zone).date() < day
        return
    assert shown.zone_label
    if shown.kind == "estimate":
        assert shown.earliest is not None and shown.latest is not None and shown.expected is not None
        assert shown.earliest <= shown.expected <= shown.latest
        assert (shown.latest - shown.earliest).total_seconds() <= MAX_WIDTH_S
        assert shown.earliest.astimezone(zone).date() == shown.latest.astimezone(zone).date() == day
    else:
        assert shown.kind in ("later_today", "promised") and shown.earliest is None


@given(st.integers(0, 10**12), st.integers(0, 50 * HOUR), st.integers(0, 50 * HOUR), st.integers(-HOUR, 50 * HOUR))
def test_bounded_estimate_keeps_the_expected_inside_and_the_width_capped(at: int, early: int, late: int,
                                                                         ahead: int) -> None:
    expected = at + ahead
    low, mid, high = bounded_estimate(expected - early, expected, expected + late, at)
    assert low <= mid == expected <= high
    assert high - low <= max_width_s(ahead / 1000) * 1000 + 2


def test_read_on_another_day_the_estimate_is_stale_and_the_promise_shows() -> None:
    at = to_ms(datetime(2026, 12, 8, 12, 0, tzinfo=CHICAGO))
    start = datetime(2026, 12, 9, 15, 0, tzinfo=UTC)
    tomorrow = to_ms(datetime(2026, 12, 9, 9, 0, tzinfo=CHICAGO))
    shown = shown_window((at, at + HOUR, at + 2 * HOUR), at, (start, start + timedelta(hours=2)), CHICAGO, tomorrow)
    assert shown is not None and shown.kind == "promised"
    late_night = shown_window((at, at + 14 * HOUR, at + 15 * HOUR), at, (None, None), CHICAGO, tomorrow)
    assert late_night is None  # not "later today" on the next day either


def test_a_window_already_past_says_later_today() -> None:
    at = to_ms(datetime(2026, 12, 8, 12, 0, tzinfo=CHICAGO))
    window = (at + 10 * MIN, at + 20 * MIN, at + 30 * MIN)
    assert shown_window(window, at, (None, None), CHICAGO, at + 25 * MIN).kind == "estimate"  # type: ignore[union-attr]
    lapsed = shown_window(window, at, (None, None), CHICAGO, at + 45 * MIN)
    assert lapsed is not None and lapsed.kind == "later_today" and lapsed.earliest is None


@given(st.integers(to_ms(datetime(2024, 1, 1, tzinfo=UTC)), to_ms(datetime(2030, 1, 1, tzinfo=UTC))),
       st.integers(0, 30 * HOUR), st.integers(-2 * HOUR, 30 * HOUR), st.integers(0, 10 * HOUR),
       st.sampled_from(ZONES))
def test_read_later_an_estimate_is_today_s_or_nothing_computed(at: int, read_after: int, ahead: int, spread: int,
                                                               zone: ZoneInfo) -> None:
    now = at + read_after
    expected = at + ahead
    shown = shown_window((expected - spread, expected, expected + spread), at, (None, None), zone, now)
    today = datetime.fromtimestamp(now / 1000, UTC).astimezone(zone).date()
    if shown is not None and shown.kind == "estimate":
        assert shown.earliest is not None and shown.latest is not None
        assert shown.earliest.astimezone(zone).date() == shown.latest.astimezone(zone).date() == today
        assert to_ms(shown.latest) >= now  # never a window already past


def test_an_estimate_expected_before_the_promised_window_is_early() -> None:
    now = datetime(2026, 12, 8, 11, 0, tzinfo=CHICAGO)
    at = to_ms(now)
    opens, closes = now + timedelta(hours=2), now + timedelta(hours=4)
    shown = shown_window((at + 10 * MIN, at + 15 * MIN, at + 25 * MIN), at, (opens, closes), CHICAGO, at)
    assert shown is not None and shown.kind == "estimate"
    assert before_window(shown, opens)
    assert not before_window(shown, now + timedelta(minutes=15))  # expected exactly at the opening: not early
    assert not before_window(shown, None)  # no promise, nothing to be early for
    inside = shown_window((at + 2 * HOUR, at + 2 * HOUR + 20 * MIN, at + 3 * HOUR), at, (opens, closes), CHICAGO, at)
    assert not before_window(inside, opens)
    promised = shown_window(None, None, (opens, closes), CHICAGO)
    assert promised is not None and not before_window(promised, opens)  # the promise itself is never early
    assert not before_window(None, opens)
