"""The driver app enforces a stop's completion requirements (chain of custody) in a real Chromium: it refuses to
finish without the required photo and PIN, names what is missing, then finishes once both are given; the server
checks the PIN and the custody chain and receipt follow. Screenshots: test-artifacts/screenshots/custody-*.png."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra.local.stack import LocalStack, create_merchant
from tests.e2e.browser import SCREENSHOTS, require_browser
from tests.e2e.conftest import iso
from tests.e2e.test_driver_browser import TZ, Shop, Tab, a_real_jpeg, open_tab, wait_until_sent

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STOP = (47.6205, -122.3493)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(port=0, moto_port=0, log_dir=tmp_path_factory.mktemp("custody-stack") / "logs") as running:
        yield running


@pytest.fixture(scope="module")
def shop(stack: LocalStack) -> Shop:
    _, key = create_merchant(stack.app_env, "Custody Shop", isolated=True)
    merchant = Shop(stack.base_url, key)
    merchant.call("PATCH", "/v1/settings", {"time_zone": TZ, "approach_minutes": 0, "approach_metres": 0})
    return merchant


def shot(tab: Tab, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.evaluate("window.scrollTo(0, 0)")  # the sticky status bar then sits on top of the picture
    tab.page.wait_for_timeout(300)
    tab.page.screenshot(path=str(SCREENSHOTS / f"custody-{name}.png"), full_page=True)


def test_the_app_refuses_to_finish_without_photo_and_pin_then_finishes(stack: LocalStack, shop: Shop,
                                                                      browser: Any) -> None:
    from chalicelib.custody.rules import delivery_pin

    now = datetime.now(UTC)
    driver = shop.call("POST", "/v1/drivers", {"name": "Maxine Driver"})
    ship = shop.call("POST", "/v1/shipments", {
        "recipient": {"name": "Robin Recipient", "phone": "+15555550199"},
        "address": {"line1": "1 Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "location": {"lat": STOP[0], "lng": STOP[1]},
        "time_window": {"start": iso(now - timedelta(hours=1)), "end": iso(now + timedelta(hours=3))},
        "custody": {"requirements": {"photo": True, "pin": True}}})
    day = datetime.now(ZoneInfo(TZ)).date().isoformat()
    route = shop.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day,
                                             "planned_start": iso(now - timedelta(minutes=30)),
                                             "shipment_ids": [ship["id"]]})
    shop.call("POST", f"/v1/routes/{route['id']}/start")
    link = shop.call("POST", f"/v1/drivers/{driver['id']}/app-link", {"expires_in_hours": 12}, expect=201)
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US", has_touch=True,
                                  geolocation={"latitude": STOP[0], "longitude": STOP[1], "accuracy": 8},
                                  permissions=["geolocation"])
    try:
        tab = open_tab(context)
        page = tab.page
        assert page.goto(link["url"], wait_until="load").status == 200
        page.wait_for_selector(".stop-name")
        page.get_by_role("button", name="Delivered", exact=True).click()
        assert page.is_visible("#pin-field") and not page.is_visible("#age-field")

        # nothing given: refused, naming the photo and the PIN; nothing is queued
        page.get_by_role("button", name="Confirm delivery").click()
        page.wait_for_selector("#deliver-error:not([hidden])")
        assert page.get_attribute("#deliver-error", "data-missing") == "photo pin"
        assert "a photo" in page.inner_text("#deliver-error") and "PIN" in page.inner_text("#deliver-error")
        assert page.get_attribute("#sync", "data-queue") == "0"
        shot(tab, "01-refused-photo-and-pin")

        # the photo alone is not enough
        page.set_input_files("#photo", files=[{"name": "parcel.jpg", "mimeType": "image/jpeg",
                                               "buffer": a_real_jpeg(tab)}])
        page.get_by_role("button", name="Confirm delivery").click()
        page.wait_for_function("() => document.getElementById('deliver-error').dataset.missing === 'pin'")
        shot(tab, "02-refused-pin")

        # with the PIN the recipient says: it finishes, the server checks the PIN, then the delivery
        page.get_by_label("PIN the recipient tells you").fill(delivery_pin(stack.app_env["DOORSTEP_TOKEN_SECRET"],
                                                                             ship["id"]))
        shot(tab, "03-photo-and-pin")
        page.get_by_role("button", name="Confirm delivery").click()
        page.wait_for_selector("#toast:has-text('Delivery saved.')")
        wait_until_sent(tab)
        shot(tab, "04-delivered")
        assert tab.problems == [], tab.problems
    finally:
        context.close()

    assert shop.call("GET", f"/v1/shipments/{ship['id']}")["status"] == "delivered"
    chain = shop.call("GET", f"/v1/shipments/{ship['id']}/custody")
    types = [e["body"]["type"] for e in chain["events"]]
    assert types[-3:] == ["pin_verified", "proof_attached", "delivered"] and chain["verified"] is True
    receipt = shop.call("GET", f"/v1/shipments/{ship['id']}/receipt")
    assert receipt["claims"]["chain_head"] == chain["head"]
