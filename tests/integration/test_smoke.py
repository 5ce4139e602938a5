from __future__ import annotations

import json
import time
from datetime import UTC, datetime


def test_vertical_slice(merchant):
    r = merchant.call("POST", "/v1/drivers", {"name": "Dana Driver"})
    assert r.status_code == 201, r.body
    driver = r.json_body
    r = merchant.call("POST", "/v1/shipments", {
        "recipient": {"name": "Ada Lovelace", "phone": "+14155550100"},
        "address": {"line1": "1 Main St", "city": "Seattle", "country": "US"},
        "location": {"lat": 47.6, "lng": -122.3},
    })
    assert r.status_code == 201, r.body
    shipment = r.json_body
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": "2026-11-20",
                                             "planned_start": "2026-11-20T08:00:00Z",
                                             "shipment_ids": [shipment["id"]]})
    assert r.status_code == 201, r.body
    route = r.json_body
    r = merchant.call("POST", f"/v1/routes/{route['id']}/start")
    assert r.status_code == 200, r.body
    now = datetime.now(UTC).isoformat()
    r = merchant.client.http.post("/v1/driver/pings", headers={"Authorization": f"Bearer {driver['token']}",
                                                               "Content-Type": "application/json"},
                                  body=json.dumps({"pings": [{"lat": 47.61, "lng": -122.31, "fix_time": now}]}))
    assert r.status_code == 200, r.body
    assert r.json_body["accepted"] == 1
    r = merchant.call("GET", f"/v1/drivers/{driver['id']}/position")
    assert r.status_code == 200, r.body
    token = shipment["tracking_url"].rsplit("/", 1)[1]
    r = merchant.client.http.get(f"/v1/track/{token}")
    assert r.status_code == 200, r.body
    assert r.json_body["driver"]["lat"] == 47.61
    r = merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.3&radius_m=5000")
    assert r.status_code == 200, r.body
    assert r.json_body["items"][0]["driver_id"] == driver["id"]
    time.sleep(0)
