"""Pure rules of the tracking link (chalicelib.domain.tracking) and the settings that feed them."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from chalicelib.core.config import SettingsError, load_settings
from chalicelib.recipient.rules import (
    INSTRUCTABLE,
    LIVE,
    RECIPIENT_EVENTS,
    REDIRECTABLE,
    RESCHEDULABLE,
    WindowOffer,
    driver_visible,
    first_name,
    link_expired,
    reschedule_slots,
    stops_before,
)
from chalicelib.shipments.lifecycle import ALLOWED, CLOSED, FINAL, ShipmentStatus, check_transition
from chalicelib.web.i18n import Translator

S = ShipmentStatus
NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)  # a Tuesday


def test_links_expire_a_set_time_after_a_closing_status() -> None:
    closed = NOW - timedelta(days=7)
    assert link_expired(S.DELIVERED, closed, 7, NOW)
    assert not link_expired(S.DELIVERED, closed + timedelta(seconds=1), 7, NOW)
    assert link_expired(S.FAILED, closed, 7, NOW) and link_expired(S.CANCELLED, closed, 7, NOW)
    assert not link_expired(S.OUT_FOR_DELIVERY, closed - timedelta(days=100), 7, NOW)  # open: never
    assert not link_expired(S.DELIVERED, None, 7, NOW)
    assert FINAL | {S.FAILED} == CLOSED


def test_stops_before_counts_only_earlier_stops_still_to_be_served() -> None:
    stops = ["a", "b", "c", "d"]
    statuses = {"a": S.DELIVERED, "b": S.APPROACHING, "c": S.RESCHEDULED, "d": S.OUT_FOR_DELIVERY}
    assert stops_before(stops, "a", statuses) == 0
    assert stops_before(stops, "d", statuses) == 1  # a is done, c left the route
    assert stops_before(stops, "d", {**statuses, "a": S.ARRIVED}) == 2
    assert stops_before(stops, "x", statuses) is None


@pytest.mark.parametrize(("status", "ahead", "visible_stops", "shown"), [
    (S.OUT_FOR_DELIVERY, 0, 1, True),
    (S.APPROACHING, 0, 1, True),
    (S.ARRIVED, 0, 1, True),
    (S.OUT_FOR_DELIVERY, 1, 1, False),
    (S.OUT_FOR_DELIVERY, 2, 3, True),
    (S.OUT_FOR_DELIVERY, 3, 3, False),
    (S.OUT_FOR_DELIVERY, 0, 0, False),
    (S.OUT_FOR_DELIVERY, None, 5, False),
    (S.ASSIGNED, 0, 1, False),
    (S.DELIVERED, 0, 1, False),
])
def test_driver_visible_only_while_live_and_near(status: ShipmentStatus, ahead: int | None, visible_stops: int,
                                                 shown: bool) -> None:
    assert driver_visible(status, ahead, visible_stops) is shown


def test_recipient_action_sets_follow_the_lifecycle() -> None:
    # before it is out for delivery, and after a failed attempt (the failed-delivery loop)
    assert {S.CREATED, S.ASSIGNED, S.RESCHEDULED, S.FAILED} == RESCHEDULABLE
    assert {S.FAILED} == REDIRECTABLE and REDIRECTABLE <= RESCHEDULABLE
    for status in RESCHEDULABLE:
        check_transition(status, S.RESCHEDULED)  # every reschedulable status may become rescheduled
        assert status not in LIVE  # never once out for delivery
    assert S.ASSIGNED in ALLOWED[S.RESCHEDULED]  # and can be planned on a route again
    assert INSTRUCTABLE.isdisjoint(FINAL) and S.ARRIVED in INSTRUCTABLE
    t = Translator("en")
    assert all(t.has(f"event.{kind}") for kind in RECIPIENT_EVENTS)
    assert "tracking_link_revoked" not in RECIPIENT_EVENTS and "dwell" not in RECIPIENT_EVENTS


def test_first_name_only() -> None:
    assert first_name("Ada  King Lovelace") == "Ada"
    assert first_name("  ") == "" and first_name(None) == ""


def test_reschedule_slots_on_delivery_days_in_the_local_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    windows = [WindowOffer("morning", time(9), time(12)), WindowOffer("afternoon", time(13), time(17))]
    slots = reschedule_slots(NOW, berlin, days_ahead=5, weekdays=[1, 2, 3, 4, 5], windows=windows)
    # Tue 3 Jun: Wed..Fri, then Sat/Sun skipped (5 calendar days: 4th..8th)
    assert [s.id for s in slots] == ["2025-06-04_morning", "2025-06-04_afternoon", "2025-06-05_morning",
                                     "2025-06-05_afternoon", "2025-06-06_morning", "2025-06-06_afternoon"]
    first = slots[0]
    assert first.start == datetime(2025, 6, 4, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert first.end.astimezone(berlin).hour == 12
    current = (slots[0].start, slots[0].end)
    assert slots[0] not in reschedule_slots(NOW, berlin, days_ahead=5, weekdays=[1, 2, 3, 4, 5], windows=windows,
                                            current=current)
    assert reschedule_slots(NOW, berlin, days_ahead=0, weekdays=[1], windows=windows) == []


def test_reschedule_days_count_from_the_local_date() -> None:
    late_evening_utc = datetime(2025, 6, 3, 23, 30, tzinfo=UTC)  # already Wednesday in Berlin
    slots = reschedule_slots(late_evening_utc, ZoneInfo("Europe/Berlin"), days_ahead=1, weekdays=range(1, 8),
                             windows=[WindowOffer("all-day", time(8), time(18))])
    assert [s.id for s in slots] == ["2025-06-05_all-day"]


def test_tile_url_and_poll_settings_are_validated() -> None:
    base = {"DOORSTEP_STAGE": "test", "DOORSTEP_TABLE_NAME": "tbl", "DOORSTEP_BUCKET_NAME": "bkt",
            "DOORSTEP_PUBLIC_BASE_URL": "https://track.example.com/api/",
            "DOORSTEP_TOKEN_SECRET": "x" * 32}
    settings = load_settings(base)
    assert settings.tile_url is None and settings.tracking_poll_seconds == 15
    assert settings.public_origin == "https://track.example.com" and settings.public_path == "/api"
    tiles = "https://{s}.tile.example.org/{z}/{x}/{y}.png"
    assert load_settings({**base, "DOORSTEP_TILE_URL": tiles}).tile_url == tiles
    assert load_settings({**base, "DOORSTEP_TILE_URL": ""}).tile_url is None  # empty: no tiles
    for bad in ({"DOORSTEP_TILE_URL": "https://tile.example.org/map.png"},
                {"DOORSTEP_TILE_URL": "javascript:alert(1)//{z}{x}{y}"},
                {"DOORSTEP_TRACKING_POLL_SECONDS": "1"}):
        with pytest.raises(SettingsError):
            load_settings({**base, **bad})
