"""PATCH /v1/shipments/{id}: JSON merge patch of what a merchant may change, validated whole, refused once final,
never losing a concurrent change, and followed by the pipeline's fence and ETA (issue 14)."""

from __future__ import annotations

import json
import os
import secrets
import threading
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from infra.local.streams import StreamRunner
from tests.integration.helpers import iso, make_driver, make_shipment, make_started_route, now_ms, post_pings
from tests.integration.streams import pipeline_runner
from tests.integration.test_errors import assert_error
from tests.integration.test_notifications import _image, _sms_to, dispatch, midday_zone  # noqa: F401  (a fixture)
from tests.integration.test_pipeline import STOP, drive_park_leave, offset
from tests.integration.test_webhooks import (  # noqa: F401  (fixtures)
    clock,
    create_endpoint,
    delete_endpoints_afterwards,
    deliverer,
    fake,
    hook_url,
    stream,
)
from tests.integration.test_webhooks import drain as drain_webhooks

# The window of helpers.shipment_body is on 2026-11-21 (UTC); the merchant is in UTC unless a test says otherwise.
NEW_WINDOW = {"start": "2026-11-21T19:00:00Z", "end": "2026-11-21T21:00:00Z"}


def _get(merchant: Any, shipment_id: str) -> dict[str, Any]:
    r = merchant.call("GET", f"/v1/shipments/{shipment_id}")
    assert r.status_code == 200, r.body
    body: dict[str, Any] = r.json_body
    return body


