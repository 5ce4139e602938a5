"""One Branding and one contrast rule: the tracking page, its theme, the email and the driver app agree."""

from __future__ import annotations

import itertools
import re

import pytest

from chalicelib.driver_app.page import DriverShell, render_driver_page
from chalicelib.fleet.models import BrandingSettings
from chalicelib.notifications.rules import NotifyKind
from chalicelib.notifications.templates import DEFAULT_TEMPLATES, SAMPLE_VALUES, render_email
from chalicelib.recipient.page import theme_colours
from chalicelib.web.branding import (
    BLACK,
    DEFAULT_ACCENT,
    DEFAULT_PRIMARY,
    WHITE,
    Branding,
    contrast_ratio,
    text_on,
)

LEVELS = ("00", "33", "55", "77", "99", "bb", "dd", "ff")
MANY = [f"#{r}{g}{b}" for r, g, b in itertools.product(LEVELS, repeat=3)] + ["#0077dd", "#fde047", "#1d4ed8"]


def email_text_on(colour: str) -> str:
    """The text colour the email puts on its header for this brand colour."""
    template = DEFAULT_TEMPLATES.template(NotifyKind.OUT_FOR_DELIVERY, "en")
    html = render_email(NotifyKind.OUT_FOR_DELIVERY, template, SAMPLE_VALUES, Branding("Shop", colour)).html
    found = re.search(rf"background:{colour};color:(#[0-9a-f]{{6}})", html)
    assert found, colour
    return found.group(1)


def test_page_and_email_choose_the_same_text_colour_for_every_brand_colour() -> None:
    for colour in MANY:
        page = theme_colours(Branding("Shop", colour, colour))
        assert page["--on-brand"] == page["--on-accent"] == email_text_on(colour) == text_on(colour), colour
        assert contrast_ratio(colour, text_on(colour)) >= 4.5, colour


def test_0077dd_gets_dark_text_everywhere() -> None:
    # White on #0077dd is 4.48:1, just under AA: both the page and the email use black.
    assert contrast_ratio("#0077dd", WHITE) < 4.5
    assert theme_colours(Branding("Shop", "#0077dd"))["--on-brand"] == BLACK
    assert email_text_on("#0077dd") == BLACK


def test_the_merchants_setting_becomes_the_one_branding() -> None:
    stored = BrandingSettings.model_validate({"primary_colour": "#0B5394", "support_email": "help@shop.example"})
    branding = Branding.of(stored, "Shop Ltd")
    assert branding.name == "Shop Ltd" and branding.primary == "#0b5394" and branding.accent == DEFAULT_ACCENT
    assert branding.support_contact == "help@shop.example"
    assert Branding.of(BrandingSettings.model_validate({"name": "Shop"}), "Shop Ltd").name == "Shop"
    assert Branding.of(BrandingSettings(), "x").primary == DEFAULT_PRIMARY == BrandingSettings().primary_colour


@pytest.mark.parametrize(("given", "shown"), [("#0B5394", "#0b5394"), ('"><script>', DEFAULT_PRIMARY)])
def test_the_driver_app_shows_the_brand_colour(given: str, shown: str) -> None:
    html = render_driver_page(DriverShell(token="dl1.a.b", driver_id="drv_1", driver_first_name="Max",
                                          merchant_name="Shop", brand_colour=given))
    assert f'<meta name="theme-color" content="{shown}">' in html
