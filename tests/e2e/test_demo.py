"""(a) `make run`'s demo data: demo.json and the tracking links it names."""

from __future__ import annotations

import json
import stat
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import BUILTIN_ROUTE, DEMO_KEYS, LocalStack, http_json, seed_demo, tracking_json_url
from tests.conftest import shared_path
from tests.e2e.conftest import api

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_json_has_every_key_and_each_tracking_link_answers(stack: LocalStack, demo: dict[str, Any],
                                                                demo_path: Path) -> None:
    on_disk = json.loads(demo_path.read_text(encoding="utf-8"))
    assert set(DEMO_KEYS) <= set(on_disk)
    assert on_disk["base_url"] == stack.base_url
    assert stat.S_IMODE(demo_path.stat().st_mode) == 0o600  # it holds an API key and a driver token
    assert len(on_disk["shipment_ids"]) == len(on_disk["tracking_urls"]) > 0
    for url in on_disk["tracking_urls"]:
        # The stage config says port 8000; the links must name the port the stack really uses.
        assert url.startswith(f"{stack.base_url}/track/"), url
        page = http_json("GET", url, headers={"Accept": "text/html"})  # the recipient's page
        assert page.status == 200, page.body
        assert page.headers["content-type"].startswith("text/html")
        result = http_json("GET", tracking_json_url(url))
        assert result.status == 200, result.body
        assert result.headers["content-type"].startswith("application/json")
        assert result.body["status"] == "out_for_delivery"


def test_demo_route_is_active_and_owns_the_shipments_in_order(demo: dict[str, Any]) -> None:
    route = api(demo, "GET", f"/v1/routes/{demo['route_id']}")
    assert route.status == 200, route.body
    assert route.body["status"] == "active"
    # Seeded for "today" (UTC); compared loosely so a run across midnight cannot flake.
    day = date.fromisoformat(route.body["day"])
    assert abs((datetime.now(UTC).date() - day).days) <= 1
    assert [s["shipment_id"] for s in route.body["stops"]] == demo["shipment_ids"]
    first = api(demo, "GET", f"/v1/shipments/{demo['shipment_ids'][0]}")
    assert first.body["driver_id"] == demo["driver_id"]
    assert first.body["delivery_date"] == route.body["day"]
    assert first.body["recipient"]["name"] == "Demo Recipient 1"


def test_demo_uses_the_first_real_route_in_driven_order(demo: dict[str, Any]) -> None:
    folder = shared_path("routes", "almrrc2021")
    routes = json.loads((folder / "new_route_data.json").read_text(encoding="utf-8"))
    route_id = next(iter(routes))
    order = json.loads((folder / "new_actual_sequences.json").read_text(encoding="utf-8"))[route_id]["actual"]
    stops = routes[route_id]["stops"]
    expected = [s for s in sorted(stops, key=order.__getitem__) if stops[s]["type"] != "Station"][:10]
    assert route_id in demo["route_source"]
    assert [(s["lat"], s["lng"]) for s in demo["stops"]] == [(stops[s]["lat"], stops[s]["lng"]) for s in expected]
    route = api(demo, "GET", f"/v1/routes/{demo['route_id']}").body
    departure = routes[route_id]["departure_time_utc"]
    assert route["planned_start"].startswith(f"{route['day']}T{departure}")  # the data's departure, on the demo day


def test_builtin_route_is_used_when_the_shared_data_is_absent(stack: LocalStack, tmp_path: Path) -> None:
    seeded = seed_demo(stack.base_url, stack.app_env, data_dir=tmp_path / "no-shared-data",
                       demo_path=tmp_path / "demo.json", isolated=True)
    builtin = json.loads(BUILTIN_ROUTE.read_text(encoding="utf-8"))
    assert seeded["route_source"].startswith("built-in")
    assert len(seeded["shipment_ids"]) == len(builtin["stops"]) == 5
    shipment = api(seeded, "GET", f"/v1/shipments/{seeded['shipment_ids'][1]}").body
    assert shipment["address"]["city"] == "Seattle"
    assert shipment["time_window"] is not None  # S2 has a window in the built-in route
    assert shipment["status"] == "out_for_delivery"
