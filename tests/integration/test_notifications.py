"""Notification dispatch against in-process moto: exactly once per channel, retries, permanent failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.web.branding import Branding
from tests.integration.helpers import make_started_route
from tests.integration.test_pipeline import runner  # noqa: F401

SENDER = "hello@shop.example"


def midday_zone() -> str:
    """A fixed-offset IANA zone where it is about noon now: quiet hours never get in a test's way."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12  # -12 .. +11 hours from UTC
    return "Etc/GMT" + (f"-{offset}" if offset > 0 else f"+{-offset}")


@pytest.fixture()
def dispatch(chalice_app):
    from chalicelib.core.config import get_settings
    from chalicelib.notifications import dispatch as notifications
    from chalicelib.notifications.ledger import Ledger
    from chalicelib.notifications.senders import Notifier
    from chalicelib.storage import get_repository

    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    notifier = Notifier()
    ledger = Ledger(boto3.client("dynamodb"))
    look = notifications.MerchantLook(Branding(name="Corner Shop", support_email="help@shop.example"), SENDER,
                                      midday_zone(), "en")

    def run(image, now=None):
        return notifications.notify_for_event(get_repository(), ledger, notifier, get_settings(), image, look,
                                              now or datetime.now(UTC))

    run.notifier = notifier  # type: ignore[attr-defined]
    run.ledger = ledger  # type: ignore[attr-defined]
    return run


def _image(merchant, shipment, kind, occurred=None):
    return {"merchant_id": merchant.id, "shipment_id": shipment["id"], "type": kind,
            "occurred_at": (occurred or datetime.now(UTC)).isoformat()}


def test_out_for_delivery_is_sent_once_per_channel_however_often_the_event_arrives(merchant, dispatch):
    _, ships, _ = make_started_route(merchant, 1)
    image = _image(merchant, ships[0], "out_for_delivery")
    first = dispatch(image)
    assert sorted((o.channel, o.result) for o in first) == [("email", "sent"), ("sms", "sent")]
    for _ in range(3):  # the stream delivers the batch again, a retry, another worker
        assert sorted(o.result for o in dispatch(image)) == ["skipped", "skipped"]
    states = sorted((e["SK"].split("#")[3], e["state"]) for e in dispatch.ledger.entries(ships[0]["id"]))
    assert states == [("email", "sent"), ("sms", "sent")]


def test_a_stale_approaching_is_dropped_and_recorded_not_sent(merchant, dispatch):
    from chalicelib.shipments.lifecycle import ShipmentStatus
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import event_item

    _, ships, _ = make_started_route(merchant, 1)
    fifty_minutes_ago = datetime.fromtimestamp(datetime.now(UTC).timestamp() - 3000, UTC)
    repo = get_repository()
    item = repo.get_shipment(merchant.id, ships[0]["id"])
    repo.change_statuses([(item, ShipmentStatus.APPROACHING, [], event_item(
        merchant.id, item.shipment_id, "approach-x", "approaching", "system", fifty_minutes_ago,
        datetime.now(UTC), item.status, ShipmentStatus.APPROACHING))])  # a phone that was offline for 50 min
    outcomes = dispatch(_image(merchant, ships[0], "approaching", fifty_minutes_ago))
    assert {o.result for o in outcomes} == {"dropped:stale"}
    assert {e["state"] for e in dispatch.ledger.entries(ships[0]["id"])} == {"dropped"}


def test_throttling_releases_the_claim_for_a_retry_that_then_sends_once(merchant, dispatch):
    from chalicelib.notifications.dispatch import RetryLater

    _, ships, _ = make_started_route(merchant, 1)
    image = _image(merchant, ships[0], "out_for_delivery")
    sns = dispatch.notifier._client("sns")
    with Stubber(sns) as stub:
        stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
        with pytest.raises(RetryLater):
            dispatch(image)
    entries = {e["SK"].split("#")[3]: e for e in dispatch.ledger.entries(ships[0]["id"])}
    assert entries["sms"]["state"] == "deferred" and entries["email"]["state"] == "sent"
    again = {o.channel: o.result for o in dispatch(image)}  # the stream's retry of the same record
    assert again == {"sms": "sent", "email": "skipped"}
    entries = {e["SK"].split("#")[3]: e for e in dispatch.ledger.entries(ships[0]["id"])}
    assert entries["sms"]["attempts"] == "2"


