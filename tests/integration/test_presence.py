"""Driver presence: shifts, offline once per episode and recovery once (repeated schedule runs, duplicated stream
batches), OwnTracks' last will, the fleet view with its ETag, and tenant isolation."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.local.streams import StreamRunner
from infra.stream_filters import admits, mapping_filters
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.streams import drain, pipeline_runner, webhook_runner

MINUTE_MS = 60_000


@pytest.fixture()
def runner(chalice_app: Any, tmp_path: Any) -> Any:
    return pipeline_runner(tmp_path)



def driver_call(merchant: Any, driver: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json"}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    return getattr(merchant.client.http, method.lower())(path, **kwargs)


def fleet_entry(merchant: Any, driver_id: str) -> dict[str, Any]:
    r = merchant.call("GET", "/v1/fleet")
    assert r.status_code == 200, r.body
    return next(d for d in r.json_body["drivers"] if d["driver_id"] == driver_id)


def events(driver_id: str) -> list[dict[str, Any]]:
    from chalicelib.fleet.presence import driver_events
    from chalicelib.storage import get_repository

    return list(reversed(driver_events(get_repository(), driver_id)))


def detect(at_ms: int) -> int:
    """One run of the schedule at `at_ms` (it sees every merchant's drivers in the table)."""
    from chalicelib.fleet.presence import detect_offline
    from chalicelib.storage import get_repository

    return detect_offline(get_repository(), at_ms)


def fix(at_ms: int, lat: float = 47.61, speed: float | None = None) -> dict[str, Any]:
    ping: dict[str, Any] = {"lat": lat, "lng": -122.33, "accuracy": 8, "fix_time": iso(at_ms)}
    if speed is not None:
        ping["speed"] = speed
    return ping


def test_shift_start_and_end_drive_the_fleet_view(merchant: Any) -> None:
    driver = make_driver(merchant, "Sam Shift")
    assert fleet_entry(merchant, driver["id"])["state"] == "off_duty"
    r = driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
    assert r.status_code == 200, r.body
    assert r.json_body["on_duty"] is True and r.json_body["state"] == "stopped"
    entry = fleet_entry(merchant, driver["id"])
    assert entry["on_duty"] is True and entry["name"] == "Sam Shift" and entry["last_seen_at"] is None
    assert driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "end"}).json_body["on_duty"] is False
    assert fleet_entry(merchant, driver["id"])["state"] == "off_duty"


def test_bad_shift_and_status_bodies_name_the_field(merchant: Any) -> None:
    driver = make_driver(merchant)
    r = driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "pause"})
    assert r.status_code == 422 and "action" in r.body.decode()
    r = driver_call(merchant, driver, "POST", "/v1/driver/app-status", {"battery": 101})
    assert r.status_code == 422 and "battery" in r.body.decode()
    r = driver_call(merchant, driver, "POST", "/v1/driver/app-status", {"app_state": "asleep"})
    assert r.status_code == 422 and "app_state" in r.body.decode()
    assert merchant.call("POST", "/v1/driver/shift", {"action": "start"}).status_code == 401


def test_offline_fires_once_per_episode_and_recovers_once(merchant: Any, runner: Any) -> None:
    driver = make_driver(merchant)
    driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
    driver_call(merchant, driver, "POST", "/v1/driver/app-status",
                {"battery": 7, "location_permission": "granted", "app_state": "foreground"})
    start = now_ms()
    assert post_pings(merchant.client, driver["token"], [fix(start - 2000)]).json_body["accepted"] == 1
    drain(runner)
    assert fleet_entry(merchant, driver["id"])["last_seen_at"] is not None
    detect(start + 2 * MINUTE_MS)
    assert events(driver["id"]) == []  # not silent long enough
    # The schedule runs every minute while the driver stays silent: one episode, one event.
    for minutes in (6, 7, 8):
        detect(start + minutes * MINUTE_MS)
    entry = fleet_entry(merchant, driver["id"])
    assert (entry["state"], entry["reason"], entry["battery"]) == ("offline", "low_battery", 7)
    assert [(e["type"], e["reason"]) for e in events(driver["id"])] == [("driver_offline", "low_battery")]
    drain(runner)  # the event itself reaches the pipeline: nothing fails
    # A fix recovers the driver once, however often its batch is delivered.
    assert post_pings(merchant.client, driver["token"], [fix(now_ms())]).json_body["accepted"] == 1
    drain(runner)
    assert post_pings(merchant.client, driver["token"], [fix(now_ms() + 1000)]).json_body["accepted"] == 1
    drain(runner)
    assert [e["type"] for e in events(driver["id"])] == ["driver_offline", "driver_online"]
    assert fleet_entry(merchant, driver["id"])["state"] in ("stopped", "moving")
    detect(now_ms() + MINUTE_MS)
    assert len(events(driver["id"])) == 2
    # The next silence is a new episode (its own event id), again once.
    later = now_ms() + 12 * MINUTE_MS
    detect(later)
    detect(later)
    kinds = [e["event_id"] for e in events(driver["id"])]
    assert kinds == [f"driver-offline-{driver['id']}-1", f"driver-online-{driver['id']}-1",
                     f"driver-offline-{driver['id']}-2"]
    assert not runner.dead_letter_file.exists()


