"""The console's Performance section in a real headless Chromium against the local stack: a day of deliveries
(two delivered, one failed) goes through the stack's stream pipeline into the analytics counters; the dispatcher
filters the range and driver with the keyboard only, sees the charts (uPlot canvases), the per-day and
per-driver tables, and downloads the CSV. Screenshot: test-artifacts/screenshots/console-performance.png."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local.stack import LocalStack, http_json
from tests.e2e.browser import require_browser
from tests.e2e.conftest import iso
from tests.e2e.test_console_browser import Shop, context, shop, sign_in, stack  # noqa: F401  (fixtures)

require_browser()

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def a_day(stack: LocalStack, shop: Shop) -> dict[str, Any]:  # noqa: F811
    now = datetime.now(UTC)
    driver = shop.call("POST", "/v1/drivers", {"name": "Perry Performer"})
    ships = [shop.call("POST", "/v1/shipments", {
        "recipient": {"name": f"R {n}", "phone": "+15555550177"},
        "address": {"line1": f"{n} Pike Street", "city": "Seattle", "postal_code": "98101", "country": "US"},
        "location": {"lat": 47.6097 + n * 0.001, "lng": -122.3422},
        "time_window": {"start": iso(now - timedelta(hours=1)), "end": iso(now + timedelta(hours=2))},
        "external_ref": f"perf-order-{n}"}) for n in range(3)]
    route = shop.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now)[:10],
                                             "planned_start": iso(now - timedelta(minutes=30)),
                                             "shipment_ids": [s["id"] for s in ships]})
    shop.call("POST", f"/v1/routes/{route['id']}/start")
    for ship, update in zip(ships, ({"status": "delivered"}, {"status": "delivered"},
                                    {"status": "failed", "reason": "not_home"}), strict=True):
        result = http_json("POST", f"{stack.base_url}/v1/driver/shipments/{ship['id']}/status",
                           {**update, "occurred_at": iso(now - timedelta(seconds=5))}, token=driver["token"])
        assert result.status == 200, result.body
    return driver  # type: ignore[no-any-return]


def test_performance_charts_tables_filters_and_csv(context: Any, stack: LocalStack, shop: Shop) -> None:  # noqa: F811
    driver = a_day(stack, shop)
    day = iso(datetime.now(UTC))[:10]
    deadline = datetime.now(UTC) + timedelta(seconds=30)  # the stack's stream runner counts them within seconds
    while True:
        rows = shop.call("GET", f"/v1/analytics/deliveries?from={day}&to={day}")["items"]
        if rows[0]["delivered"] + rows[0]["failed"] == 3 or datetime.now(UTC) > deadline:
            break
        time.sleep(0.5)
    assert (rows[0]["delivered"], rows[0]["failed"], rows[0]["failed_by_reason"]["not_home"]) == (2, 1, 1)

    tab = sign_in(context, stack, shop.key)
    page = tab.page
    page.wait_for_selector("#perf-days tbody tr")
    page.wait_for_selector("#perf-volume canvas")  # uPlot drew the charts
    page.wait_for_selector("#perf-per-driver canvas")
    # The range and driver set, then the keyboard only: Tab from the driver list reaches Show, Enter submits.
    page.fill("#perf-from", (datetime.now() - timedelta(days=6)).strftime("%Y-%m-%d"))
    page.select_option("#perf-driver", driver["id"])
    page.focus("#perf-driver")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Show"
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#perf-days tbody tr').length === 7")
    page.wait_for_function("() => document.querySelector('#perf-drivers tbody th') !== null && "
                           "document.querySelector('#perf-drivers tbody th').textContent === 'Perry Performer'")
    cells = page.eval_on_selector_all("#perf-drivers tbody tr:first-child td", "tds => tds.map(t => t.textContent)")
    assert cells[:3] == ["2", "1", "0"]
    totals = page.eval_on_selector_all("#perf-totals dd", "dds => dds.map(d => d.textContent)")
    assert totals[:2] == ["2", "1"]
    with page.expect_download() as download:
        page.focus("#perf-csv")
        page.keyboard.press("Enter")
    text = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115
    assert text.splitlines()[0].startswith("driver,delivered,failed,failed_not_home")
    assert f"{driver['id']},2,1,1" in text
    assert download.value.suggested_filename.startswith("deliveries_driver_")
    page.locator("#performance").scroll_into_view_if_needed()
    tab.shot("performance")
    assert tab.problems == []