def test_a_permanent_failure_is_recorded_on_the_ledger_and_the_timeline(merchant, dispatch):
    _, ships, _ = make_started_route(merchant, 1)
    image = _image(merchant, ships[0], "out_for_delivery")
    sns = dispatch.notifier._client("sns")
    with Stubber(sns) as stub:
        stub.add_client_error("publish", service_error_code="InvalidParameter", http_status_code=400)
        outcomes = {o.channel: o.result for o in dispatch(image)}
    assert outcomes["sms"] == "failed:InvalidParameter"
    kinds = [e["type"] for e in merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/timeline").json_body["items"]]
    assert kinds.count("notification_failed") == 1
    assert {o.result for o in dispatch(image)} == {"skipped"}  # failed is final until replayed


def _sms_to(phone: str) -> list[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns import sns_backends

    return [text for number, text in sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.values()
            if number == phone]


def test_the_stream_sends_out_for_delivery_and_approaching_once_each(merchant, runner):  # noqa: F811
    from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
    from tests.integration.test_pipeline import STOP, drain, drive_park_leave

    phone = "+14155550177"
    driver = make_driver(merchant)
    target = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]},
                           recipient={"name": "Ada Lovelace", "phone": phone, "time_zone": midday_zone()})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [target["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    fixes = drive_park_leave(now_ms() - 360_000)[:35]  # fresh: approaching and arrived within minutes
    for start in range(0, len(fixes), 10):
        post_pings(merchant.client, driver["token"], fixes[start:start + 10])
    drain(runner)
    drain(runner)  # the pipeline's own timeline items come back through the stream
    texts = _sms_to(phone)
    assert len(texts) == 2, texts
    assert "on its way" in texts[0].lower() or "out for delivery" in texts[0].lower()
    assert target["tracking_url"].rsplit("/", 1)[1] in texts[0]
    # the same records again (a redelivered batch): nothing more is sent
    for start in range(0, len(fixes), 10):
        post_pings(merchant.client, driver["token"], fixes[start:start + 10])
    drain(runner)
    assert len(_sms_to(phone)) == 2


def test_notification_settings_validate_templates_and_drive_the_stream(merchant, runner):  # noqa: F811
    from tests.integration.helpers import make_driver, make_shipment
    from tests.integration.test_pipeline import drain

    defaults = merchant.call("GET", "/v1/notifications/settings").json_body
    assert defaults["policy"]["events"]["out_for_delivery"] == ["email", "sms"] and defaults["templates"] == {}
    bad = merchant.call("PUT", "/v1/notifications/settings",
                        {"templates": {"out_for_delivery": {"en": {"sms": "Hi {first_name}, {0.__class__} {nope}"}}}})
    assert bad.status_code == 422
    fields = {d["field"] for d in bad.json_body["error"]["details"]}
    assert fields == {"templates.out_for_delivery.en.sms"}, bad.json_body
    assert merchant.call("GET", "/v1/notifications/settings").json_body == defaults  # nothing stored
    hostile_name = "{tracking_url}<b>Ada</b>"
    policy = {**defaults["policy"], "events": {**defaults["policy"]["events"], "out_for_delivery": ["sms"]},
              "quiet_hours": None}
    ok = merchant.call("PUT", "/v1/notifications/settings", {
        "policy": policy,
        "templates": {"out_for_delivery": {"en": {"sms": "{merchant_name}: {first_name}, we are on our way! "
                                                         "{tracking_url}"}}}})
    assert ok.status_code == 200, ok.body
    phone = "+14155550188"
    driver = make_driver(merchant)
    shipment = make_shipment(merchant, 1, recipient={"name": hostile_name, "phone": phone,
                                                     "email": "ada@example.com"})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": shipment["delivery_date"],
                                                 "planned_start": datetime.now(UTC).isoformat(),
                                                 "shipment_ids": [shipment["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    drain(runner)
    (text,) = _sms_to(phone)
    assert "we are on our way!" in text and shipment["tracking_url"].rsplit("/", 1)[1] in text
    assert "{tracking_url}" in text  # the recipient's name is text, never a placeholder
    from chalicelib.notifications.ledger import Ledger

    kinds = [e["SK"].split("#")[2:4] for e in Ledger(boto3.client("dynamodb")).entries(shipment["id"])]
    assert ["out_for_delivery", "email"] not in kinds  # the merchant turned email off for this kind


def test_without_eta_or_window_the_message_names_the_day(merchant, dispatch):
    from tests.integration.helpers import make_driver, make_shipment

    phone = "+14155550199"
    driver = make_driver(merchant)
    shipment = make_shipment(merchant, 1, time_window=None, recipient={"name": "Ada", "phone": phone})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": shipment["delivery_date"],
                                                 "planned_start": datetime.now(UTC).isoformat(),
                                                 "shipment_ids": [shipment["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    dispatch(_image(merchant, shipment, "out_for_delivery"))
    (text,) = _sms_to(phone)
    day = datetime.fromisoformat(shipment["delivery_date"]).strftime("%A")
    assert f"expected {day}" in text, text


def test_bad_notification_settings_bodies_are_4xx_and_store_nothing(merchant):
    before = merchant.call("GET", "/v1/notifications/settings").json_body
    r = merchant.client.http.put("/v1/notifications/settings", headers=merchant.headers(), body="{not json")
    assert r.status_code == 400 and json.loads(r.body)["error"]["details"][0]["field"] == "body"
    r = merchant.call("PUT", "/v1/notifications/settings", {"policy": {}, "colours": "red"})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "body"
    r = merchant.call("PUT", "/v1/notifications/settings", {"policy": {"quiet_hours": {"start": "25:00",
                                                                                       "end": "08:00"}}})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"].startswith("policy.quiet_hours")
    assert merchant.client.http.put("/v1/notifications/settings", body="{}",
                                    headers={"Content-Type": "application/json"}).status_code == 401
    assert merchant.call("GET", "/v1/notifications/settings").json_body == before
