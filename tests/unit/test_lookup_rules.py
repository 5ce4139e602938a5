"""The lookup page's pure rules and its rendering."""

from __future__ import annotations

import pytest

from chalicelib.lookup import rules
from chalicelib.lookup.page import EMBED_SCRIPT, NOTICES, page_headers, render_lookup_page
from chalicelib.web.branding import Branding
from chalicelib.web.i18n import Translator, catalogue


@pytest.mark.parametrize("slug,ok", [("acme", True), ("acme-shop-2", True), ("ab", False), ("-acme", False),
                                     ("acme-", False), ("Acme", False), ("a" * 41, False), ("a/b", False)])
def test_slugs(slug: str, ok: bool) -> None:
    assert rules.valid_slug(slug) is ok


def test_factor_matches_postcode_or_phone_ending() -> None:
    assert rules.factor_matches("sw1a 1aa", "SW1A-1AA", None)
    assert rules.factor_matches("4567", None, "+49 30 1234567")
    assert rules.factor_matches("10115", "10115", "+4930999")
    assert not rules.factor_matches("10116", "10115", "+4930999")
    assert not rules.factor_matches("", None, None)  # nothing typed, nothing known: never a match
    assert not rules.factor_matches("", "", "")
    assert not rules.factor_matches("12", None, "+12")  # a phone with fewer than 4 digits has no ending


def test_order_lock_and_client_window() -> None:
    lock = rules.MissLock(misses=3, lock_s=100)
    assert not lock.locked(2, 1_100, 1_000)
    assert lock.locked(3, 1_100, 1_000)
    assert not lock.locked(3, 1_100, 1_100)  # quiet long enough
    assert rules.AttemptLimit(5, 600).window(1_234) == (1_200, 1_800)


def test_hashes_are_keyed_and_per_merchant() -> None:
    a = rules.hashed_order("s" * 32, "mer_1", "A-1")
    assert a != rules.hashed_order("s" * 32, "mer_2", "A-1") and a != rules.hashed_order("t" * 32, "mer_1", "A-1")
    assert "10.0.0.1" not in rules.hashed_client("s" * 32, "10.0.0.1")


@pytest.mark.parametrize("origin,expected", [("https://Shop.Example/", "https://shop.example"),
                                             ("https://shop.example:8443", "https://shop.example:8443"),
                                             ("http://shop.example", None), ("https://*.example", None),
                                             ("https://shop.example/path", None), ("https://a b", None)])
def test_origins(origin: str, expected: str | None) -> None:
    assert rules.normalize_origin(origin) == expected


def test_posts_from_own_and_allowed_origins_only() -> None:
    own, allowed = "https://track.example", ["https://shop.example"]
    assert rules.post_allowed(None, None, own, allowed)
    assert rules.post_allowed("https://track.example", None, own, allowed)
    assert rules.post_allowed("https://shop.example", "cross-site", own, allowed)
    assert not rules.post_allowed("https://evil.example", "cross-site", own, allowed)
    assert not rules.post_allowed("null", None, own, allowed)
    assert not rules.post_allowed("null", "cross-site", own, allowed)
    assert not rules.post_allowed(None, "cross-site", own, allowed)
    assert rules.post_allowed("null", "same-origin", own, allowed)  # our frame on the merchant's page
    assert rules.frame_ancestors([]) == "'none'"
    assert rules.frame_ancestors(["https://shop.example", "http://no"]) == "https://shop.example"


def test_page_is_accessible_and_escaped() -> None:
    branding = Branding(name='Acme <script>"')
    for locale in ("en", "de"):
        html = render_lookup_page(Translator(locale), branding, action="/lookup/acme", page_href="/lookup/acme",
                                  static_base="/static", notice="miss")
        assert f'lang="{locale}"' in html and "<script>" not in html
        assert '<label for="order">' in html and '<label for="check">' in html and 'role="alert"' in html
        assert 'aria-describedby="check-hint"' in html
    with pytest.raises(ValueError):
        render_lookup_page(Translator("en"), branding, action="/", page_href="/", static_base="/", notice="nope")


def test_every_notice_has_a_message_in_every_language() -> None:
    for locale in ("en", "de"):
        messages = catalogue(locale)
        assert all(f"lookup.notice.{n}" in messages for n in NOTICES), locale


def test_headers_and_snippet() -> None:
    assert "frame-ancestors 'none'" in page_headers()["Content-Security-Policy"]
    assert "frame-ancestors https://a.example;" in page_headers("https://a.example")["Content-Security-Policy"]
    assert "currentScript" in EMBED_SCRIPT and "http" not in EMBED_SCRIPT  # no third-party host
