"""Conversations: recipient <-> driver per shipment, dispatch <-> driver, broadcast to drivers on duty; read
receipts and unread counts, rate limits, closed conversations (409), tenant and token isolation, timeline events
without the text and `message_sent` webhooks with it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.integration.conftest import Merchant, new_merchant
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms
from tests.integration.test_tracking_page import FORM, driver_update, token_of

JSON = "application/json"


def as_driver(client: Any, driver: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {driver['token']}", "Content-Type": JSON}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    return getattr(client.http, method.lower())(path, **kwargs)


def csrf(client: Any, token: str) -> str:
    page = client.http.get(f"/track/{token}").body.decode()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the tracking page has a CSRF token"
    return found.group(1)


def recipient_post(client: Any, token: str, accept: str = JSON, **fields: str) -> Any:
    from urllib.parse import urlencode

    body = urlencode({"csrf": csrf(client, token), **fields})
    return client.http.post(f"/track/{token}/messages", headers={"Content-Type": FORM, "Accept": accept}, body=body)


def recipient_thread(client: Any, token: str) -> dict[str, Any]:
    r = client.http.get(f"/track/{token}/messages")
    assert r.status_code == 200, r.body
    return r.json_body  # type: ignore[no-any-return]


@pytest.fixture()
def assigned(merchant: Merchant) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A driver on a started route of today with one stop."""
    driver = make_driver(merchant)
    today = iso(now_ms())[:10]
    shipment = make_shipment(merchant, 1, time_window={"start": f"{today}T00:00:00Z", "end": f"{today}T23:00:00Z"})
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": today, "planned_start": iso(now_ms()),
                                             "shipment_ids": [shipment["id"]]})
    assert r.status_code == 201, r.body
    assert merchant.call("POST", f"/v1/routes/{r.json_body['id']}/start").status_code == 200
    return driver, shipment, token_of(shipment)


