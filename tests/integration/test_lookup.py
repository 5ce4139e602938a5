"""The merchant's lookup page: a match redirects to the tracking link; every miss (unknown order, wrong factor,
another merchant's order, an expired link) answers the same status and body after the same storage calls; the
per-client limit and the per-order lock; the slug claim; the embeddable form's origin rules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.faults.inject import Injector, injected
from tests.integration.conftest import Merchant, new_merchant
from tests.integration.helpers import make_shipment

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_SLUGS = itertools.count(1)


def new_slug() -> str:
    return f"shop-{next(_SLUGS)}-{datetime.now(UTC).strftime('%H%M%S%f')}"


def set_lookup(m: Merchant, slug: str | None, origins: list[str] | None = None) -> Any:
    return m.call("PUT", "/v1/lookup/settings", {"slug": slug, "allowed_origins": origins or []})


def look_up(client: Any, slug: str, order: str, check: str, **headers: str) -> Any:
    return client.http.post(f"/lookup/{slug}", headers={**FORM, **headers},
                            body=urlencode({"order": order, "check": check}))


@pytest.fixture()
def shop(merchant: Merchant) -> tuple[Merchant, str]:
    slug = new_slug()
    r = set_lookup(merchant, slug, ["https://shop.example"])
    assert r.status_code == 200, r.body
    assert r.json_body["page_url"] == f"http://testserver/lookup/{slug}"
    return merchant, slug


def test_settings_claim_the_slug_once(shop: tuple[Merchant, str], other_merchant: Merchant) -> None:
    merchant, slug = shop
    assert merchant.call("GET", "/v1/lookup/settings").json_body["slug"] == slug
    taken = set_lookup(other_merchant, slug)
    assert taken.status_code == 409 and taken.json_body["error"]["code"] == "slug_taken"
    assert taken.json_body["error"]["details"][0]["field"] == "slug"
    assert set_lookup(merchant, slug).status_code == 200  # its own slug again: fine
    bad = set_lookup(merchant, "Not A Slug")
    assert bad.status_code == 422 and bad.json_body["error"]["details"][0]["field"] == "slug"
    bad_origin = set_lookup(merchant, slug, ["http://plain.example"])
    assert bad_origin.status_code == 422
    # Changing the slug frees the old one for others; the old page is gone.
    renamed = new_slug()
    assert set_lookup(merchant, renamed).status_code == 200
    assert merchant.client.http.get(f"/lookup/{slug}").status_code == 404
    assert set_lookup(other_merchant, slug).status_code == 200
    assert merchant.client.http.get(f"/lookup/{renamed}").status_code == 200


def test_the_page_renders_in_english_and_german(shop: tuple[Merchant, str]) -> None:
    merchant, slug = shop
    en = merchant.client.http.get(f"/lookup/{slug}", headers={"Accept-Language": "en"})
    assert en.status_code == 200
    html = en.body.decode()
    assert 'lang="en"' in html and "Test Merchant" in html and '<label for="order">' in html
    assert "frame-ancestors 'none'" in en.headers["Content-Security-Policy"]
    de = merchant.client.http.get(f"/lookup/{slug}", headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert 'lang="de"' in de.body.decode() and "Bestellnummer" in de.body.decode()
    assert merchant.client.http.get("/lookup/no-such-shop").status_code == 404
    theme = merchant.client.http.get(f"/lookup/{slug}/theme.css")
    assert theme.status_code == 200 and theme.headers["Content-Type"].startswith("text/css")


def test_a_match_redirects_to_the_tracking_link(shop: tuple[Merchant, str]) -> None:
    merchant, slug = shop
    shipment = make_shipment(merchant, 1, external_ref="A-1001")
    by_postcode = look_up(merchant.client, slug, "A-1001", "98101")
    assert by_postcode.status_code == 303
    assert by_postcode.headers["Location"] == shipment["tracking_url"]
    by_phone = look_up(merchant.client, slug, " A-1001 ", "0100")
    assert by_phone.status_code == 303 and by_phone.headers["Location"] == shipment["tracking_url"]
    assert merchant.client.http.get(by_phone.headers["Location"].replace("http://testserver", "")).status_code == 200
    # After a revocation the lookup leads to the new link, never the old one.
    revoked = merchant.call("POST", f"/v1/shipments/{shipment['id']}/tracking-link/revoke")
    assert revoked.status_code == 200, revoked.body
    again = look_up(merchant.client, slug, "A-1001", "98 101")
    assert again.status_code == 303 and again.headers["Location"] == revoked.json_body["tracking_url"]


def _expire(merchant_id: str, shipment_id: str) -> None:
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ShipmentItem

    item = get_repository().get_shipment(merchant_id, shipment_id)
    assert item is not None
    item.update(actions=[ShipmentItem.final_at.set(datetime.now(UTC) - timedelta(days=30))])


def test_every_miss_is_the_same_answer_after_the_same_work(shop: tuple[Merchant, str], other_merchant: Merchant,
                                                           client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    merchant, slug = shop
    make_shipment(merchant, 1, external_ref="B-1")
    make_shipment(other_merchant, 1, external_ref="B-2")  # right factor, other merchant
    expired = make_shipment(merchant, 1, external_ref="B-3")
    assert merchant.call("POST", f"/v1/shipments/{expired['id']}/cancel").status_code == 200
    _expire(merchant.id, expired["id"])
    misses = {"unknown order": ("B-404", "98101"), "wrong factor": ("B-1", "12345"),
              "wrong phone ending": ("B-1", "9999"), "other merchant's order": ("B-2", "98101"),
              "expired link": ("B-3", "98101")}
    answers: dict[str, tuple[int, bytes, list[str]]] = {}
    with injected(Injector(), monkeypatch) as faults:
        for name, (order, check) in misses.items():
            faults.reset()
            r = look_up(client, slug, order, check)
            answers[name] = (r.status_code, r.body, list(faults.operations))
        faults.reset()
        hit = look_up(client, slug, "B-1", "98101")
        hit_operations = list(faults.operations)
    statuses = {a[0] for a in answers.values()}
    bodies = {a[1] for a in answers.values()}
    operations = {tuple(a[2]) for a in answers.values()}
    assert statuses == {200}, answers
    assert len(bodies) == 1, "every miss renders the same bytes"
    assert b'role="alert"' in next(iter(bodies))
    assert len(operations) == 1, {k: v[2] for k, v in answers.items()}
    # The hit does the same reads and skips only the miss counter's write.
    assert hit.status_code == 303
    assert list(next(iter(operations)))[:-1] == hit_operations


def test_timing_class_of_misses(shop: tuple[Merchant, str], client: Any) -> None:
    """The same work, so the same time within noise: a known order with a wrong factor is not measurably slower
    or faster than an unknown order (medians within a factor of 2 on in-process moto)."""
    import statistics
    import time

    merchant, slug = shop
    make_shipment(merchant, 1, external_ref="T-1")

    def median_ms(order: str, check: str) -> float:
        times = []
        for n in range(6):
            start = time.perf_counter()
            look_up(client, slug, order if order == "T-1" else f"{order}-{n}", check)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    known, unknown = median_ms("T-1", "00000"), median_ms("T-missing", "00000")
    assert 0.5 < known / unknown < 2.0, (known, unknown)


def test_misses_lock_the_order_number(shop: tuple[Merchant, str], client: Any) -> None:
    merchant, slug = shop
    shipment = make_shipment(merchant, 1, external_ref="L-1")
    for _ in range(5):
        assert look_up(client, slug, "L-1", "11111").status_code == 200
    locked = look_up(client, slug, "L-1", "98101")  # even the right answer, while locked
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 800
    assert b"Too many attempts for this order number" in locked.body
    assert "Location" not in locked.headers
    # Other order numbers are unaffected.
    other = make_shipment(merchant, 2, external_ref="L-2")
    assert look_up(client, slug, "L-2", "98101").headers["Location"] == other["tracking_url"]
    assert shipment["tracking_url"]


def test_a_client_is_limited(shop: tuple[Merchant, str], client: Any) -> None:
    from chalicelib.lookup.rules import CLIENT_LIMIT

    merchant, slug = shop
    make_shipment(merchant, 1, external_ref="C-1")
    for n in range(CLIENT_LIMIT.attempts):
        assert look_up(client, slug, f"C-x{n}", "11111").status_code == 200
    limited = look_up(client, slug, "C-1", "98101")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert b"from your connection" in limited.body


def test_incomplete_form_names_what_is_missing(shop: tuple[Merchant, str], client: Any) -> None:
    _, slug = shop
    r = look_up(client, slug, "", "98101")
    assert r.status_code == 422 and b"Enter both" in r.body
    assert client.http.post(f"/lookup/{slug}", headers={"Content-Type": "application/json"},
                            body="{}").status_code == 415


def test_snippet_origin_rules(shop: tuple[Merchant, str], client: Any) -> None:
    merchant, slug = shop
    make_shipment(merchant, 1, external_ref="E-1")
    frame = client.http.get(f"/lookup/{slug}/embed")
    assert frame.status_code == 200
    assert "frame-ancestors https://shop.example;" in frame.headers["Content-Security-Policy"]
    assert 'target="_top"' in frame.body.decode()
    script = client.http.get(f"/lookup/{slug}/embed.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "iframe" in script.body.decode()
    # Posts: from our own pages, from the allowed origin, and from non-browsers; never from another site.
    assert look_up(client, slug, "E-1", "98101", Origin="https://shop.example").status_code == 303
    assert look_up(client, slug, "E-1", "98101", Origin="http://testserver").status_code == 303
    refused = look_up(client, slug, "E-1", "98101", Origin="https://evil.example")
    assert refused.status_code == 403 and "Location" not in refused.headers
    assert look_up(client, slug, "E-1", "98101", Origin="null", **{"Sec-Fetch-Site": "cross-site"}
                   ).status_code == 403
    # Our own frame's post inside the merchant's page: Chromium says Origin null, Sec-Fetch-Site same-origin.
    assert look_up(client, slug, "E-1", "98101", Origin="null", **{"Sec-Fetch-Site": "same-origin"}
                   ).status_code == 303
    # Without allowed origins nobody may frame it.
    assert set_lookup(merchant, slug, []).status_code == 200
    assert "frame-ancestors 'none'" in client.http.get(f"/lookup/{slug}/embed").headers["Content-Security-Policy"]
    assert look_up(client, slug, "E-1", "98101", Origin="https://shop.example").status_code == 403


def test_another_merchants_slug_never_finds_this_merchants_orders(shop: tuple[Merchant, str], client: Any) -> None:
    merchant, _ = shop
    other = new_merchant(client)
    other_slug = new_slug()
    assert set_lookup(other, other_slug).status_code == 200
    make_shipment(merchant, 1, external_ref="X-1")
    r = look_up(client, other_slug, "X-1", "98101")
    assert r.status_code == 200 and "Location" not in r.headers
