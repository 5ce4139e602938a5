"""Recipient preferences, pure: signed links, which opt-outs block which kind, the merchant's settings, the pages."""

from __future__ import annotations

import pytest

from chalicelib.core.problems import ProblemsError
from chalicelib.notifications import preferences as p
from chalicelib.notifications.preferences_page import render_preferences, render_unsubscribe
from chalicelib.notifications.rules import Channel, NotifyKind
from chalicelib.notifications.templates import RenderedSms
from chalicelib.web.i18n import Translator

SECRET = "s" * 40


def test_links_round_trip_and_refuse_forgeries() -> None:
    claim = p.LinkClaim("mer_1", "shp_1", Channel.EMAIL)
    token = p.link_token(SECRET, claim)
    assert p.read_token(SECRET, token) == claim
    assert p.read_token(SECRET, p.link_token(SECRET, p.LinkClaim("mer_1", "shp_1"))) == p.LinkClaim("mer_1", "shp_1")
    assert p.read_token("t" * 40, token) is None
    assert p.read_token(SECRET, token[:-2] + "AA") is None
    assert p.read_token(SECRET, "x" * 500) is None and p.read_token(SECRET, "nodot") is None
    url = p.unsubscribe_url("https://t.example", SECRET, "mer_1", "shp_1", Channel.EMAIL)
    assert p.list_unsubscribe_headers(url) == {"List-Unsubscribe": f"<{url}>",
                                               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def test_a_recipients_opt_out_spares_critical_kinds_a_providers_none() -> None:
    keys = ["sms:+4917012345678", "email:a@example.com"]
    critical = p.PreferenceSettings(frozenset({NotifyKind.FAILED}))
    found = {"sms:+4917012345678": "recipient", p.delivery_key("email:a@example.com", "shp_1"): "recipient"}
    assert p.blocked(NotifyKind.OUT_FOR_DELIVERY, keys, "shp_1", found, critical) == set(keys)
    assert p.blocked(NotifyKind.FAILED, keys, "shp_1", found, critical) == set()
    assert p.blocked(NotifyKind.OUT_FOR_DELIVERY, keys, "shp_2", found, critical) == {"sms:+4917012345678"}
    provider = {"sms:+4917012345678": "provider"}
    assert p.blocked(NotifyKind.FAILED, keys, "shp_1", provider, critical) == {"sms:+4917012345678"}
    assert p.scope_of("sms:+4917012345678", "shp_1", found) is p.Scope.MERCHANT
    assert p.scope_of("email:a@example.com", "shp_1", found) is p.Scope.DELIVERY
    assert p.scope_of("email:a@example.com", "shp_2", found) is p.Scope.NONE


def test_settings_parse_and_refuse() -> None:
    parsed = p.PreferenceSettings.from_dict({"critical_kinds": ["failed"], "sms_opt_out_hint": False})
    assert parsed.to_dict() == {"critical_kinds": ["failed"], "sms_opt_out_hint": False}
    assert p.PreferenceSettings.from_dict(None) == p.PreferenceSettings()
    with pytest.raises(ProblemsError) as caught:
        p.PreferenceSettings.from_dict({"critical_kinds": ["nope"], "sms_opt_out_hint": "yes", "x": 1})
    assert {problem.field for problem in caught.value.problems} == {
        "preferences.critical_kinds", "preferences.sms_opt_out_hint", "preferences.x"}


def test_sms_hint_and_masks() -> None:
    hinted = p.sms_opt_out_hint(RenderedSms("Your parcel is on its way.", "GSM-7", 1), "de-DE")
    assert hinted.text.endswith("Abmelden: STOP antworten.") and hinted.segments == 1
    assert p.mask(Channel.SMS, "+4917012345678") == "\u2022\u2022\u2022\u2022 5678"
    assert p.mask(Channel.EMAIL, "jane@example.com") == "j\u2022\u2022\u2022@example.com"


def test_pages_are_labelled_escaped_and_in_the_merchants_colours() -> None:
    from chalicelib.recipient.page import render_theme_css, theme_href
    from chalicelib.web.branding import Branding

    shop = Branding("Shop <b>", primary_colour="#7a1f5c")
    for locale in ("en", "de"):
        html = render_preferences(Translator(locale), shop, [(Channel.SMS, "x", p.Scope.DELIVERY, True)],
                                  [NotifyKind.FAILED], action="/preferences/t", static_base="/static", saved=True)
        assert "<b>" not in html and 'role="status"' in html and "<fieldset><legend>" in html
        assert '<input type="radio" id="sms-delivery" name="sms" value="delivery" checked>' in html
        assert '<label for="sms-delivery">' in html
        assert f'<link rel="stylesheet" href="{theme_href("/preferences/t", shop)}">' in html
    page = render_unsubscribe(Translator("en"), Branding("Shop"), Channel.EMAIL, action="/unsubscribe/t",
                              preferences_href="/preferences/u", static_base="/static", done=False, critical=[])
    assert 'method="post"' in page and "/preferences/u" in page
    assert 'href="/preferences/u/theme.css?v=' in page  # the preferences page's theme
    assert "#7a1f5c" in render_theme_css(shop)
    assert theme_href("/p", shop) != theme_href("/p", Branding("Shop <b>"))  # a new look, a new URL
