"""The recipient's message preferences: one-click unsubscribe by POST without a session (RFC 8058 headers on every
email), the preferences page (this delivery or every delivery of the merchant, opting back in), the ledger
honouring them before every send, delivery-critical kinds, the merchant's list and export, tenant isolation."""

from __future__ import annotations

import csv
import io
import itertools
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest

from chalicelib.web.branding import Branding
from tests.integration.conftest import Merchant
from tests.integration.helpers import make_started_route
from tests.integration.test_notifications import SENDER, midday_zone

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_CONTACTS = itertools.count(1)


def started(merchant: Merchant, stops: int, phone: str | None = None, email: str | None = None
            ) -> list[dict[str, Any]]:
    """A started route's shipments, all with one phone and email of this test's own: the in-process SMS and
    email outboxes outlive a module, and other modules count what was sent to the default contacts."""
    n = next(_CONTACTS)
    phone, email = phone or f"+1415555{n:04d}", email or f"prefs-{n}-{merchant.id.lower()}@example.com"
    _, ships, _ = make_started_route(merchant, stops)
    for ship in ships:
        r = merchant.call("PATCH", f"/v1/shipments/{ship['id']}", {"recipient": {"phone": phone, "email": email}})
        assert r.status_code == 200, r.body
        ship["recipient"] = r.json_body["recipient"]
    return ships


@pytest.fixture()
def send(chalice_app: Any) -> Any:
    """notify_for_event as the stream calls it, with the merchant's stored preference settings."""
    from chalicelib.core.config import get_settings
    from chalicelib.notifications import dispatch
    from chalicelib.notifications.ledger import Ledger
    from chalicelib.notifications.senders import Notifier
    from chalicelib.storage import get_repository

    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    notifier, ledger = Notifier(), Ledger(boto3.client("dynamodb"))
    look = dispatch.MerchantLook(Branding(name="Corner Shop"), SENDER, midday_zone(), "en")

    def run(merchant: Merchant, shipment: dict[str, Any], kind: str) -> dict[str, str]:
        repo = get_repository()
        stored = repo.get_merchant(merchant.id)
        image = {"merchant_id": merchant.id, "shipment_id": shipment["id"], "type": kind,
                 "occurred_at": datetime.now(UTC).isoformat()}
        outcomes = dispatch.notify_for_event(
            repo, ledger, notifier, get_settings(), image, look, datetime.now(UTC),
            preferences=dispatch.load_preferences(stored.notifications if stored else None))
        return {o.channel: o.result for o in outcomes}

    return run


def _links(merchant: Merchant, shipment: dict[str, Any]) -> tuple[str, str]:
    from chalicelib.core.config import get_settings
    from chalicelib.notifications.preferences import preferences_url, unsubscribe_url
    from chalicelib.notifications.rules import Channel

    s = get_settings()
    return (unsubscribe_url("", s.token_secret, merchant.id, shipment["id"], Channel.EMAIL),
            preferences_url("", s.token_secret, merchant.id, shipment["id"]))