def test_duplicated_stream_batches_change_nothing_and_reach_the_handlers(merchant: Any, runner: Any) -> None:
    from chalicelib.pipeline import service as pipeline
    from chalicelib.pipeline.api import stream_pipeline

    heard: list[tuple[str, str, str | None]] = []

    def listener(r: Any, m: str, d: str, kind: str, at: Any, reason: str | None) -> None:
        heard.append((d, kind, reason))

    pipeline.DRIVER_EVENT_HANDLERS.append(listener)
    try:
        driver = make_driver(merchant)
        driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
        captured: list[dict[str, Any]] = []
        runner.handler = lambda event, ctx: (captured.append(event), stream_pipeline(event, ctx))[1]
        start = now_ms()
        post_pings(merchant.client, driver["token"], [fix(start - 1000)])
        drain(runner)
        detect(start + 6 * MINUTE_MS)
        drain(runner)
        post_pings(merchant.client, driver["token"], [fix(now_ms())])
        drain(runner)
        drain(runner)  # the online event written while the batch ran
        before = events(driver["id"])
        assert [e["type"] for e in before] == ["driver_offline", "driver_online"]
        for event in captured:  # Lambda may deliver every batch twice
            assert stream_pipeline(event, None) == {"batchItemFailures": []}
        assert events(driver["id"]) == before
        mine = [h for h in heard if h[0] == driver["id"]]
        # each event reached the handlers (twice: the batch was delivered twice; handlers are idempotent)
        assert {(k, r) for _, k, r in mine} == {("driver_offline", "no_fixes"), ("driver_online", "no_fixes")}
    finally:  # only the listener goes: the exception queue's handler stays for the tests after this one
        pipeline.DRIVER_EVENT_HANDLERS.remove(listener)


def test_a_shift_ended_while_offline_closes_the_episode_and_its_exception(merchant: Any, runner: Any) -> None:
    driver = make_driver(merchant)
    driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
    start = now_ms()
    post_pings(merchant.client, driver["token"], [fix(start - 1000)])
    drain(runner)
    detect(start + 6 * MINUTE_MS)
    drain(runner)
    opened = merchant.call("GET", "/v1/exceptions?state=open&kind=driver_offline").json_body["items"]
    assert [x["driver_id"] for x in opened] == [driver["id"]]
    r = driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "end"})
    assert r.status_code == 200 and r.json_body["on_duty"] is False
    # Ending again (a retried request) adds nothing: the episode closes once.
    assert driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "end"}).status_code == 200
    assert [(e["type"], e["event_id"]) for e in events(driver["id"])] == [
        ("driver_offline", f"driver-offline-{driver['id']}-1"),
        ("driver_off_duty", f"driver-off-duty-{driver['id']}-1")]
    drain(runner)
    assert merchant.call("GET", "/v1/exceptions?state=open&kind=driver_offline").json_body["items"] == []
    resolved = merchant.call("GET", "/v1/exceptions?state=resolved&kind=driver_offline").json_body["items"]
    assert [x["driver_id"] for x in resolved] == [driver["id"]]
    assert fleet_entry(merchant, driver["id"])["state"] == "off_duty"
    detect(now_ms() + 20 * MINUTE_MS)  # off duty: never offline again until the next shift
    assert len(events(driver["id"])) == 2


def test_a_shift_ended_while_online_writes_no_event(merchant: Any) -> None:
    driver = make_driver(merchant)
    driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
    assert driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "end"}).json_body["on_duty"] is False
    assert events(driver["id"]) == []


