"""(a) `make run`'s demo data: demo.json and the tracking links it names."""

from __future__ import annotations

import json
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra.local.demo_plan import BUILTIN_TRACE, default_trace, parse_gpx, stops_along_trace
from infra.local.stack import (
    BUILTIN_ROUTE,
    DEMO_DRIVER_REPLY,
    DEMO_KEYS,
    DEMO_RECIPIENT_MESSAGE,
    LocalStack,
    default_data_dir,
    http_json,
    seed_demo,
    tracking_json_url,
)
from tests.conftest import shared_path
from tests.e2e.conftest import api

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEATTLE = ZoneInfo("America/Los_Angeles")  # the zone of the traces `make simulate` plays


def test_demo_json_has_every_key_and_each_tracking_link_answers(stack: LocalStack, demo: dict[str, Any],
                                                                demo_path: Path) -> None:
    on_disk = json.loads(demo_path.read_text(encoding="utf-8"))
    assert set(DEMO_KEYS) | {"lookup_url", "conversation_demo"} <= set(on_disk)
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
    # Seeded for "today" in the merchant's zone (Seattle's); compared loosely so a run across midnight cannot flake.
    day = date.fromisoformat(route.body["day"])
    assert abs((datetime.now(SEATTLE).date() - day).days) <= 1
    assert [s["shipment_id"] for s in route.body["stops"]] == demo["shipment_ids"]
    first = api(demo, "GET", f"/v1/shipments/{demo['shipment_ids'][0]}")
    assert first.body["driver_id"] == demo["driver_id"]
    assert first.body["delivery_date"] == route.body["day"]
    assert first.body["recipient"]["name"] == "Demo Recipient 1"


def test_demo_stops_lie_along_the_trace_simulate_plays_in_its_city_and_zone(demo: dict[str, Any]) -> None:
    trace = default_trace(default_data_dir())
    assert demo["trace"] == str(trace)  # what `make simulate` plays by default
    expected = stops_along_trace(parse_gpx(trace))
    visited = demo["stops"][: demo["visited_stops"]]
    assert len(visited) == len(expected) >= 3
    assert [(s["lat"], s["lng"]) for s in visited] == [(s.lat, s.lng) for s in expected]
    assert all(s["kind"] == "onward" for s in demo["stops"][demo["visited_stops"]:])
    settings = api(demo, "GET", "/v1/settings")
    assert settings.body["time_zone"] == demo["time_zone"] == "America/Los_Angeles"
    for shipment_id in demo["shipment_ids"]:
        shipment = api(demo, "GET", f"/v1/shipments/{shipment_id}").body
        assert shipment["address"]["city"] == "Seattle"


def test_every_promised_window_and_the_planned_start_are_on_the_route_s_local_day(demo: dict[str, Any]) -> None:
    route = api(demo, "GET", f"/v1/routes/{demo['route_id']}").body
    day = date.fromisoformat(route["day"])
    start = datetime.fromisoformat(route["planned_start"])
    trace = parse_gpx(Path(demo["trace"]))
    created = datetime.fromisoformat(demo["created_at"])
    # Before the simulated drive (which ends when `make simulate` runs, later than the seeding).
    assert start <= created - (trace[-1].time - trace[0].time)
    assert start.astimezone(SEATTLE).date() == day
    for shipment_id in demo["shipment_ids"]:
        window = api(demo, "GET", f"/v1/shipments/{shipment_id}").body["time_window"]
        opens, closes = (datetime.fromisoformat(window[k]).astimezone(SEATTLE) for k in ("start", "end"))
        assert opens.date() == closes.date() == day and timedelta(hours=1) <= closes - opens <= timedelta(hours=2)


def test_builtin_route_is_used_when_the_shared_data_is_absent(stack: LocalStack, tmp_path: Path) -> None:
    seeded = seed_demo(stack.base_url, stack.app_env, data_dir=tmp_path / "no-shared-data",
                       demo_path=tmp_path / "demo.json", isolated=True)
    assert seeded["trace"] == str(BUILTIN_TRACE)
    assert seeded["visited_stops"] == 5  # the bundled trace's five parkings
    builtin = json.loads(BUILTIN_ROUTE.read_text(encoding="utf-8"))
    onward = {(s["lat"], s["lng"]) for s in builtin["onward_stops"]}
    assert len(seeded["shipment_ids"]) == 10
    assert all((s["lat"], s["lng"]) in onward for s in seeded["stops"][5:])
    assert seeded["route_source"] == "5 stops along demo_trace.gpx, then built-in demo_route.json"
    shipment = api(seeded, "GET", f"/v1/shipments/{seeded['shipment_ids'][1]}").body
    assert shipment["address"]["city"] == "Seattle"
    assert shipment["time_window"] is not None
    assert shipment["status"] == "out_for_delivery"
    assert api(seeded, "GET", "/v1/settings").body["time_zone"] == "America/Los_Angeles"