def _raw_emails_to(address: str) -> list[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return [m.raw_data for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
            if hasattr(m, "raw_data") and address in (m.destinations or [])]


def test_every_email_carries_one_click_unsubscribe_and_it_works_by_post_without_a_session(
        merchant: Merchant, client: Any, send: Any) -> None:
    address = f"one-click-{merchant.id.lower()}@example.com"
    ships = started(merchant, 2, email=address)
    assert send(merchant, ships[0], "out_for_delivery") == {"sms": "sent", "email": "sent"}
    raw = _raw_emails_to(address)[-1]
    link = re.search(r"^List-Unsubscribe: <http://testserver(/unsubscribe/[^>]+)>", raw, re.M)
    assert link, raw[:800]
    assert re.search(r"^List-Unsubscribe-Post: List-Unsubscribe=One-Click", raw, re.M)
    assert raw.replace("=\r\n", "").count("/unsubscribe/") >= 3  # the header, the text and the HTML footers
    # A GET (a mail scanner) only asks.
    asked = client.http.get(link.group(1))
    assert asked.status_code == 200 and b'method="post"' in asked.body
    # In the merchant's colours, as its tracking page: the stylesheet the page links is served.
    theme = re.search(rb'<link rel="stylesheet" href="([^"]+/theme\.css\?v=[0-9a-f]{12})">', asked.body)
    assert theme, asked.body[:600]
    css = client.http.get(theme.group(1).decode())
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert css.body.startswith(b":root{") and b"--" in css.body
    forged = client.http.get(theme.group(1).decode().replace("/preferences/", "/preferences/x"))
    assert forged.status_code == 404
    assert merchant.call("GET", "/v1/opt-outs").json_body["items"] == []
    # The mail client's POST: no cookie, no CSRF, the RFC 8058 body.
    for _ in range(2):  # a repeat changes nothing
        done = client.http.post(link.group(1), headers=FORM, body="List-Unsubscribe=One-Click")
        assert done.status_code == 200 and b'role="status"' in done.body
    items = merchant.call("GET", "/v1/opt-outs").json_body["items"]
    assert [(i["channel"], i["contact"], i["scope"], i["source"]) for i in items] == [
        ("email", address, "merchant", "recipient")]
    # The next message skips the email, the SMS still goes.
    assert send(merchant, ships[1], "out_for_delivery") == {"sms": "sent", "email": "dropped:opted_out"}
    # A multipart body (RFC 8058 allows it) is accepted too.
    multipart = client.http.post(link.group(1), headers={"Content-Type": "multipart/form-data; boundary=x"},
                                 body="--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
                                      "One-Click\r\n--x--\r\n")
    assert multipart.status_code == 200


def test_opting_out_stops_the_next_message_and_opting_back_in_restores_it(merchant: Merchant, client: Any,
                                                                          send: Any) -> None:
    ships = started(merchant, 4)
    _, prefs = _links(merchant, ships[0])
    page = client.http.get(prefs, headers={"Accept-Language": "de"})
    assert page.status_code == 200 and 'lang="de"' in page.body.decode()
    assert b'name="sms" value="none" checked' in page.body
    # Not for this delivery: SMS off for shipment 0 only.
    r = client.http.post(prefs, headers=FORM, body=urlencode({"sms": "delivery", "email": "none"}))
    assert r.status_code == 303 and r.headers["Location"].endswith("?saved=1")
    assert b'name="sms" value="delivery" checked' in client.http.get(prefs + "?saved=1").body
    assert send(merchant, ships[0], "out_for_delivery") == {"sms": "dropped:opted_out", "email": "sent"}
    assert send(merchant, ships[1], "out_for_delivery") == {"sms": "sent", "email": "sent"}
    items = merchant.call("GET", "/v1/opt-outs").json_body["items"]
    assert [(i["scope"], i["shipment_id"]) for i in items] == [("delivery", ships[0]["id"])]
    # Not for any delivery of this merchant.
    client.http.post(prefs, headers=FORM, body=urlencode({"sms": "merchant"}))
    assert send(merchant, ships[2], "out_for_delivery") == {"sms": "dropped:opted_out", "email": "sent"}
    # Back in: the next message goes again.
    client.http.post(prefs, headers=FORM, body=urlencode({"sms": "none"}))
    assert send(merchant, ships[3], "out_for_delivery") == {"sms": "sent", "email": "sent"}
    assert merchant.call("GET", "/v1/opt-outs").json_body["items"] == []


def test_delivery_critical_kinds_still_reach_a_recipient_who_opted_out(merchant: Merchant, client: Any,
                                                                       send: Any) -> None:
    bad = merchant.call("PUT", "/v1/notifications/settings", {"preferences": {"critical_kinds": ["nope"]}})
    assert bad.status_code == 422 and bad.json_body["error"]["details"][0]["field"] == "preferences.critical_kinds"
    ships = started(merchant, 2)
    _, prefs = _links(merchant, ships[0])
    assert b"sends you nothing" in client.http.get(prefs).body
    client.http.post(prefs, headers=FORM, body=urlencode({"sms": "merchant", "email": "merchant"}))
    assert send(merchant, ships[0], "out_for_delivery") == {"sms": "dropped:opted_out",
                                                             "email": "dropped:opted_out"}
    put = merchant.call("PUT", "/v1/notifications/settings", {"preferences": {"critical_kinds": ["out_for_delivery"]}})
    assert put.status_code == 200 and put.json_body["preferences"]["critical_kinds"] == ["out_for_delivery"]
    assert b"out for delivery" in client.http.get(prefs).body  # what they will still receive
    assert send(merchant, ships[1], "out_for_delivery") == {"sms": "sent", "email": "sent"}


def test_sms_carry_the_opt_out_hint_unless_the_merchant_turns_it_off(merchant: Merchant, send: Any) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends

    ships = started(merchant, 2)
    phone = ships[0]["recipient"]["phone"]
    send(merchant, ships[0], "out_for_delivery")
    merchant.call("PUT", "/v1/notifications/settings", {"preferences": {"sms_opt_out_hint": False}})
    send(merchant, ships[1], "out_for_delivery")
    texts = [m[1] for m in sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sms_messages.values() if m[0] == phone]
    assert texts[-2].endswith("Reply STOP to opt out.") and "STOP" not in texts[-1]


def test_another_merchant_is_unaffected_and_never_sees_the_contact(merchant: Merchant, other_merchant: Merchant,
                                                                   client: Any, send: Any) -> None:
    mine = started(merchant, 1)
    contact = mine[0]["recipient"]
    theirs = started(other_merchant, 1, contact["phone"], contact["email"])  # the same phone and email
    _, prefs = _links(merchant, mine[0])
    client.http.post(prefs, headers=FORM, body=urlencode({"sms": "merchant", "email": "merchant"}))
    assert send(merchant, mine[0], "out_for_delivery") == {"sms": "dropped:opted_out", "email": "dropped:opted_out"}
    assert send(other_merchant, theirs[0], "out_for_delivery") == {"sms": "sent", "email": "sent"}
    assert len(merchant.call("GET", "/v1/opt-outs").json_body["items"]) == 2
    assert other_merchant.call("GET", "/v1/opt-outs").json_body["items"] == []
    assert other_merchant.call("GET", "/v1/opt-outs?format=csv").body.decode().splitlines() == [
        "channel,contact,scope,shipment_id,source,created_at"]
    exported = merchant.call("GET", "/v1/opt-outs?format=csv")
    assert exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.body.decode())))
    assert sorted((r["channel"], r["contact"]) for r in rows) == [("email", contact["email"]),
                                                                 ("sms", contact["phone"])]


def test_forged_and_foreign_links_are_the_404_page(merchant: Merchant, client: Any) -> None:
    ships = started(merchant, 1)
    unsubscribe, prefs = _links(merchant, ships[0])
    assert client.http.get(prefs[:-3] + "AAA").status_code == 404
    assert client.http.post(unsubscribe[:-3] + "AAA", headers=FORM, body="List-Unsubscribe=One-Click"
                            ).status_code == 404
    assert client.http.get("/preferences/not-a-token").status_code == 404
    # The preferences link is no unsubscribe link (it names no channel).
    assert client.http.get(prefs.replace("/preferences/", "/unsubscribe/")).status_code == 404
    # Cross-site posts of the preferences form are refused.
    assert client.http.post(prefs, headers={**FORM, "Origin": "https://evil.example"},
                            body="sms=merchant").status_code == 403
    # The tracking page links the preferences.
    tracking = client.http.get(ships[0]["tracking_url"].replace("http://testserver", ""))
    assert b"/preferences/" in tracking.body
