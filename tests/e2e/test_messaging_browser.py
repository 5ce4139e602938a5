"""Messaging in a real headless Chromium against the local stack: the recipient writes on the tracking page and
the driver sees it in the driver app within 10 s, and the reverse; both sides by keyboard only. Screenshots go to
test-artifacts/screenshots/messaging-*.png."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local.stack import LocalStack, create_merchant, http_json
from tests.e2e.browser import SCREENSHOTS, require_browser
from tests.e2e.conftest import iso

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def call(base: str, key: str, method: str, path: str, body: Any = None) -> Any:
    result = http_json(method, f"{base}{path}", body, token=key)
    assert result.ok(), (method, path, result.status, result.body)
    return result.body


def tab_to(page: Any, element_id: str, limit: int = 80) -> None:
    """Press Tab until the element has the focus, as a keyboard user would."""
    for _ in range(limit):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} is not reachable by Tab")


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"messaging-{name}.png"), full_page=True)


def test_recipient_and_driver_talk_on_their_pages(stack: LocalStack, browser: Any) -> None:
    base = stack.base_url
    _, key = create_merchant(stack.app_env, "Messaging Shop", isolated=True)
    settings = call(base, key, "GET", "/v1/settings")
    settings.update({"time_zone": "UTC"})
    call(base, key, "PUT", "/v1/settings", settings)
    now = datetime.now(UTC)
    driver = call(base, key, "POST", "/v1/drivers", {"name": "Maxine Driver"})
    shipment = call(base, key, "POST", "/v1/shipments", {
        "recipient": {"name": "Robin Recipient", "phone": "+15555550123"},
        "address": {"line1": "1 Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "location": {"lat": 47.6205, "lng": -122.3493},
        "time_window": {"start": iso(now - timedelta(hours=1)), "end": iso(now + timedelta(hours=3))}})
    route = call(base, key, "POST", "/v1/routes", {"driver_id": driver["id"], "day": now.date().isoformat(),
                                                   "planned_start": iso(now - timedelta(minutes=30)),
                                                   "shipment_ids": [shipment["id"]]})
    call(base, key, "POST", f"/v1/routes/{route['id']}/start")
    link = call(base, key, "POST", f"/v1/drivers/{driver['id']}/app-link", {"expires_in_hours": 2})

    recipient_ctx = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    driver_ctx = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    try:
        recipient, driver_page = recipient_ctx.new_page(), driver_ctx.new_page()
        errors: list[str] = []
        for page in (recipient, driver_page):
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
        recipient.goto(shipment["tracking_url"], wait_until="load")
        driver_page.goto(link["url"], wait_until="load")
        driver_page.wait_for_selector("#stops li[data-shipment]")

        # the recipient writes, by keyboard
        tab_to(recipient, "message-text")
        recipient.keyboard.type("The gate code is 4711 <b>not bold</b>")
        recipient.keyboard.press("Tab")  # the Send button
        sent_at = time.monotonic()
        recipient.keyboard.press("Enter")
        recipient.wait_for_selector("#messages .msg--mine")
        shot(recipient, "recipient-sent")

        # the driver picks the stop's conversation by keyboard and sees it within 10 s
        driver_page.wait_for_function("() => document.querySelectorAll('#dm-thread option').length > 1")
        tab_to(driver_page, "dm-thread")
        driver_page.keyboard.press("ArrowDown")
        driver_page.wait_for_function(
            "() => document.getElementById('dm-list').textContent"
            ".indexOf('The gate code is 4711 <b>not bold</b>') >= 0",
            timeout=10_000)
        assert time.monotonic() - sent_at <= 10
        assert driver_page.locator("#dm-list b").count() == 0  # text, never HTML
        shot(driver_page, "driver-received")

        # the driver answers by keyboard; the recipient sees it within 10 s
        tab_to(driver_page, "dm-text")
        driver_page.keyboard.type("5 minutes away")
        driver_page.keyboard.press("Tab")
        answered_at = time.monotonic()
        driver_page.keyboard.press("Enter")
        recipient.wait_for_function(
            "() => document.getElementById('messages').textContent.indexOf('5 minutes away') >= 0", timeout=10_000)
        assert time.monotonic() - answered_at <= 10
        assert "Maxine" in recipient.locator("#messages .msg--theirs").first.text_content()
        assert "+1555" not in recipient.content()
        shot(recipient, "recipient-received")
        shot(driver_page, "driver-sent")
        assert errors == []
    finally:
        recipient_ctx.close()
        driver_ctx.close()