def test_a_chosen_real_route_is_seeded_in_its_metro_s_zone(stack: LocalStack, tmp_path: Path) -> None:
    shared_path("routes", "almrrc2021", "new_route_data.json")
    seeded = seed_demo(stack.base_url, stack.app_env, demo_path=tmp_path / "demo.json", isolated=True,
                       route_choice="DCH4", stops=3)
    assert "(station DCH4)" in seeded["route_source"] and seeded["trace"] is None
    assert api(seeded, "GET", "/v1/settings").body["time_zone"] == "America/Chicago"
    shipment = api(seeded, "GET", f"/v1/shipments/{seeded['shipment_ids'][0]}").body
    assert shipment["address"]["city"] == "Chicago"


def test_make_run_prints_the_tracking_links_with_what_simulate_makes_of_them(stack: LocalStack,
                                                                             demo: dict[str, Any],
                                                                             demo_path: Path) -> None:
    from infra.local.stack import _summary

    printed = _summary(demo, stack, demo_path)
    links = demo["tracking_urls"]
    visited = demo["visited_stops"]
    assert f"stop 1: {links[0]}   (after make simulate: delivered, with a photo)" in printed
    assert f"stop 2: {links[1]}   (after make simulate: nobody home: failed, can be rescheduled)" in printed
    assert f"stop {visited}: {links[visited - 1]}   (after make simulate: the driver arrives and stays" in printed
    assert f"stop {visited + 1}: {links[visited]}   (after make simulate: next: the live driver" in printed
    assert demo["driver_app_url"] in printed and "America/Los_Angeles" in printed
    assert "not_home" not in printed
    # The sample ping is where the demo drive sets off, in the route's city.
    start = parse_gpx(Path(demo["trace"]))[0]
    assert f'"lat": {start.lat}, "lng": {start.lng}' in printed


def test_the_demo_s_console_queue_holds_a_late_stop_and_an_offline_driver(demo: dict[str, Any]) -> None:
    """`make run`'s second driver: their stop's window ended an hour ago and their phone went quiet 8 minutes
    ago, so the queue shows `late` at once and `driver_offline` at the next offline schedule run (5 s locally)."""
    seeded = demo["exceptions_demo"]
    local_now = datetime.now(SEATTLE)
    if seeded is None:
        assert local_now.hour < 2  # only just after the local midnight is there no earlier window to miss
        pytest.skip("seeded just after Seattle's midnight: no earlier window on the local day")
    deadline, kinds = time.monotonic() + 60, set()
    while time.monotonic() < deadline:
        found = api(demo, "GET", "/v1/exceptions?state=open")
        assert found.status == 200, found.body
        mine = [x for x in found.body["items"]
                if x.get("driver_id") == seeded["driver_id"] or x.get("shipment_id") == seeded["shipment_id"]]
        kinds = {x["kind"] for x in mine}
        if {"late", "driver_offline"} <= kinds:
            break
        time.sleep(1)
    assert {"late", "driver_offline"} <= kinds, kinds
    fleet = api(demo, "GET", "/v1/fleet")
    stalled = next(d for d in fleet.body["drivers"] if d["driver_id"] == seeded["driver_id"])
    assert stalled["state"] == "offline" and stalled["on_duty"] is True


def test_the_demo_conversation_shows_to_the_recipient_the_driver_and_the_console(demo: dict[str, Any]) -> None:
    talk = demo["conversation_demo"]
    expected = [("recipient", DEMO_RECIPIENT_MESSAGE), ("driver", DEMO_DRIVER_REPLY)]
    assert talk["tracking_url"] == demo["tracking_urls"][talk["stop"] - 1]
    recipient = http_json("GET", talk["tracking_url"] + "/messages")
    driver = http_json("GET", f"{demo['base_url']}/v1/driver/shipments/{talk['shipment_id']}/messages",
                       token=demo["driver_token"])
    console = api(demo, "GET", f"/v1/shipments/{talk['shipment_id']}/messages")
    for thread in (recipient, driver, console):
        assert thread.status == 200, thread.body
        assert [(m["sender_role"], m["text"]) for m in thread.body["messages"]] == expected


def test_the_demo_lookup_page_finds_the_first_stop(demo: dict[str, Any]) -> None:
    assert demo["lookup_url"] == f"{demo['base_url']}/lookup/{demo['lookup_slug']}"
    page = http_json("GET", demo["lookup_url"], headers={"Accept": "text/html"})
    assert page.status == 200
    example = demo["lookup_example"]
    form = urllib.parse.urlencode({"order": example["order"], "check": example["phone_ending"]}).encode()
    request = urllib.request.Request(demo["lookup_url"], data=form, method="POST")

    class _Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_: Any, **__: Any) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(_Stay).open(request, timeout=10)
    assert answer.value.code == 303
    assert answer.value.headers["Location"] == demo["tracking_urls"][0]
