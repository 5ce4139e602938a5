"""Driver status updates: late, idempotent, ordered by when they happened, 409 on invalid transitions."""

from __future__ import annotations

import json

from tests.integration.helpers import iso, make_started_route, now_ms


def update(merchant, token, shipment_id, body, key=None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return merchant.client.http.post(f"/v1/driver/shipments/{shipment_id}/status", headers=headers,
                                     body=json.dumps(body))


def test_late_updates_land_in_order_of_occurrence(merchant):
    driver, ships, _ = make_started_route(merchant, shipments=1)
    sid, t = ships[0]["id"], now_ms()
    r = update(merchant, driver["token"], sid, {"status": "arrived", "occurred_at": iso(t - 3_600_000)}, "a1")
    assert r.status_code == 200 and r.json_body["status"] == "arrived"
    r = update(merchant, driver["token"], sid, {"status": "delivered", "occurred_at": iso(t - 3_500_000),
                                                "note": "left with neighbour",
                                                "location": {"lat": 47.6, "lng": -122.3}}, "d1")
    assert r.status_code == 200
    timeline = merchant.call("GET", f"/v1/shipments/{sid}/timeline").json_body["items"]
    # the one timeline order (docs/eta.md, "One clock"): created first, then by when things happened, never
    # before the shipment's creation or the attempt's start; the phone's own times are kept as it sent them
    kinds = [e["type"] for e in timeline]
    assert kinds[0] == "created"
    assert kinds.index("out_for_delivery") < kinds.index("arrived") < kinds.index("delivered")
    assert timeline[kinds.index("arrived")]["occurred_at"] < timeline[0]["occurred_at"]  # as the phone said
    assert timeline[kinds.index("arrived")]["source"] == "driver"
    assert timeline[kinds.index("arrived")]["occurred_at"] < timeline[kinds.index("arrived")]["recorded_at"]


def test_retried_update_is_harmless_and_key_reuse_is_refused(merchant):
    driver, ships, _ = make_started_route(merchant, shipments=1)
    sid = ships[0]["id"]
    body = {"status": "failed", "reason": "not_home", "occurred_at": iso(now_ms() - 1000)}
    first = update(merchant, driver["token"], sid, body, "k1")
    again = update(merchant, driver["token"], sid, body, "k1")
    assert first.status_code == again.status_code == 200
    assert again.json_body == {"shipment_id": sid, "status": "failed", "replayed": True}
    events = merchant.call("GET", f"/v1/shipments/{sid}/timeline").json_body["items"]
    assert [e["type"] for e in events].count("failed") == 1
    other = update(merchant, driver["token"], sid, {**body, "reason": "refused"}, "k1")
    assert other.status_code == 422 and other.json_body["error"]["code"] == "idempotency_key_reused"


def test_invalid_transition_is_409_naming_the_current_state(merchant):
    driver, ships, _ = make_started_route(merchant, shipments=1)
    sid = ships[0]["id"]
    assert update(merchant, driver["token"], sid, {"status": "delivered", "occurred_at": iso(now_ms())}
                  ).status_code == 200
    r = update(merchant, driver["token"], sid, {"status": "arrived", "occurred_at": iso(now_ms())})
    assert r.status_code == 409
    assert r.json_body["error"]["details"] == [{"field": "status", "reason": "current status is delivered"}]


def test_bad_updates_are_4xx(merchant, other_merchant):
    driver, ships, _ = make_started_route(merchant, shipments=1)
    sid = ships[0]["id"]
    cases = [
        ({"status": "failed", "occurred_at": iso(now_ms())}, 422),
        ({"status": "arrived", "reason": "refused", "occurred_at": iso(now_ms())}, 422),
        ({"status": "teleported", "occurred_at": iso(now_ms())}, 422),
        ({"status": "arrived", "occurred_at": iso(now_ms() + 600_000)}, 422),
        ({"status": "arrived", "occurred_at": iso(now_ms() - 8 * 86_400_000)}, 422),
        ({"status": "arrived"}, 422),
    ]
    for body, status in cases:
        r = update(merchant, driver["token"], sid, body)
        assert r.status_code == status, (body, r.body)
    # another driver of another merchant, or a shipment not on this driver's route: 404
    other_driver, other_ships, _ = make_started_route(other_merchant, shipments=1)
    assert update(merchant, other_driver["token"], sid, cases[0][0] | {"reason": "other"}).status_code == 404
    assert update(merchant, driver["token"], other_ships[0]["id"],
                  {"status": "arrived", "occurred_at": iso(now_ms())}).status_code == 404
    assert merchant.call("GET", f"/v1/shipments/{sid}").json_body["status"] == "out_for_delivery"


def test_a_delivered_for_a_shipment_on_no_route_is_refused_and_changes_nothing(merchant):
    from tests.integration.helpers import make_shipment

    driver, _, _ = make_started_route(merchant, shipments=1)
    loose = make_shipment(merchant, 9)  # created, never put on a route
    r = update(merchant, driver["token"], loose["id"], {"status": "delivered", "occurred_at": iso(now_ms())})
    assert r.status_code == 404 and r.json_body["error"]["code"] == "not_found", r.body
    after = merchant.call("GET", f"/v1/shipments/{loose['id']}").json_body
    assert after["status"] == "created" and after.get("proof") in (None, {})
    timeline = merchant.call("GET", f"/v1/shipments/{loose['id']}/timeline").json_body["items"]
    assert [e["type"] for e in timeline] == ["created"]
