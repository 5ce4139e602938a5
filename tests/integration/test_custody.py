"""Chain of custody: completion requirements, the PIN, parcel scans, the hash chain and signed receipts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from joserfc import jws as jose_jws
from joserfc.jwk import KeySet

from tests.conftest import TEST_ENV
from tests.integration.conftest import new_merchant
from tests.integration.helpers import make_driver, make_shipment
from tests.integration.test_notifications import dispatch  # noqa: F401  # the fixture

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"\x00" * 2000
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000
Json = dict[str, Any]


def _driver_call(merchant: Any, token: str, method: str, path: str, body: Any) -> Any:
    return merchant.client.http.request(method, path, headers={"Authorization": f"Bearer {token}",
                                                                "Content-Type": "application/json"},
                                        body=json.dumps(body))


def _route(merchant: Any, custody: list[Json | None]) -> tuple[Json, list[Json]]:
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n + 1, **({"custody": c} if c is not None else {}))
             for n, c in enumerate(custody)]
    today = datetime.now(UTC).date().isoformat()  # the driver app shows today's route (the merchant's zone: UTC)
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": today,
                                             "planned_start": f"{today}T06:00:00Z",
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    assert merchant.call("POST", f"/v1/routes/{r.json_body['id']}/start").status_code == 200
    return driver, ships


def _upload(merchant: Any, driver: Json, shipment_id: str, content: bytes, kind: str = "photo",
            content_type: str = "image/jpeg") -> str:
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{shipment_id}/proof-uploads",
                     {"kind": kind, "content_type": content_type, "size_bytes": len(content)})
    assert r.status_code == 201, r.body
    up = r.json_body
    posted = requests.post(up["url"], data=up["fields"], files={"file": ("p", content, content_type)}, timeout=10)
    assert posted.status_code in (200, 204)
    return str(up["key"])


def _deliver(merchant: Any, driver: Json, shipment: Json, **extra: Any) -> Any:
    body = {"status": "delivered", "occurred_at": datetime.now(UTC).isoformat(), **extra}
    return _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{shipment['id']}/status", body)


def _pin(shipment_id: str) -> str:
    from chalicelib.custody.rules import delivery_pin

    return delivery_pin(TEST_ENV["DOORSTEP_TOKEN_SECRET"], shipment_id)


def _fields(r: Any) -> set[str]:
    return {d["field"] for d in r.json_body["error"]["details"]}


def test_each_requirement_refuses_delivered_without_it_then_accepts_with_it(merchant: Any) -> None:
    r = merchant.call("PATCH", "/v1/settings", {"completion_requirements": {"photo": True}})
    assert r.status_code == 200, r.body
    custody = {"requirements": {"signature": True, "recipient_name": True, "pin": True, "parcel_scan": True,
                                "min_age": 18}, "parcels": ["PKG-1", "PKG-2"]}
    driver, (ship,) = _route(merchant, [custody])
    r = _deliver(merchant, driver, ship)
    assert r.status_code == 422 and r.json_body["error"]["code"] == "requirements_missing"
    reasons = " ".join(d["reason"] for d in r.json_body["error"]["details"])
    assert _fields(r) == {"proof_keys", "recipient_name", "pin", "parcels", "age_verified"}
    assert "photo" in reasons and "signature" in reasons and "PKG-1" in reasons
    photo = _upload(merchant, driver, ship["id"], JPEG)
    signature = _upload(merchant, driver, ship["id"], PNG, "signature", "image/png")
    # each requirement alone still refuses
    r = _deliver(merchant, driver, ship, proof_keys=[photo, signature], recipient_name="Ada", age_verified=True)
    assert r.status_code == 422 and _fields(r) == {"pin", "parcels"}
    scan = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ship['id']}/scans",
                        {"stage": "delivery", "barcodes": ["PKG-1"], "occurred_at": datetime.now(UTC).isoformat()})
    assert scan.status_code == 200 and scan.json_body["missing"] == ["PKG-2"]
    ok = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ship['id']}/pin",
                      {"pin": _pin(ship["id"])})
    assert ok.status_code == 200 and ok.json_body["verified"] is True
    r = _deliver(merchant, driver, ship, proof_keys=[photo, signature], recipient_name="Ada", age_verified=True)
    assert r.status_code == 422 and _fields(r) == {"parcels"}
    _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ship['id']}/scans",
                 {"stage": "delivery", "barcodes": ["PKG-2"], "occurred_at": datetime.now(UTC).isoformat()})
    r = _deliver(merchant, driver, ship, proof_keys=[photo, signature], recipient_name="Ada", age_verified=True)
    assert r.status_code == 200, r.body
    assert merchant.call("GET", f"/v1/shipments/{ship['id']}").json_body["status"] == "delivered"


def test_without_requirements_delivered_needs_nothing(merchant: Any) -> None:
    driver, (ship,) = _route(merchant, [None])
    assert _deliver(merchant, driver, ship).status_code == 200


def test_pin_wrong_right_and_locked_after_limited_attempts(merchant: Any) -> None:
    driver, (a, b) = _route(merchant, [{"requirements": {"pin": True}}] * 2)
    wrong = "000000" if _pin(a["id"]) != "000000" else "111111"
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{a['id']}/pin", {"pin": wrong})
    assert r.status_code == 422 and _fields(r) == {"pin"} and "4 attempts left" in r.body.decode()
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{a['id']}/pin", {"pin": _pin(a["id"])})
    assert r.status_code == 200 and r.json_body == {"verified": True, "attempts_left": 3}
    wrong_b = "000000" if _pin(b["id"]) != "000000" else "111111"
    for _ in range(5):
        _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{b['id']}/pin", {"pin": wrong_b})
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{b['id']}/pin", {"pin": _pin(b["id"])})
    assert r.status_code == 429 and r.json_body["error"]["code"] == "pin_locked" and "Retry-After" in r.headers
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{b['id']}/pin", {"pin": "12345"})
    assert r.status_code == 422 and _fields(r) == {"pin"}  # not six digits: the shape, before any attempt
    # The dispatcher checks the recipient by phone and unlocks it: five attempts again, the unlock in the chain.
    r = merchant.call("POST", f"/v1/shipments/{b['id']}/pin/unlock")
    assert r.status_code == 200 and r.json_body == {"verified": False, "attempts_left": 5}
    assert merchant.call("POST", f"/v1/shipments/{b['id']}/pin/unlock").json_body["attempts_left"] == 5  # again
    kinds = [e["body"]["type"] for e in merchant.call("GET", f"/v1/shipments/{b['id']}/custody").json_body["events"]]
    assert kinds.count("pin_unlocked") == 1 and kinds.count("pin_rejected") == 5
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{b['id']}/pin", {"pin": _pin(b["id"])})
    assert r.status_code == 200 and r.json_body == {"verified": True, "attempts_left": 4}
    # Another merchant cannot unlock it.
    other = new_merchant(merchant.client, "Other PIN")
    assert other.call("POST", f"/v1/shipments/{b['id']}/pin/unlock").status_code == 404


def test_scans_record_time_place_driver_and_a_stranger_parcel_opens_an_exception(merchant: Any) -> None:
    driver, (ship,) = _route(merchant, [{"parcels": ["A1", "A2"]}])
    at = datetime.now(UTC).isoformat()
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ship['id']}/scans",
                     {"stage": "load", "barcodes": ["A1", "ZZ9"], "occurred_at": at,
                      "location": {"lat": 52.5, "lng": 13.4}})
    assert r.status_code == 200, r.body
    assert r.json_body["matched"] == ["A1"] and r.json_body["unexpected"] == ["ZZ9"]
    assert r.json_body["missing"] == ["A2"]
    items = merchant.call("GET", "/v1/exceptions?state=open&kind=parcel_mismatch").json_body["items"]
    assert len(items) == 1 and items[0]["shipment_id"] == ship["id"] and "ZZ9" in items[0]["summary"]
    chain = merchant.call("GET", f"/v1/shipments/{ship['id']}/custody").json_body
    loaded = [e["body"] for e in chain["events"] if e["body"]["type"] == "loaded"]
    assert loaded and loaded[0]["actor"] == f"driver:{driver['id']}" and loaded[0]["data"]["lat"] == 52.5
    # another merchant's driver cannot scan it, another merchant cannot read it
    other = make_driver(merchant, "Other")
    r = _driver_call(merchant, other["token"], "POST", f"/v1/driver/shipments/{ship['id']}/scans",
                     {"stage": "load", "barcodes": ["A1"], "occurred_at": at})
    assert r.status_code == 404


def test_other_merchant_gets_404_for_custody_and_receipt(merchant: Any, other_merchant: Any) -> None:
    ship = make_shipment(merchant)
    assert other_merchant.call("GET", f"/v1/shipments/{ship['id']}/custody").status_code == 404
    assert other_merchant.call("GET", f"/v1/shipments/{ship['id']}/receipt").status_code == 404
    assert merchant.call("GET", f"/v1/shipments/{ship['id']}/receipt").status_code == 404  # not delivered


def _delivered_day(merchant: Any, stops: int = 3) -> tuple[Json, list[Json], list[str]]:
    driver, ships = _route(merchant, [{"parcels": [f"P{n}"]} for n in range(stops)])
    photos = []
    for n, ship in enumerate(ships):
        now = datetime.now(UTC).isoformat()
        _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ship['id']}/scans",
                     {"stage": "load", "barcodes": [f"P{n}"], "occurred_at": now})
        _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{ship['id']}/scans",
                     {"stage": "delivery", "barcodes": [f"P{n}"], "occurred_at": now})
        photo = _upload(merchant, driver, ship["id"], JPEG + bytes([n]))
        photos.append(photo)
        stop = ship["location"]
        r = _deliver(merchant, driver, ship, proof_keys=[photo], location={"lat": stop["lat"], "lng": stop["lng"]})
        assert r.status_code == 200, r.body
    return driver, ships, photos


def _verify(document: Json, objects: bool = False) -> list[str]:
    from chalicelib.custody.__main__ import _s3_reader, verify_document

    return verify_document(document, _s3_reader() if objects else None)


def test_chain_of_a_full_route_verifies_and_breaks_when_altered_removed_inserted_or_photo_replaced(
        merchant: Any, tmp_path: Any) -> None:
    _, ships, photos = _delivered_day(merchant)
    for ship in ships:
        chain = merchant.call("GET", f"/v1/shipments/{ship['id']}/custody").json_body
        types = [e["body"]["type"] for e in chain["events"]]
        assert types == ["created", "out_for_delivery", "loaded", "scanned", "proof_attached", "delivered"]
        assert chain["verified"] is True and chain["head"]["seq"] == 6
        assert _verify(chain, objects=True) == []
    from chalicelib.custody.__main__ import main

    chain = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/custody").json_body
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(chain))
    assert main(["verify", str(path)]) == 0
    altered = json.loads(json.dumps(chain))
    altered["events"][3]["body"]["data"]["barcodes"] = ["OTHER"]
    assert any("hash does not match" in p for p in _verify(altered))
    rehashed = json.loads(json.dumps(altered))  # altering and re-hashing one event breaks the next link
    from chalicelib.custody.rules import event_hash

    rehashed["events"][3]["hash"] = event_hash(rehashed["events"][3]["body"])
    assert any("prev does not match" in p for p in _verify(rehashed))
    removed = json.loads(json.dumps(chain))
    del removed["events"][2]
    assert _verify(removed)
    inserted = json.loads(json.dumps(chain))
    inserted["events"].insert(2, inserted["events"][2])
    assert _verify(inserted)
    truncated = json.loads(json.dumps(chain))
    truncated["events"].pop()
    assert any("head" in p for p in _verify(truncated))
    path.write_text(json.dumps(removed))
    assert main(["verify", str(path)]) == 1
    # a replaced photo: same key, other bytes
    boto3.client("s3").put_object(Bucket=TEST_ENV["DOORSTEP_BUCKET_NAME"], Key=photos[0], Body=JPEG + b"x",
                                  ContentType="image/jpeg")
    assert _verify(chain) == []
    assert any("object changed" in p for p in _verify(chain, objects=True))


def test_the_chain_refuses_a_write_that_skips_or_reuses_a_sequence_number(merchant: Any) -> None:
    from chalicelib.custody.service import custody_store
    from chalicelib.custody.store import ChainRaced
    from chalicelib.storage import get_repository

    ship = make_shipment(merchant)
    store = custody_store(get_repository())
    assert store.head(ship["id"])[0] == 1
    with pytest.raises(ChainRaced):
        store.append(merchant.id, ship["id"], 1, "{}", "0" * 64)  # seq 1 exists
    with pytest.raises(ChainRaced):
        store.append(merchant.id, ship["id"], 3, "{}", "0" * 64)  # the head is at 1, not 2


def _verify_receipt(token: str, jwks: Json) -> Json:
    keys = KeySet.import_key_set(jwks)
    obj = jose_jws.deserialize_compact(token, keys, algorithms=["ES256"])
    return json.loads(obj.payload)  # type: ignore[no-any-return]


def test_receipts_verify_with_the_jwks_alone_and_survive_key_rotation(merchant: Any) -> None:
    from chalicelib.custody.service import rotate_key
    from chalicelib.storage import get_repository

    _, ships, _ = _delivered_day(merchant, 2)
    receipt = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/receipt").json_body
    jwks = merchant.client.http.get("/.well-known/doorstep-receipt-keys.json").json_body
    claims = _verify_receipt(receipt["jws"], jwks)
    chain = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/custody").json_body
    assert claims["sub"] == ships[0]["id"] and claims["chain_head"] == chain["head"]
    assert claims["distance_m"] == 0.0 and len(claims["proof"]) == 1
    assert claims["proof"][0]["sha256"] == chain["events"][4]["body"]["data"]["sha256"]
    tampered = receipt["jws"].rsplit(".", 1)[0] + "." + receipt["jws"].rsplit(".", 1)[1][::-1]
    with pytest.raises(Exception):  # noqa: B017  # any joserfc refusal
        _verify_receipt(tampered, jwks)
    new_key = rotate_key(get_repository())
    jwks_after = merchant.client.http.get("/.well-known/doorstep-receipt-keys.json").json_body
    assert {k["kid"] for k in jwks["keys"]} < {k["kid"] for k in jwks_after["keys"]}
    assert _verify_receipt(receipt["jws"], jwks_after)["sub"] == ships[0]["id"]  # the old receipt still verifies
    driver, (ship,) = _route(merchant, [None])
    assert _deliver(merchant, driver, ship).status_code == 200
    fresh = merchant.call("GET", f"/v1/shipments/{ship['id']}/receipt").json_body
    assert fresh["kid"] == new_key.kid and _verify_receipt(fresh["jws"], jwks_after)["sub"] == ship["id"]
    with pytest.raises(Exception):  # noqa: B017  # not verifiable with only the keys before the rotation
        _verify_receipt(fresh["jws"], jwks)


def test_the_out_for_delivery_message_carries_the_pin_only_when_required(merchant: Any, dispatch: Any) -> None:  # noqa: F811
    from tests.integration.test_notifications import _image, _sms_to

    phones = ["+14155550161", "+14155550162"]
    needs = [{"requirements": {"pin": True}}, None]
    ships = [make_shipment(merchant, n + 1, recipient={"name": "Ada", "phone": phone},
                           **({"custody": c} if c else {}))
             for n, (phone, c) in enumerate(zip(phones, needs, strict=True))]
    route = merchant.call("POST", "/v1/routes", {"driver_id": make_driver(merchant)["id"],
                                                 "day": ships[0]["delivery_date"],
                                                 "planned_start": datetime.now(UTC).isoformat(),
                                                 "shipment_ids": [s["id"] for s in ships]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    for ship in ships:
        dispatch(_image(merchant, ship, "out_for_delivery"))
    (with_pin,) = _sms_to(phones[0])
    (without,) = _sms_to(phones[1])
    assert f"Your delivery PIN: {_pin(ships[0]['id'])}." in with_pin, with_pin
    assert "PIN" not in without


def test_the_tracking_page_shows_the_receipt_after_delivery(merchant: Any) -> None:
    import html

    _, ships, _ = _delivered_day(merchant, 1)
    token = ships[0]["tracking_url"].rsplit("/", 1)[1]
    page = merchant.client.http.get(f"/track/{token}").body.decode()
    receipt = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/receipt").json_body
    assert 'id="receipt"' in page and html.escape(receipt["jws"]) in page
    undelivered = make_shipment(merchant)
    assert 'id="receipt"' not in merchant.client.http.get(
        "/track/" + undelivered["tracking_url"].rsplit("/", 1)[1]).body.decode()


def test_a_delivery_whose_receipt_failed_gets_it_on_the_retry_and_the_chain_stays_single(
        merchant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core import errors
    from chalicelib.custody import service

    driver, (ship,) = _route(merchant, [None])
    photo = _upload(merchant, driver, ship["id"], JPEG)
    real_sign = service.sign

    def kms_down(*_: Any) -> str:
        raise errors.service_unavailable("KMS is unavailable.")

    monkeypatch.setattr(service, "sign", kms_down)
    body = {"status": "delivered", "occurred_at": datetime.now(UTC).isoformat(), "proof_keys": [photo]}
    path = f"/v1/driver/shipments/{ship['id']}/status"
    headers = {"Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json",
               "Idempotency-Key": "deliver-1"}
    first = merchant.client.http.request("POST", path, headers=headers, body=json.dumps(body))
    assert first.status_code == 503
    assert merchant.call("GET", f"/v1/shipments/{ship['id']}/receipt").status_code == 404
    monkeypatch.setattr(service, "sign", real_sign)
    again = merchant.client.http.request("POST", path, headers=headers, body=json.dumps(body))
    assert again.status_code == 200 and again.json_body["replayed"] is True
    chain = merchant.call("GET", f"/v1/shipments/{ship['id']}/custody").json_body
    types = [e["body"]["type"] for e in chain["events"]]
    assert types.count("delivered") == 1 and types.count("proof_attached") == 1 and chain["verified"]
    receipt = merchant.call("GET", f"/v1/shipments/{ship['id']}/receipt").json_body
    assert receipt["claims"]["chain_head"] == chain["head"] and len(receipt["claims"]["proof"]) == 1


def test_patch_overrides_requirements_and_parcels_and_the_change_is_in_the_chain(merchant: Any) -> None:
    driver, (ship,) = _route(merchant, [{"requirements": {"photo": True, "recipient_name": True}}])
    r = merchant.call("PATCH", f"/v1/shipments/{ship['id']}",
                      {"custody": {"requirements": {"photo": None, "pin": True}, "parcels": ["B-1"]},
                       "instructions": "Back door"})
    assert r.status_code == 200, r.body
    assert r.json_body["instructions"] == "Back door"
    refused = _deliver(merchant, driver, ship)
    assert refused.status_code == 422 and _fields(refused) == {"recipient_name", "pin"}  # photo inherited: none
    chain = merchant.call("GET", f"/v1/shipments/{ship['id']}/custody").json_body
    changed = [e["body"] for e in chain["events"] if e["body"]["type"] == "requirements_changed"]
    assert changed[-1]["data"] == {"requirements": {"pin": True, "recipient_name": True}, "parcels": ["B-1"]}
    route = _driver_call(merchant, driver["token"], "GET", "/v1/driver/route", None)
    (stop,) = route.json_body["stops"]
    assert stop["requirements"] == ["recipient_name", "pin"] and stop["parcels"] == ["B-1"]
    assert merchant.call("PATCH", f"/v1/shipments/{ship['id']}", {"custody": None}).status_code == 200
    assert _deliver(merchant, driver, ship).status_code == 200
    r = merchant.call("PATCH", f"/v1/shipments/{ship['id']}", {"custody": {"requirements": {"pin": True}}})
    assert r.status_code == 409  # delivered: no longer changed


def test_missing_parcels_at_return_or_at_an_unscanned_delivery_open_an_exception(merchant: Any) -> None:
    driver, (kept, handed) = _route(merchant, [{"parcels": ["R1", "R2"]}, {"parcels": ["D1", "D2"]}])
    at = datetime.now(UTC).isoformat()
    r = _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{kept['id']}/scans",
                     {"stage": "return", "barcodes": ["R1"], "occurred_at": at})
    assert r.status_code == 200 and r.json_body["missing"] == ["R2"]
    _driver_call(merchant, driver["token"], "POST", f"/v1/driver/shipments/{handed['id']}/scans",
                 {"stage": "delivery", "barcodes": ["D1"], "occurred_at": at})
    assert _deliver(merchant, driver, handed).status_code == 200  # parcel_scan not required: it completes
    items = merchant.call("GET", "/v1/exceptions?state=open&kind=parcel_mismatch").json_body["items"]
    by_shipment = {i["shipment_id"]: i for i in items}
    assert "missing: R2" in by_shipment[kept["id"]]["summary"]
    assert "missing: D2" in by_shipment[handed["id"]]["summary"]
    chain = merchant.call("GET", f"/v1/shipments/{handed['id']}/custody").json_body
    assert chain["events"][-1]["body"]["data"]["unscanned_parcels"] == ["D2"]