def test_the_deployed_filters_admit_presence_events() -> None:
    record = {"eventName": "INSERT", "dynamodb": {
        "Keys": {"PK": {"S": "DRIVER#drv_1"}, "SK": {"S": "EVENT#2026-01-01T00:00:00.000Z#driver-offline-drv_1-1"}},
        "NewImage": {"type": {"S": "driver_offline"}, "merchant_id": {"S": "m"}, "driver_id": {"S": "drv_1"}}}}
    assert admits(mapping_filters("StreamPipelineEventSourceMapping"), record)
    assert admits(mapping_filters("WebhookSenderEventSourceMapping"), record)
    off_duty = json.loads(json.dumps(record).replace("driver_offline", "driver_off_duty"))
    assert admits(mapping_filters("StreamPipelineEventSourceMapping"), off_duty)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_owntracks_last_will_marks_offline_at_once(merchant: Any) -> None:
    driver = make_driver(merchant)
    auth = {"Authorization": _basic(driver["id"], driver["token"]), "Content-Type": "application/json"}
    lwt = json.dumps({"_type": "lwt", "tst": now_ms() // 1000 - 600})
    r = merchant.client.http.post("/owntracks", headers=auth, body=lwt)
    assert (r.status_code, r.body) == (200, b"[]")
    assert events(driver["id"]) == []  # off duty: a dropped connection is nobody's concern
    driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
    for _ in range(2):  # the broker may publish it twice
        assert merchant.client.http.post("/owntracks", headers=auth, body=lwt).status_code == 200
    assert [(e["type"], e["reason"]) for e in events(driver["id"])] == [("driver_offline", "lwt")]
    entry = fleet_entry(merchant, driver["id"])
    assert (entry["state"], entry["reason"]) == ("offline", "lwt")
    detect(now_ms() + 30 * MINUTE_MS)  # out of the due index while offline: no second event
    assert len(events(driver["id"])) == 1


def test_a_route_puts_its_driver_on_duty_and_completion_ends_the_shift(merchant: Any) -> None:
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n) for n in (1, 2)]
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [s["id"] for s in ships]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    entry = fleet_entry(merchant, driver["id"])
    assert entry["on_duty"] is True
    assert entry["route"] == {"id": route["id"], "status": "active", "done": 0, "remaining": 0, "late": 0}
    assert merchant.call("POST", f"/v1/routes/{route['id']}/complete").status_code == 200
    entry = fleet_entry(merchant, driver["id"])
    assert (entry["state"], entry["route"]) == ("off_duty", None)
    detect(now_ms() + 30 * MINUTE_MS)
    assert events(driver["id"]) == []


def test_reassigning_an_active_route_moves_its_duty(merchant: Any) -> None:
    first, _, route = make_started_route_today(merchant)
    second = make_driver(merchant, "Second")
    r = merchant.call("POST", f"/v1/routes/{route['id']}/reassign", {"driver_id": second["id"]})
    assert r.status_code == 200, r.body
    assert fleet_entry(merchant, first["id"])["state"] == "off_duty"
    moved = fleet_entry(merchant, second["id"])
    assert moved["on_duty"] is True and moved["route"]["id"] == route["id"]


def test_the_last_stop_done_completes_the_route_and_ends_the_shift(merchant: Any, runner: Any) -> None:
    driver, ships, route = make_started_route_today(merchant, stops=1)
    r = driver_call(merchant, driver, "POST", f"/v1/driver/shipments/{ships[0]['id']}/status",
                    {"status": "delivered", "occurred_at": iso(now_ms() - 1000)})
    assert r.status_code == 200, r.body
    drain(runner)  # the delivered event: the pipeline completes the route, which ends the driver's shift
    assert merchant.call("GET", f"/v1/routes/{route['id']}").json_body["status"] == "completed"
    entry = fleet_entry(merchant, driver["id"])
    assert (entry["on_duty"], entry["route"]) == (False, None)
    detect(now_ms() + 30 * MINUTE_MS)
    assert events(driver["id"]) == []


