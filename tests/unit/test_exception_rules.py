"""The exception queue's pure rules: the state machine, ids, stillness, the detectors and local hours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.exceptions.rules import (
    STILL_RADIUS_M,
    ExceptionKind,
    ExceptionState,
    StillSince,
    allowed,
    dedupe_key,
    exception_id,
    long_stop_due,
    route_behind_due,
    summary,
    track_still,
    within_local_hours,
)

OPEN, A, R = ExceptionState.OPEN, ExceptionState.ACKNOWLEDGED, ExceptionState.RESOLVED


def test_the_state_machine_only_moves_forward() -> None:
    assert allowed(OPEN, A) and allowed(OPEN, R) and allowed(A, R)
    assert not allowed(A, A) and not allowed(A, OPEN) and not allowed(OPEN, OPEN)
    assert not any(allowed(R, s) for s in ExceptionState)


def test_ids_name_one_occurrence_of_one_merchant() -> None:
    one = exception_id("mer_1", ExceptionKind.LATE, "shp_1", "delayed-shp_1")
    assert one == exception_id("mer_1", ExceptionKind.LATE, "shp_1", "delayed-shp_1")
    others = {exception_id("mer_2", ExceptionKind.LATE, "shp_1", "delayed-shp_1"),
              exception_id("mer_1", ExceptionKind.FAILED_ATTEMPT, "shp_1", "delayed-shp_1"),
              exception_id("mer_1", ExceptionKind.LATE, "shp_2", "delayed-shp_1"),
              exception_id("mer_1", ExceptionKind.LATE, "shp_1", "another")}
    assert one not in others and len(others) == 4 and one.startswith("exc_")
    assert dedupe_key(ExceptionKind.DRIVER_OFFLINE, "drv_1") == "driver_offline#drv_1"


def test_stillness_restarts_when_the_driver_moves_on() -> None:
    still = track_still(None, 1_000, 47.0, 8.0, 0.0)
    assert still == StillSince(1_000, 47.0, 8.0)
    assert track_still(still, 60_000, 47.0001, 8.0, 10.0) is still  # jitter: still there
    moved = track_still(still, 60_000, 47.01, 8.0, STILL_RADIUS_M + 1)
    assert (moved.since_ms, moved.flagged) == (60_000, False)


def test_a_long_stop_is_due_once_far_from_stops_after_the_minutes() -> None:
    still = StillSince(0, 47.0, 8.0)
    assert not long_stop_due(still, 14 * 60_000, 15, 1_000.0, 75.0)  # not yet
    assert long_stop_due(still, 15 * 60_000, 15, 1_000.0, 75.0)
    assert not long_stop_due(still, 15 * 60_000, 15, 100.0, 75.0)  # at (near) a stop
    assert not long_stop_due(still, 15 * 60_000, 15, None, 75.0)  # no stops on the way
    assert not long_stop_due(StillSince(0, 47.0, 8.0, flagged=True), 60 * 60_000, 15, 1_000.0, 75.0)


@given(projected=st.integers(0, 10**12), planned=st.integers(0, 10**12), minutes=st.integers(5, 600))
def test_route_behind_is_exactly_past_the_plan_and_the_margin(projected: int, planned: int, minutes: int) -> None:
    assert route_behind_due(projected, planned, minutes) is (projected > planned + minutes * 60_000)


def test_route_behind_needs_both_ends() -> None:
    assert not route_behind_due(None, 0, 5) and not route_behind_due(10**12, None, 5)


@pytest.mark.parametrize(("utc", "start", "end", "inside"), [
    ("2026-12-04T20:30:00", "22:00", "06:00", False),  # 21:30 in Berlin (UTC+1): before the window
    ("2026-12-04T22:30:00", "22:00", "06:00", True),  # 23:30 local
    ("2026-12-05T04:59:00", "22:00", "06:00", True),  # 05:59 local
    ("2026-12-05T05:00:00", "22:00", "06:00", False),  # 06:00 local: the end is not inside
    ("2026-12-04T08:00:00", "08:00", "17:00", True),  # 09:00 local
    ("2026-12-04T16:00:00", "08:00", "17:00", False),  # 17:00 local
    ("2026-12-04T12:00:00", "00:00", "00:00", True),  # equal times: all day
])
def test_local_hours_cross_midnight_and_use_the_zone(utc: str, start: str, end: str, inside: bool) -> None:
    moment = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert within_local_hours(moment, start, end, "Europe/Berlin") is inside


def test_every_kind_has_a_summary_naming_its_subject() -> None:
    details = {"driver_id": "drv_1", "shipment_id": "shp_1", "external_ref": "order-7", "route_id": "rte_1",
               "minutes": 20, "behind_minutes": 40, "distance_m": 812.4, "zone_name": "Depot", "reason": "lwt"}
    texts = {kind: summary(kind, details) for kind in ExceptionKind}
    assert all(texts.values())
    assert "order-7" in texts[ExceptionKind.LATE] and "812 m" in texts[ExceptionKind.DELIVERED_FAR]
    assert "lwt" in texts[ExceptionKind.DRIVER_OFFLINE] and "Depot" in texts[ExceptionKind.ZONE_RULE]
    assert "40 min" in texts[ExceptionKind.ROUTE_BEHIND] and "20 min" in texts[ExceptionKind.LONG_STOP]
