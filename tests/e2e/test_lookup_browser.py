"""The lookup snippet on a merchant's plain page, then the tracking page; the message preferences changed by
keyboard. In the system Chromium against the local stack; screenshots under test-artifacts/screenshots/.

The merchant's site is `https://shop.example`, answered by Playwright itself (nothing leaves the machine); the
snippet and its frame come from the stack on http://127.0.0.1, which Chromium treats as a secure origin, so the
https page may load it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from infra.local.stack import LocalStack, create_merchant, http_json
from tests.e2e.browser import CHROMIUM, LAUNCH_ARGS, SCREENSHOTS, require_browser

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SHOP_ORIGIN = "https://shop.example"
# Deployed, the merchant's site and the API are both public. Here the API is on loopback and the site is not,
# which Chromium's local-network checks would refuse: switched off for this module's browser only.
_LOCAL_NETWORK = "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults," \
                 "BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=[*LAUNCH_ARGS, _LOCAL_NETWORK])
        try:
            yield launched
        finally:
            launched.close()


class Shop:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url, self.key = base_url, key

    def call(self, method: str, path: str, body: Any = None) -> Any:
        result = http_json(method, f"{self.base_url}{path}", body, token=self.key)
        assert result.ok(), (method, path, result.status, result.body)
        return result.body


@pytest.fixture(scope="module")
def shop(stack: LocalStack) -> Shop:
    _, key = create_merchant(stack.app_env, "Lookup Browser Shop", isolated=True)
    merchant = Shop(stack.base_url, key)
    settings = merchant.call("GET", "/v1/settings")
    settings["branding"] = {"name": "Acme Parcels", "primary_colour": "#0b5394", "accent_colour": "#b45309"}
    merchant.call("PUT", "/v1/settings", settings)
    return merchant


def _shipment(shop: Shop, ref: str) -> dict[str, Any]:
    day = datetime.now(UTC).date().isoformat()
    return shop.call("POST", "/v1/shipments", {  # type: ignore[no-any-return]
        "recipient": {"name": "Robin Recipient", "phone": "+15555550142", "email": "robin@example.com"},
        "address": {"line1": "1 Secret Lane", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "location": {"lat": 47.6205, "lng": -122.3493}, "delivery_date": day, "external_ref": ref})


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_the_snippet_on_a_plain_page_finds_the_delivery_and_opens_its_tracking_page(
        browser: Any, stack: LocalStack, shop: Shop) -> None:
    slug = f"acme-{datetime.now(UTC).strftime('%H%M%S%f')}"
    settings = shop.call("PUT", "/v1/lookup/settings", {"slug": slug, "allowed_origins": [SHOP_ORIGIN]})
    shipment = _shipment(shop, f"ACME-{slug[-6:]}")
    plain_page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme shop</title></head>'
                  f"<body><h1>Acme shop</h1><p>Where is my order?</p>"
                  f'<script src="{settings["embed_script_url"]}" data-title="Track your order"></script>'
                  f"<footer>Acme Inc.</footer></body></html>")
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.route(f"{SHOP_ORIGIN}/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                     body=plain_page))
        page.goto(f"{SHOP_ORIGIN}/track", wait_until="load")
        frame_element = page.wait_for_selector("iframe[title='Track your order']")
        frame = frame_element.content_frame()
        assert frame is not None
        frame.wait_for_selector("#order")
        _shot(page, "lookup-snippet-on-merchant-page")
        # A miss first: the same page, a notice announced to screen readers.
        frame.fill("#order", "ACME-NOPE")
        frame.fill("#check", "98101")
        with page.expect_navigation():
            frame.click("button[type=submit]")
        assert page.url.startswith(f"{stack.base_url}/lookup/{slug}")
        assert "could not find a delivery" in page.inner_text("[role=alert]")
        _shot(page, "lookup-miss")
        # The right order number and postcode: the tracking page, in the whole window.
        page.fill("#order", shipment["external_ref"])
        page.fill("#check", "98 101")
        with page.expect_navigation():
            page.press("#check", "Enter")
        page.wait_for_load_state("load")
        assert page.url == shipment["tracking_url"]
        assert page.locator("h1").count() >= 1
        _shot(page, "lookup-found-tracking-page")
    finally:
        context.close()


def test_the_frame_refuses_other_sites(browser: Any, stack: LocalStack, shop: Shop) -> None:
    slug = f"refuse-{datetime.now(UTC).strftime('%H%M%S%f')}"
    settings = shop.call("PUT", "/v1/lookup/settings", {"slug": slug, "allowed_origins": [SHOP_ORIGIN]})
    page_html = f'<!doctype html><html><body><iframe src="{settings["embed_frame_url"]}"></iframe></body></html>'
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("https://evil.example/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                          body=page_html))
        page.goto("https://evil.example/", wait_until="load")
        page.wait_for_timeout(500)
        frame = page.frames[1] if len(page.frames) > 1 else None
        # CSP frame-ancestors: Chromium shows its error page instead of the form.
        assert frame is None or not frame.query_selector("#order")
    finally:
        context.close()


def test_preferences_are_changed_by_keyboard(browser: Any, stack: LocalStack, shop: Shop) -> None:
    shipment = _shipment(shop, f"PREF-{datetime.now(UTC).strftime('%H%M%S%f')}")
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(shipment["tracking_url"], wait_until="load")
        link = page.get_by_role("link", name="Message preferences")
        link.focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "/preferences/" in page.url
        _shot(page, "preferences-before")
        # Tab to the SMS group's checked radio, arrow down twice: "not for any delivery from Acme Parcels".
        page.focus("#sms-none")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        assert page.is_checked("#sms-merchant")
        # Tab through the email group to the button, and press it.
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.tagName")
        assert focused == "BUTTON", focused
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "Your preferences are saved." in page.inner_text("[role=status]")
        assert page.is_checked("#sms-merchant") and page.is_checked("#email-none")
        _shot(page, "preferences-saved")
        items = shop.call("GET", "/v1/opt-outs")["items"]
        assert [(i["channel"], i["contact"], i["scope"]) for i in items] == [("sms", "+15555550142", "merchant")]
    finally:
        context.close()
