"""Delivery analytics' pure rules: what each event adds, the figures and rates, days and shards, CSV, ranges; and
exactly-once counting (a marker per event id) under duplicated and reordered batches, as a property."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.analytics import rules
from chalicelib.analytics.rules import EventFacts, contributions, figures, sum_counters

T = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
WINDOW = {"window_start": T - timedelta(hours=1), "window_end": T + timedelta(hours=1)}


def test_a_delivery_inside_its_window_at_the_first_attempt_with_proof() -> None:
    assert contributions(EventFacts("delivered", T, has_proof=True, **WINDOW)) == {
        "delivered": 1, "windowed": 1, "on_time": 1, "first_attempts": 1, "first_attempt_ok": 1, "proof": 1}


def test_a_late_far_delivery_after_a_failed_attempt() -> None:
    late = EventFacts("delivered", T + timedelta(hours=2), failed_before=1, far_from_stop=True, **WINDOW)
    assert contributions(late) == {"delivered": 1, "windowed": 1, "late": 1, "far": 1}
    early = EventFacts("delivered", T - timedelta(hours=2), **WINDOW)
    # Early is not inside the window either, and is counted apart from late (a merchant may allow it).
    assert contributions(early) == {"delivered": 1, "windowed": 1, "early": 1, "first_attempts": 1,
                                    "first_attempt_ok": 1}
    edges = [EventFacts("delivered", at, **WINDOW) for at in (WINDOW["window_start"], WINDOW["window_end"])]
    assert all(contributions(e)["on_time"] == 1 for e in edges)  # both ends are inside
    assert "windowed" not in contributions(EventFacts("delivered", T))  # no promise: not in the on-time rate


def test_failures_count_by_reason_and_only_the_first_is_a_first_attempt() -> None:
    assert contributions(EventFacts("failed", T, attempt=1, reason="not_home")) == {
        "failed": 1, "failed_not_home": 1, "first_attempts": 1}
    assert contributions(EventFacts("failed", T, attempt=2, reason="refused")) == {"failed": 1, "failed_refused": 1}
    assert contributions(EventFacts("failed", T, reason="lost in space")) == {
        "failed": 1, "failed_other": 1, "first_attempts": 1}  # unknown reason: other; no attempt: from failed_before


def test_returns_ratings_and_events_not_counted() -> None:
    assert contributions(EventFacts("returned", T)) == {"returned": 1}
    assert contributions(EventFacts("rated", T, rating_score=4, has_comment=True)) == {
        "rating_sum": 4, "rating_n": 1, "rating_4": 1, "comments": 1}
    assert contributions(EventFacts("rated", T, rating_score=9)) == {}
    assert contributions(EventFacts("approaching", T)) == {}


def test_figures_of_a_hand_computed_day() -> None:
    """Ten stops: 6 delivered (4 inside their window of 5 with one, 5 at the first attempt, 3 with proof, one
    far), 4 failed (3 not home, 1 damaged; 3 of them first attempts), 1 returned; ratings 5, 5, 4, 1 (two
    comments); 2.5 hours on duty."""
    events = [EventFacts("delivered", T, has_proof=True, **WINDOW)] * 3 + [
        EventFacts("delivered", T, **WINDOW), EventFacts("delivered", T + timedelta(hours=3), **WINDOW),
        EventFacts("delivered", T, failed_before=1, far_from_stop=True),
        EventFacts("failed", T, attempt=1, reason="not_home"), EventFacts("failed", T, attempt=1, reason="not_home"),
        EventFacts("failed", T, attempt=2, reason="not_home"), EventFacts("failed", T, attempt=1, reason="damaged"),
        EventFacts("returned", T), EventFacts("rated", T, rating_score=5, has_comment=True),
        EventFacts("rated", T, rating_score=5), EventFacts("rated", T, rating_score=4),
        EventFacts("rated", T, rating_score=1, has_comment=True)]
    total = sum_counters([contributions(e) for e in events] + [{"duty_ms": 9_000_000}])
    assert figures(total) == {
        "delivered": 6, "failed": 4,
        "failed_by_reason": {"not_home": 3, "no_access": 0, "refused": 0, "damaged": 1, "other": 0},
        "returned": 1, "on_time": 4, "on_time_rate": 0.8, "delivered_early": 0, "delivered_late": 1,
        "first_attempts": 8, "first_attempt_success_rate": 0.625,
        "with_proof": 3, "proof_compliance_rate": 0.5, "far_from_stop": 1, "far_from_stop_rate": 0.1667,
        "hours_on_duty": 2.5, "stops_per_hour_on_duty": 4.0, "ratings_count": 4, "rating_average": 3.75,
        "rating_distribution": {"1": 1, "2": 0, "3": 0, "4": 1, "5": 2}, "comments_count": 2}


def test_empty_figures_have_no_rates() -> None:
    empty = figures({})
    assert empty["delivered"] == 0 and empty["on_time_rate"] is None and empty["rating_average"] is None
    assert empty["stops_per_hour_on_duty"] is None


def test_days_shards_splits_and_ranges() -> None:
    assert rules.local_day(datetime(2026, 12, 5, 3, 0, tzinfo=UTC), "America/Los_Angeles") == "2026-12-04"
    assert rules.local_day(T, "Not/AZone") == "2026-12-04"
    assert rules.shard_of("shp_1") == rules.shard_of("shp_1") and 0 <= rules.shard_of("x") < rules.DAY_SHARDS
    start = int(datetime(2026, 3, 2, 6, 0, tzinfo=UTC).timestamp() * 1000)  # 22:00 in Seattle
    assert rules.split_by_day(start, start + 3 * 3_600_000, "America/Los_Angeles") == [
        ("2026-03-01", 7_200_000), ("2026-03-02", 3_600_000)]
    assert rules.range_problem(date(2026, 1, 2), date(2026, 1, 1)) == ("to", "must not be before from")
    assert rules.range_problem(date(2026, 1, 1), date(2026, 4, 3)) == ("to", "the range must span at most 92 days")
    assert rules.range_problem(date(2026, 1, 1), date(2026, 4, 2)) is None  # 92 days


def test_csv_has_a_header_row_flattened_figures_and_no_formulas() -> None:
    row = {"group": "=HYPERLINK(1)", **figures(sum_counters([contributions(EventFacts("delivered", T, **WINDOW))]))}
    text = rules.csv_text("driver", [row])
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0])[:4] == ["driver", "delivered", "failed", "failed_not_home"]
    assert parsed[0]["driver"] == "'=HYPERLINK(1)" and parsed[0]["on_time_rate"] == "1.0"
    assert parsed[0]["rating_average"] == "" and text.endswith("\r\n")


EVENT = st.tuples(st.sampled_from(["delivered", "failed", "returned", "rated"]), st.integers(1, 5), st.booleans())


@settings(max_examples=60, deadline=None)
@given(st.lists(EVENT, min_size=1, max_size=12), st.data())
def test_counted_once_under_duplicated_and_reordered_batches(events: list[tuple[str, int, bool]],
                                                              data: st.DataObject) -> None:
    """The store's rule, in memory: an event adds only when its id's marker is absent (one transaction)."""
    facts = {f"evt{i}": EventFacts(kind, T, attempt=n, reason="not_home", rating_score=n, has_comment=flag,
                                   has_proof=flag, **WINDOW) for i, (kind, n, flag) in enumerate(events)}
    once = sum_counters(contributions(f) for f in facts.values())
    deliveries = data.draw(st.lists(st.sampled_from(sorted(facts)), min_size=0, max_size=30))
    deliveries = data.draw(st.permutations(sorted(facts) + deliveries))  # every event at least once, any order
    seen: set[str] = set()
    counted: list[dict[str, int]] = []
    for event_id in deliveries:
        if event_id not in seen:
            seen.add(event_id)
            counted.append(contributions(facts[event_id]))
    assert sum_counters(counted) == once


def test_a_drivers_range_reads_weeks_from_the_rollups_when_fewer_items() -> None:
    plan = rules.driver_read_plan(date(2026, 11, 3), date(2026, 12, 2))  # Tuesday to Wednesday: 30 days
    # the first week has 6 days inside (its rollup minus Monday), the last 3 (its days)
    assert plan.weeks == ("2026-11-02", "2026-11-23")
    assert plan.days == (("2026-11-30", "2026-12-02"),) and plan.minus_days == (("2026-11-02", "2026-11-02"),)
    aligned = rules.driver_read_plan(date(2026, 11, 2), date(2026, 11, 29))  # Monday to Sunday: weeks only
    assert aligned == rules.DriverReadPlan(("2026-11-02", "2026-11-23"), (), ())
    short = rules.driver_read_plan(date(2026, 11, 4), date(2026, 11, 9))  # Wed-Sun (5 days) and a Monday
    assert short == rules.DriverReadPlan(("2026-11-02", "2026-11-02"), (("2026-11-09", "2026-11-09"),),
                                         (("2026-11-02", "2026-11-03"),))
    assert rules.week_of("2026-11-29") == "2026-11-23" and rules.week_of("2026-11-30") == "2026-11-30"


def test_every_30_day_range_reads_at_most_10_items_a_driver() -> None:
    def items(plan: rules.DriverReadPlan) -> int:
        runs = (*plan.days, *plan.minus_days)
        weeks = 0 if plan.weeks is None else (date.fromisoformat(plan.weeks[1]) -
                                              date.fromisoformat(plan.weeks[0])).days // 7 + 1
        return weeks + sum((date.fromisoformat(b) - date.fromisoformat(a)).days + 1 for a, b in runs)

    most = max(items(rules.driver_read_plan(date(2026, 11, 1) + timedelta(days=k),
                                            date(2026, 11, 30) + timedelta(days=k))) for k in range(7))
    assert most == 10  # the day runs alone: 12; from a Thursday: 3 weeks, 4 days, a week minus 2 days


def test_subtracted_days_take_their_counters_away() -> None:
    assert sum_counters([{"delivered": 9}], [{"delivered": 2}, {"delivered": 1}])["delivered"] == 6


def test_the_pipelines_filter_admits_what_the_figures_count() -> None:
    from infra.stream_filters import admits, mapping_filters

    pipeline = mapping_filters("StreamPipelineEventSourceMapping")

    def event(kind: str, to_status: str | None) -> dict[str, Any]:
        image: dict[str, Any] = {"PK": {"S": "SHIPMENT#shp_1"}, "SK": {"S": "EVENT#2026-12-04T10:00:00Z#evt_1"},
                                 "type": {"S": kind}}
        if to_status:
            image["to_status"] = {"S": to_status}
        return {"eventName": "INSERT", "dynamodb": {"Keys": {"PK": image["PK"], "SK": image["SK"]},
                                                    "NewImage": image}}

    for kind, to_status in (("delivered", "delivered"), ("failed", "failed"), ("returned", "returned"),
                            ("rated", None)):
        assert admits(pipeline, event(kind, to_status)), kind
    assert not admits(pipeline, event("instructions_updated", None))