def test_a_fix_right_after_a_last_will_recovers_even_after_a_stop_completed(merchant: Any, runner: Any) -> None:
    driver, ships, _ = make_started_route_today(merchant)
    post_pings(merchant.client, driver["token"], [fix(now_ms() - 5000, lat=47.5)])
    drain(runner)
    auth = {"Authorization": _basic(driver["id"], driver["token"]), "Content-Type": "application/json"}
    assert merchant.client.http.post("/owntracks", headers=auth, body=json.dumps({"_type": "lwt"})).status_code == 200
    # The phone delivers a stop on its way back: the pipeline's state is saved for the stop, keeping the flag.
    r = driver_call(merchant, driver, "POST", f"/v1/driver/shipments/{ships[0]['id']}/status",
                    {"status": "delivered", "occurred_at": iso(now_ms() - 2000)})
    assert r.status_code == 200, r.body
    drain(runner)
    # seconds later (the due time moves by far less than a minute), a fix: recovered at once
    post_pings(merchant.client, driver["token"], [fix(now_ms(), lat=47.5001)])
    drain(runner)
    assert [(e["type"], e["reason"]) for e in events(driver["id"])] == [("driver_offline", "lwt"),
                                                                        ("driver_online", "lwt")]
    assert fleet_entry(merchant, driver["id"])["state"] in ("stopped", "moving")


def make_started_route_today(merchant: Any, stops: int = 2) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                                      dict[str, Any]]:
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n) for n in range(1, stops + 1)]
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [s["id"] for s in ships]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    return driver, ships, route


def test_fleet_etag_answers_304_until_something_changes(merchant: Any) -> None:
    driver = make_driver(merchant)
    first = merchant.call("GET", "/v1/fleet")
    etag = first.headers["ETag"]
    again = merchant.call("GET", "/v1/fleet", **{"If-None-Match": etag})
    assert again.status_code == 304 and again.body == b"" and again.headers["ETag"] == etag
    driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
    changed = merchant.call("GET", "/v1/fleet", **{"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_fleet_is_tenant_scoped(merchant: Any, other_merchant: Any) -> None:
    mine = make_driver(merchant, "Mine")
    driver_call(merchant, mine, "POST", "/v1/driver/shift", {"action": "start"})
    theirs = make_driver(other_merchant, "Theirs")
    ids = [d["driver_id"] for d in other_merchant.call("GET", "/v1/fleet").json_body["drivers"]]
    assert ids == [theirs["id"]]
    assert merchant.client.http.get("/v1/fleet").status_code == 401


# The webhook sender as tests/integration/test_webhooks.py drives it: a fake transport, the stream to the
# webhook_sender Lambda.
from tests.integration import test_webhooks as webhooks  # noqa: E402


@pytest.fixture()
def hook_transport(chalice_app: Any) -> Iterator[Any]:
    from chalicelib.webhooks import delivery as webhook_delivery

    transport = webhooks.FakeTransport()
    webhooks.make_deliverer(transport, webhooks.Clock())
    yield transport
    webhook_delivery.use(None)


@pytest.fixture()
def hook_stream(client: Any, chalice_app: Any, tmp_path: Any) -> StreamRunner:
    return webhook_runner(client, tmp_path)


def test_presence_events_go_out_on_the_webhook_once(merchant: Any, client: Any, hook_transport: Any,
                                                     hook_stream: StreamRunner) -> None:
    from chalicelib.storage import get_repository
    from chalicelib.webhooks.store import WebhookStore

    secret = webhooks.create_endpoint(merchant)["secret"]
    try:
        driver = make_driver(merchant)
        driver_call(merchant, driver, "POST", "/v1/driver/shift", {"action": "start"})
        auth = {"Authorization": _basic(driver["id"], driver["token"]), "Content-Type": "application/json"}
        lwt = json.dumps({"_type": "lwt"})
        assert merchant.client.http.post("/owntracks", headers=auth, body=lwt).status_code == 200
        drain(hook_stream)
        posts = hook_transport.to(webhooks.hook_url(merchant))
        bodies = [json.loads(p.body) for p in posts]
        assert [(b["type"], b["data"]["driver_id"], b["data"]["details"]["reason"]) for b in bodies] == [
            ("driver_offline", driver["id"], "lwt")]
        assert bodies[0]["id"] == f"driver-offline-{driver['id']}-1" and bodies[0]["merchant_id"] == merchant.id
        assert webhooks.signed_ok(secret, posts[0], time.time())
        for batch in hook_stream.batches:  # type: ignore[attr-defined]  # redelivered: nothing sent twice
            assert client.lambda_.invoke("webhook_sender", batch).payload == {"batchItemFailures": []}
        assert len(hook_transport.to(webhooks.hook_url(merchant))) == 1
    finally:  # the session's table outlives this module: no endpoint left behind for later retry runs
        WebhookStore(get_repository().client).delete_endpoint(merchant.id)
