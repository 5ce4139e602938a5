"""ETA truth in a real headless Chromium against the local stack (docs/eta.md, "The window people see").

A Chicago merchant's route of today, out for delivery: a driver's phone first reports from Seattle (2,800 km
away: no computed window, the promised one shows), then from near the route: the page shows a same-day window
of at most 2 h, labelled with the recipient's zone, updated without a reload. Screenshots under
test-artifacts/screenshots/eta-*.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra.local.stack import LocalStack, create_merchant
from tests.e2e.browser import require_browser, wait_for
from tests.e2e.conftest import iso
from tests.e2e.test_tracking_browser import Shop, Tab, open_tab, post_pings, tracking_status

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHICAGO = ZoneInfo("America/Chicago")
STOP = (41.8781, -87.6298)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(port=0, moto_port=0, log_dir=tmp_path_factory.mktemp("eta-stack") / "logs") as running:
        yield running


@pytest.fixture()
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    try:
        yield open_tab(context)
    finally:
        context.close()


def test_an_active_route_shows_a_same_day_zone_labelled_window(stack: LocalStack, tab: Tab) -> None:
    _, key = create_merchant(stack.app_env, "Windy City Parcels", isolated=True)
    shop = Shop(stack.base_url, key)
    shop.call("PATCH", "/v1/settings", {"time_zone": "America/Chicago"})
    now = datetime.now(UTC)
    driver = shop.driver()
    shipment = shop.call("POST", "/v1/shipments", {
        "recipient": {"name": "Robin Recipient", "phone": "+15555550199"},
        "address": {"line1": "1 W Madison St", "city": "Chicago", "country": "US"},
        "location": {"lat": STOP[0], "lng": STOP[1]},
        "time_window": {"start": iso(now - timedelta(hours=1)), "end": iso(now + timedelta(hours=3))}})
    route = shop.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": datetime.now(CHICAGO).date().isoformat(),
                                             "planned_start": iso(now - timedelta(minutes=30)),
                                             "shipment_ids": [shipment["id"]]})
    shop.call("POST", f"/v1/routes/{route['id']}/start")
    url = shipment["tracking_url"]

    # A phone in Seattle: no computed window (it would span days), the promise stays, labelled.
    post_pings(stack.base_url, driver, [{"lat": 47.6205, "lng": -122.3493, "fix_time": iso(now - timedelta(
        minutes=10)), "accuracy": 5, "speed": 0}])
    assert tab.goto(url).status == 200
    page = tab.page
    assert page.inner_text("h1") == "Out for delivery"
    assert not page.is_visible("[data-field=eta_text]")
    assert re.search(r"\b(CST|CDT)\b", page.inner_text("body"))
    tab.shot("eta-01-far-away-promise")

    # Near the route: a same-day window of at most 2 h, labelled, without a reload.
    t0 = datetime.now(UTC)
    south = [{"lat": round(STOP[0] - m / 111_195, 6), "lng": STOP[1], "accuracy": 5, "speed": 30} for m in (6000, 5400)]
    post_pings(stack.base_url, driver, [{**south[0], "fix_time": iso(t0)},
                                        {**south[1], "fix_time": iso(t0 + timedelta(seconds=20))}])
    status = wait_for(lambda: (s := tracking_status(url))["eta"] and s, what="an ETA from near the route")
    eta = status["eta"]
    assert eta["zone_label"] in ("CST", "CDT") and eta["time_zone"] == "America/Chicago"
    page.wait_for_function("() => !document.querySelector('[data-field=eta]').hidden", timeout=30_000)
    text = page.inner_text("[data-field=eta_text]")
    if eta["later_today"]:  # a run a few minutes before midnight in Chicago
        assert text == "Delayed: later today"
    else:
        assert re.fullmatch(r"(Between \d\d?:\d\d( [AP]M)? and \d\d?:\d\d( [AP]M)?|Around \d\d?:\d\d( [AP]M)?) "
                            r"(CST|CDT)", text), text
        low, high = (datetime.fromisoformat(eta[k]).astimezone(CHICAGO) for k in ("earliest", "latest"))
        assert low.date() == high.date() and high - low <= timedelta(hours=2)
    tab.shot("eta-02-same-day-labelled-window")
    tab.assert_clean()
