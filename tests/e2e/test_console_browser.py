"""The dispatch console in a real headless Chromium against the local stack (moto server + chalice local).

A dispatcher signs in with the merchant key, sees the console (fleet, routes, exceptions), searches a shipment
by its external ref and by the recipient's phone and opens its detail, acknowledges an exception with the
keyboard only (when the exception queue exists), and signs out; a forged cookie and a signed-out cookie are
refused, and the API key is never in a URL, localStorage or sessionStorage. Screenshots go to
test-artifacts/screenshots/console-*.png. Chromium is the system's (/usr/bin/chromium).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local.stack import LocalStack, create_merchant, http_json
from tests.e2e.browser import SCREENSHOTS, require_browser, wait_for
from tests.e2e.conftest import iso

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COOKIE = "doorstep_console"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(port=0, moto_port=0, log_dir=tmp_path_factory.mktemp("console-stack") / "logs") as running:
        yield running


@dataclass
class Shop:
    base_url: str
    key: str

    def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        result = http_json(method, f"{self.base_url}{path}", body, token=self.key)
        assert result.ok() if expect is None else result.status == expect, (method, path, result.status, result.body)
        return result.body

    def has(self, path: str) -> bool:
        return http_json("GET", f"{self.base_url}{path}", token=self.key).status != 404


@pytest.fixture(scope="module")
def shop(stack: LocalStack) -> Shop:
    _, key = create_merchant(stack.app_env, "Console Shop", isolated=True)
    return Shop(stack.base_url, key)


@pytest.fixture(scope="module")
def shipment(shop: Shop) -> dict[str, Any]:
    now = datetime.now(UTC)
    return shop.call("POST", "/v1/shipments", {  # type: ignore[no-any-return]
        "recipient": {"name": "Quinn Recipient", "phone": "+15555550177", "email": "quinn@example.com"},
        "address": {"line1": "1 Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "location": {"lat": 47.6097, "lng": -122.3422},
        "time_window": {"start": iso(now), "end": iso(now + timedelta(hours=2))},
        "external_ref": "console-order-1"})


@dataclass
class Tab:
    page: Any
    problems: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)


@pytest.fixture()
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    try:
        yield ctx
    finally:
        ctx.close()


def open_tab(context: Any) -> Tab:
    page = context.new_page()
    page.set_default_timeout(20_000)
    tab = Tab(page)
    page.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))
    page.on("console", lambda m: tab.problems.append(f"console: {m.text}")
            if m.type == "error" and "404" not in m.text else None)
    return tab


def sign_in(context: Any, stack: LocalStack, key: str) -> Tab:
    tab = open_tab(context)
    tab.page.goto(f"{stack.base_url}/console")
    tab.page.wait_for_selector("#api_key")
    tab.shot("sign-in")
    tab.page.fill("#api_key", key)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_selector("#fleet-h")
    tab.page.wait_for_function("() => document.getElementById('sync').textContent.length > 0")
    return tab


def key_is_nowhere_in_the_browser(tab: Tab, key: str) -> None:
    stored = tab.page.evaluate("""() => JSON.stringify([Object.entries(localStorage),
                                                         Object.entries(sessionStorage)])""")
    assert key not in stored and stored == "[[],[]]"
    assert key not in tab.page.url
    history = tab.page.evaluate("() => document.referrer + ' ' + location.href")
    assert key not in history
    assert key not in tab.page.content()


def test_sign_in_search_to_detail_and_sign_out(context: Any, stack: LocalStack, shop: Shop,
                                               shipment: dict[str, Any]) -> None:
    urls: list[str] = []
    context.on("request", lambda r: urls.append(r.url))
    tab = sign_in(context, stack, shop.key)
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies[COOKIE]["httpOnly"] and cookies[COOKIE]["secure"] and cookies[COOKIE]["sameSite"] == "Strict"
    assert tab.page.evaluate("() => document.cookie") == ""  # HttpOnly: no script reads the session
    tab.shot("signed-in")

    tab.page.fill("#q", "console-order-1")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector("#detail:not([hidden])")
    assert "console-order-1" in tab.page.inner_text("#detail-h")
    assert "Quinn Recipient" in tab.page.inner_text("#detail-facts")
    wait_for(lambda: "created" in tab.page.inner_text("#detail-timeline").lower(), 10, "the timeline")
    wait_for(lambda: "no messages yet" in tab.page.inner_text("#detail-messages").lower(), 10, "the conversation")
    # dispatch writes to the shipment's conversation from its detail, by keyboard
    tab.page.focus("#detail-reply-text")
    tab.page.keyboard.type("Ring twice <i>please</i>")
    tab.page.keyboard.press("Tab")
    tab.page.keyboard.press("Enter")
    wait_for(lambda: "Ring twice <i>please</i>" in tab.page.inner_text("#detail-messages"), 10,
             "the reply in the conversation")
    assert tab.page.locator("#detail-messages .msg--mine").count() == 1
    assert tab.page.locator("#detail-messages i").count() == 0  # text, never HTML
    tab.shot("detail")
    tab.page.keyboard.press("Escape")
    tab.page.fill("#q", "+1 555 555 0177")
    tab.page.click("#search button[type=submit]")
    tab.page.wait_for_selector(f'#results [data-shipment="{shipment["id"]}"]')

    key_is_nowhere_in_the_browser(tab, shop.key)
    assert not [u for u in urls if shop.key in u]

    session = cookies[COOKIE]["value"]
    tab.page.click("#sign-out")
    tab.page.wait_for_selector("#api_key")
    assert "signed out" in tab.page.inner_text("main").lower()
    assert COOKIE not in {c["name"] for c in context.cookies()}
    tab.shot("signed-out")
    # The cookie a thief copied before sign-out no longer works.
    after = http_json("GET", f"{stack.base_url}/v1/drivers", headers={"Cookie": f"{COOKIE}={session}"})
    assert after.status == 401
    assert not tab.problems, tab.problems


def test_a_phone_in_german(browser: Any, stack: LocalStack, shop: Shop, shipment: dict[str, Any]) -> None:
    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="de-DE", is_mobile=True,
                                has_touch=True)
    try:
        tab = open_tab(phone)
        tab.page.goto(f"{stack.base_url}/console")
        assert "Anmeldung" in tab.page.inner_text("h1")
        tab.page.fill("#api_key", shop.key)
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_selector("#fleet-h")
        assert tab.page.inner_text("#queue-h").startswith("Ausnahmen")
        # One column: nothing wider than the screen.
        assert tab.page.evaluate("() => document.documentElement.scrollWidth") <= 390
        tab.shot("phone-de")
        assert not tab.problems, tab.problems
    finally:
        phone.close()


def test_a_forged_cookie_is_refused(context: Any, stack: LocalStack, shop: Shop) -> None:
    tab = sign_in(context, stack, shop.key)
    good = next(c for c in context.cookies() if c["name"] == COOKIE)
    payload, _, mac = good["value"].partition(".")
    forged = {**good, "value": f"{payload}.{'A' * len(mac)}"}
    context.clear_cookies()
    context.add_cookies([forged])
    status = tab.page.evaluate("() => fetch('/v1/drivers', {credentials: 'same-origin'}).then(r => r.status)")
    assert status == 401
    tab.page.goto(f"{stack.base_url}/console")
    tab.page.wait_for_selector("#api_key")
    tab.shot("forged-cookie")


def test_the_fleet_map_shows_drivers_by_state(context: Any, stack: LocalStack, shop: Shop) -> None:
    if not shop.has("/v1/fleet"):
        pytest.skip("GET /v1/fleet is not in this build yet (the presence slice of issue 15)")
    driver = shop.call("POST", "/v1/drivers", {"name": "Mo Mover"})
    token = driver["token"]
    # On duty (the console's map shows on-duty drivers only), then moving.
    assert http_json("POST", f"{stack.base_url}/v1/driver/shift", {"action": "start"}, token=token).status == 200
    now = datetime.now(UTC)
    http_json("POST", f"{stack.base_url}/v1/driver/pings", {"pings": [
        {"lat": 47.61 + i * 0.001, "lng": -122.34, "fix_time": iso(now - timedelta(seconds=10 - i)), "speed": 8}
        for i in range(5)]}, token=token)
    tab = sign_in(context, stack, shop.key)
    tab.page.wait_for_selector(f'#drivers [data-driver="{driver["id"]}"]', timeout=15_000)
    tab.page.wait_for_selector("path.driver", timeout=15_000)
    tab.shot("fleet")


def test_acknowledge_an_exception_by_keyboard(context: Any, stack: LocalStack, shop: Shop) -> None:
    if not shop.has("/v1/exceptions?state=open"):
        pytest.skip("GET /v1/exceptions is not in this build yet (the exceptions slice of issue 15)")
    # A failed attempt opens an exception (issue 15: every exception type is raised by a scenario).
    driver = shop.call("POST", "/v1/drivers", {"name": "Fay Failer"})
    now = datetime.now(UTC)
    ship = shop.call("POST", "/v1/shipments", {
        "recipient": {"name": "Nobody Home"}, "location": {"lat": 47.6, "lng": -122.3},
        "address": {"line1": "2 Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "time_window": {"start": iso(now), "end": iso(now + timedelta(hours=2))}})
    route = shop.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": now.date().isoformat(),
                                             "planned_start": iso(now - timedelta(minutes=5)),
                                             "shipment_ids": [ship["id"]]})
    shop.call("POST", f"/v1/routes/{route['id']}/start")
    http_json("POST", f"{stack.base_url}/v1/driver/shipments/{ship['id']}/status",
              {"status": "failed", "occurred_at": iso(now), "reason": "not_home"}, token=driver["token"])
    tab = sign_in(context, stack, shop.key)
    tab.page.wait_for_selector("#exceptions [data-action=acknowledge]", timeout=30_000)
    # Keyboard only: the skip link leads to the queue, Tab reaches the first button, Enter presses it.
    tab.page.keyboard.press("Tab")
    tab.page.keyboard.press("Enter")
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("() => document.activeElement.dataset.action") == "acknowledge"
    exception_id = tab.page.evaluate("() => document.activeElement.dataset.actionFor")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector(f'#exceptions [data-exception="{exception_id}"][data-state="acknowledged"]')
    tab.shot("acknowledged")
    listed = shop.call("GET", "/v1/exceptions?state=acknowledged")
    assert exception_id in [x["id"] for x in listed["items"]]


def test_a_late_stop_reaches_the_queue_within_10_s_of_the_ping_that_makes_it_late(context: Any, stack: LocalStack,
                                                                                 shop: Shop) -> None:
    if not shop.has("/v1/exceptions?state=open"):
        pytest.skip("GET /v1/exceptions is not in this build yet (the exceptions slice of issue 15)")
    now = datetime.now(UTC)
    end = now - timedelta(minutes=5)  # the promised window is already over: any ETA is beyond it
    driver = shop.call("POST", "/v1/drivers", {"name": "Lee Late"})
    ship = shop.call("POST", "/v1/shipments", {
        "recipient": {"name": "Waiting Recipient"}, "location": {"lat": 47.64, "lng": -122.34},
        "address": {"line1": "3 Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "time_window": {"start": iso(end - timedelta(hours=1)), "end": iso(end)}})
    route = shop.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": ship["delivery_date"],
                                             "planned_start": iso(end - timedelta(hours=1)),
                                             "shipment_ids": [ship["id"]]})
    shop.call("POST", f"/v1/routes/{route['id']}/start")
    tab = sign_in(context, stack, shop.key)
    pinged = datetime.now(UTC)
    http_json("POST", f"{stack.base_url}/v1/driver/pings", {"pings": [
        {"lat": 47.60 + i * 0.0005, "lng": -122.34, "fix_time": iso(pinged - timedelta(seconds=9 - i)), "speed": 9}
        for i in range(10)]}, token=driver["token"])
    tab.page.wait_for_selector(f'#exceptions [data-kind=late][data-shipment="{ship["id"]}"]', timeout=10_000)
    assert (datetime.now(UTC) - pinged).total_seconds() <= 10
    tab.shot("late-stop")


# --- the console against the issue-15 contracts of /v1/fleet and /v1/exceptions, stubbed in the browser -------
# The presence and exceptions slices build those routes in parallel; until they are merged these tests answer
# them from the contract (docs in the issue), so the console's rendering and its requests are checked now.


def _driver(driver_id: str, name: str, state: str, lat: float, *, route: dict[str, Any] | None = None,
            reason: str | None = None) -> dict[str, Any]:
    on_duty = state != "off_duty"
    return {"driver_id": driver_id, "name": name, "state": state, "on_duty": on_duty,
            "last_seen_at": iso(datetime.now(UTC) - timedelta(minutes=2)), "battery": 64, "reason": reason,
            "position": {"lat": lat, "lng": -122.33, "accuracy_m": 8, "fix_time": iso(datetime.now(UTC))},
            "route": route}


FLEET = {"as_of": iso(datetime.now(UTC)), "drivers": [
    _driver("drv_moving", "Mia Moving", "moving", 47.61,
            route={"id": "rte_1", "status": "active", "done": 3, "remaining": 7, "late": 1}),
    _driver("drv_stopped", "Sam Stopped", "stopped", 47.62),
    _driver("drv_offline", "Olli Offline", "offline", 47.63, reason="location_off"),
    _driver("drv_off", "Otto Offduty", "off_duty", 47.64),
]}


def _exception(state: str) -> dict[str, Any]:
    return {"id": "exc_1", "kind": "late", "state": state, "driver_id": "drv_moving", "shipment_id": None,
            "route_id": "rte_1", "opened_at": iso(datetime.now(UTC) - timedelta(minutes=3)),
            "acknowledged_at": iso(datetime.now(UTC)) if state != "open" else None,
            "acknowledged_by": "console" if state != "open" else None, "resolved_at": None, "resolved_by": None,
            "summary": "Stop 4 will miss its window", "details": {}}


def _stub_contracts(page: Any, seen: list[tuple[str, str, str | None]]) -> None:
    import json

    state = {"exception": "open"}

    def fleet(route: Any) -> None:
        seen.append((route.request.method, route.request.url, None))
        route.fulfill(status=200, content_type="application/json", headers={"ETag": '"f1"'}, body=json.dumps(FLEET))

    def exceptions(route: Any) -> None:
        request = route.request
        seen.append((request.method, request.url, request.headers.get("x-csrf-token")))
        if request.method == "POST":
            state["exception"] = "acknowledged"
            route.fulfill(status=200, content_type="application/json", body=json.dumps(_exception("acknowledged")))
            return
        wanted = "acknowledged" if "state=acknowledged" in request.url else "open"
        items = [_exception(state["exception"])] if state["exception"] == wanted else []
        route.fulfill(status=200, content_type="application/json", body=json.dumps({"items": items,
                                                                                      "next_cursor": None}))

    page.route("**/v1/fleet", fleet)
    page.route("**/v1/exceptions**", exceptions)


def test_the_fleet_map_colours_drivers_by_state_per_the_contract(context: Any, stack: LocalStack,
                                                                 shop: Shop) -> None:
    seen: list[tuple[str, str, str | None]] = []
    page = context.new_page()
    _stub_contracts(page, seen)
    tab = Tab(page)
    page.goto(f"{stack.base_url}/console")
    page.fill("#api_key", shop.key)
    page.keyboard.press("Enter")
    page.wait_for_selector('#drivers [data-driver="drv_offline"]')
    listed = page.eval_on_selector_all("#drivers [data-driver]", "els => els.map(e => e.dataset.state)")
    assert listed == ["moving", "stopped", "offline"]  # off duty drivers are not on the list or the map
    for driver_state in ("moving", "stopped", "offline"):
        page.wait_for_selector(f"path.driver--{driver_state}")
    assert page.locator("path.driver--off_duty").count() == 0
    offline = page.inner_text('#drivers [data-driver="drv_offline"]')
    assert "Offline" in offline and "location off" in offline
    assert "3 done, 7 to go" in page.inner_text('#drivers [data-driver="drv_moving"]')
    tab.shot("fleet-contract")


def test_acknowledge_by_keyboard_per_the_contract(context: Any, stack: LocalStack, shop: Shop) -> None:
    seen: list[tuple[str, str, str | None]] = []
    page = context.new_page()
    _stub_contracts(page, seen)
    tab = Tab(page)
    page.goto(f"{stack.base_url}/console")
    page.fill("#api_key", shop.key)
    page.keyboard.press("Enter")
    page.wait_for_selector('#exceptions [data-exception="exc_1"][data-state="open"] [data-action=acknowledge]')
    csrf = page.get_attribute("body", "data-csrf")
    # Keyboard only: the skip link leads to the queue, Tab reaches its first button, Enter presses it.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.dataset.action") == "acknowledge"
    page.keyboard.press("Enter")
    page.wait_for_selector('#exceptions [data-exception="exc_1"][data-state="acknowledged"]')
    posts = [(url, token) for method, url, token in seen if method == "POST"]
    assert posts == [(f"{stack.base_url}/v1/exceptions/exc_1/acknowledge", csrf)]
    # The focus stays in the queue for the next key press (on the remaining action).
    assert page.evaluate("() => document.activeElement.dataset.action") == "resolve"
    tab.shot("acknowledged-contract")
