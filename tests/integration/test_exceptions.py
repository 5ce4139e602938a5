"""The exception queue: every kind raised by a scenario, once under duplicated stream delivery; acknowledge and
resolve with their state rules, tenant-scoped; webhook events; the dispatch contact's email through moto's SES."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import TEST_ENV
from tests.integration.conftest import Merchant
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.streams import drain, recording_pipeline_runner
from tests.integration.test_pipeline import STOP, offset
from tests.integration.test_tracking_page import driver_update, put_settings

SENDER = "dispatch@shop.example"


@pytest.fixture()
def pipeline(chalice_app: Any, tmp_path: Path) -> Any:
    """The table's stream from now on through the stream pipeline; `pipeline.events` keeps every batch, so a test
    can deliver them all again as Lambda may."""
    return recording_pipeline_runner(tmp_path)



def redeliver(run: Any) -> None:
    """Every batch the pipeline saw, delivered again (Lambda's at-least-once)."""
    from chalicelib.pipeline.api import stream_pipeline

    for event in list(run.events):
        assert stream_pipeline(event, None) == {"batchItemFailures": []}


def fresh_profiles() -> None:
    """Stream functions cache the merchant's settings a minute: a test that just changed them reads them now."""
    from chalicelib.fleet import service as fleet

    fleet._profiles.clear()


def queue(merchant: Merchant, state: str = "open", **query: Any) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in {"state": state, **query}.items())
    r = merchant.call("GET", f"/v1/exceptions?{params}")
    assert r.status_code == 200, r.body
    return r.json_body["items"]  # type: ignore[no-any-return]


