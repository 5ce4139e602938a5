"""(f) The recipient's tracking page in a real headless Chromium against the local stack.

Playwright drives the system's Chromium (/usr/bin/chromium; `apt-get install -y chromium`, which `.ci/run`
does on CI) - never a browser downloaded by `playwright install`. The stack runs with no tile URL (as it does
by default locally): nothing outside this machine is reachable here, and an unreachable tile server would put
network errors in the console. The map still shows the driver and the destination, which is what the page
promises without tiles. Every state is kept as a screenshot under test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import pytest

from infra.local.stack import LocalStack, create_merchant, http_json, tracking_json_url
from tests.e2e.browser import SCREENSHOTS, require_browser, wait_for
from tests.e2e.conftest import iso

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A stop in Seattle and points due south of it, so "closer" is easy to build.
STOP = (47.6205, -122.3493)


def south_of_stop(metres: float) -> dict[str, float]:
    return {"lat": round(STOP[0] - metres / 111_195, 6), "lng": STOP[1]}


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of its own: the session's shared stack may still be draining other tests' pings through the
    stream pipeline (the simulator posts thousands), and the live-map test waits for the pipeline's ETAs."""
    with LocalStack(port=0, moto_port=0, log_dir=tmp_path_factory.mktemp("browser-stack") / "logs") as running:
        yield running


@dataclass
class Shop:
    """A merchant of its own (its settings must not leak into other tests), with the merchant API."""

    base_url: str
    key: str

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        result = http_json(method, f"{self.base_url}{path}", body, token=self.key, headers=headers)
        assert result.ok(), (method, path, result.status, result.body)
        return result.body

    def driver(self) -> dict[str, Any]:
        return self.call("POST", "/v1/drivers", {"name": "Maxine Driver", "phone": "+15555550123"})  # type: ignore

    def shipment(self, n: int, location: tuple[float, float] = STOP) -> dict[str, Any]:
        now = datetime.now(UTC)
        return self.call("POST", "/v1/shipments", {  # type: ignore[no-any-return]
            "recipient": {"name": f"Robin Recipient{n}", "phone": "+15555550199", "email": "robin@example.com"},
            "address": {"line1": f"{n} Secret Lane", "city": "Seattle", "country": "US"},
            "location": {"lat": location[0], "lng": location[1]},
            "time_window": {"start": iso(now - timedelta(hours=1)), "end": iso(now + timedelta(hours=3))},
            "instructions": "Merchant-only note"})

    def started_route(self, driver: dict[str, Any], shipments: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        route = self.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": now.date().isoformat(),
                                                 "planned_start": iso(now - timedelta(minutes=30)),
                                                 "shipment_ids": [s["id"] for s in shipments]})
        self.call("POST", f"/v1/routes/{route['id']}/start")


@pytest.fixture(scope="module")
def shop(stack: LocalStack) -> Shop:
    _, key = create_merchant(stack.app_env, "Browser Test Shop", isolated=True)
    merchant = Shop(stack.base_url, key)
    settings = merchant.call("GET", "/v1/settings")
    settings.update({
        "branding": {"name": "Acme Parcels", "primary_colour": "#0b5394", "accent_colour": "#b45309",
                     "support_email": "help@acme.example", "support_phone": "+1 555 555 0100"},
        "link_expiry_days": 1, "driver_visible_stops": 1, "time_zone": "America/Los_Angeles",
        "reschedule_options": {"days_ahead": 3, "weekdays": [1, 2, 3, 4, 5, 6, 7],
                               "windows": [{"id": "morning", "start_time": "09:00", "end_time": "12:00"},
                                           {"id": "evening", "start_time": "17:00", "end_time": "20:00"}]},
    })
    merchant.call("PUT", "/v1/settings", settings)
    return merchant


