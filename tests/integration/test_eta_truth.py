"""ETA truth and one clock, through the app and the stream pipeline in process (chalice.test.Client + moto).

A Chicago merchant's route of today: before any ping the promised window shows (labelled); a ping from Seattle
(2,800 km away) gives no estimate; pings near the route give a same-day window of at most 2 h labelled with the
zone, on the tracking JSON, the page and the driver app. Pings timed an hour before the route started, posted
after, still arrive, and no event reads before the shipment's creation; once the driver leaves, the page no
longer says the driver is at the address.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chalicelib.fleet.service import forget_cached_profiles
from infra.local.streams import StreamRunner
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.streams import drain, pipeline_runner
from tests.integration.test_notifications import dispatch  # noqa: F401  (the notifications' dispatch fixture)

CHICAGO = ZoneInfo("America/Chicago")
STOP = (41.8781, -87.6298)
SEATTLE = (47.6205, -122.3493)


def offset(north_m: float, east_m: float, origin: tuple[float, float] = STOP) -> tuple[float, float]:
    lat, lng = origin
    return lat + north_m / 111_320, lng + east_m / (111_320 * math.cos(math.radians(lat)))


@pytest.fixture()
def runner(chalice_app: Any, tmp_path: Any) -> StreamRunner:
    return pipeline_runner(tmp_path)



def token_of(shipment: dict[str, Any]) -> str:
    return str(shipment["tracking_url"].rsplit("/", 1)[1])


def chicago_route(merchant: Any, stops: int = 2) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    r = merchant.call("PATCH", "/v1/settings", {"time_zone": "America/Chicago"})
    assert r.status_code == 200, r.body
    today = datetime.now(CHICAGO).date()
    start = datetime.combine(today, datetime.min.time(), tzinfo=CHICAGO) + timedelta(hours=8)
    window = {"start": start.isoformat(), "end": (start + timedelta(hours=10)).isoformat()}
    driver = make_driver(merchant)
    # (a phone of these tests' own: the notification tests count the messages sent to theirs)
    ships = [make_shipment(merchant, n, location={"lat": offset(0, 1000 * n)[0], "lng": offset(0, 1000 * n)[1]},
                           recipient={"name": f"Ada Lovelace {n}", "phone": "+14155550692"},
                           address={"line1": f"{n} W Madison St", "city": "Chicago", "postal_code": "60602",
                                    "country": "US"}, time_window=window) for n in range(1, stops + 1)]
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": today.isoformat(),
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [s["id"] for s in ships]}).json_body
    started = merchant.call("POST", f"/v1/routes/{route['id']}/start")
    assert started.status_code == 200
    return driver, ships, started.json_body


def ping(lat: float, lng: float, ms: int) -> dict[str, Any]:
    return {"lat": lat, "lng": lng, "fix_time": iso(ms), "accuracy": 8, "speed": 10}


def page_html(merchant: Any, token: str) -> str:
    body = merchant.client.http.get(f"/track/{token}").body
    return body.decode() if isinstance(body, bytes) else str(body)


def test_a_stop_on_an_active_route_shows_a_same_day_labelled_window(merchant: Any, runner: StreamRunner) -> None:
    driver, ships, _ = chicago_route(merchant)
    token = token_of(ships[0])

    # Out for delivery, no ping yet: the promised window, labelled; no computed span.
    view = merchant.client.http.get(f"/v1/track/{token}").json_body
    assert view["status"] == "out_for_delivery" and view["eta"] is None and view["shipment"]["time_window"]
    html = page_html(merchant, token)
    assert " CST" in html or " CDT" in html

    # The README's old sample ping in Seattle: 2,800 km away, no estimate at all (the promise stays).
    assert post_pings(merchant.client, driver["token"], [ping(*SEATTLE, now_ms() - 120_000)]).json_body["rejected"] == 0
    drain(runner)
    assert merchant.client.http.get(f"/v1/track/{token}").json_body["eta"] is None

    # Near the route: a bounded, same-day window in the recipient's zone, with its label, everywhere.
    t = now_ms() - 60_000
    pings = [ping(*offset(0, -3000 + 100 * i), t + 10_000 * i) for i in range(5)]  # (the first two: a jump)
    assert post_pings(merchant.client, driver["token"], pings).json_body["rejected"] == 0
    drain(runner)
    eta = merchant.client.http.get(f"/v1/track/{token}").json_body["eta"]
    assert eta is not None and eta["time_zone"] == "America/Chicago" and eta["zone_label"] in ("CST", "CDT")
    if not eta["later_today"]:  # (run a few minutes before midnight in Chicago, it says "later today")
        low, high = (datetime.fromisoformat(eta[k]).astimezone(CHICAGO) for k in ("earliest", "latest"))
        assert low.date() == high.date() == datetime.now(CHICAGO).date()
        assert high - low <= timedelta(hours=2)
        text = merchant.client.http.get(f"/track/{token}/status").json_body["eta"]["text"]
        assert text.endswith(eta["zone_label"]) and " and " in text and "," not in text  # no second date
    route = merchant.client.http.get("/v1/driver/route", headers={"Authorization": f"Bearer {driver['token']}"})
    stop = route.json_body["stops"][0]
    assert stop["eta"] is not None and stop["eta"]["zone_label"] == eta["zone_label"]


def test_fixes_from_before_the_route_start_arrive_and_nothing_reads_before_creation(
        merchant: Any, runner: StreamRunner) -> None:
    driver, ships, route = chicago_route(merchant, stops=2)
    target = ships[0]
    there = (target["location"]["lat"], target["location"]["lng"])
    start = now_ms() - 3_600_000  # the phone's fixes are an hour old: before the shipment existed
    fixes = [ping(*offset(10 * math.sin(i), 10 * math.cos(i), there), start + 10_000 * i) for i in range(30)]
    fixes += [ping(*offset(-100 * d, 0, there), start + 300_000 + 10_000 * d) for d in range(1, 12)]
    for first in range(0, len(fixes), 10):
        assert post_pings(merchant.client, driver["token"], fixes[first:first + 10]).json_body["rejected"] == 0
    drain(runner)

    items = merchant.call("GET", f"/v1/shipments/{target['id']}/timeline").json_body["items"]
    kinds = [e["type"] for e in items]
    assert kinds[0] == "created" and "arrived" in kinds, kinds
    assert [k for k in kinds if k in ("arrived", "dwell", "departed")] == ["arrived", "dwell", "departed"], kinds
    created = datetime.fromisoformat(items[0]["occurred_at"])
    assert all(datetime.fromisoformat(e["occurred_at"]) >= created for e in items), items
    assert all("recorded_at" in e for e in items)
    route_start = datetime.fromisoformat(route["started_at"])
    route_start = route_start.replace(microsecond=route_start.microsecond // 1000 * 1000)  # events keep ms
    assert all(datetime.fromisoformat(e["occurred_at"]) >= route_start for e in items if e["source"] == "system"), (
        route_start, [(e["type"], e["source"], e["occurred_at"]) for e in items])

    view = merchant.client.http.get(f"/v1/track/{token_of(target)}").json_body
    assert view["timeline"][0]["type"] == "created"
    shown = [datetime.fromisoformat(e["occurred_at"]) for e in view["timeline"]]
    assert shown == sorted(shown) and min(shown) >= created
    assert all(e["recorded_at"] for e in view["timeline"])

    # Arrived, then left without a result: the page no longer says the driver is at the address.
    assert view["status"] == "arrived"
    status = merchant.client.http.get(f"/track/{token_of(target)}/status").json_body
    assert status["status_detail"] != "Your driver is at your address now."
    assert status["status_label"] == "Your driver has left your address"
    assert json.dumps(status).count("at your address now") == 0


# --- the notification texts ------------------------------------------------------------------------------


def _route_eta(route_id: str, merchant_id: str, at_ms: int, window: tuple[int, int, int]) -> None:
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ROUTE_ETA_SK, RouteEtaItem, encode_etas, route_eta_pk

    base = at_ms - at_ms % 1000
    get_repository().put_route_eta(RouteEtaItem(
        route_eta_pk(route_id), ROUTE_ETA_SK, merchant_id=merchant_id, route_id=route_id, at_ms=at_ms, base_ms=base,
        etas=encode_etas(base, {0: window}, 1), expires_at=datetime.now(CHICAGO) + timedelta(days=1)))


@pytest.mark.parametrize(("ahead_h", "later_today"), [(1, False), (13, True)])
def test_the_sms_window_is_bounded_same_day_and_labelled(merchant: Any, dispatch: Any,  # noqa: F811
                                                         ahead_h: int, later_today: bool) -> None:
    from tests.integration.test_notifications import _image, _sms_to

    phone = "+14155550691"
    driver = make_driver(merchant)
    shipment = make_shipment(merchant, 1, recipient={"name": "Ada", "phone": phone})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": shipment["delivery_date"],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [shipment["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    at = now_ms()
    expected = at + ahead_h * 3_600_000
    _route_eta(route["id"], merchant.id, at, (at, expected, at + 90 * 3_600_000))  # the engine's days-wide span
    dispatch(_image(merchant, shipment, "out_for_delivery"))
    text = _sms_to(phone)[-1]  # (moto keeps every test's messages: this one is the newest)
    if later_today:  # local noon + 13 h is past midnight (the look's zone is where it is about noon now)
        assert "later today (running late)" in text, text
        return
    found = re.search(r"between (\d\d):(\d\d) and (\d\d):(\d\d) (\S+)", text)
    assert found, text
    start, end = int(found[1]) * 60 + int(found[2]), int(found[3]) * 60 + int(found[4])
    assert 0 < end - start <= 120 and found[5].strip(".,")  # one day, at most 2 h, a zone label


@pytest.mark.parametrize(("opens_in_h", "early"), [(3, True), (-1, False)])
def test_the_sms_says_an_estimate_is_before_the_delivery_window(merchant: Any, dispatch: Any,  # noqa: F811
                                                                opens_in_h: int, early: bool) -> None:
    from tests.integration.test_notifications import _image, _sms_to

    phone = "+14155550693"
    at = now_ms()
    window = {"start": iso(at + opens_in_h * 3_600_000), "end": iso(at + (opens_in_h + 2) * 3_600_000)}
    driver = make_driver(merchant)
    shipment = make_shipment(merchant, 1, recipient={"name": "Ada", "phone": phone}, time_window=window)
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": shipment["delivery_date"],
                                                 "planned_start": iso(at), "shipment_ids": [shipment["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    _route_eta(route["id"], merchant.id, at, (at + 40 * 60_000, at + 45 * 60_000, at + 55 * 60_000))
    dispatch(_image(merchant, shipment, "out_for_delivery"))
    text = _sms_to(phone)[-1]
    assert re.search(r"between \d\d:\d\d and \d\d:\d\d \S+", text), text  # the estimate, not the promise
    assert (", before your delivery window" in text) is early, text


def _zone_before_evening() -> ZoneInfo:
    """A zone whose local time now leaves a promised window two to four hours ahead on the same local day."""
    for name in ("America/Chicago", "Europe/Berlin", "Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Honolulu",
                 "America/Los_Angeles", "Etc/GMT+12"):
        zone = ZoneInfo(name)
        if 1 <= datetime.now(zone).hour < 19:
            return zone
    raise AssertionError("some zone is always between 01:00 and 19:00")


def test_a_driver_ahead_of_the_window_is_early_on_the_page_and_waits_when_the_merchant_says_so(
        merchant: Any, runner: StreamRunner) -> None:
    zone = _zone_before_evening()
    assert merchant.call("PATCH", "/v1/settings", {"time_zone": zone.key}).status_code == 200
    opens = datetime.now(zone).replace(microsecond=0) + timedelta(hours=2)
    window = {"start": opens.isoformat(), "end": (opens + timedelta(hours=2)).isoformat()}
    driver = make_driver(merchant)
    ship = make_shipment(merchant, 1, location={"lat": offset(0, 2000)[0], "lng": offset(0, 2000)[1]},
                         time_window=window)
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"],
                                                 "day": datetime.now(zone).date().isoformat(),
                                                 "planned_start": iso(now_ms()), "shipment_ids": [ship["id"]]})
    assert route.status_code == 201, route.body
    assert merchant.call("POST", f"/v1/routes/{route.json_body['id']}/start").status_code == 200
    token = token_of(ship)

    # 'deliver' (the default): the drive's own estimate, minutes away, said to be before the window.
    t = now_ms() - 120_000
    assert post_pings(merchant.client, driver["token"],
                      [ping(*offset(0, 100 * i), t + 10_000 * i) for i in range(5)]).json_body["rejected"] == 0
    drain(runner)
    eta = merchant.client.http.get(f"/v1/track/{token}").json_body["eta"]
    assert eta is not None and eta["early"] is True, eta
    assert datetime.fromisoformat(eta["expected"]) < opens - timedelta(hours=1)
    status = merchant.client.http.get(f"/track/{token}/status").json_body["eta"]
    assert status["early"] is True and status["text"].endswith(", before your delivery window")
    assert "before your delivery window" in page_html(merchant, token)
    driver_view = merchant.client.http.get("/v1/driver/route", headers={"Authorization": f"Bearer {driver['token']}"})
    assert driver_view.json_body["stops"][0]["eta"]["early"] is True  # the driver app says it too

    # 'wait': the driver waits for the window to open, so the stop is expected when it opens, and is not early.
    assert merchant.call("PATCH", "/v1/settings", {"early_arrival": "wait"}).json_body["early_arrival"] == "wait"
    forget_cached_profiles()  # the stream function reads a profile at most once a minute: not wait a minute
    t += 60_000
    assert post_pings(merchant.client, driver["token"],
                      [ping(*offset(0, 600 + 100 * i), t + 10_000 * i) for i in range(3)]).json_body["rejected"] == 0
    drain(runner)
    eta = merchant.client.http.get(f"/v1/track/{token}").json_body["eta"]
    assert eta is not None and eta["early"] is False, eta
    assert datetime.fromisoformat(eta["expected"]) == datetime.fromisoformat(eta["earliest"]) == opens
    driver_view = merchant.client.http.get("/v1/driver/route", headers={"Authorization": f"Bearer {driver['token']}"})
    assert driver_view.json_body["stops"][0]["eta"]["early"] is False