def started_route(merchant: Merchant, *locations: tuple[float, float], window_end: str | None = None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    driver = make_driver(merchant)
    today = iso(now_ms())[:10]
    end = window_end or f"{today}T23:00:00Z"
    ships = [make_shipment(merchant, n + 1, location={"lat": lat, "lng": lng},
                           time_window={"start": f"{today}T00:00:00Z", "end": end})
             for n, (lat, lng) in enumerate(locations)]
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": today, "planned_start": iso(now_ms()),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    route = merchant.call("POST", f"/v1/routes/{r.json_body['id']}/start").json_body
    return driver, ships, route


# --- driver offline (presence's events) ----------------------------------------------------------------------


def test_driver_offline_opens_once_per_episode_and_online_resolves_once(merchant: Merchant) -> None:
    from chalicelib.exceptions import service
    from chalicelib.storage import get_repository

    repo, driver = get_repository(), make_driver(merchant)
    went = datetime.now(UTC) - timedelta(minutes=10)
    for _ in range(3):  # the schedule runs again, the stream delivers the event twice
        service.on_driver_event(repo, merchant.id, driver["id"], "driver_offline", went, "low_battery")
    # a later offline event while the first is open is the same outage as far as the queue goes
    service.on_driver_event(repo, merchant.id, driver["id"], "driver_offline", went + timedelta(minutes=1), "lwt")
    (opened,) = queue(merchant)
    assert (opened["kind"], opened["driver_id"], opened["details"]["reason"]) == (
        "driver_offline", driver["id"], "low_battery")
    assert "offline" in opened["summary"]
    back = went + timedelta(minutes=5)
    for _ in range(2):
        service.on_driver_event(repo, merchant.id, driver["id"], "driver_online", back, None)
    assert queue(merchant) == []
    (resolved,) = queue(merchant, "resolved")
    assert (resolved["id"], resolved["resolved_by"]) == (opened["id"], "system")
    # the episode that ended stays resolved however often it is redelivered; a new episode opens anew
    service.on_driver_event(repo, merchant.id, driver["id"], "driver_offline", went, "low_battery")
    assert queue(merchant) == []
    service.on_driver_event(repo, merchant.id, driver["id"], "driver_offline", back + timedelta(hours=1), "lwt")
    (second,) = queue(merchant)
    assert second["id"] != opened["id"] and second["details"]["reason"] == "lwt"


# --- from the stream pipeline ------------------------------------------------------------------------------------


def test_a_failed_attempt_opens_once_under_redelivery_and_a_delivery_resolves_it(merchant: Merchant,
                                                                                  pipeline: Any) -> None:
    driver, (ship,), route = started_route(merchant, STOP)
    assert driver_update(merchant.client, driver, ship["id"], "failed", now_ms() - 60_000,
                         reason="not_home").status_code == 200
    drain(pipeline)
    redeliver(pipeline)
    (failed,) = queue(merchant, kind="failed_attempt")
    assert (failed["shipment_id"], failed["driver_id"], failed["route_id"]) == (ship["id"], driver["id"],
                                                                                route["id"])
    assert failed["details"]["reason"] == "not_home" and ship["external_ref"] in failed["summary"]


def test_delivered_far_from_the_stop_opens_delivered_far(merchant: Merchant, pipeline: Any) -> None:
    driver, (ship, near), _ = started_route(merchant, STOP, offset(*STOP, 300, 0))
    far = offset(*STOP, 0, 900)
    assert driver_update(merchant.client, driver, ship["id"], "delivered", now_ms() - 60_000,
                         location={"lat": far[0], "lng": far[1]}).status_code == 200
    assert driver_update(merchant.client, driver, near["id"], "delivered", now_ms() - 30_000,
                         location={"lat": near["location"]["lat"], "lng": near["location"]["lng"]}).status_code == 200
    drain(pipeline)
    redeliver(pipeline)
    (item,) = queue(merchant)
    assert (item["kind"], item["shipment_id"]) == ("delivered_far", ship["id"])
    assert item["details"]["distance_m"] > 800


def test_a_delayed_stop_opens_late_once_and_its_delivery_resolves_it(merchant: Merchant, pipeline: Any) -> None:
    from chalicelib.pipeline.service import handle_lifecycle
    from chalicelib.storage import get_repository

    driver, (ship,), _ = started_route(merchant, STOP)
    # the pipeline's own `delayed` record, as the stream delivers it (twice)
    image = {"merchant_id": merchant.id, "shipment_id": ship["id"], "event_id": f"delayed-{ship['id']}",
             "type": "delayed", "source": "system", "occurred_at": iso(now_ms() - 5_000)}
    for _ in range(2):
        handle_lifecycle(get_repository(), image)
    (late,) = queue(merchant)
    assert (late["kind"], late["shipment_id"], late["driver_id"]) == ("late", ship["id"], driver["id"])
    assert driver_update(merchant.client, driver, ship["id"], "delivered", now_ms() - 1_000).status_code == 200
    drain(pipeline)
    assert queue(merchant) == [] and [x["id"] for x in queue(merchant, "resolved")] == [late["id"]]


def _still_then(start_ms: int, where: tuple[float, float], minutes: int) -> list[dict[str, Any]]:
    """A driver standing at `where` for `minutes`, one fix a minute with a few metres of jitter."""
    fixes = []
    for i in range(minutes + 1):
        lat, lng = offset(*where, 5 * (i % 2), 3 * (i % 3))
        fixes.append({"lat": lat, "lng": lng, "fix_time": iso(start_ms + i * 60_000), "accuracy": 8, "speed": 0})
    return fixes


def test_a_long_stop_away_from_every_stop_opens_once_per_stillness(merchant: Merchant, pipeline: Any) -> None:
    put_settings(merchant, exceptions={"long_stop_minutes": 10})
    fresh_profiles()
    driver, _, route = started_route(merchant, STOP, offset(*STOP, 500, 0))
    parked = offset(*STOP, -2_000, 0)  # 2 km before the first stop: not at any stop
    fixes = _still_then(now_ms() - 30 * 60_000, parked, 14)
    for start in range(0, len(fixes), 5):
        assert post_pings(merchant.client, driver["token"], fixes[start:start + 5]).json_body["rejected"] == 0
    drain(pipeline)
    redeliver(pipeline)
    (item,) = queue(merchant, kind="long_stop")
    assert (item["driver_id"], item["route_id"]) == (driver["id"], route["id"])
    assert item["details"]["minutes"] >= 10 and item["details"]["nearest_stop_m"] > 1_500
    # driving on resolves it
    last = now_ms() - 30 * 60_000 + 14 * 60_000
    away = [{"lat": lat, "lng": lng, "fix_time": iso(last + (i + 1) * 10_000), "accuracy": 8, "speed": 10}
            for i, (lat, lng) in enumerate(offset(*parked, 100 * (i + 1), 0) for i in range(3))]
    assert post_pings(merchant.client, driver["token"], away).json_body["rejected"] == 0
    drain(pipeline)
    assert queue(merchant, kind="long_stop") == []
    (resolved,) = queue(merchant, "resolved", kind="long_stop")
    assert (resolved["id"], resolved["resolved_by"], resolved["note"]) == (item["id"], "system", "driver moved on")


def test_standing_at_a_stop_is_no_long_stop(merchant: Merchant, pipeline: Any) -> None:
    put_settings(merchant, exceptions={"long_stop_minutes": 5})
    fresh_profiles()
    driver, _, _ = started_route(merchant, STOP, offset(*STOP, 500, 0))
    fixes = _still_then(now_ms() - 20 * 60_000, STOP, 9)
    assert post_pings(merchant.client, driver["token"], fixes).json_body["rejected"] == 0
    drain(pipeline)
    assert queue(merchant, kind="long_stop") == []


def test_a_route_projected_past_its_plan_opens_route_behind_once(merchant: Merchant, pipeline: Any) -> None:
    put_settings(merchant, exceptions={"route_behind_minutes": 5})
    fresh_profiles()
    soon = datetime.now(UTC) + timedelta(minutes=2)  # the promise ends in 2 minutes, the stops are 8 km away
    driver, _, route = started_route(merchant, STOP, offset(*STOP, 300, 0),
                                     window_end=soon.isoformat().replace("+00:00", "Z"))
    start = offset(*STOP, -8_000, 0)
    fixes = [{"lat": lat, "lng": lng, "fix_time": iso(now_ms() - 60_000 + i * 10_000), "accuracy": 8, "speed": 8}
             for i, (lat, lng) in enumerate(offset(*start, 80 * i, 0) for i in range(5))]
    assert post_pings(merchant.client, driver["token"], fixes).json_body["rejected"] == 0
    drain(pipeline)
    redeliver(pipeline)
    behind = queue(merchant, kind="route_behind")
    assert [(b["route_id"], b["driver_id"]) for b in behind] == [(route["id"], driver["id"])]
    assert behind[0]["details"]["behind_minutes"] >= 5


def _depot_square(merchant: Merchant) -> dict[str, Any]:
    square = [[offset(*STOP, n, e)[::-1] for n, e in ((-300, -300), (-300, 300), (300, 300), (300, -300),
                                                     (-300, -300))]]
    zone = merchant.call("POST", "/v1/zones", {"name": "Depot", "kind": "depot",
                                               "geometry": {"type": "Polygon", "coordinates": square}})
    assert zone.status_code == 201, zone.body
    return zone.json_body  # type: ignore[no-any-return]


def _through_the_depot(merchant: Merchant, driver: dict[str, Any]) -> None:
    """A drive from 1.5 km south of the depot, through it and out the other side."""
    outside = offset(*STOP, -1_500, 0)
    fixes = [{"lat": lat, "lng": lng, "fix_time": iso(now_ms() - 240_000 + i * 10_000), "accuracy": 8, "speed": 10}
             for i, (lat, lng) in enumerate(offset(*outside, 150 * i, 0) for i in range(22))]
    assert post_pings(merchant.client, driver["token"], fixes).json_body["rejected"] == 0


def test_zone_events_go_out_on_the_webhook_once(merchant: Merchant, pipeline: Any) -> None:
    from chalicelib.webhooks import delivery
    from tests.integration.test_webhooks import Clock, FakeTransport, make_deliverer

    zone = _depot_square(merchant)
    driver = make_driver(merchant)
    _through_the_depot(merchant, driver)
    drain(pipeline)
    client = boto3.client("dynamodb")
    items = client.query(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"],
                         KeyConditionExpression="PK = :pk AND begins_with(SK, :zone)",
                         ExpressionAttributeValues={":pk": {"S": f"DRIVER#{driver['id']}"},
                                                    ":zone": {"S": "ZONEEVENT#"}})["Items"]
    records = [{"eventName": "INSERT", "dynamodb": {"Keys": {"PK": i["PK"], "SK": i["SK"]}, "NewImage": i,
                                                     "SequenceNumber": str(n)}} for n, i in enumerate(items)]
    url = f"https://zones-{merchant.id.lower()}.example.com/in"
    assert merchant.call("PUT", "/v1/webhook", {"url": url, "events": ["zone_enter", "zone_exit"]}).status_code == 201
    fake = FakeTransport()
    deliverer = make_deliverer(fake, Clock())
    try:
        for _ in range(2):
            assert deliverer.handle_stream_event({"Records": records}) == {"batchItemFailures": []}
    finally:
        delivery.use(None)
        merchant.call("DELETE", "/v1/webhook")
    bodies = [json.loads(c.body) for c in fake.to(url)]
    assert [b["type"] for b in bodies] == ["zone_enter", "zone_exit"]
    assert {(b["data"]["zone_id"], b["data"]["driver_id"], b["data"]["zone_name"]) for b in bodies} == {
        (zone["id"], driver["id"], "Depot")}


def test_movement_in_a_zone_inside_its_rule_hours_opens_zone_rule(merchant: Merchant, pipeline: Any) -> None:
    square = [[offset(*STOP, n, e)[::-1] for n, e in ((-300, -300), (-300, 300), (300, 300), (300, -300),
                                                     (-300, -300))]]
    zone = merchant.call("POST", "/v1/zones", {"name": "Depot", "kind": "depot",
                                               "geometry": {"type": "Polygon", "coordinates": square}})
    assert zone.status_code == 201, zone.body
    # the whole day is "after hours" (equal times): any movement inside breaks the rule
    put_settings(merchant, exceptions={"zone_rules": [{"zone_id": zone.json_body["id"], "start_time": "00:00",
                                                       "end_time": "00:00"}]})
    fresh_profiles()
    driver = make_driver(merchant)
    outside = offset(*STOP, -1_500, 0)
    fixes = [{"lat": lat, "lng": lng, "fix_time": iso(now_ms() - 120_000 + i * 10_000), "accuracy": 8, "speed": 10}
             for i, (lat, lng) in enumerate(offset(*outside, 150 * i, 0) for i in range(12))]
    assert post_pings(merchant.client, driver["token"], fixes).json_body["rejected"] == 0
    drain(pipeline)
    redeliver(pipeline)
    (item,) = queue(merchant, kind="zone_rule")
    assert (item["driver_id"], item["details"]["zone_id"], item["details"]["zone_name"]) == (
        driver["id"], zone.json_body["id"], "Depot")


# --- acknowledge and resolve ---------------------------------------------------------------------------------


def _offline(merchant: Merchant) -> dict[str, Any]:
    from chalicelib.exceptions import service
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    service.on_driver_event(get_repository(), merchant.id, driver["id"], "driver_offline", datetime.now(UTC),
                            "app_background")
    (item,) = [x for x in queue(merchant) if x["driver_id"] == driver["id"]]
    return item


def test_acknowledge_then_resolve_with_who_and_when_and_the_state_rules(merchant: Merchant) -> None:
    item = _offline(merchant)
    r = merchant.call("POST", f"/v1/exceptions/{item['id']}/acknowledge")
    assert r.status_code == 200, r.body
    assert (r.json_body["state"], r.json_body["acknowledged_by"]) == ("acknowledged", f"api_key:{merchant.key[:8]}")
    assert r.json_body["acknowledged_at"] is not None
    again = merchant.call("POST", f"/v1/exceptions/{item['id']}/acknowledge")
    assert again.status_code == 409 and "acknowledged" in again.body.decode()
    assert [x["id"] for x in queue(merchant, "acknowledged")] == [item["id"]] and queue(merchant) == []
    r = merchant.call("POST", f"/v1/exceptions/{item['id']}/resolve", {"note": "called the driver"})
    assert r.status_code == 200, r.body
    assert (r.json_body["state"], r.json_body["note"]) == ("resolved", "called the driver")
    for action in ("acknowledge", "resolve"):
        late = merchant.call("POST", f"/v1/exceptions/{item['id']}/{action}")
        assert late.status_code == 409 and "resolved" in late.body.decode()
    bad = merchant.call("POST", f"/v1/exceptions/{item['id']}/resolve", {"note": "x" * 501})
    assert bad.status_code == 422 and "note" in bad.body.decode()


def test_another_merchants_exception_is_not_found(merchant: Merchant, other_merchant: Merchant) -> None:
    item = _offline(merchant)
    for action in ("acknowledge", "resolve"):
        r = other_merchant.call("POST", f"/v1/exceptions/{item['id']}/{action}")
        assert r.status_code == 404, r.body
    assert queue(other_merchant) == []
    assert queue(merchant)[0]["state"] == "open"


def test_the_queue_pages_newest_first_and_filters_by_kind(merchant: Merchant) -> None:
    ids = [_offline(merchant)["id"] for _ in range(3)]
    r = merchant.call("GET", "/v1/exceptions?limit=2")
    first = r.json_body
    assert [x["id"] for x in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    rest = merchant.call("GET", f"/v1/exceptions?limit=2&cursor={first['next_cursor']}").json_body
    assert [x["id"] for x in rest["items"]] == ids[:1]
    assert queue(merchant, kind="late") == []
    assert merchant.call("GET", "/v1/exceptions?state=closed").status_code == 422
    wrong = merchant.call("GET", f"/v1/exceptions?kind=late&cursor={first['next_cursor']}")
    assert wrong.status_code == 400 and "cursor" in wrong.body.decode()


# --- webhook events and the dispatch contact ---------------------------------------------------------------


def _events_of(exception_id: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    items = client.query(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"], KeyConditionExpression="PK = :pk",
                         ExpressionAttributeValues={":pk": {"S": f"EXCEPTION#{exception_id}"}})["Items"]
    return [{"eventName": "INSERT", "dynamodb": {"Keys": {"PK": i["PK"], "SK": i["SK"]}, "NewImage": i,
                                                  "SequenceNumber": str(n)}} for n, i in enumerate(items)]


def test_each_state_change_is_one_webhook_event(merchant: Merchant, chalice_app: Any) -> None:
    from chalicelib.webhooks import delivery
    from tests.integration.test_webhooks import Clock, FakeTransport, make_deliverer

    url = f"https://hooks-{merchant.id.lower()}.example.com/in"
    assert merchant.call("PUT", "/v1/webhook", {"url": url}).status_code == 201
    fake = FakeTransport()
    deliverer = make_deliverer(fake, Clock())
    try:
        item = _offline(merchant)
        merchant.call("POST", f"/v1/exceptions/{item['id']}/acknowledge")
        merchant.call("POST", f"/v1/exceptions/{item['id']}/resolve")
        records = _events_of(item["id"])
        for _ in range(2):  # delivered twice: posted once
            assert deliverer.handle_stream_event({"Records": records}) == {"batchItemFailures": []}
    finally:
        delivery.use(None)
        merchant.call("DELETE", "/v1/webhook")
    bodies = [json.loads(c.body) for c in fake.to(url)]
    assert sorted(b["type"] for b in bodies) == ["exception_acknowledged", "exception_opened", "exception_resolved"]
    opened = next(b for b in bodies if b["type"] == "exception_opened")
    assert (opened["merchant_id"], opened["data"]["exception_id"], opened["data"]["kind"]) == (
        merchant.id, item["id"], "driver_offline")


def test_the_dispatch_contact_is_emailed_once_per_exception(merchant: Merchant,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from chalicelib.core.config import get_settings
    from chalicelib.exceptions import service
    from chalicelib.storage import get_repository

    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    monkeypatch.setattr(get_settings(), "email_sender", SENDER)
    contact = f"dispatch-{merchant.id.lower()}@shop.example"
    put_settings(merchant, exceptions={"dispatch_contact": {"email": contact, "kinds": ["driver_offline"]}})
    fresh_profiles()
    driver = make_driver(merchant, "Olga Offline")
    went = datetime.now(UTC)
    for _ in range(2):
        service.on_driver_event(get_repository(), merchant.id, driver["id"], "driver_offline", went, "lwt")
    sent = [m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
            if contact in _to_addresses(m)]
    assert len(sent) == 1 and "offline" in sent[0].subject
    # a kind the contact did not ask for is queued, not mailed
    ship = make_shipment(merchant, 1)
    service.on_lifecycle(get_repository(), {"merchant_id": merchant.id, "shipment_id": ship["id"], "type": "delayed",
                                            "event_id": "delayed-1", "occurred_at": iso(now_ms())})
    assert len(queue(merchant)) == 2
    assert len([m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
                if contact in _to_addresses(m)]) == 1


def test_the_dispatch_contact_is_not_messaged_in_quiet_hours(merchant: Merchant,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from chalicelib.core.config import get_settings
    from chalicelib.exceptions import service
    from chalicelib.storage import get_repository

    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    monkeypatch.setattr(get_settings(), "email_sender", SENDER)
    contact = f"night-{merchant.id.lower()}@shop.example"
    put_settings(merchant, exceptions={"dispatch_contact": {
        "email": contact, "quiet_hours": {"start_time": "00:00", "end_time": "00:00"}}})  # quiet all day
    fresh_profiles()
    driver = make_driver(merchant)
    service.on_driver_event(get_repository(), merchant.id, driver["id"], "driver_offline", datetime.now(UTC), None)
    assert len(queue(merchant)) == 1  # queued all the same
    assert not [m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
                if contact in _to_addresses(m)]


def test_settings_refuse_a_bad_dispatch_contact(merchant: Merchant) -> None:
    current = merchant.call("GET", "/v1/settings").json_body
    r = merchant.call("PUT", "/v1/settings", {**current, "exceptions": {"dispatch_contact": {"email": "nope"}}})
    assert r.status_code == 422 and "exceptions.dispatch_contact.email" in r.body.decode()
    r = merchant.call("PUT", "/v1/settings", {**current, "exceptions": {"long_stop_minutes": 0}})
    assert r.status_code == 422 and "long_stop_minutes" in r.body.decode()


def _to_addresses(message: Any) -> list[str]:
    """SendEmail records {"ToAddresses": [...]}, SendRawEmail (recipient emails) a plain list."""
    destinations = getattr(message, "destinations", None) or {}
    return list(destinations) if isinstance(destinations, list) else list(destinations.get("ToAddresses", []))
