"""Proof of delivery: presigned uploads, checked attachments, distance from the stop, merchant read-back."""

from __future__ import annotations

import json

import pytest
import requests

from tests.integration.helpers import make_started_route

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"\x00" * 2000
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000


def _driver_call(merchant, token, method, path, body):
    return merchant.client.http.request(method, path, headers={"Authorization": f"Bearer {token}",
                                                                "Content-Type": "application/json"},
                                        body=json.dumps(body))


def _upload(merchant, driver, shipment_id, content, kind="photo", content_type="image/jpeg"):
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{shipment_id}/proof-uploads",
                     {"kind": kind, "content_type": content_type, "size_bytes": len(content)})
    assert r.status_code == 201, r.body
    upload = r.json_body
    posted = requests.post(upload["url"], data=upload["fields"], files={"file": ("p", content, content_type)},
                           timeout=10)
    assert posted.status_code in (200, 204), posted.text
    return upload


def _deliver(merchant, driver, shipment, **extra):
    body = {"status": "delivered", "occurred_at": "2026-11-20T12:00:00Z", **extra}
    from datetime import UTC, datetime

    body["occurred_at"] = datetime.now(UTC).isoformat()
    return _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{shipment['id']}/status", body)


def test_delivered_with_photo_and_signature_is_checked_measured_and_readable(merchant):
    driver, ships, _ = make_started_route(merchant, 1)
    shipment = ships[0]
    photo = _upload(merchant, driver, shipment["id"], JPEG)
    signature = _upload(merchant, driver, shipment["id"], PNG, "signature", "image/png")
    assert photo["key"].startswith(f"proof/{merchant.id}/{shipment['id']}/photo-")
    assert photo["expires_in_s"] == 300 and photo["max_bytes"] == 10 * 1024 * 1024
    stop = shipment["location"]
    r = _deliver(merchant, driver, shipment, proof_keys=[photo["key"], signature["key"]], recipient_name="Ada",
                 contactless=True, location={"lat": stop["lat"] + 0.003, "lng": stop["lng"]})  # ~330 m away
    assert r.status_code == 200, r.body
    out = merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body
    assert out["status"] == "delivered"
    assert out["proof"]["far_from_stop"] is True and 300 < out["proof"]["distance_m"] < 360
    assert out["proof"]["recipient_name"] == "Ada" and out["proof"]["contactless"] is True
    view = merchant.call("GET", f"/v1/shipments/{shipment['id']}/proof").json_body
    assert [i["kind"] for i in view["images"]] == ["photo", "signature"]
    assert requests.get(view["images"][0]["url"], timeout=10).content == JPEG  # a presigned GET, not public
    events = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    assert events[-1]["type"] == "delivered"
    # the recipient's tracking page shows the photo through its own short-lived link, allowed by the CSP
    page = merchant.client.http.get("/track/" + shipment["tracking_url"].rsplit("/", 1)[1])
    html = page.body.decode()
    assert photo["key"].split("/")[-1] in html and "X-Amz-Signature" in html
    assert signature["key"].split("/")[-1] not in html  # the signature stays with the merchant
    img_src = next(d for d in page.headers["Content-Security-Policy"].split(";") if d.strip().startswith("img-src"))
    assert "amazonaws.com" in img_src


@pytest.mark.parametrize(("case", "content", "declared", "field_reason"), [
    ("html posing as a JPEG", b"<html><script>alert(1)</script>" + b" " * 200, "image/jpeg", "content is not"),
    ("a PNG under a JPEG key", PNG, "image/jpeg", "content is not image/jpeg"),
    ("an empty file", b"\xff\xd8\xff", "image/jpeg", "empty or truncated"),
])
def test_uploads_that_are_not_what_they_claim_are_refused_and_nothing_changes(merchant, case, content, declared,
                                                                             field_reason):
    driver, ships, _ = make_started_route(merchant, 1)
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ships[0]['id']}/proof-uploads",
                     {"kind": "photo", "content_type": declared, "size_bytes": max(len(content), 100)})
    upload = r.json_body
    requests.post(upload["url"], data=upload["fields"], files={"file": ("p", content, declared)}, timeout=10)
    r = _deliver(merchant, driver, ships[0], proof_keys=[upload["key"]])
    assert r.status_code == 422, case
    detail = r.json_body["error"]["details"][0]
    assert detail["field"] == "proof_keys.0" and field_reason in detail["reason"], detail
    assert merchant.call("GET", f"/v1/shipments/{ships[0]['id']}").json_body["status"] == "out_for_delivery"


def test_keys_of_another_shipment_missing_objects_and_bad_requests_are_refused(merchant):
    driver, ships, _ = make_started_route(merchant, 2)
    other_upload = _upload(merchant, driver, ships[1]["id"], JPEG)
    r = _deliver(merchant, driver, ships[0], proof_keys=[other_upload["key"]])
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["reason"] == "not an upload of this shipment"
    never_uploaded = _driver_call(merchant, driver["token"], "POST",
                                  f"/v1/driver/shipments/{ships[0]['id']}/proof-uploads",
                                  {"kind": "photo", "content_type": "image/jpeg", "size_bytes": 5000}).json_body
    r = _deliver(merchant, driver, ships[0], proof_keys=[never_uploaded["key"]])
    assert r.status_code == 422 and "not uploaded" in r.json_body["error"]["details"][0]["reason"]
    for body, field in (({"kind": "photo", "content_type": "image/gif", "size_bytes": 5000}, "content_type"),
                        ({"kind": "photo", "content_type": "image/jpeg", "size_bytes": 11 * 1024 * 1024},
                         "size_bytes"),
                        ({"kind": "video", "content_type": "image/jpeg", "size_bytes": 5000}, "kind")):
        r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ships[0]['id']}/proof-uploads",
                         body)
        assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == field
    r = _driver_call(merchant, driver["token"], "POST", "/v1/driver/shipments/shp_nope/proof-uploads",
                     {"kind": "photo", "content_type": "image/jpeg", "size_bytes": 5000})
    assert r.status_code == 404
    r = _deliver(merchant, driver, ships[0], recipient_name="Ada")  # no photo required: still delivered
    assert r.status_code == 200
    assert merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/proof").json_body["images"] == []
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ships[0]['id']}/status",
                     {"status": "failed", "reason": "not_home", "occurred_at": "2026-11-20T12:00:00Z",
                      "proof_keys": []})
    assert r.status_code in (409, 422)
