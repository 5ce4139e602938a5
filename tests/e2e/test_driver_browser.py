"""The driver web app in a real headless Chromium against the local stack (moto server + chalice local).

The phone is emulated: a 390x844 viewport, granted and moved geolocation (`context.set_geolocation`), and an
offline period (`context.set_offline`). The test delivers a parcel with a photo and a drawn signature while
offline, comes back online, and then checks through the merchant API that the queue arrived in order: the
arrival before the delivery on the timeline, the proof of delivery with its distance from the stop, and the
fixes taken while offline. Screenshots of every state go to test-artifacts/screenshots/driver-*.png.
Chromium is the system's (/usr/bin/chromium), as for the tracking page's browser tests.
"""

from __future__ import annotations

import base64
import gzip
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra.local.stack import LocalStack, create_merchant, http_json
from tests.e2e.browser import SCREENSHOTS, require_browser
from tests.e2e.conftest import iso

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TZ = "America/Los_Angeles"
STOP = (47.6205, -122.3493)  # the first stop; the phone approaches it from the south
SECOND_STOP = (47.6290, -122.3493)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def south_of_stop(metres: float) -> dict[str, float]:
    return {"latitude": round(STOP[0] - metres / 111_195, 6), "longitude": STOP[1], "accuracy": 8}


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(port=0, moto_port=0, log_dir=tmp_path_factory.mktemp("driver-stack") / "logs") as running:
        yield running