def _timeline(merchant: Any, shipment_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = merchant.call("GET", f"/v1/shipments/{shipment_id}/timeline").json_body["items"]
    return items


def _patch(merchant: Any, shipment_id: str, body: Any) -> Any:
    return merchant.call("PATCH", f"/v1/shipments/{shipment_id}", body)


def _without_times(shipment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in shipment.items() if k != "updated_at"}


# --- merge semantics ----------------------------------------------------------------------------------------


def test_only_the_fields_sent_change_and_nested_objects_merge(merchant):
    ship = make_shipment(merchant, 1)
    r = _patch(merchant, ship["id"], {"recipient": {"phone": "+13125550199"}, "address": {"line2": "Apt 4"},
                                      "time_window": NEW_WINDOW, "instructions": "Ring twice"})
    assert r.status_code == 200, r.body
    after = _get(merchant, ship["id"])
    assert r.json_body == after
    assert after["recipient"] == {**ship["recipient"], "phone": "+13125550199"}  # name and email kept
    assert after["address"] == {**ship["address"], "line2": "Apt 4"}
    assert after["time_window"] == {"start": "2026-11-21T19:00:00Z", "end": "2026-11-21T21:00:00Z"}
    assert after["instructions"] == "Ring twice"
    untouched = ("location", "external_ref", "delivery_date", "status", "created_at", "tracking_url")
    assert {k: after[k] for k in untouched} == {k: ship[k] for k in untouched}
    assert after["updated_at"] > ship["updated_at"]


def test_null_clears_an_optional_field_and_a_required_one_is_422(merchant):
    ship = make_shipment(merchant, 1, geofence_radius_m=120.0)
    r = _patch(merchant, ship["id"], {"recipient": {"email": None}, "time_window": None, "instructions": None,
                                      "geofence_radius_m": None})
    assert r.status_code == 200, r.body
    after = _get(merchant, ship["id"])
    assert "email" not in after["recipient"] or after["recipient"]["email"] is None
    assert after["recipient"]["phone"] == ship["recipient"]["phone"]
    assert after["time_window"] is None and after["instructions"] is None and after["geofence_radius_m"] is None
    for body, field in [({"recipient": {"name": None}}, "recipient.name"), ({"location": None}, "location"),
                        ({"address": {"city": None}}, "address.city")]:
        assert_error(_patch(merchant, ship["id"], body), 422, "validation_failed", field)


@pytest.mark.parametrize(("body", "field"), [
    ({"external_ref": "order-new"}, "external_ref"),
    ({"delivery_date": "2026-11-22"}, "delivery_date"),
    ({"status": "delivered"}, "status"),
    ({"recipient": {"phone": "0170 123"}}, "recipient.phone"),
    ({"recipient": {"emial": "typo@example.com"}}, "recipient.emial"),
    ({"location": {"lat": 91.0}}, "location.lat"),
    ({"location": {"lng": "east"}}, "location.lng"),
    ({"time_window": {"start": "2026-11-21T19:00:00Z", "end": "2026-11-21T18:00:00Z"}}, "time_window.end"),
    ({"time_window": {"start": "2026-11-21T19:00:00Z"}}, "time_window.end"),
    ({"time_window": {"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T11:00:00Z"}}, "time_window.start"),
    ({"geofence_radius_m": 5.0}, "geofence_radius_m"),
    ({"instructions": "x" * 1001}, "instructions"),
    ({"address": "1 Main St"}, "address"),
])
def test_an_invalid_patch_names_the_field_and_changes_nothing(merchant, body, field):
    ship = make_shipment(merchant, 1)
    before = _get(merchant, ship["id"])
    assert_error(_patch(merchant, ship["id"], body), 422, "validation_failed", field)
    assert _get(merchant, ship["id"]) == before
    assert [e["type"] for e in _timeline(merchant, ship["id"])] == ["created"]


def test_external_ref_reason_says_it_cannot_change(merchant):
    ship = make_shipment(merchant, 1)
    error = assert_error(_patch(merchant, ship["id"], {"external_ref": "x"}), 422, "validation_failed",
                         "external_ref")
    assert "cannot be changed" in error["details"][0]["reason"]


def test_a_window_on_the_delivery_date_in_the_recipients_time_zone_is_accepted(merchant):
    # 2026-11-21 18:00-20:00 in Chicago is 2026-11-22 00:00-02:00 UTC: still the delivery date where they live
    ship = make_shipment(merchant, 1)
    late = {"start": "2026-11-22T00:00:00Z", "end": "2026-11-22T02:00:00Z"}
    assert_error(_patch(merchant, ship["id"], {"time_window": late}), 422, "validation_failed", "time_window.start")
    r = _patch(merchant, ship["id"], {"recipient": {"time_zone": "America/Chicago"}, "time_window": late})
    assert r.status_code == 200, r.body
    assert r.json_body["time_window"]["start"] == "2026-11-22T00:00:00Z"


def test_a_patch_that_changes_nothing_writes_nothing(merchant):
    ship = make_shipment(merchant, 1)
    for body in ({}, {"recipient": {"name": ship["recipient"]["name"]}},
                 {"time_window": {"start": "2026-11-21T10:00:00-06:00", "end": "2026-11-21T12:00:00-06:00"}}):
        r = _patch(merchant, ship["id"], body)
        assert r.status_code == 200, r.body
        assert r.json_body["updated_at"] == ship["updated_at"]
    assert [e["type"] for e in _timeline(merchant, ship["id"])] == ["created"]


def test_each_change_is_a_timeline_event_naming_the_fields_without_their_values(merchant):
    ship = make_shipment(merchant, 1)
    r = _patch(merchant, ship["id"], {"recipient": {"phone": "+13125550199", "email": "new@example.com"},
                                      "location": {"lat": 47.7}})
    assert r.status_code == 200, r.body
    events = _timeline(merchant, ship["id"])
    assert [e["type"] for e in events] == ["created", "updated"]
    updated = events[1]
    assert updated["fields"] == ["location", "recipient.email", "recipient.phone"]
    assert updated["source"] == "merchant" and updated["from_status"] is None
    assert "+13125550199" not in json.dumps(events) and "new@example.com" not in json.dumps(events)


def test_unknown_and_other_merchants_shipments_are_404(merchant, client):
    from tests.integration.conftest import new_merchant

    ship = make_shipment(merchant, 1)
    assert_error(_patch(merchant, "shp_doesnotexist", {"instructions": "x"}), 404)
    assert_error(_patch(new_merchant(client), ship["id"], {"instructions": "x"}), 404)
    assert _get(merchant, ship["id"])["instructions"] == ship["instructions"]


def test_malformed_bodies_are_4xx(merchant):
    ship = make_shipment(merchant, 1)
    assert_error(_patch(merchant, ship["id"], "{not json"), 400)
    assert_error(_patch(merchant, ship["id"], ["instructions"]), 422)


# --- final statuses -----------------------------------------------------------------------------------------


def test_a_cancelled_shipment_is_409_naming_its_status(merchant):
    ship = make_shipment(merchant, 1)
    assert merchant.call("POST", f"/v1/shipments/{ship['id']}/cancel").status_code == 200
    error = assert_error(_patch(merchant, ship["id"], {"instructions": "too late"}), 409, "conflict", "status")
    assert "cancelled" in error["message"] and "cancelled" in error["details"][0]["reason"]


def test_a_delivered_shipment_is_409_and_an_out_for_delivery_one_can_change(merchant):
    driver, ships, _ = make_started_route(merchant, 2)
    r = _patch(merchant, ships[0]["id"], {"instructions": "Side door"})
    assert r.status_code == 200 and r.json_body["status"] == "out_for_delivery"
    status = merchant.client.http.post(
        f"/v1/driver/shipments/{ships[1]['id']}/status",
        headers={"Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json"},
        body=json.dumps({"status": "failed", "reason": "not_home", "occurred_at": iso(now_ms())}))
    assert status.status_code == 200, status.body
    assert _patch(merchant, ships[1]["id"], {"instructions": "Try the neighbour"}).status_code == 200  # failed
    delivered = make_shipment(merchant, 9)
    _force_status(merchant.id, delivered["id"], "delivered")
    error = assert_error(_patch(merchant, delivered["id"], {"instructions": "x"}), 409, "conflict", "status")
    assert "delivered" in error["details"][0]["reason"]


def _force_status(merchant_id: str, shipment_id: str, status: str) -> None:
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ShipmentItem, merchant_pk

    item = get_repository().get_shipment(merchant_id, shipment_id)
    assert item is not None
    ShipmentItem(merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}").update(actions=[ShipmentItem.status.set(status)])


# --- no lost updates ----------------------------------------------------------------------------------------


def test_a_change_made_between_read_and_write_is_merged_not_overwritten(merchant, monkeypatch):
    """Another writer changes the shipment after this PATCH read it: the conditional write fails, the PATCH
    reads again and merges into what won, so both changes survive."""
    from chalicelib.storage.repository import Repository

    ship = make_shipment(merchant, 1)
    reads = {"n": 0}
    original = Repository.get_shipment

    def racing_read(self, merchant_id, shipment_id, *, consistent=False):
        stored = original(self, merchant_id, shipment_id, consistent=consistent)
        reads["n"] += 1
        if reads["n"] == 1:  # another PATCH commits right after our first read
            monkeypatch.setattr(Repository, "get_shipment", original)
            assert _patch(merchant, shipment_id, {"recipient": {"email": "other@example.com"}}).status_code == 200
            monkeypatch.setattr(Repository, "get_shipment", racing_read)
        return stored

    monkeypatch.setattr(Repository, "get_shipment", racing_read)
    r = _patch(merchant, ship["id"], {"recipient": {"phone": "+13125550199"}})
    assert r.status_code == 200, r.body
    monkeypatch.undo()
    after = _get(merchant, ship["id"])
    assert (after["recipient"]["phone"], after["recipient"]["email"]) == ("+13125550199", "other@example.com")
    assert reads["n"] >= 2
    assert [e["type"] for e in _timeline(merchant, ship["id"])] == ["created", "updated", "updated"]


def test_a_patch_that_keeps_losing_the_race_is_a_409(merchant, monkeypatch):
    from chalicelib.storage.repository import ConditionFailed, Repository

    ship = make_shipment(merchant, 1)

    def always_lost(self, *args, **kwargs):
        raise ConditionFailed("changed meanwhile")

    monkeypatch.setattr(Repository, "update_shipment", always_lost)
    assert_error(_patch(merchant, ship["id"], {"instructions": "x"}), 409, "shipment_changed")


def test_concurrent_patches_of_different_fields_all_survive(merchant):
    """Racing PATCHes on the real engine (transactions atomic across threads): none is lost."""
    from chalicelib.core.config import get_settings

    if not get_settings().ddb_endpoint_url:
        pytest.skip("moto's transactions are not atomic across threads: runs on DynamoDB Local "
                    "(tests/integration/on_dynamodb_local/test_shipment_patch.py)")
    ship = make_shipment(merchant, 1)
    patches = [{"recipient": {"phone": "+13125550199"}}, {"recipient": {"email": "race@example.com"}},
               {"instructions": "Back door"}, {"address": {"line2": "Unit 9"}}]
    answers: list[int] = []
    barrier = threading.Barrier(len(patches))

    def send(body: dict[str, Any]) -> None:
        barrier.wait(5)
        answers.append(_patch(merchant, ship["id"], body).status_code)

    saved = dict(os.environ)  # chalice's test client swaps os.environ per call; threads interleave the swaps
    threads = [threading.Thread(target=send, args=(p,)) for p in patches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    os.environ.clear()
    os.environ.update(saved)
    assert answers == [200] * len(patches)
    after = _get(merchant, ship["id"])
    assert after["recipient"]["phone"] == "+13125550199" and after["recipient"]["email"] == "race@example.com"
    assert after["instructions"] == "Back door" and after["address"]["line2"] == "Unit 9"
    assert [e["type"] for e in _timeline(merchant, ship["id"])].count("updated") == len(patches)


# --- the pipeline follows a new location ----------------------------------------------------------------------


@pytest.fixture()
def runner(chalice_app, tmp_path):
    return pipeline_runner(tmp_path)


def _drain(run: StreamRunner) -> None:
    while run.poll_once():
        pass


def _post_all(merchant: Any, token: str, fixes: list[dict[str, Any]]) -> None:
    for start in range(0, len(fixes), 10):
        assert post_pings(merchant.client, token, fixes[start:start + 10]).json_body["rejected"] == 0


def test_a_new_location_moves_the_geofence_for_the_next_ping(merchant, runner):
    """The pipeline has cached the route's stops (old location) when the merchant corrects the address: pings at
    the new point produce arrived, and pings at the old point no longer do."""
    old = offset(*STOP, 6000, 0)  # 6 km north: the address as first given
    driver = make_driver(merchant)
    target = make_shipment(merchant, 1, location={"lat": old[0], "lng": old[1]}, time_window=None)
    other = make_shipment(merchant, 2, location={"lat": STOP[0] - 0.05, "lng": STOP[1]}, time_window=None)
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [target["id"], other["id"]]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    # the driver is already moving: the pipeline reads the route's stops (and keeps them) with the old location
    early = now_ms() - 2 * 3_600_000
    far = offset(*STOP, -3000, 3000)
    _post_all(merchant, driver["token"], [{"lat": far[0] + i * 1e-4, "lng": far[1], "fix_time": iso(early + i * 10_000),
                                           "accuracy": 8} for i in range(5)])
    _drain(runner)
    assert _get(merchant, target["id"])["status"] == "out_for_delivery"

    r = _patch(merchant, target["id"], {"location": {"lat": STOP[0], "lng": STOP[1]},
                                        "address": {"line1": "400 Broad St"}})
    assert r.status_code == 200, r.body
    route_start = now_ms() - 3_600_000
    _post_all(merchant, driver["token"], drive_park_leave(route_start))
    _drain(runner)
    kinds = [e["type"] for e in _timeline(merchant, target["id"])]
    assert "arrived" in kinds and "dwell" in kinds, kinds
    shown = _get(merchant, target["id"])
    assert shown["status"] == "arrived" and shown["location"] == {"lat": STOP[0], "lng": STOP[1]}
    following = _get(merchant, other["id"])
    assert following["status"] == "out_for_delivery"
    computed = datetime.fromisoformat(following["eta"]["computed_at"]).timestamp() * 1000
    assert computed >= route_start  # the ETAs were recomputed from the fixes after the change
    assert not runner.dead_letter_file.exists()


def test_a_stop_change_tells_the_drivers_pipeline_state_and_others_do_not(merchant):
    from chalicelib.storage import get_repository

    driver, ships, _ = make_started_route(merchant, 2)
    repo = get_repository()
    _, version, stops_version, _ = repo.driver_state(driver["id"])
    assert _patch(merchant, ships[0]["id"], {"instructions": "Call first"}).status_code == 200
    assert repo.driver_state(driver["id"])[1:3] == (version, stops_version)  # not a stop change
    assert _patch(merchant, ships[0]["id"], {"geofence_radius_m": 150.0}).status_code == 200
    assert repo.driver_state(driver["id"])[1:3] == (version + 1, stops_version + 1)
    assert _patch(merchant, ships[1]["id"], {"time_window": NEW_WINDOW}).status_code == 200
    assert repo.driver_state(driver["id"])[1:3] == (version + 2, stops_version + 2)
    unrouted = make_shipment(merchant, 3)
    assert _patch(merchant, unrouted["id"], {"location": {"lat": 47.0}}).status_code == 200
    assert repo.driver_state(driver["id"])[1:3] == (version + 2, stops_version + 2)


def test_a_window_change_shows_in_the_driver_app_and_on_the_tracking_page(merchant):
    from tests.integration.test_driver_app import as_driver, today_route

    driver, ships, _ = today_route(merchant, 1)
    assert _patch(merchant, ships[0]["id"], {"time_window": NEW_WINDOW}).status_code == 200
    stops = as_driver(merchant, driver["token"], "GET", "/v1/driver/route").json_body["stops"]
    assert stops[0]["time_window"] == NEW_WINDOW
    track = merchant.client.http.get(urlsplit(ships[0]["tracking_url"]).path.replace("/track/", "/v1/track/", 1))
    assert track.status_code == 200, track.body
    assert "2026-11-21T19:00:00" in track.body.decode()


def test_a_contact_change_is_used_by_the_next_notification(merchant, dispatch):  # noqa: F811
    """Notifications read the shipment when they send: the next message goes to the new number only."""
    # numbers of this run only: the in-process SMS outbox outlives the module (this file runs twice)
    base = 2_000_000 + secrets.randbelow(7_000_000)
    old_phone, new_phone = f"+1415{base}", f"+1415{base + 1}"
    _, ships, _ = make_started_route(merchant, 1)
    assert _patch(merchant, ships[0]["id"], {"recipient": {"phone": old_phone, "time_zone": midday_zone()}}
                  ).status_code == 200
    assert _patch(merchant, ships[0]["id"], {"recipient": {"phone": new_phone}}).status_code == 200
    outcomes = {o.channel: o.result for o in dispatch(_image(merchant, ships[0], "out_for_delivery"))}
    assert outcomes["sms"] == "sent"
    assert len(_sms_to(new_phone)) == 1 and _sms_to(old_phone) == []


def test_a_change_is_a_webhook_event_naming_the_fields(merchant, deliverer, fake, stream):  # noqa: F811
    create_endpoint(merchant, events=["updated"])
    ship = make_shipment(merchant, 1)
    assert _patch(merchant, ship["id"], {"recipient": {"email": "new@example.com"}, "instructions": None}
                  ).status_code == 200
    drain_webhooks(stream)
    posts = [json.loads(p.body) for p in fake.to(hook_url(merchant))]
    assert [p["type"] for p in posts] == ["updated"]
    assert posts[0]["data"]["details"] == {"fields": ["instructions", "recipient.email"]}
    assert posts[0]["data"]["shipment_id"] == ship["id"] and posts[0]["data"]["source"] == "merchant"
    assert "new@example.com" not in json.dumps(posts)


def test_openapi_documents_the_patch_with_every_field_optional(client):
    document = client.http.get("/openapi.json").json_body
    operation = document["paths"]["/v1/shipments/{shipment_id}"]["patch"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = document["components"]["schemas"][ref]
    assert not schema.get("required")
    assert set(schema["properties"]) == {"recipient", "address", "location", "time_window", "instructions",
                                         "geofence_radius_m", "custody"}
    assert {"200", "404", "409", "422"} <= set(operation["responses"])
