"""(e) `make simulate` against the running stack."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra.local.simulate import BUILTIN_TRACE, parse_gpx
from infra.local.stack import LocalStack, http_json, seed_demo, tracking_json_url
from tests.conftest import shared_path
from tests.e2e.conftest import api, iso, new_driver, run_module, write_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _demo_for_new_driver(demo: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A demo.json naming a fresh driver, so the run does not depend on other tests' pings."""
    driver = new_driver(demo, "Simulated Driver")
    # An old fix far from the trace: "the position moved" is then measurable, and being an hour
    # old it is outside the speed check's window, so it cannot veto the trace's first fixes.
    old = {"lat": 47.60, "lng": -122.33, "fix_time": iso(datetime.now(UTC) - timedelta(hours=1))}
    posted = http_json("POST", f"{demo['base_url']}/v1/driver/pings", {"pings": [old]}, token=driver["token"])
    assert posted.status == 200 and posted.body["accepted"] == 1, posted.body
    mine = {**demo, "driver_id": driver["id"], "driver_token": driver["token"]}
    return write_demo(tmp_path / "demo.json", mine), mine


def _position(demo: dict[str, Any]) -> dict[str, Any]:
    result = api(demo, "GET", f"/v1/drivers/{demo['driver_id']}/position")
    assert result.status == 200, result.body
    position: dict[str, Any] = result.body
    return position


def _check_run(demo_file: Path, demo: dict[str, Any], trace: Path, speed: str, batch: str) -> str:
    before = _position(demo)
    # --no-park-stops: this checks the ping path; waiting for the pipeline to drain a shared stack's
    # backlog would make it slow and timing-dependent (tests/integration/test_pipeline.py covers it).
    proc = run_module("infra.local.simulate", "--demo", demo_file, "--trace", trace, "--speed", speed,
                      "--batch", batch, "--no-park-stops")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = _position(demo)
    last = parse_gpx(trace)[-1]
    assert (after["lat"], after["lng"]) == (last.lat, last.lng)
    assert datetime.fromisoformat(after["fix_time"]) > datetime.fromisoformat(before["fix_time"])
    assert "Final position" in proc.stdout
    return proc.stdout


def test_simulate_plays_the_builtin_trace_and_moves_the_driver(stack: LocalStack, demo: dict[str, Any],
                                                               tmp_path: Path) -> None:
    demo_file, mine = _demo_for_new_driver(demo, tmp_path)
    out = _check_run(demo_file, mine, BUILTIN_TRACE, speed="2000", batch="25")
    fixes = len(parse_gpx(BUILTIN_TRACE))
    assert f"-> {fixes} accepted, 0 duplicate, 0 rejected" in out


def test_simulate_plays_the_real_ridealong_trace(stack: LocalStack, demo: dict[str, Any], tmp_path: Path) -> None:
    trace = shared_path("traces", "ridealong", "test1.gpx")
    demo_file, mine = _demo_for_new_driver(demo, tmp_path)
    out = _check_run(demo_file, mine, trace, speed="1000", batch="50")
    counts = re.search(r"-> (\d+) accepted, (\d+) duplicate, (\d+) rejected", out)
    assert counts is not None, out
    accepted, duplicates, rejected = map(int, counts.groups())
    # test1.gpx repeats some fixes with the same time: the API reports them as duplicates.
    assert accepted + duplicates == len(parse_gpx(trace)) and duplicates > 0 and rejected == 0


def test_simulate_without_demo_json_says_to_run_make_run(tmp_path: Path) -> None:
    proc = run_module("infra.local.simulate", "--demo", tmp_path / "missing.json")
    assert proc.returncode == 1
    assert "run `make run` first" in proc.stderr