@dataclass
class Tab:
    """A browser page that records console errors, page errors and failed requests."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def goto(self, url: str) -> Any:
        return self.page.goto(url, wait_until="load")

    def shot(self, name: str) -> None:
        # let Leaflet finish a zoom or pan animation, so the picture shows where the markers settle
        self.page.wait_for_function("() => !document.querySelector('.leaflet-zoom-anim, .leaflet-pan-anim')")
        self.page.wait_for_timeout(400)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def assert_clean(self, document_status: int | None = None) -> None:
        """No console error, page error or failed request, except that Chromium reports a document answered
        with an error status (the 404 page, a refused form's 409 page) as a failed resource: that answer is
        the page the test asked for, so `document_status` allows exactly it."""
        def expected(problem: str) -> bool:
            return document_status is not None and (
                problem == f"HTTP {document_status} {self.page.url}"
                or problem.endswith(f"the server responded with a status of {document_status} "
                                    f"({HTTPStatus(document_status).phrase})"))

        unexpected = [p for p in self.problems if not expected(p)]
        assert unexpected == [], unexpected


def open_tab(context: Any) -> Tab:
    page = context.new_page()
    page.set_default_timeout(15_000)
    opened = Tab(page)
    page.on("console", lambda m: opened.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: opened.problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: opened.problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    return opened


@pytest.fixture()
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")  # a phone
    try:
        yield open_tab(context)
    finally:
        context.close()


def post_pings(base_url: str, driver: dict[str, Any], pings: list[dict[str, Any]]) -> None:
    result = http_json("POST", f"{base_url}/v1/driver/pings", {"pings": pings}, token=driver["token"])
    assert result.status == 200 and result.body["accepted"] == len(pings), result.body


def tracking_status(url: str) -> dict[str, Any]:
    result = http_json("GET", tracking_json_url(url))
    assert result.status == 200, result.body
    return result.body  # type: ignore[no-any-return]


def tab_to(tab: Tab, selector: str, limit: int = 60) -> None:
    """Press Tab until the element matching `selector` has the focus: it is reachable by keyboard."""
    for _ in range(limit):
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} was not reached with the Tab key")


# --- tests --------------------------------------------------------------------------------------------


def test_a_fresh_shipment_renders_with_a_strict_csp_and_a_clean_console(shop: Shop, tab: Tab) -> None:
    shipment = shop.shipment(1)
    response = tab.goto(shipment["tracking_url"])
    assert response.status == 200
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["referrer-policy"] == "no-referrer" and headers["x-robots-tag"].startswith("noindex")
    page = tab.page
    assert page.inner_text("h1") == "Order received"
    assert page.is_visible("text=Hi Robin,")
    assert page.is_visible("text=Acme Parcels")
    body = page.inner_text("body")
    for private in ("Recipient1", "Secret Lane", "robin@example.com", "+15555550199", "Merchant-only note"):
        assert private not in body
    # the reschedule options are the merchant's windows, in the shipment's zone
    assert page.locator("input[name=option]").count() >= 5
    # the theme stylesheet applied the merchant's colour (validated, from a separate file)
    brand = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--brand').trim()")
    assert brand == "#0b5394"
    tab.shot("01-fresh-shipment")
    tab.assert_clean()


def test_the_marker_moves_and_the_eta_window_changes_without_a_reload(stack: LocalStack, shop: Shop,
                                                                     tab: Tab) -> None:
    driver = shop.driver()
    mine = shop.shipment(2)
    shop.started_route(driver, [mine])
    # Fix times from now on (the API takes up to 2 minutes ahead for phone clock skew), so the pipeline's
    # events land after "Order received" on the timeline; heading north at ~30 m/s, under the speed filter.
    t0 = datetime.now(UTC)
    post_pings(stack.base_url, driver, [
        {**south_of_stop(6000), "fix_time": iso(t0), "accuracy": 5, "speed": 30},
        {**south_of_stop(5400), "fix_time": iso(t0 + timedelta(seconds=20)), "accuracy": 5, "speed": 30}])
    url = mine["tracking_url"]
    first = wait_for(lambda: (s := tracking_status(url))["eta"] and s["driver"] and s, what="a first ETA")

    response = tab.goto(url)
    assert response.status == 200
    page = tab.page
    page.wait_for_selector(".driver-marker")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    before_d = page.get_attribute(".driver-marker", "d")
    before_eta = page.inner_text("[data-field=eta_text]")
    assert before_eta.startswith("Between") or before_eta.startswith("Around"), before_eta
    assert page.is_visible("text=You are the next stop!")
    tab.shot("02-live-driver-far")

    post_pings(stack.base_url, driver, [
        {**south_of_stop(3900), "fix_time": iso(t0 + timedelta(seconds=70)), "accuracy": 5, "speed": 30},
        {**south_of_stop(2700), "fix_time": iso(t0 + timedelta(seconds=110)), "accuracy": 5, "speed": 30}])
    closer = wait_for(lambda: (s := tracking_status(url))["eta"]["expected"] != first["eta"]["expected"] and s,
                      what="the pipeline's new ETA")
    assert closer["driver"]["lat"] > first["driver"]["lat"]
    # the page polls every DOORSTEP_TRACKING_POLL_SECONDS (5 s on the local stage)
    page.wait_for_function("d => { const m = document.querySelector('.driver-marker');"
                           " return m && m.getAttribute('d') !== d; }", arg=before_d, timeout=30_000)
    page.wait_for_function("t => document.querySelector('[data-field=eta_text]').textContent !== t",
                           arg=before_eta, timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating itself"
    tab.shot("03-live-driver-closer")
    tab.assert_clean()


def test_instructions_and_reschedule_by_keyboard_reach_the_merchant_api(shop: Shop, tab: Tab) -> None:
    shipment = shop.shipment(3)
    tab.goto(shipment["tracking_url"])
    page = tab.page

    tab_to(tab, "#gate_code")
    page.keyboard.type("4711#")
    tab_to(tab, "#leave_at_door")
    page.keyboard.press("Space")
    tab_to(tab, "#note")
    page.keyboard.type("Blue door, please knock")
    tab_to(tab, "form[action$='/instructions'] button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == shipment["tracking_url"]  # 303 back to the page
    assert page.is_visible("text=Your instructions are saved.")
    assert "4711" not in page.content() and "Blue door" not in page.content()  # never echoed
    given = shop.call("GET", f"/v1/shipments/{shipment['id']}")["recipient_instructions"]
    assert (given["gate_code"], given["leave_at_door"], given["note"]) == ("4711#", True, "Blue door, please knock")
    tab.shot("04-instructions-saved")

    tab_to(tab, "input[name=option]")
    page.keyboard.press("ArrowDown")  # the second offered window: arrow keys move and check within the group
    chosen = page.evaluate("document.querySelector('input[name=option]:checked').value")
    tab_to(tab, "form[action$='/reschedule'] button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.inner_text("h1") == "Delivery rescheduled"
    moved = shop.call("GET", f"/v1/shipments/{shipment['id']}")
    assert moved["status"] == "rescheduled" and moved["delivery_date"] == chosen.split("_")[0]
    assert page.locator(f"input[value='{chosen}']").count() == 0  # the new window is not offered again
    tab.shot("05-rescheduled")
    tab.assert_clean()


def test_the_rating_is_accepted_once(stack: LocalStack, shop: Shop, browser: Any, tab: Tab) -> None:
    driver = shop.driver()
    shipment = shop.shipment(4)
    shop.started_route(driver, [shipment])
    done = http_json("POST", f"{stack.base_url}/v1/driver/shipments/{shipment['id']}/status",
                     {"status": "delivered", "occurred_at": iso(datetime.now(UTC) - timedelta(seconds=5))},
                     token=driver["token"])
    assert done.status == 200, done.body
    url = shipment["tracking_url"]
    tab.goto(url)
    page = tab.page
    assert page.inner_text("h1") == "Delivered"
    assert page.is_visible("text=Proof of delivery")
    # a second tab opened before the rating still shows the form
    second = open_tab(page.context)
    second.goto(url)

    page.check("#rating-5")
    page.fill("#comment", "Quick and friendly")
    tab.shot("06-rating-form")
    with page.expect_navigation():
        page.click("form[action$='/rating'] button[type=submit]")
    assert page.is_visible("text=You rated this delivery 5 out of 5")
    tab.shot("07-rated")

    second.page.check("#rating-1")
    with second.page.expect_navigation() as nav:
        second.page.click("form[action$='/rating'] button[type=submit]")
    assert nav.value.status == 409
    assert second.page.inner_text("h1") == "Already rated"
    second.shot("08-rated-twice-refused")
    rating = shop.call("GET", f"/v1/shipments/{shipment['id']}")["rating"]
    assert (rating["score"], rating["comment"]) == (5, "Quick and friendly")
    tab.assert_clean()
    second.assert_clean(document_status=409)


def test_expired_and_revoked_links_show_the_friendly_404(stack: LocalStack, shop: Shop, tab: Tab) -> None:
    driver = shop.driver()
    old = shop.shipment(5)
    revoked = shop.shipment(6)
    shop.started_route(driver, [old])
    # delivered two days ago; the shop's links live one day after the final status
    done = http_json("POST", f"{stack.base_url}/v1/driver/shipments/{old['id']}/status",
                     {"status": "delivered", "occurred_at": iso(datetime.now(UTC) - timedelta(days=2))},
                     token=driver["token"])
    assert done.status == 200, done.body
    new_url = shop.call("POST", f"/v1/shipments/{revoked['id']}/tracking-link/revoke")["tracking_url"]

    bodies = []
    dead = (("09-expired-link", old["tracking_url"]), ("10-revoked-link", revoked["tracking_url"]),
            ("11-unknown-link", f"{stack.base_url}/track/{'A' * 43}"))
    for name, url in dead:
        response = tab.goto(url)
        assert response.status == 404
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert tab.page.inner_text("h1") == "Tracking link not found"
        bodies.append(response.body())
        tab.shot(name)
    assert len(set(bodies)) == 1
    assert tab.goto(new_url).status == 200
    tab.problems = [p for p in tab.problems if p not in {f"HTTP 404 {url}" for _, url in dead}]
    tab.assert_clean(document_status=404)


def test_the_page_reads_without_javascript(shop: Shop, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        shipment = shop.shipment(7)
        page.goto(shipment["tracking_url"])
        assert page.inner_text("h1") == "Order received"
        assert page.is_visible("text=Delivery window:")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "12-no-javascript.png"), full_page=True)
    finally:
        context.close()


def test_first_load_is_small_and_compressible(stack: LocalStack, shop: Shop) -> None:
    """The first load (HTML + CSS + JS, no tiles) stays under 150 KB gzip, as `make bench` reports."""
    import gzip
    import urllib.request

    shipment = shop.shipment(8)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    html = opener.open(shipment["tracking_url"], timeout=10).read()
    links = re.findall(rb'(?:href|src)="(/(?:static|track)/[^"]+)"', html)
    total = len(gzip.compress(html))
    for link in links:
        total += len(gzip.compress(opener.open(f"{stack.base_url}{link.decode()}", timeout=10).read()))
    assert len(links) >= 3 and total < 150 * 1024, (links, total)
    assert json.loads(opener.open(tracking_json_url(shipment["tracking_url"]), timeout=10).read())["status"] \
        == "created"
