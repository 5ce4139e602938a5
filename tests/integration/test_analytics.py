"""Delivery analytics end to end: a hand-computed day of shipments (on time, late and far, failed by reason,
returned, rated) through the API, the table stream and the pipeline; counted once when every batch is delivered
again in reverse; per day, driver and zone; tenant isolation; CSV; 422s; ETA honesty wired when present."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Merchant
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms
from tests.integration.streams import drain
from tests.integration.test_exceptions import pipeline  # noqa: F401  (the stream pipeline fixture)
from tests.integration.test_tracking_page import driver_update, put_settings, submit, token_of
from tests.integration.test_zones_and_learning import square

HOUR = 3_600_000
HOME = (47.601, -122.3)


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def deliveries(merchant: Merchant, day: str, group_by: str = "day", **extra: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in {"from": day, "to": day, "group_by": group_by, **extra}.items())
    r = merchant.call("GET", f"/v1/analytics/deliveries?{query}")
    assert r.status_code == 200, r.body
    return r.json_body["items"]  # type: ignore[no-any-return]


def a_day_of_shipments(merchant: Merchant) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Four stops of one driver: s1 delivered inside its window, s2 delivered after its window 5 km from the
    stop, s3 failed (nobody home), s4 failed (refused); one attempt allowed, so both failures return the parcel.
    s1 rated 4 with a comment, s2 rated 2."""
    put_settings(merchant, max_delivery_attempts=1)
    now = now_ms()
    driver = make_driver(merchant)
    inside = {"start": iso(now - 2 * HOUR), "end": iso(now + 2 * HOUR)}
    before = {"start": iso(now - 5 * HOUR), "end": iso(now - 3 * HOUR)}
    ships = [make_shipment(merchant, n, location={"lat": 47.6 + n * 0.001, "lng": -122.3},
                           time_window=window) for n, window in ((1, inside), (2, before), (3, inside), (4, inside))]
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day_of(now),
                                             "planned_start": iso(now - HOUR),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    assert merchant.call("POST", f"/v1/routes/{r.json_body['id']}/start").status_code == 200
    c = merchant.client
    assert driver_update(c, driver, ships[0]["id"], "delivered", now - 4000).status_code == 200
    assert driver_update(c, driver, ships[1]["id"], "delivered", now - 3000,
                         location={"lat": 47.648, "lng": -122.3}).status_code == 200  # ~5 km north
    assert driver_update(c, driver, ships[2]["id"], "failed", now - 2000, reason="not_home").status_code == 200
    assert driver_update(c, driver, ships[3]["id"], "failed", now - 1000, reason="refused").status_code == 200
    assert submit(c, token_of(ships[0]), "rating", rating="4", comment="Friendly").status_code == 303
    assert submit(c, token_of(ships[1]), "rating", rating="2").status_code == 303
    return driver, ships, now - 1000


EXPECTED = {
    "delivered": 2, "failed": 2,
    "failed_by_reason": {"not_home": 1, "no_access": 0, "refused": 1, "damaged": 0, "other": 0},
    "returned": 2, "on_time": 1, "on_time_rate": 0.5, "delivered_early": 0, "delivered_late": 1,
    "first_attempts": 4, "first_attempt_success_rate": 0.5,
    "with_proof": 0, "proof_compliance_rate": 0.0, "far_from_stop": 1, "far_from_stop_rate": 0.5,
    "ratings_count": 2, "rating_average": 3.0,
    "rating_distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}, "comments_count": 1,
}


def figures_of(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in EXPECTED}