def test_simulate_against_a_stopped_stack_says_so(demo: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    stale = write_demo(tmp_path / "demo.json", {**demo, "base_url": f"http://127.0.0.1:{closed}"})
    proc = run_module("infra.local.simulate", "--demo", stale, "--trace", BUILTIN_TRACE, "--speed", "5000")
    assert proc.returncode == 1
    assert "is `make run` still running?" in proc.stderr


# --- `make run` then `make simulate`: the demo's day, as a newcomer sees it ------------------------------

SEATTLE = ZoneInfo("America/Los_Angeles")
WEEKDAYS = re.compile(r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*\b")


@pytest.fixture(scope="module", params=["ridealong", "builtin"])
def demo_day(request: pytest.FixtureRequest, stack: LocalStack,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """A demo seeded as `make run` does (its own merchant and driver), then `make simulate` with its defaults
    (only faster, and backdated): the default trace over the demo route. "ridealong": with ../shared/data (the
    real trace and routes); "builtin": as on a fresh clone without it."""
    folder = tmp_path_factory.mktemp("demo-day")
    if request.param == "ridealong":
        shared_path("traces", "ridealong", "test1.gpx")
    data_dir = None if request.param == "ridealong" else folder / "no-shared-data"
    seeded = seed_demo(stack.base_url, stack.app_env, demo_path=folder / "demo.json", isolated=True,
                       data_dir=data_dir, extra={"variant": request.param})
    # --backdate: the drive ends now although the route started a moment ago (the default would play most of it
    # in real time, minutes; tests/unit/test_demo_plan.py checks that pacing).
    proc = run_module("infra.local.simulate", "--demo", folder / "demo.json", "--speed", "2000", "--batch", "50",
                      "--backdate", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return seeded, proc.stdout


def _view(url: str) -> dict[str, Any]:
    result = http_json("GET", tracking_json_url(url))
    assert result.status == 200, result.body
    view: dict[str, Any] = result.body
    return view


def _same_local_day(window: dict[str, Any], low: str, high: str) -> bool:
    opens, closes = (datetime.fromisoformat(window[k]).astimezone(SEATTLE) for k in (low, high))
    return opens.date() == closes.date() and opens <= closes


def test_after_simulate_the_pages_show_delivered_failed_arrived_and_a_live_driver_on_the_way(
        demo_day: tuple[dict[str, Any], str]) -> None:
    demo, out = demo_day
    links = dict(zip(demo["shipment_ids"], demo["tracking_urls"], strict=True))
    visited, onward = demo["shipment_ids"][: demo["visited_stops"]], demo["shipment_ids"][demo["visited_stops"]:]
    views = {sid: _view(url) for sid, url in links.items()}
    statuses = [views[sid]["status"] for sid in visited]
    assert statuses == ["delivered", "failed", *["delivered"] * (len(visited) - 3), "arrived"], statuses
    assert views[visited[-1]]["driver"] is not None  # the trace ends at that door
    coming = views[onward[0]]
    assert coming["status"] in ("out_for_delivery", "approaching")
    assert coming["driver"] is not None and coming["eta"] is not None  # the live driver and a window
    for sid in onward:
        assert views[sid]["status"] in ("out_for_delivery", "approaching"), views[sid]
    for sid, view in views.items():  # no state of the demo shows a window over two days
        assert _same_local_day(view["shipment"]["time_window"], "start", "end"), (sid, view)
        if view["eta"] is not None:
            assert _same_local_day(view["eta"], "earliest", "latest"), (sid, view["eta"])
            assert view["eta"]["earliest"][:10] >= demo["day"]
    # The first stop's delivery carries the photo; the failed one says why, in the merchant's API.
    proof = api(demo, "GET", f"/v1/shipments/{visited[0]}/proof").body
    assert [i["kind"] for i in proof["images"]] == ["photo"]
    failed = [e for e in api(demo, "GET", f"/v1/shipments/{visited[1]}/timeline").body["items"]
              if e["type"] == "failed"]
    assert len(failed) == 1
    # simulate says which link shows what, in words.
    assert f"stop 1: delivered, with the photo   {links[visited[0]]}" in out
    assert f"stop 2: not delivered (nobody home), can be rescheduled   {links[visited[1]]}" in out
    assert f"stop {len(visited)}: the driver is at the door   {links[visited[-1]]}" in out
    assert f"stop {len(visited) + 1}: on the way: the live driver and today's window   {links[onward[0]]}" in out
    assert "not_home" not in out


def test_the_driver_app_keeps_the_day_s_route_after_simulate(demo_day: tuple[dict[str, Any], str]) -> None:
    demo, _ = demo_day
    result = http_json("GET", f"{demo['base_url']}/v1/driver/route", token=demo["driver_token"])
    assert result.status == 200, result.body
    assert result.body["route"]["id"] == demo["route_id"]
    assert [s["shipment_id"] for s in result.body["stops"]] == demo["shipment_ids"]
    assert result.body["time_zone"] == "America/Los_Angeles"
    assert result.body["next_shipment_id"] in demo["shipment_ids"][demo["visited_stops"] - 1:]


def test_the_demo_pages_in_chromium_show_the_states_in_words(demo_day: tuple[dict[str, Any], str]) -> None:
    from tests.e2e.browser import CHROMIUM, LAUNCH_ARGS, SCREENSHOTS, require_browser

    require_browser()
    from playwright import sync_api

    demo, _ = demo_day
    visited, onward = demo["shipment_ids"][: demo["visited_stops"]], demo["shipment_ids"][demo["visited_stops"]:]
    links = dict(zip(demo["shipment_ids"], demo["tracking_urls"], strict=True))
    pages = {"delivered": visited[0], "failed": visited[1], "arrived": visited[-1], "on-the-way": onward[0],
             "later-today": onward[-1]}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
            page = context.new_page()
            page.set_default_timeout(15_000)
            texts = {}
            for state, shipment_id in pages.items():
                assert page.goto(links[shipment_id], wait_until="load").status == 200
                page.wait_for_timeout(500)
                page.screenshot(path=str(SCREENSHOTS / f"demo-{demo['variant']}-{state}.png"), full_page=True)
                texts[state] = page.inner_text("body")
                if state == "delivered":
                    assert page.locator("img.proof-photo").count() == 1  # the driver's photo, on the page
                eta = page.locator("[data-field=eta_text]")
                if eta.count() and eta.first.is_visible():
                    shown = eta.first.inner_text()
                    assert len(set(WEEKDAYS.findall(shown))) <= 1, (state, shown)  # never "Tue ... to Sat ..."
            assert page.goto(demo["driver_app_url"], wait_until="load").status == 200
            page.wait_for_timeout(1000)
            page.screenshot(path=str(SCREENSHOTS / f"demo-{demo['variant']}-driver-app.png"), full_page=True)
            texts["driver-app"] = page.inner_text("body")
        finally:
            browser.close()
    for state, text in texts.items():
        assert "not_home" not in text and "out_for_delivery" not in text, (state, text[:500])
    assert "Delivered" in texts["delivered"]
    assert "Delivery attempt failed" in texts["failed"]
    assert "Demo stop" in texts["driver-app"]  # the day's stops are still listed


def test_another_trace_drives_its_parkings_with_a_new_driver_and_the_demo_route_stays(
        stack: LocalStack, tmp_path: Path) -> None:
    trace = shared_path("traces", "ridealong", "nighttime_drive.gpx")  # Oakland, five parkings
    seeded = seed_demo(stack.base_url, stack.app_env, demo_path=tmp_path / "demo.json", isolated=True)
    proc = run_module("infra.local.simulate", "--demo", tmp_path / "demo.json", "--trace", trace,
                      "--speed", "2000", "--batch", "50", "--backdate", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on a route of a new driver" in proc.stdout and "Marked delivered" in proc.stdout
    # The demo driver's day is untouched: its route, every stop still out for delivery.
    mine = http_json("GET", f"{seeded['base_url']}/v1/driver/route", token=seeded["driver_token"]).body
    assert mine["route"]["id"] == seeded["route_id"] and mine["route"]["status"] == "active"
    assert {s["status"] for s in mine["stops"]} == {"out_for_delivery"}
