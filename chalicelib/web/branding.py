"""The merchant's look, once: the value object every surface uses (tracking page, its theme stylesheet, email,
driver app), the colour validation, and the one WCAG contrast rule that picks a text colour.

The merchant stores its look as `fleet.models.BrandingSettings` (validated when saved); `Branding.of` turns
that setting into this value object. Colours are read through `primary` / `accent`, which fall back to the
defaults for anything that is not `#rrggbb`, so a hostile or stale value can never reach CSS or HTML.

One rule decides the text colour on a brand colour (`text_on`), so the page's button and the email's button
agree for every colour: white when it reaches WCAG AA (4.5:1), else the soft black #111111 when that does,
else pure black (which always does when white does not). `ink` darkens a colour until it reads as text on a
light background. Pure: no I/O, stdlib only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

DEFAULT_PRIMARY = "#1d4ed8"  # 6.7:1 against white
DEFAULT_ACCENT = "#0f766e"  # 5.5:1 against white
PAGE_BACKGROUND = "#f3f4f6"  # track.css --bg: the darkest light background text sits on (cards are white)
WHITE = "#ffffff"
SOFT_BLACK = "#111111"
BLACK = "#000000"
AA = 4.5  # WCAG 2 AA for normal text

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_SENDER_UNSAFE = re.compile(r"[\"<>,;@\\:()\[\]]")


def valid_colour(value: object, default: str) -> str:
    """`value` as lower-case `#rrggbb` if it is one, else `default`."""
    return value.lower() if isinstance(value, str) and _HEX.match(value) else default


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a `#rrggbb` colour (0 black to 1 white)."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two `#rrggbb` colours (1 to 21)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_on(background: str) -> str:
    """The text colour on `background`: the first of white, soft black and black that reads at AA (4.5:1).

    One of white and black always does (their crossover is at 4.58:1), so the answer always meets AA.
    """
    for candidate in (WHITE, SOFT_BLACK):
        if contrast_ratio(background, candidate) >= AA:
            return candidate
    return BLACK


def ink(colour: str, background: str = PAGE_BACKGROUND, target: float = AA) -> str:
    """`colour` darkened just enough to read as text (AA) on `background` (and so on anything lighter)."""
    r, g, b = _rgb(colour)
    for step in range(21):
        k = 1 - step / 20
        candidate = f"#{round(r * k):02x}{round(g * k):02x}{round(b * k):02x}"
        if contrast_ratio(candidate, background) >= target:
            return candidate
    return BLACK


class BrandingFields(Protocol):
    """The shape of the merchant's stored setting (`fleet.models.BrandingSettings`)."""

    @property
    def name(self) -> str | None: ...
    @property
    def primary_colour(self) -> str: ...
    @property
    def accent_colour(self) -> str: ...
    @property
    def logo_url(self) -> str | None: ...
    @property
    def support_email(self) -> str | None: ...
    @property
    def support_phone(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Branding:
    """The merchant's look and support contact. Colours are `#rrggbb`; anything else falls back to the default
    when read through `primary` / `accent`. Links (logo, mailto, tel) are checked by each surface before use."""

    name: str
    primary_colour: str = DEFAULT_PRIMARY
    accent_colour: str = DEFAULT_ACCENT
    logo_url: str | None = None
    support_email: str | None = None
    support_phone: str | None = None

    @classmethod
    def of(cls, settings: BrandingFields, merchant_name: str) -> Branding:
        """The look a merchant saved (its display name, else the account's name)."""
        return cls(name=settings.name or merchant_name, primary_colour=settings.primary_colour,
                   accent_colour=settings.accent_colour, logo_url=settings.logo_url,
                   support_email=settings.support_email, support_phone=settings.support_phone)

    @property
    def primary(self) -> str:
        return valid_colour(self.primary_colour, DEFAULT_PRIMARY)

    @property
    def accent(self) -> str:
        return valid_colour(self.accent_colour, DEFAULT_ACCENT)

    @property
    def support_contact(self) -> str:
        return self.support_email or self.support_phone or ""

    @property
    def display_sender(self) -> str:
        """The email From display name: one line, no quotes, angle brackets, commas, semicolons or @."""
        kept = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in self.name)
        return " ".join(_SENDER_UNSAFE.sub(" ", kept).split())[:64]
