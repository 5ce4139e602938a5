"""Builders for request bodies used across integration tests."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

_REFS = itertools.count(1)


def shipment_body(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid shipment; its external_ref is unique per call (a merchant's refs are unique)."""
    body: dict[str, Any] = {
        "recipient": {"name": f"Ada Lovelace {n}", "phone": "+14155550100", "email": "ada@example.com"},
        "address": {"line1": f"{n} Main St", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "location": {"lat": 47.6 + n * 0.001, "lng": -122.3},
        "time_window": {"start": "2026-11-21T16:00:00Z", "end": "2026-11-21T18:00:00Z"},
        "instructions": "Gate code 1234",
        "external_ref": f"order-{n}-{next(_REFS)}",
    }
    body.update(overrides)
    return body


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def post_pings(client: Any, token: str, pings: list[dict[str, Any]] | Any, raw: str | None = None) -> Any:
    body = raw if raw is not None else json.dumps({"pings": pings})
    return client.http.post("/v1/driver/pings", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"}, body=body)


def make_driver(merchant: Any, name: str = "Dana Driver") -> dict[str, Any]:
    r = merchant.call("POST", "/v1/drivers", {"name": name, "phone": "+14155550111"})
    assert r.status_code == 201, r.body
    return r.json_body  # type: ignore[no-any-return]


def make_shipment(merchant: Any, n: int = 1, **overrides: Any) -> dict[str, Any]:
    r = merchant.call("POST", "/v1/shipments", shipment_body(n, **overrides))
    assert r.status_code == 201, r.body
    return r.json_body  # type: ignore[no-any-return]


Json = dict[str, Any]


def make_started_route(merchant: Any, shipments: int = 2) -> tuple[Json, list[Json], Json]:
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n) for n in range(1, shipments + 1)]
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": "2026-11-21",
                                             "planned_start": "2026-11-21T15:00:00Z",
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    route = r.json_body
    r = merchant.call("POST", f"/v1/routes/{route['id']}/start")
    assert r.status_code == 200, r.body
    return driver, ships, r.json_body