def test_a_hand_computed_day_counted_once_per_day_driver_and_zone(merchant: Merchant, other_merchant: Merchant,
                                                                  pipeline: Any) -> None:  # noqa: F811
    zone = merchant.call("POST", "/v1/zones", {"name": "North", "kind": "other",
                                               "geometry": square((47.601, -122.3), 60)}).json_body
    driver, _ships, last_ms = a_day_of_shipments(merchant)
    day = day_of(last_ms)
    drain(pipeline)
    from chalicelib.pipeline.api import stream_pipeline

    for event in reversed(list(pipeline.events)):  # every batch again, in reverse: Lambda's at-least-once
        assert stream_pipeline(event, None) == {"batchItemFailures": []}

    [by_day] = deliveries(merchant, day)
    assert by_day["group"] == day and figures_of(by_day) == EXPECTED
    [by_driver] = deliveries(merchant, day, "driver")
    assert by_driver["group"] == driver["id"] and figures_of(by_driver) == EXPECTED
    # The route's last stop ended the driver's shift: its (short) time on duty counted for the driver.
    assert by_driver["stops_per_hour_on_duty"] is not None and by_driver["stops_per_hour_on_duty"] > 0
    # Over three weeks the driver's figures come from the week rollups and the edge days: the same.
    wide = f"from={date.fromisoformat(day) - timedelta(days=10)}&to={date.fromisoformat(day) + timedelta(days=10)}"
    r = merchant.call("GET", f"/v1/analytics/deliveries?{wide}&group_by=driver")
    assert [figures_of(row) for row in r.json_body["items"]] == [EXPECTED]
    zones = {row["group"]: row for row in deliveries(merchant, day, "zone")}
    assert set(zones) == {zone["id"], "none"}  # s1 is inside the zone; the others are not
    assert (zones[zone["id"]]["delivered"], zones[zone["id"]]["ratings_count"]) == (1, 1)
    assert zones["none"]["delivered"] + zones[zone["id"]]["delivered"] == 2
    [only_driver] = deliveries(merchant, day, driver_id=driver["id"])
    assert figures_of(only_driver) == EXPECTED

    # Tenant isolation: another merchant sees an empty day and nothing per driver, even asking for this driver.
    [theirs] = deliveries(other_merchant, day)
    assert (theirs["delivered"], theirs["failed"], theirs["ratings_count"]) == (0, 0, 0)
    assert deliveries(other_merchant, day, "driver") == []
    assert deliveries(other_merchant, day, "driver", driver_id=driver["id"]) == []

    r = merchant.call("GET", f"/v1/analytics/deliveries?from={day}&to={day}&group_by=driver", Accept="text/csv")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"] == f'attachment; filename="deliveries_driver_{day}_{day}.csv"'
    rows = list(csv.DictReader(io.StringIO(r.body.decode() if isinstance(r.body, bytes) else r.body)))
    assert [(x["driver"], x["delivered"], x["failed_not_home"], x["on_time_rate"], x["rating_4"]) for x in rows] == \
        [(driver["id"], "2", "1", "0.5", "1")]