def test_recipient_to_driver_and_back_with_read_receipts(client: Any, merchant: Merchant,
                                                         assigned: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    driver, shipment, token = assigned
    r = recipient_post(client, token, text="The gate code changed: 4711 <b>bold</b> https://evil.example")
    assert r.status_code == 201, r.body
    assert r.json_body["sender_role"] == "recipient" and r.json_body["sender_name"] == "Recipient"

    unread = as_driver(client, driver, "GET", "/v1/driver/messages/unread").json_body
    assert unread["stops"] == [{"shipment_id": shipment["id"], "unread": 1}] and unread["dispatch"] == 0

    thread = as_driver(client, driver, "GET", f"/v1/driver/shipments/{shipment['id']}/messages").json_body
    assert thread["unread"] == 1 and thread["open"] is True
    assert thread["messages"][0]["text"] == "The gate code changed: 4711 <b>bold</b> https://evil.example"
    assert as_driver(client, driver, "GET", "/v1/driver/messages/unread").json_body["stops"][0]["unread"] == 0

    r = as_driver(client, driver, "POST", f"/v1/driver/shipments/{shipment['id']}/messages", {"text": "At the door"})
    assert r.status_code == 201, r.body
    assert r.json_body["sender_name"] == "Dana"  # the first name only

    seen = recipient_thread(client, token)
    assert [m["sender_role"] for m in seen["messages"]] == ["recipient", "driver"]
    assert seen["messages"][0]["read_by"] == ["driver"]  # the driver read the recipient's message
    assert "+1415" not in json.dumps(seen) and "@" not in json.dumps(seen)
    # the driver sees the recipient read the reply
    again = as_driver(client, driver, "GET", f"/v1/driver/shipments/{shipment['id']}/messages").json_body
    assert "recipient" in again["messages"][1]["read_by"]

    # the timeline has both messages, without their text
    timeline = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body
    sent = [e for e in timeline["items" if "items" in timeline else "events"] if e["type"] == "message_sent"]
    assert len(sent) == 2 and "At the door" not in json.dumps(sent) and "4711" not in json.dumps(sent)

    # dispatch sees the whole conversation
    view = merchant.call("GET", f"/v1/shipments/{shipment['id']}/messages").json_body
    assert [m["text"] for m in view["messages"]][1] == "At the door" and view["unread"] == 2
    assert merchant.call("POST", f"/v1/shipments/{shipment['id']}/messages", {"text": "Dispatch here"}
                         ).status_code == 201
    timeline = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline")
    assert timeline.status_code == 200, timeline.body
    assert [e["source"] for e in timeline.json_body["items"] if e["type"] == "message_sent"] == \
        ["recipient", "driver", "merchant"]


def test_no_js_form_post_and_quick_reply(client: Any, merchant: Merchant,
                                         assigned: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    _, _, token = assigned
    r = recipient_post(client, token, accept="text/html", quick="leave_at_door")
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/track/{token}#messages")
    assert recipient_thread(client, token)["messages"][0]["text"] == "Please leave it at the door."
    # cross-site and expired forms are refused
    bad = client.http.post(f"/track/{token}/messages", headers={"Content-Type": FORM},
                           body="csrf=1.abc&text=hello")
    assert bad.status_code == 403


def test_dispatch_and_driver_thread_and_broadcast(client: Any, merchant: Merchant) -> None:
    on_duty, off_duty = make_driver(merchant, "Ola On"), make_driver(merchant, "Fred Off")
    assert as_driver(client, on_duty, "POST", "/v1/driver/shift", {"action": "start"}).status_code == 200
    r = merchant.call("POST", f"/v1/drivers/{on_duty['id']}/messages", {"text": "Route 7 changed"})
    assert r.status_code == 201 and r.json_body["sender_role"] == "dispatch"
    assert as_driver(client, on_duty, "GET", "/v1/driver/messages/unread").json_body["dispatch"] == 1
    thread = as_driver(client, on_duty, "GET", "/v1/driver/messages").json_body
    assert [m["text"] for m in thread["messages"]] == ["Route 7 changed"] and thread["unread"] == 1
    assert as_driver(client, on_duty, "POST", "/v1/driver/messages", {"text": "OK"}).status_code == 201
    view = merchant.call("GET", f"/v1/drivers/{on_duty['id']}/messages").json_body
    assert [m["sender_name"] for m in view["messages"]] == ["Dispatch", "Ola"]
    assert view["messages"][0]["read_by"] == ["driver"]

    r = merchant.call("POST", "/v1/drivers/messages/broadcast", {"text": "Storm warning: drive carefully"})
    assert r.status_code == 201, r.body
    assert r.json_body["driver_ids"] == [on_duty["id"]]
    texts = [m["text"] for m in as_driver(client, on_duty, "GET", "/v1/driver/messages").json_body["messages"]]
    assert texts[-1] == "Storm warning: drive carefully"
    assert as_driver(client, off_duty, "GET", "/v1/driver/messages").json_body["messages"] == []


def test_rate_limit_and_bad_text(client: Any, merchant: Merchant,
                                 assigned: tuple[dict[str, Any], dict[str, Any], str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.messaging import service

    # One rate window for the whole test: a minute boundary crossed mid-test would reset the count.
    monkeypatch.setattr(service, "rate_bucket", lambda now: 1)
    driver, shipment, token = assigned
    path = f"/v1/driver/shipments/{shipment['id']}/messages"
    for n in range(10):
        assert as_driver(client, driver, "POST", path, {"text": f"message {n}"}).status_code == 201
    r = as_driver(client, driver, "POST", path, {"text": "one too many"})
    assert r.status_code == 429 and r.json_body["error"]["code"] == "rate_limited" and "Retry-After" in r.headers
    # the limit is per sender: the recipient may still write
    assert recipient_post(client, token, text="hello").status_code == 201
    for body in ({"text": "   "}, {"text": "x" * 501}, {"text": 5}, {}):
        bad = merchant.call("POST", f"/v1/shipments/{shipment['id']}/messages", body)
        assert bad.status_code == 422, (body, bad.body)
        assert bad.json_body["error"]["details"][0]["field"] == "text"


def test_closed_conversation_refuses_with_409(client: Any, merchant: Merchant,
                                              assigned: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    from datetime import UTC, datetime, timedelta

    from chalicelib.messaging import rules

    driver, shipment, token = assigned
    assert driver_update(client, driver, shipment["id"], "delivered").status_code == 200
    # just delivered: still open for a while
    assert recipient_post(client, token, text="Thanks!").status_code == 201
    original = rules.CLOSE_AFTER_FINAL
    rules.CLOSE_AFTER_FINAL = timedelta(seconds=-1)
    try:
        r = as_driver(client, driver, "POST", f"/v1/driver/shipments/{shipment['id']}/messages", {"text": "bye"})
        assert r.status_code == 409 and r.json_body["error"]["code"] == "conversation_closed"
        assert r.json_body["error"]["details"][0]["field"] == "text"
        r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/messages", {"text": "late"})
        assert r.status_code == 409
        assert recipient_thread(client, token)["open"] is False
    finally:
        rules.CLOSE_AFTER_FINAL = original
    assert datetime.now(UTC)  # keeps the import used


def test_tenant_and_token_isolation(client: Any, merchant: Merchant,
                                    assigned: tuple[dict[str, Any], dict[str, Any], str]) -> None:
    driver, shipment, token = assigned
    assert recipient_post(client, token, text="private").status_code == 201
    other = new_merchant(client)
    assert other.call("GET", f"/v1/shipments/{shipment['id']}/messages").status_code == 404
    assert other.call("POST", f"/v1/shipments/{shipment['id']}/messages", {"text": "x"}).status_code == 404
    assert other.call("GET", f"/v1/drivers/{driver['id']}/messages").status_code == 404
    # another driver of the same merchant cannot read this stop's conversation
    stranger = make_driver(merchant, "Sue Stranger")
    assert as_driver(client, stranger, "GET", f"/v1/driver/shipments/{shipment['id']}/messages").status_code == 404
    # another shipment's token reads its own (empty) conversation, never this one
    second = make_shipment(merchant, 2)
    assert recipient_thread(client, token_of(second))["messages"] == []
    assert client.http.get("/track/not-a-token/messages").status_code == 404
    assert now_ms() > 0


@pytest.fixture()
def pipeline(chalice_app: Any, tmp_path: Any) -> Any:
    """The stream from now on through the stream pipeline; `pipeline.events` keeps each batch to redeliver."""
    from tests.integration.streams import recording_pipeline_runner

    return recording_pipeline_runner(tmp_path)


def _sms_to(phone: str) -> list[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns import sns_backends

    return [text for number, text in sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.values()
            if number == phone]


def test_a_driver_message_reaches_a_closed_page_by_sms_once(client: Any, merchant: Merchant, pipeline: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.messaging import rules
    from chalicelib.pipeline.api import stream_pipeline
    from tests.integration.streams import drain

    policy = merchant.call("GET", "/v1/notifications/settings").json_body["policy"]
    assert merchant.call("PUT", "/v1/notifications/settings",
                         {"policy": {**policy, "quiet_hours": None}}).status_code == 200
    phone = "+14155550231"
    driver = make_driver(merchant)
    today = iso(now_ms())[:10]
    shipment = make_shipment(merchant, 1, recipient={"name": "Rita Recipient", "phone": phone},
                             time_window={"start": f"{today}T00:00:00Z", "end": f"{today}T23:00:00Z"})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": today,
                                                 "planned_start": iso(now_ms()), "shipment_ids": [shipment["id"]]})
    merchant.call("POST", f"/v1/routes/{route.json_body['id']}/start")
    drain(pipeline)
    before = len(_sms_to(phone))
    path = f"/v1/driver/shipments/{shipment['id']}/messages"
    assert as_driver(client, driver, "POST", path, {"text": "Secret gate 1234?"}).status_code == 201
    drain(pipeline)
    texts = _sms_to(phone)[before:]
    assert len(texts) == 1 and "Dana" in texts[0] and f"{token_of(shipment)}#messages" in texts[0]
    assert "1234" not in texts[0]  # never the text itself
    for event in list(pipeline.events):  # Lambda's at-least-once: every batch again
        assert stream_pipeline(event, None) == {"batchItemFailures": []}
    assert as_driver(client, driver, "POST", path, {"text": "Still unread"}).status_code == 201
    drain(pipeline)
    assert len(_sms_to(phone)) - before == 1  # one note per run of unread messages
    # the recipient reads (the page is open): no SMS while it polls
    recipient_thread(client, token_of(shipment))
    assert as_driver(client, driver, "POST", path, {"text": "At the door"}).status_code == 201
    drain(pipeline)
    assert len(_sms_to(phone)) - before == 1
    # the page closed a while ago: the next run of unread messages is a new note
    monkeypatch.setattr(rules, "PAGE_OPEN_S", -1)
    assert as_driver(client, driver, "POST", path, {"text": "Leaving now"}).status_code == 201
    drain(pipeline)
    assert len(_sms_to(phone)) - before == 2


def _inbound(phone: str, text: str, to: str = "+14155550100") -> dict[str, int]:
    import app as app_module
    from infra.local.functions import handler_of
    from infra.local.reply import inbound_message, sns_event

    event = sns_event("arn:aws:sns:us-east-1:123456789012:doorstep-inbound-sms", inbound_message(phone, text, to))
    return handler_of(app_module.app, "inbound_sms")(event, None)  # type: ignore[no-any-return]


def test_inbound_sms_reply_reaches_the_latest_open_conversation_and_stop_opts_out(
        client: Any, merchant: Merchant, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.messaging import rules

    phone = "+14155550142"
    assert merchant.call("PUT", "/v1/messaging/sms-number", {"number": "+14155550100"}).status_code == 200
    other = new_merchant(client)
    assert other.call("PUT", "/v1/messaging/sms-number", {"number": "+14155550100"}).status_code == 409
    driver = make_driver(merchant)
    older = make_shipment(merchant, 1, recipient={"name": "Rita", "phone": phone})
    newer = make_shipment(merchant, 2, recipient={"name": "Rita", "phone": phone})
    assert _inbound(phone, "Gate code is 4711") == {"delivered": 1}
    assert [m["text"] for m in recipient_thread(client, token_of(newer))["messages"]] == ["Gate code is 4711"]
    # SNS delivers one inbound message twice: stored once
    import app as app_module
    from infra.local.functions import handler_of
    from infra.local.reply import inbound_message, sns_event

    twice = sns_event("arn:aws:sns:us-east-1:123456789012:doorstep-inbound-sms",
                      inbound_message(phone, "Ring the bell", "+14155550100"))
    assert handler_of(app_module.app, "inbound_sms")(twice, None) == {"delivered": 1}
    assert handler_of(app_module.app, "inbound_sms")(twice, None) == {"refused:duplicate_message": 1}
    assert [m["text"] for m in recipient_thread(client, token_of(newer))["messages"]] == \
        ["Gate code is 4711", "Ring the bell"]
    assert recipient_thread(client, token_of(older))["messages"] == []
    # the newer one is closed: the reply goes to the older, still open one
    merchant.call("POST", f"/v1/shipments/{newer['id']}/cancel")
    monkeypatch.setattr(rules, "CLOSE_AFTER_FINAL", __import__("datetime").timedelta(seconds=-1))
    assert _inbound(phone, "Back at 6") == {"delivered": 1}
    assert [m["text"] for m in recipient_thread(client, token_of(older))["messages"]] == ["Back at 6"]
    assert _inbound("+14155550143", "who?") == {"ignored:no_open_conversation": 1}
    assert _inbound(phone, "hi", to="+14155550155") == {"ignored:unknown_number": 1}
    assert _inbound(phone, "HELP") == {"help": 1}
    assert any("STOP" in text for text in _sms_to(phone))
    # STOP: the existing opt-out item, so no more texts to that number
    assert _inbound(phone, "Stop") == {"opted_out": 1}
    from chalicelib.notifications.service import notify_recipient_message
    from chalicelib.storage import get_repository

    assert driver["id"]
    assert notify_recipient_message(get_repository(), merchant.id, older["id"], "0", "Dana") == \
        ["sms:dropped:opted_out"]


def test_message_sent_webhooks_carry_the_text_the_timeline_does_not(client: Any, merchant: Merchant,
                                                                    tmp_path: Any) -> None:
    import boto3

    from chalicelib.webhooks import delivery as webhook_delivery
    from infra.local.streams import RunnerConfig, StreamRunner
    from tests.conftest import TEST_ENV
    from tests.integration.test_webhooks import Clock, FakeTransport, create_endpoint, hook_url, make_deliverer

    fake = FakeTransport()
    make_deliverer(fake, Clock())
    try:
        runner = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"),
                              TEST_ENV["DOORSTEP_TABLE_NAME"],
                              lambda event, context: client.lambda_.invoke("webhook_sender", event).payload,
                              tmp_path / "cp.json", tmp_path / "dlq.jsonl",
                              RunnerConfig(starting_position="LATEST", poll_interval_s=0, batch_size=25))
        runner.refresh_shards()
        create_endpoint(merchant, events=["message_sent"])
        driver = make_driver(merchant, "Ola On")
        assert merchant.call("POST", f"/v1/drivers/{driver['id']}/messages", {"text": "Route 7 <changed>"}
                             ).status_code == 201
        shipment = make_shipment(merchant, 3)
        assert merchant.call("POST", f"/v1/shipments/{shipment['id']}/messages", {"text": "Hello Rita"}
                             ).status_code == 201
        while runner.poll_once():
            pass
        bodies = [json.loads(p.body) for p in fake.to(hook_url(merchant))]
        assert {b["type"] for b in bodies} == {"message_sent"} and len(bodies) == 2
        by_text = {b["data"]["details"]["text"]: b["data"] for b in bodies}
        assert by_text["Route 7 <changed>"]["driver_id"] == driver["id"]
        assert by_text["Hello Rita"]["shipment_id"] == shipment["id"]
        assert by_text["Hello Rita"]["details"]["sender_role"] == "dispatch"
    finally:
        webhook_delivery.use(None)
