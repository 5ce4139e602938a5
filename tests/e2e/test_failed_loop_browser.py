"""The failed-delivery loop in a real headless Chromium on a phone-sized (390 px) screen: the recipient
reschedules after a failed attempt with the keyboard only; the failed-delivery email fits the screen; the driver
app puts "Location is off" first and stops its header looking healthy. Screenshots under test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from infra.local.stack import http_json
from tests.e2e.browser import SCREENSHOTS, require_browser
from tests.e2e.conftest import iso
from tests.e2e.test_tracking_browser import Shop, Tab, open_tab, shop, stack, tab, tab_to  # noqa: F401

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def failed(stack_url: str, shop: Shop, n: int) -> dict[str, Any]:  # noqa: F811
    driver = shop.driver()
    shipment = shop.shipment(n)
    shop.started_route(driver, [shipment])
    result = http_json("POST", f"{stack_url}/v1/driver/shipments/{shipment['id']}/status",
                       {"status": "failed", "reason": "not_home", "occurred_at": iso(datetime.now(UTC))},
                       token=driver["token"])
    assert result.status == 200, result.body
    return shipment


def test_reschedule_after_a_failed_attempt_by_keyboard_only(stack: Any, shop: Shop, tab: Tab) -> None:  # noqa: F811
    shipment = failed(stack.base_url, shop, 21)
    tab.goto(shipment["tracking_url"])
    page = tab.page
    assert page.inner_text("h1") == "Delivery attempt failed"
    body = page.inner_text("main")
    assert "Why: nobody was at home." in body and "Attempt 1 of 3." in body and "not_home" not in page.content()
    tab.shot("failed-01-offered")

    tab_to(tab, "form[action$='/reschedule'] input[name=option]")
    page.keyboard.press("ArrowDown")  # the second offered window
    chosen = page.evaluate("document.querySelector('form[action$=\"/reschedule\"] input[name=option]:checked').value")
    tab_to(tab, "form[action$='/reschedule'] button[type=submit]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.inner_text("h1") == "Delivery rescheduled"
    moved = shop.call("GET", f"/v1/shipments/{shipment['id']}")
    assert moved["status"] == "rescheduled" and moved["delivery_date"] == chosen.split("_")[0]
    assert moved["attempts"] == 1 and moved["route_id"] is None
    tab.shot("failed-02-rescheduled")
    tab.assert_clean()


def test_redirect_to_a_neighbour_by_keyboard(stack: Any, shop: Shop, tab: Tab) -> None:  # noqa: F811
    shipment = failed(stack.base_url, shop, 22)
    tab.goto(shipment["tracking_url"])
    page = tab.page
    tab_to(tab, "#redirect-neighbour")
    page.keyboard.type("Grace Hopper")
    tab_to(tab, "#redirect-kind-safe_place")
    page.keyboard.press("ArrowDown")  # moves to and checks "With a neighbour"
    assert page.is_checked("#redirect-kind-neighbour")
    tab_to(tab, "form[action$='/redirect'] button[type=submit]")
    tab.shot("failed-03-redirect-form")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    shown = shop.call("GET", f"/v1/shipments/{shipment['id']}")
    assert shown["status"] == "rescheduled" and shown["redirect"]["neighbour_name"] == "Grace Hopper"
    tab.assert_clean()


def test_the_failed_delivery_email_fits_390_px(browser: Any) -> None:
    from chalicelib.fleet.models import BrandingSettings
    from chalicelib.notifications.rules import NotifyKind
    from chalicelib.notifications.templates import render
    from chalicelib.web.branding import Branding

    long_url = "https://track.example.com/track/" + "x" * 120  # a real token is this long and unbreakable
    values = {"first_name": "Robin", "merchant_name": "Acme Parcels", "support_contact": "help@acme.example",
              "tracking_url": long_url, "reschedule_url": long_url, "reason": "nobody was at home"}
    email = render(NotifyKind.FAILED, "email", "en", values, Branding.of(BrandingSettings(), "Acme Parcels"))
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.set_content(email.html)  # type: ignore[union-attr]
        widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "failed-04-email-390.png"), full_page=True)
        assert widths[0] <= widths[1] == 390, widths  # no horizontal scroll
    finally:
        context.close()


def test_the_driver_app_puts_location_off_first(stack: Any, shop: Shop, browser: Any) -> None:  # noqa: F811
    driver = shop.driver()
    # On duty (the app shares, so asks for, the location only then), with the phone's location refused.
    started = http_json("POST", f"{shop.base_url}/v1/driver/shift", {"action": "start"}, token=driver["token"])
    assert started.status == 200, started.body
    link = shop.call("POST", f"/v1/drivers/{driver['id']}/app-link", {"expires_in_hours": 1})
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")  # no location permission
    try:
        opened = open_tab(context)
        page = opened.page
        page.goto(link["url"], wait_until="load")
        page.wait_for_selector("#gps-alert:not([hidden])")
        assert "Location is off" in page.inner_text("#gps-alert")
        assert page.get_attribute("#bar", "data-gps") == "off"
        colour = page.evaluate("getComputedStyle(document.getElementById('bar')).backgroundColor")
        assert colour == "rgb(153, 27, 27)", colour
        alert_top = page.evaluate("document.getElementById('gps-alert').getBoundingClientRect().top")
        assert alert_top < 120, alert_top  # at the top, not below the route
        opened.shot("failed-05-driver-location-off")
    finally:
        context.close()