def test_paging_and_the_range_rules(merchant: Merchant) -> None:
    r = merchant.call("GET", "/v1/analytics/deliveries?from=2026-01-01&to=2026-01-05&limit=2")
    assert r.status_code == 200, r.body
    first = r.json_body
    assert [x["group"] for x in first["items"]] == ["2026-01-01", "2026-01-02"] and first["next_cursor"]
    seen = [x["group"] for x in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = merchant.call("GET", f"/v1/analytics/deliveries?from=2026-01-01&to=2026-01-05&limit=2&cursor={cursor}")
        seen += [x["group"] for x in page.json_body["items"]]
        cursor = page.json_body["next_cursor"]
    assert seen == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
    for query, field in (("from=2026-01-05&to=2026-01-01", "to"), ("from=2026-01-01&to=2026-06-01", "to"),
                         ("from=2026-13-01&to=2026-01-01", "from"), ("to=2026-01-01", "from"),
                         ("from=2026-01-01&to=2026-01-02&group_by=week", "group_by"),
                         ("from=2026-01-01&to=2026-01-02&group_by=zone&driver_id=drv_x", "driver_id")):
        r = merchant.call("GET", f"/v1/analytics/deliveries?{query}")
        assert r.status_code == 422, (query, r.body)
        assert r.json_body["error"]["details"][0]["field"] == field, query
    r = merchant.call("GET", "/v1/analytics/deliveries?from=2026-01-01&to=2026-01-05&cursor=forged")
    assert r.status_code == 400


def test_eta_honesty_comes_from_the_pipeline_when_it_records_it(merchant: Merchant,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.pipeline import service as pipeline_service

    calls: list[tuple[Any, ...]] = []

    def eta_honesty(repo: Any, merchant_id: str, day_from: Any, day_to: Any, group_by: str) -> dict[str, Any]:
        calls.append((merchant_id, str(day_from), str(day_to), group_by))
        return {"2026-01-02": {"30": {"n": 10, "median_abs_error_min": 4.5, "p90_abs_error_min": 12.0,
                                      "inside_window_share": 0.9}, "5": {"bad": True}}}

    monkeypatch.setattr(pipeline_service, "eta_honesty", eta_honesty)
    r = merchant.call("GET", "/v1/analytics/deliveries?from=2026-01-01&to=2026-01-02")
    assert r.status_code == 200, r.body
    one, two = r.json_body["items"]
    assert one["eta_honesty"] is None
    assert two["eta_honesty"] == {"30": {"n": 10, "median_abs_error_min": 4.5, "p90_abs_error_min": 12.0,
                                         "inside_window_share": 0.9}}  # the malformed "5" is left out
    assert calls == [(merchant.id, "2026-01-01", "2026-01-02", "day")]


def test_a_shift_counts_its_hours_once_split_at_the_merchants_midnight(merchant: Merchant) -> None:
    from chalicelib.analytics.service import on_shift_ended
    from chalicelib.fleet import service as fleet
    from chalicelib.storage import get_repository

    put_settings(merchant, time_zone="America/Los_Angeles")
    fleet._profiles.clear()
    start = int(datetime(2026, 3, 2, 6, 0, tzinfo=UTC).timestamp() * 1000)  # 22:00 on 1 March in Seattle
    repo = get_repository()
    assert on_shift_ended(repo, merchant.id, "drv_shift", start, start + 3 * HOUR) == 2
    assert on_shift_ended(repo, merchant.id, "drv_shift", start, start + 3 * HOUR) == 0  # repeated
    r = merchant.call("GET", "/v1/analytics/deliveries?from=2026-03-01&to=2026-03-02&group_by=day")
    assert [(x["group"], x["hours_on_duty"]) for x in r.json_body["items"]] == [("2026-03-01", 2.0),
                                                                               ("2026-03-02", 1.0)]
    r = merchant.call("GET", "/v1/analytics/deliveries?from=2026-03-01&to=2026-03-02&group_by=driver")
    assert [(x["group"], x["hours_on_duty"]) for x in r.json_body["items"]] == [("drv_shift", 3.0)]


def test_a_batch_partly_counted_before_counts_the_rest_once(merchant: Merchant) -> None:
    """The store's fallback: a batch whose transaction is cancelled by an existing marker is counted event by
    event; duplicated records inside a batch count once; shuffled redeliveries add nothing."""
    import random

    from chalicelib.analytics.service import on_lifecycle_batch
    from chalicelib.storage import get_repository

    now = now_ms()
    driver = make_driver(merchant)
    window = {"start": iso(now - 2 * HOUR), "end": iso(now + 2 * HOUR)}
    ships = [make_shipment(merchant, n, time_window=window) for n in range(1, 7)]
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day_of(now),
                                             "planned_start": iso(now - HOUR),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    images = [{"merchant_id": merchant.id, "shipment_id": s["id"], "event_id": f"evt_batch_{n}",
               "type": "delivered" if n % 2 else "failed", "to_status": "delivered" if n % 2 else "failed",
               "occurred_at": iso(now - 1000), "data": {"reason": "no_access", "attempt": 1}}
              for n, s in enumerate(ships)]
    repo = get_repository()
    assert on_lifecycle_batch(repo, images[:2]) == 2
    assert on_lifecycle_batch(repo, images + images[:3]) == 4  # two counted before, duplicates once
    shuffled = images * 2
    random.Random(7).shuffle(shuffled)
    assert on_lifecycle_batch(repo, shuffled) == 0
    [row] = deliveries(merchant, day_of(now - 1000), driver_id=driver["id"])
    assert (row["delivered"], row["failed"], row["failed_by_reason"]["no_access"],
            row["first_attempts"]) == (3, 3, 3, 6)


def test_a_shift_still_open_counts_its_hours_so_far(merchant: Merchant) -> None:
    from chalicelib.fleet.presence import start_duty
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    start_duty(get_repository(), merchant.id, driver["id"], now_ms() - 2 * HOUR, 10)
    today = day_of(now_ms())
    yesterday = (date.fromisoformat(today) - timedelta(days=1)).isoformat()
    r = merchant.call("GET", f"/v1/analytics/deliveries?from={yesterday}&to={today}&group_by=driver")
    [row] = r.json_body["items"]
    assert row["group"] == driver["id"] and 1.99 <= row["hours_on_duty"] <= 2.01
    old = merchant.call("GET", "/v1/analytics/deliveries?from=2026-01-01&to=2026-01-02&group_by=driver")
    assert old.json_body["items"] == []  # a range before today: nothing open in it


def test_property_any_duplication_and_order_of_batches_counts_each_event_once(merchant: Merchant) -> None:
    """Hypothesis: the same events cut into batches any way, repeated and reordered, through the real store
    (moto), move the day's figures exactly as counting each event once does."""
    import uuid

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from chalicelib.analytics.service import on_lifecycle_batch
    from chalicelib.storage import get_repository

    now = now_ms()
    day = day_of(now - 1000)
    driver = make_driver(merchant)
    window = {"start": iso(now - 2 * HOUR), "end": iso(now + 2 * HOUR)}
    ships = [make_shipment(merchant, n, time_window=window) for n in range(1, 5)]
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day_of(now),
                                             "planned_start": iso(now - HOUR),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    repo = get_repository()
    kinds = st.tuples(st.integers(0, 3), st.sampled_from(["delivered", "failed", "returned"]),
                      st.sampled_from(["not_home", "refused", "damaged"]))

    def figures_now() -> dict[str, Any]:
        [row] = deliveries(merchant, day, driver_id=driver["id"])
        return {k: row[k] for k in ("delivered", "failed", "returned", "failed_by_reason")}

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(kinds, min_size=1, max_size=8), st.data())
    def check(events: list[tuple[int, str, str]], data: st.DataObject) -> None:
        run = uuid.uuid4().hex[:8]
        images = [{"merchant_id": merchant.id, "shipment_id": ships[n]["id"], "event_id": f"evt_{run}_{i}",
                   "type": kind, "to_status": kind, "occurred_at": iso(now - 1000),
                   "data": {"reason": reason, "attempt": 2}} for i, (n, kind, reason) in enumerate(events)]
        deliveries_ = data.draw(st.permutations(images + data.draw(st.lists(st.sampled_from(images), max_size=8))))
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(deliveries_) - 1)), max_size=3)))
        before = figures_now()
        for a, b in zip([0, *cuts], [*cuts, len(deliveries_)], strict=True):
            on_lifecycle_batch(repo, deliveries_[a:b])
        after = figures_now()
        for name in ("delivered", "failed", "returned"):
            assert after[name] - before[name] == sum(1 for _, kind, _ in events if kind == name)
        for reason in ("not_home", "refused", "damaged"):
            assert after["failed_by_reason"][reason] - before["failed_by_reason"][reason] == sum(
                1 for _, kind, why in events if kind == "failed" and why == reason)

    check()


def test_a_large_batch_fills_transactions_to_the_limit_and_counts_every_event(merchant: Merchant) -> None:
    from chalicelib.analytics.service import on_lifecycle_batch
    from chalicelib.storage import get_repository

    now = now_ms()
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n) for n in range(1, 9)]
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day_of(now),
                                             "planned_start": iso(now - HOUR),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    images = [{"merchant_id": merchant.id, "shipment_id": ships[n % 8]["id"], "event_id": f"evt_large_{n}",
               "type": "returned", "to_status": "returned", "occurred_at": iso(now - 1000)} for n in range(130)]
    assert on_lifecycle_batch(get_repository(), images) == 130  # two transactions (markers + merged ADDs)
    assert on_lifecycle_batch(get_repository(), images) == 0
    [row] = deliveries(merchant, day_of(now - 1000), driver_id=driver["id"])
    assert row["returned"] == 130
