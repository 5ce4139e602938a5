"""The failed-delivery loop: after a failed attempt the recipient (page) or the merchant (API) reschedules or
redirects; the attempt that reaches the merchant's limit returns the parcel with a return-to-depot leg; returned
and cancelled recipients are told; no raw reason code in any message."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.shipments.failures import FailureReason, failure_reason_text
from tests.integration.conftest import Merchant
from tests.integration.helpers import make_driver, make_shipment, now_ms
from tests.integration.test_notifications import _sms_to, midday_zone
from tests.integration.test_pipeline import drain, runner  # noqa: F401
from tests.integration.test_tracking_page import assert_message, driver_update, page, post_form, submit, text, token_of

OPTION = re.compile(r'name="option" type="radio" value="([^"]+)"')


def on_new_route(merchant: Merchant, shipment: dict[str, Any]) -> dict[str, Any]:
    """Plan the shipment on a fresh route (its own driver) for its delivery day and start it."""
    driver = make_driver(merchant)
    current = merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": current["delivery_date"],
                                             "planned_start": datetime.now(UTC).isoformat(),
                                             "shipment_ids": [shipment["id"]]})
    assert r.status_code == 201, r.body
    assert merchant.call("POST", f"/v1/routes/{r.json_body['id']}/start").status_code == 200
    return driver


def fail(merchant: Merchant, driver: dict[str, Any], shipment: dict[str, Any], reason: str = "not_home",
         note: str | None = None) -> dict[str, Any]:
    extra = {"reason": reason} | ({"note": note} if note else {})
    r = driver_update(merchant.client, driver, shipment["id"], "failed", now_ms(), **extra)
    assert r.status_code == 200, r.body
    return r.json_body  # type: ignore[no-any-return]


def failed_once(merchant: Merchant, phone: str = "+14155550171", **recipient: Any) -> dict[str, Any]:
    shipment = make_shipment(merchant, 1, recipient={"name": "Ada Lovelace", "phone": phone,
                                                     "time_zone": midday_zone(), **recipient})
    fail(merchant, on_new_route(merchant, shipment), shipment, "no_access", note="Gate locked")
    return shipment


def shipment_of(merchant: Merchant, shipment: dict[str, Any]) -> dict[str, Any]:
    return merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body  # type: ignore[no-any-return]


def tomorrow_in(zone: str) -> str:
    return (datetime.now(UTC).astimezone(ZoneInfo(zone)).date() + timedelta(days=1)).isoformat()


# --- the merchant API shows the attempt ---------------------------------------------------------------


def test_a_failed_shipment_shows_its_attempt_reason_in_words_and_note(merchant: Merchant) -> None:
    shipment = failed_once(merchant)
    shown = shipment_of(merchant, shipment)
    assert shown["status"] == "failed" and shown["attempts"] == 1
    failure = shown["last_failure"]
    assert failure["reason"] == "no_access" and failure["reason_text"] == "No access to the address"
    assert failure["note"] == "Gate locked" and failure["at"]
    assert shown["return_leg"] is None and shown["redirect"] is None
    (event,) = [e for e in merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
                if e["type"] == "failed"]
    assert event["reason_text"] == "No access to the address" and event["note"] == "Gate locked"


# --- the recipient's page -----------------------------------------------------------------------------


def test_after_failure_the_page_says_why_and_reschedules(merchant: Merchant) -> None:
    shipment = failed_once(merchant)
    token = token_of(shipment)
    html = text(page(merchant.client, token))
    assert f"Why: {failure_reason_text('no_access', 'en')}." in html and "Attempt 1 of 3." in html
    assert "no_access" not in html
    options = OPTION.findall(html)
    assert options, "a failed shipment offers new times"
    assert 'action="/track/' in html and "/redirect" in html
    r = submit(merchant.client, token, "reschedule", option=options[0])
    assert r.status_code == 303, text(r)
    shown = shipment_of(merchant, shipment)
    assert shown["status"] == "rescheduled" and shown["delivery_date"] == options[0].split("_")[0]
    assert shown["route_id"] is None and shown["driver_id"] is None and shown["final_at"] is None
    assert shown["attempts"] == 1 and shown["last_failure"]["reason"] == "no_access"
    # planned again on a new route: it goes out again
    on_new_route(merchant, shipment)
    assert shipment_of(merchant, shipment)["status"] == "out_for_delivery"


def test_after_failure_the_page_redirects_to_a_neighbour_or_a_safe_place(merchant: Merchant) -> None:
    shipment = failed_once(merchant)
    token = token_of(shipment)
    option = OPTION.findall(text(page(merchant.client, token)))[0]
    # incomplete choices are refused in the recipient's words, nothing changes
    assert_message(submit(merchant.client, token, "redirect", kind="neighbour", option=option), 422,
                   "Please check your entry")
    assert_message(submit(merchant.client, token, "redirect", kind="safe_place", option=option), 422,
                   "Please check your entry")
    assert_message(submit(merchant.client, token, "redirect", kind="porch", note="x", option=option), 422,
                   "Please check your entry")
    assert_message(post_form(merchant.client, token, "redirect", {"csrf": "1700000000.forged", "kind": "safe_place",
                                                                  "note": "x", "option": option}),
                   403, "Please try again")
    assert shipment_of(merchant, shipment)["status"] == "failed"
    r = submit(merchant.client, token, "redirect", kind="neighbour", neighbour_name="Grace Hopper",
               note="Number 12, blue door", option=option)
    assert r.status_code == 303, text(r)
    shown = shipment_of(merchant, shipment)
    assert shown["status"] == "rescheduled" and shown["delivery_date"] == option.split("_")[0]
    redirect = shown["redirect"]
    assert redirect["kind"] == "neighbour" and redirect["neighbour_name"] == "Grace Hopper"
    assert redirect["note"] == "Number 12, blue door" and redirect["source"] == "recipient"
    # the driver reads it as an instruction
    assert "Grace Hopper" in shown["recipient_instructions"]["note"]
    events = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    (moved,) = [e for e in events if e["type"] == "rescheduled"]
    assert moved["source"] == "recipient" and moved["data"]["redirect"]["kind"] == "neighbour"
    # once rescheduled, a redirect is not offered any more
    assert "/redirect" not in text(page(merchant.client, token))


def test_no_redirect_before_a_failure(merchant: Merchant) -> None:
    shipment = make_shipment(merchant, 1)
    token = token_of(shipment)
    html = text(page(merchant.client, token))
    assert "/redirect" not in html
    option = OPTION.findall(html)[0]
    assert_message(submit(merchant.client, token, "redirect", kind="safe_place", note="Porch", option=option), 409,
                   "Not possible any more")


# --- the merchant's API -------------------------------------------------------------------------------


def test_the_merchant_reschedules_after_failure(merchant: Merchant) -> None:
    shipment = failed_once(merchant)
    zone = midday_zone()
    url = f"/v1/shipments/{shipment['id']}/reschedule"
    today = datetime.now(UTC).astimezone(ZoneInfo(zone)).date().isoformat()
    r = merchant.call("POST", url, {"delivery_date": today})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "delivery_date", r.body
    day = tomorrow_in(zone)
    other = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
    r = merchant.call("POST", url, {"delivery_date": day, "time_window": {"start": f"{other}T15:00:00+00:00",
                                                                          "end": f"{other}T17:00:00+00:00"}})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "time_window", r.body
    r = merchant.call("POST", url, {"delivery_date": "tomorrow"})
    assert r.status_code in (400, 422) and r.json_body["error"]["details"][0]["field"] == "delivery_date"
    r = merchant.call("POST", url, {"delivery_date": day})
    assert r.status_code == 200, r.body
    assert r.json_body["status"] == "rescheduled" and r.json_body["delivery_date"] == day
    assert r.json_body["time_window"] is None
    events = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    assert any(e["type"] == "rescheduled" and e["source"] == "merchant" and e["data"]["delivery_date"] == day
               for e in events)
    # an out-for-delivery shipment cannot be moved
    on_new_route(merchant, shipment)
    r = merchant.call("POST", url, {"delivery_date": day})
    assert r.status_code == 409 and r.json_body["error"]["details"][0]["field"] == "status", r.body
    assert merchant.call("POST", "/v1/shipments/shp_nope/reschedule", {"delivery_date": day}).status_code == 404


def test_the_merchant_redirects_only_a_failed_shipment(merchant: Merchant) -> None:
    fresh = make_shipment(merchant, 2)
    r = merchant.call("POST", f"/v1/shipments/{fresh['id']}/redirect", {"kind": "safe_place", "note": "Porch"})
    assert r.status_code == 409, r.body
    shipment = failed_once(merchant)
    url = f"/v1/shipments/{shipment['id']}/redirect"
    for body, field in (({"kind": "safe_place"}, "note"), ({"kind": "neighbour", "note": "x"}, "neighbour_name"),
                        ({"kind": "garage", "note": "x"}, "kind")):
        r = merchant.call("POST", url, body)
        assert r.status_code == 422, r.body
        assert r.json_body["error"]["details"][0]["field"] == field, r.body
    r = merchant.call("POST", url, {"kind": "safe_place", "note": "Behind the bins"})
    assert r.status_code == 200, r.body
    shown = r.json_body
    assert shown["status"] == "rescheduled" and shown["redirect"]["source"] == "merchant"
    assert shown["delivery_date"] > datetime.now(UTC).astimezone(ZoneInfo(midday_zone())).date().isoformat()
    assert shown["recipient_instructions"]["leave_at_door"] is True
    assert "Behind the bins" in shown["recipient_instructions"]["note"]


# --- attempts -> returned -----------------------------------------------------------------------------


def _depot(merchant: Merchant) -> dict[str, Any]:
    ring = [[-87.64, 41.88], [-87.62, 41.88], [-87.62, 41.90], [-87.64, 41.90], [-87.64, 41.88]]
    r = merchant.call("POST", "/v1/zones", {"name": "West Loop depot", "kind": "depot",
                                            "geometry": {"type": "Polygon", "coordinates": [ring]}})
    assert r.status_code == 201, r.body
    return r.json_body  # type: ignore[no-any-return]


def test_the_attempt_at_the_limit_returns_the_parcel_to_the_depot(merchant: Merchant, runner: Any) -> None:  # noqa: F811
    assert merchant.call("PATCH", "/v1/settings", {"max_delivery_attempts": 2}).status_code == 200
    assert merchant.call("PATCH", "/v1/settings", {"max_delivery_attempts": 0}).status_code == 422
    depot = _depot(merchant)
    phone = "+14155550172"
    shipment = failed_once(merchant, phone)
    assert merchant.call("POST", f"/v1/shipments/{shipment['id']}/reschedule",
                         {"delivery_date": tomorrow_in(midday_zone())}).status_code == 200
    driver = on_new_route(merchant, shipment)
    result = fail(merchant, driver, shipment, "not_home")
    assert result["status"] == "returned"
    shown = shipment_of(merchant, shipment)
    assert shown["status"] == "returned" and shown["attempts"] == 2
    assert shown["last_failure"]["reason_text"] == "Nobody home"
    leg = shown["return_leg"]
    assert leg["depot"]["zone_id"] == depot["id"] and leg["depot"]["name"] == "West Loop depot"
    assert abs(leg["depot"]["location"]["lat"] - 41.89) < 1e-6 and abs(leg["depot"]["location"]["lng"] + 87.63) < 1e-6
    assert leg["origin"] == shown["location"] and leg["driver_id"] == driver["id"]
    events = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    kinds = [e["type"] for e in events]
    assert kinds.index("returned") == len(kinds) - 1 and kinds[-2] == "failed"
    returned = events[-1]
    assert returned["from_status"] == "failed" and returned["to_status"] == "returned"
    assert returned["data"]["attempts"] == 2 and returned["data"]["return_leg"]["depot_zone_id"] == depot["id"]
    # the page: why, how often, and nothing more to choose
    html = text(page(merchant.client, token_of(shipment)))
    assert "Returned to sender" in html and "We tried 2 times without success: nobody was at home." in html
    assert "/reschedule" not in html and "/redirect" not in html
    # the recipient is told, in words
    drain(runner)
    sms = _sms_to(phone)
    assert any("returning it to the sender" in m and "nobody was at home" in m for m in sms), sms
    assert not any(m for m in sms if any(code.value in m for code in FailureReason if "_" in code.value)), sms


def test_a_returned_shipment_cannot_be_rescheduled_by_the_merchant(merchant: Merchant) -> None:
    assert merchant.call("PATCH", "/v1/settings", {"max_delivery_attempts": 1}).status_code == 200
    shipment = failed_once(merchant)
    shown = shipment_of(merchant, shipment)
    assert shown["status"] == "returned" and shown["return_leg"]["depot"] is None  # no depot zone: merchant decides
    r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/reschedule",
                      {"delivery_date": tomorrow_in(midday_zone())})
    assert r.status_code == 409, r.body


def test_the_default_limit_is_three(merchant: Merchant) -> None:
    assert merchant.call("GET", "/v1/settings").json_body["max_delivery_attempts"] == 3
    shipment = failed_once(merchant)
    for attempt in (2, 3):
        r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/reschedule",
                          {"delivery_date": tomorrow_in(midday_zone())})
        assert r.status_code == 200, r.body
        result = fail(merchant, on_new_route(merchant, shipment), shipment)
        assert result["status"] == ("failed" if attempt < 3 else "returned")
    assert shipment_of(merchant, shipment)["attempts"] == 3


# --- cancelled ----------------------------------------------------------------------------------------


def test_a_cancelled_recipient_is_told(merchant: Merchant, runner: Any) -> None:  # noqa: F811
    phone = "+14155550173"
    shipment = make_shipment(merchant, 1, recipient={"name": "Ada Lovelace", "phone": phone,
                                                     "time_zone": midday_zone()})
    assert merchant.call("POST", f"/v1/shipments/{shipment['id']}/cancel").status_code == 200
    drain(runner)
    sms = _sms_to(phone)
    assert any("your delivery has been cancelled" in m and token_of(shipment) in m for m in sms), sms
    html = text(page(merchant.client, token_of(shipment)))
    assert "This delivery has been cancelled" in html and 'data-status="cancelled"' in html
