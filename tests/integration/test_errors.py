"""The error matrix: every kind of bad input gets the right 4xx in the one JSON shape, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import make_driver, post_pings, shipment_body


def assert_error(response, status: int, code: str | None = None, field: str | None = None) -> dict:
    assert response.status_code == status, response.body
    body = json.loads(response.body)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    if code:
        assert error["code"] == code
    if field:
        fields = [d["field"] for d in error["details"]]
        assert field in fields, fields
        assert all(d["reason"] for d in error["details"])
    return error


MERCHANT_CASES = [
    ("malformed json", "POST", "/v1/shipments", "{not json", {}, 400, "bad_request", "body"),
    ("empty body", "POST", "/v1/shipments", "", {}, 400, "bad_request", "body"),
    ("json array", "POST", "/v1/shipments", "[]", {}, 422, "validation_failed", None),
    ("wrong type", "POST", "/v1/shipments", json.dumps(shipment_body(location={"lat": "x", "lng": 1})), {},
     422, "validation_failed", "location.lat"),
    ("missing field", "POST", "/v1/shipments",
     json.dumps({k: v for k, v in shipment_body().items() if k != "address"}), {}, 422, "validation_failed",
     "address"),
    ("unknown field", "POST", "/v1/shipments", json.dumps(shipment_body(colour="red")), {}, 422,
     "validation_failed", "colour"),
    ("bad phone", "POST", "/v1/shipments",
     json.dumps(shipment_body(recipient={"name": "A", "phone": "555"})), {}, 422, "validation_failed",
     "recipient.phone"),
    ("bad email", "POST", "/v1/shipments",
     json.dumps(shipment_body(recipient={"name": "A", "email": "ada@@example"})), {}, 422, "validation_failed",
     "recipient.email"),
    ("window reversed", "POST", "/v1/shipments",
     json.dumps(shipment_body(time_window={"start": "2026-11-21T18:00:00Z", "end": "2026-11-21T16:00:00Z"})), {},
     422, "validation_failed", "time_window.end"),
    ("naive datetime", "POST", "/v1/shipments",
     json.dumps(shipment_body(time_window={"start": "2026-11-21T16:00:00", "end": "2026-11-21T18:00:00Z"})), {},
     422, "validation_failed", "time_window.start"),
    ("body over 1 MB", "POST", "/v1/shipments", json.dumps(shipment_body(instructions="x" * 1_100_000)), {}, 413,
     "payload_too_large", "body"),
    ("not json content type", "POST", "/v1/shipments", "a=b", {"Content-Type": "application/x-www-form-urlencoded"},
     415, "unsupported_media_type", "Content-Type"),
    ("bad idempotency key", "POST", "/v1/shipments", json.dumps(shipment_body()), {"Idempotency-Key": "k" * 300},
     400, "bad_request", "Idempotency-Key"),
    ("bad status filter", "GET", "/v1/shipments?status=lost", None, {}, 422, "validation_failed", "status"),
    ("bad limit", "GET", "/v1/shipments?limit=0", None, {}, 422, "validation_failed", "limit"),
    ("unknown query", "GET", "/v1/shipments?colour=red", None, {}, 422, "validation_failed", "colour"),
    ("bad date", "GET", "/v1/shipments?date_from=2026-13-01", None, {}, 422, "validation_failed", "date_from"),
    ("dates reversed", "GET", "/v1/shipments?date_from=2026-11-02&date_to=2026-11-01", None, {}, 400,
     "bad_request", "date_to"),
    ("forged cursor", "GET", "/v1/shipments?cursor=abc", None, {}, 400, "bad_request", "cursor"),
    ("nearby radius too big", "GET", "/v1/drivers/nearby?lat=1&lng=2&radius_m=99999", None, {}, 422,
     "validation_failed", "radius_m"),
    ("nearby missing lat", "GET", "/v1/drivers/nearby?lng=2", None, {}, 422, "validation_failed", "lat"),
    ("nearby nan", "GET", "/v1/drivers/nearby?lat=nan&lng=2", None, {}, 422, "validation_failed", "lat"),
    ("unknown shipment", "GET", "/v1/shipments/shp_nope", None, {}, 404, "not_found", None),
    ("unknown driver", "GET", "/v1/drivers/drv_nope", None, {}, 404, "not_found", None),
    ("unknown route", "POST", "/v1/routes/rte_nope/start", None, {}, 404, "not_found", None),
    ("route empty stops", "POST", "/v1/routes",
     json.dumps({"driver_id": "d", "day": "2026-11-21", "planned_start": "2026-11-21T08:00:00Z",
                 "shipment_ids": []}), {}, 422, "validation_failed", "shipment_ids"),
    ("route repeated stops", "POST", "/v1/routes",
     json.dumps({"driver_id": "d", "day": "2026-11-21", "planned_start": "2026-11-21T08:00:00Z",
                 "shipment_ids": ["a", "a"]}), {}, 422, "validation_failed", "shipment_ids"),
    ("method not allowed", "DELETE", "/v1/shipments", None, {}, 405, None, None),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "headers", "status", "code", "field"), MERCHANT_CASES,
                         ids=[c[0] for c in MERCHANT_CASES])
def test_merchant_error_matrix(merchant, case, method, path, body, headers, status, code, field):
    response = merchant.call(method, path, body, **headers)
    assert_error(response, status, code, field)


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic abc", "Bearer nope", "Bearer " + "x" * 500])
def test_missing_or_bad_merchant_key_is_401(client, authorization):
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.http.get("/v1/shipments", headers=headers)
    assert_error(response, 401, "unauthorized", "Authorization")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_driver_token_is_not_a_merchant_key_and_vice_versa(merchant):
    driver = make_driver(merchant)
    r = merchant.client.http.get("/v1/shipments", headers={"Authorization": f"Bearer {driver['token']}"})
    assert_error(r, 401, "unauthorized")
    r = post_pings(merchant.client, merchant.key, [{"lat": 1, "lng": 1, "fix_time": 1}])
    assert_error(r, 401, "unauthorized")


PING_CASES = [
    ("malformed json", "{", 400, "bad_request", "body"),
    ("not an object", "[1,2]", 422, "validation_failed", "pings"),
    ("pings not a list", json.dumps({"pings": {"lat": 1}}), 422, "validation_failed", "pings"),
    ("empty batch", json.dumps({"pings": []}), 422, "validation_failed", "pings"),
    ("batch over 500", json.dumps({"pings": [{"lat": 1, "lng": 1, "fix_time": 1}] * 501}), 422,
     "validation_failed", "pings"),
    ("body over 1 MB", json.dumps({"pings": [{"lat": 1, "lng": 1, "fix_time": 1, "pad": "x" * 2100}] * 500}), 413,
     "payload_too_large", "body"),
]


@pytest.mark.parametrize(("case", "raw", "status", "code", "field"), PING_CASES, ids=[c[0] for c in PING_CASES])
def test_ping_error_matrix(merchant, case, raw, status, code, field):
    driver = make_driver(merchant)
    assert_error(post_pings(merchant.client, driver["token"], None, raw=raw), status, code, field)


def test_ping_without_token_is_401(client):
    r = client.http.post("/v1/driver/pings", headers={"Content-Type": "application/json"},
                         body=json.dumps({"pings": [{"lat": 1, "lng": 1, "fix_time": 1}]}))
    assert_error(r, 401, "unauthorized", "Authorization")


def test_unknown_tracking_tokens_get_the_same_404(client):
    bodies = set()
    for token in ["A" * 43, "short", "x" * 500, "%00", "....."]:
        r = client.http.get(f"/v1/track/{token}")
        assert_error(r, 404, "not_found")
        bodies.add(r.body)
    assert len(bodies) == 1


@pytest.mark.parametrize("path", ["/v1/drivers/{}", "/v1/drivers/{}/position", "/v1/shipments/{}", "/v1/zones/{}"])
def test_an_id_longer_than_any_key_is_not_found_never_a_500(merchant, path):
    """DynamoDB refuses a key over 1,024 bytes (ValidationException); such an id cannot exist, so 404."""
    for long_id in ("x" * 1100, "é" * 300):
        r = merchant.call("GET", path.format(long_id))
        assert r.status_code == 404, (path, r.status_code, r.body[:200])
        assert json.loads(r.body)["error"]["code"] == "not_found"
