"""One failure-reason table: the SMS, the email, the tracking page, the driver app and the merchant API agree."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.shipments.failures import FailureReason, failure_reason_label, failure_reason_text
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms
from tests.integration.test_notifications import _sms_to, midday_zone
from tests.integration.test_pipeline import drain, runner  # noqa: F401


def failed_shipment(merchant: Any, runner: Any, phone: str, locale: str, reason: str) -> dict[str, Any]:  # noqa: F811
    driver = make_driver(merchant)
    shipment = make_shipment(merchant, 1, recipient={"name": "Ada Lovelace", "phone": phone, "locale": locale,
                                                     "time_zone": midday_zone()})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": shipment["delivery_date"],
                                                 "planned_start": datetime.now(UTC).isoformat(),
                                                 "shipment_ids": [shipment["id"]]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    r = merchant.client.http.post(f"/v1/driver/shipments/{shipment['id']}/status",
                                  headers={"Authorization": f"Bearer {driver['token']}",
                                           "Content-Type": "application/json"},
                                  body=json.dumps({"status": "failed", "reason": reason,
                                                   "occurred_at": iso(now_ms() - 1000)}))
    assert r.status_code == 200, r.body
    drain(runner)
    return shipment


@pytest.mark.parametrize(("locale", "phone"), [("en", "+14155550161"), ("de", "+14155550162")])
def test_the_failed_sms_says_why_in_words_never_the_code(merchant, runner, locale, phone):  # noqa: F811
    shipment = failed_shipment(merchant, runner, phone, locale, "not_home")
    (failed,) = [text for text in _sms_to(phone) if failure_reason_text("not_home", locale) in text]
    assert "not_home" not in failed and shipment["tracking_url"].rsplit("/", 1)[1] in failed
    expected = {"en": "nobody was at home", "de": "niemand war zu Hause"}[locale]  # the table's words
    assert f": {expected}." in failed, failed


def test_the_merchant_timeline_and_the_tracking_page_name_the_reason(merchant, runner):  # noqa: F811
    shipment = failed_shipment(merchant, runner, "+14155550163", "en", "no_access")
    items = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    (failed,) = [e for e in items if e["type"] == "failed"]
    assert failed["reason"] == "no_access" and failed["reason_text"] == failure_reason_label("no_access", "en")
    assert all(e["reason"] is None for e in items if e["type"] != "failed")
    token = shipment["tracking_url"].rsplit("/", 1)[1]
    html = merchant.client.http.get(f"/track/{token}").body.decode()
    assert f"Delivery attempt failed: {failure_reason_text('no_access', 'en')}" in html
    status = merchant.client.http.get(f"/track/{token}/status").json_body
    assert any(e["label"].endswith(failure_reason_text("no_access", "en")) for e in status["timeline"])


def test_the_api_accepts_exactly_the_tables_codes(merchant):
    schema = merchant.client.http.get("/openapi.json").json_body["components"]["schemas"]
    enums = [s.get("enum") for s in schema.values() if set(s.get("enum") or ()) & {"not_home"}]
    assert enums and all(sorted(e) == sorted(r.value for r in FailureReason) for e in enums)