@dataclass
class Shop:
    base_url: str
    key: str

    def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        result = http_json(method, f"{self.base_url}{path}", body, token=self.key)
        assert result.ok() if expect is None else result.status == expect, (method, path, result.status, result.body)
        return result.body

    def shipment(self, n: int, location: tuple[float, float]) -> dict[str, Any]:
        now = datetime.now(UTC)
        return self.call("POST", "/v1/shipments", {  # type: ignore[no-any-return]
            "recipient": {"name": f"Robin Recipient{n}", "phone": "+15555550199"},
            "address": {"line1": f"{n} Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
            "location": {"lat": location[0], "lng": location[1]},
            "time_window": {"start": iso(now - timedelta(hours=1)), "end": iso(now + timedelta(hours=3))},
            "instructions": "Ring twice"})

    def driver_with_route(self, stops: list[tuple[float, float]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        driver = self.call("POST", "/v1/drivers", {"name": "Maxine Driver"})
        ships = [self.shipment(n, where) for n, where in enumerate(stops, start=1)]
        day = datetime.now(ZoneInfo(TZ)).date().isoformat()  # "today" is the merchant's
        route = self.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day,
                                                 "planned_start": iso(datetime.now(UTC) - timedelta(minutes=30)),
                                                 "shipment_ids": [s["id"] for s in ships]})
        self.call("POST", f"/v1/routes/{route['id']}/start")
        return driver, ships


@pytest.fixture(scope="module")
def shop(stack: LocalStack) -> Shop:
    _, key = create_merchant(stack.app_env, "Driver App Shop", isolated=True)
    merchant = Shop(stack.base_url, key)
    settings = merchant.call("GET", "/v1/settings")
    # No automatic "approaching" here: the test decides when the driver arrives (the geofence would mark an
    # arrival itself inside 75 m; the app treats that as done, but this keeps the timeline the driver's).
    settings.update({"time_zone": TZ, "approach_minutes": 0, "approach_metres": 0})
    merchant.call("PUT", "/v1/settings", settings)
    return merchant


@dataclass
class Tab:
    """A page that records console errors, page errors, failed requests and error answers."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.evaluate("window.scrollTo(0, 0)")  # the sticky status bar then sits on top of the picture
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(SCREENSHOTS / f"driver-{name}.png"), full_page=True)


def open_tab(context: Any) -> Tab:
    page = context.new_page()
    page.set_default_timeout(20_000)
    tab = Tab(page)
    page.on("console", lambda m: tab.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: tab.problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: tab.problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    return tab


def sync_state(tab: Tab) -> tuple[str, int]:
    state = tab.page.get_attribute("#sync", "data-state")
    return str(state), int(tab.page.get_attribute("#sync", "data-queue") or 0)


def wait_until_sent(tab: Tab, timeout_ms: int = 60_000) -> None:
    tab.page.wait_for_function("() => { const s = document.getElementById('sync');"
                               " return s.dataset.state === 'sent' && s.dataset.queue === '0'; }", timeout=timeout_ms)


def move_to(context: Any, tab: Tab, where: dict[str, float]) -> None:
    """A new fix; the app keeps at most one fix per 2 s, so wait that long after each."""
    context.set_geolocation(where)
    tab.page.wait_for_timeout(2_300)


def a_real_jpeg(tab: Tab) -> bytes:
    """A small JPEG encoded by the browser itself (no imaging library here): a parcel-coloured picture."""
    data_url = tab.page.evaluate("""() => {
        const c = document.createElement('canvas'); c.width = 160; c.height = 120;
        const g = c.getContext('2d'); g.fillStyle = '#c08a4a'; g.fillRect(0, 0, 160, 120);
        g.fillStyle = '#5b3a1a'; g.fillRect(70, 0, 20, 120); g.fillRect(0, 50, 160, 20);
        return c.toDataURL('image/jpeg', 0.9); }""")
    data = base64.b64decode(data_url.split(",", 1)[1])
    assert data[:3] == b"\xff\xd8\xff" and len(data) > 500
    return data


def draw_signature(tab: Tab) -> None:
    pad = tab.page.locator("#signature")
    pad.scroll_into_view_if_needed()  # mouse coordinates are the viewport's
    box = pad.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50
    mouse = tab.page.mouse
    x0, y0 = box["x"] + 20, box["y"] + box["height"] * 0.7
    mouse.move(x0, y0)
    mouse.down()
    for i in range(1, 25):  # a wavy line, like a hasty signature
        mouse.move(x0 + i * (box["width"] - 40) / 24, y0 - (30 if i % 2 else 0) - i, steps=2)
    mouse.up()


# --- tests -----------------------------------------------------------------------------------------------


def test_a_delivery_with_photo_and_signature_survives_an_offline_period(stack: LocalStack, shop: Shop,
                                                                        browser: Any) -> None:
    driver, ships = shop.driver_with_route([STOP, SECOND_STOP])
    first, second = ships
    link = shop.call("POST", f"/v1/drivers/{driver['id']}/app-link", {"expires_in_hours": 12}, expect=201)
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US", has_touch=True,
                                  geolocation=south_of_stop(900), permissions=["geolocation"])
    try:
        tab = open_tab(context)
        page = tab.page
        response = page.goto(link["url"], wait_until="load")
        assert response.status == 200
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert f"connect-src 'self' {stack.moto_url}" in csp  # presigned uploads go to the bucket's origin
        assert response.headers["referrer-policy"] == "no-referrer"

        # the route and the next stop, with a navigation link to it
        page.wait_for_selector(".stop-name")
        assert page.inner_text(".stop-name") == "Robin"
        assert "1 Pike Street" in page.inner_text("#next-body") and "Ring twice" in page.inner_text("#next-body")
        assert page.get_attribute("#main", "data-current") == first["id"]
        assert page.get_attribute("#nav-google", "href") == \
            f"https://www.google.com/maps/dir/?api=1&destination={STOP[0]},{STOP[1]}"
        assert page.get_attribute("#nav-geo", "href").startswith(f"geo:{STOP[0]},{STOP[1]}")
        assert page.locator("#stops li").count() == 2
        tab.shot("01-route")

        # drive towards the stop and tap Arrived (online): the fixes so far and the arrival are sent
        move_to(context, tab, south_of_stop(500))
        move_to(context, tab, south_of_stop(150))
        page.get_by_role("button", name="Arrived", exact=True).click()
        page.wait_for_selector("#toast:has-text('Arrival saved.')")  # queued (the toast follows the queue write)
        wait_until_sent(tab)
        assert shop.call("GET", f"/v1/shipments/{first['id']}")["status"] == "arrived"
        assert page.is_disabled("#btn-arrived")
        tab.shot("02-arrived")

        # offline: walk to the door (fixes are queued), deliver with a photo and a signature
        photo = a_real_jpeg(tab)
        context.set_offline(True)
        offline_from = datetime.now(UTC)
        page.wait_for_function("() => document.getElementById('sync').dataset.state === 'offline'")
        move_to(context, tab, south_of_stop(60))
        door = south_of_stop(15)
        move_to(context, tab, door)
        page.get_by_role("button", name="Delivered", exact=True).click()
        assert page.is_visible("#deliver-form")
        page.set_input_files("#photo", files=[{"name": "parcel.jpg", "mimeType": "image/jpeg", "buffer": photo}])
        page.wait_for_selector("#photo-preview:not([hidden])")
        draw_signature(tab)
        page.get_by_label("Recipient's name").fill("Robin")
        page.get_by_label("Note (optional)").first.fill("Handed over at the door")
        tab.shot("03-delivery-form-offline")
        page.get_by_role("button", name="Confirm delivery").click()
        page.wait_for_selector("#toast:not([hidden])")
        assert "Delivery saved." in page.inner_text("#toast") and "back online" in page.inner_text("#toast")
        state, waiting = sync_state(tab)
        assert state == "offline" and waiting >= 2, (state, waiting)  # the fixes, then the delivery
        assert "waiting to be sent" in page.inner_text("#sync-text")
        assert "Delivered (waiting to be sent)" in page.inner_text("#stops")
        assert page.get_attribute("#main", "data-current") == second["id"]  # the app moved on to the next stop
        tab.shot("04-queued-offline")
        page.wait_for_timeout(3_000)  # nothing leaves the phone while offline
        assert shop.call("GET", f"/v1/shipments/{first['id']}")["status"] == "arrived"
        assert sync_state(tab)[1] == waiting

        # back online: the queue drains in order
        # Taken before the network returns: the app may send its queue before set_offline() even returns.
        online_at = datetime.now(UTC)
        online_at = online_at.replace(microsecond=online_at.microsecond // 1000 * 1000)  # stored times are in ms
        context.set_offline(False)
        wait_until_sent(tab)
        tab.shot("05-sent")
        assert "Delivered" in page.inner_text("#stops") and "waiting" not in page.inner_text("#stops")
    finally:
        context.close()

    # the merchant API shows what happened, in the order it happened on the phone
    shipment = shop.call("GET", f"/v1/shipments/{first['id']}")
    assert shipment["status"] == "delivered"
    timeline = shop.call("GET", f"/v1/shipments/{first['id']}/timeline")["items"]
    kinds = [e["type"] for e in timeline]
    assert kinds.index("arrived") < kinds.index("delivered"), kinds
    delivered = timeline[kinds.index("delivered")]
    assert delivered["source"] == "driver" and timeline[kinds.index("arrived")]["source"] == "driver"
    delivered_at = datetime.fromisoformat(delivered["occurred_at"])
    assert offline_from < delivered_at < online_at <= datetime.fromisoformat(delivered["recorded_at"])

    proof = shop.call("GET", f"/v1/shipments/{first['id']}/proof")
    assert [i["kind"] for i in proof["images"]] == ["photo", "signature"]
    assert proof["recipient_name"] == "Robin" and proof["contactless"] is False
    assert proof["distance_m"] is not None and 10 <= proof["distance_m"] <= 25 and proof["far_from_stop"] is False
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    assert opener.open(proof["images"][0]["url"], timeout=10).read() == photo  # the photo as taken
    signature = opener.open(proof["images"][1]["url"], timeout=10).read()
    assert signature.startswith(PNG_MAGIC) and len(signature) > 1000

    # the fixes taken while offline arrived: the driver's position is the door, stamped with the phone's time
    position = shop.call("GET", f"/v1/drivers/{driver['id']}/position")
    assert (position["lat"], position["lng"]) == (door["latitude"], door["longitude"])
    fix_time = datetime.fromisoformat(position["fix_time"])
    assert offline_from < fix_time < online_at <= datetime.fromisoformat(position["received_at"])

    # no console error, page error or refused request, except what the emulated offline period causes
    offline_noise = re.compile(r"ERR_INTERNET_DISCONNECTED")
    unexpected = [p for p in tab.problems if not offline_noise.search(p)]
    assert unexpected == [], unexpected


def test_end_shift_stops_sharing_and_start_shift_resumes(stack: LocalStack, shop: Shop, browser: Any) -> None:
    """A driver on a started route is on duty (the button offers End shift); ending the shift stops the location
    watch and the fleet view shows the driver off duty; Start shift puts them back on duty and sharing."""
    driver, _ = shop.driver_with_route([STOP])
    link = shop.call("POST", f"/v1/drivers/{driver['id']}/app-link", {}, expect=201)
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US",
                                  geolocation=south_of_stop(900), permissions=["geolocation"])

    def fleet_entry() -> dict[str, Any]:
        return next(d for d in shop.call("GET", "/v1/fleet")["drivers"] if d["driver_id"] == driver["id"])

    try:
        tab = open_tab(context)
        page = tab.page
        page.goto(link["url"], wait_until="load")
        page.wait_for_selector("#shift-toggle[aria-pressed='true']")  # the app's status report: on duty
        assert page.inner_text("#shift-toggle") == "End shift"
        page.wait_for_function("() => /Sharing your location/.test(document.getElementById('gps-text').textContent)")
        entry = fleet_entry()
        assert entry["on_duty"] is True and entry["battery"] in (None, *range(0, 101))
        page.get_by_role("button", name="End shift").click()
        page.wait_for_selector("#shift-toggle[aria-pressed='false']")
        assert page.inner_text("#gps-text") == "Off duty: your location is not shared."
        assert fleet_entry()["state"] == "off_duty"
        tab.shot("07-off-duty")
        page.get_by_role("button", name="Start shift").click()
        page.wait_for_selector("#shift-toggle[aria-pressed='true']")
        assert fleet_entry()["on_duty"] is True
        assert tab.problems == []
    finally:
        context.close()


def test_a_revoked_link_shows_the_friendly_page(stack: LocalStack, shop: Shop, browser: Any) -> None:
    driver, _ = shop.driver_with_route([STOP])
    link = shop.call("POST", f"/v1/drivers/{driver['id']}/app-link", {}, expect=201)
    shop.call("POST", f"/v1/drivers/{driver['id']}/app-link/revoke", expect=204)
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    try:
        tab = open_tab(context)
        response = tab.page.goto(link["url"], wait_until="load")
        assert response.status == 404 and tab.page.inner_text("h1") == "Driver link not valid"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        tab.shot("06-revoked-link")
        assert [p for p in tab.problems if "404" not in p] == []
    finally:
        context.close()


def test_the_first_load_is_small(stack: LocalStack, shop: Shop) -> None:
    """The page, its stylesheet, scripts (the app's and its messages card's) and icon, gzipped as API Gateway
    sends them."""
    driver, _ = shop.driver_with_route([STOP])
    link = shop.call("POST", f"/v1/drivers/{driver['id']}/app-link", {}, expect=201)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    html = opener.open(link["url"], timeout=10).read()
    assets = re.findall(rb'(?:href|src)="(/static/[^"]+)"', html)
    total = len(gzip.compress(html))
    for asset in assets:
        total += len(gzip.compress(opener.open(f"{stack.base_url}{asset.decode()}", timeout=10).read()))
    assert len(assets) == 4 and total < 40 * 1024, (assets, total)
