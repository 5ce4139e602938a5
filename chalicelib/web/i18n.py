"""Message catalogues for the tracking page: one flat JSON object of strings per locale.

Adding a language is adding `locales/<tag>.json` with the same keys as `en.json`
(a unit test checks the key sets match). Placeholders are `{name}`; nothing else
in a message is interpreted, so a catalogue cannot reach into Python objects.
Missing keys in a locale fall back to English, and a key missing everywhere shows
as the key itself rather than failing the page.

Keys starting with `meta.` describe the locale: `meta.dir` (ltr | rtl) and
`meta.clock` (24h | 12h).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LOCALE = "en"

_TAG = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@lru_cache(maxsize=1)
def available_locales() -> frozenset[str]:
    """The locale tags that have a catalogue file (lower case, e.g. `en`, `de`, `pt-br`)."""
    return frozenset(p.stem.lower() for p in LOCALES_DIR.glob("*.json"))


@lru_cache(maxsize=32)
def _load(locale: str) -> dict[str, str]:
    with (LOCALES_DIR / f"{locale}.json").open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"locale {locale}: a catalogue is a flat JSON object of strings")
    return data


def negotiate(requested: str | None, accept_language: str | None = None) -> str:
    """The best available locale: `requested` (e.g. the shipment's locale), then Accept-Language, then English.

    `de-AT` falls back to `de`; malformed tags are ignored.
    """
    candidates: list[str] = []
    if requested:
        candidates.append(requested)
    if accept_language:
        ranked: list[tuple[float, int, str]] = []
        for i, part in enumerate(accept_language.split(",")[:20]):
            tag, _, params = part.strip().partition(";")
            q = 1.0
            params = params.strip()
            if params.startswith("q="):
                try:
                    q = float(params[2:])
                except ValueError:
                    continue
            if tag and tag != "*" and q > 0:
                ranked.append((-q, i, tag))
        candidates.extend(tag for _, _, tag in sorted(ranked))
    available = available_locales()
    for candidate in candidates:
        tag = candidate.strip().replace("_", "-").lower()
        if not _TAG.match(tag):
            continue
        parts = tag.split("-")
        for n in range(len(parts), 0, -1):
            prefix = "-".join(parts[:n])
            if prefix in available:
                return prefix
    return DEFAULT_LOCALE


class Translator:
    """Looks up and fills messages of one locale, English underneath."""

    __slots__ = ("_fallback", "_messages", "locale")

    def __init__(self, locale: str) -> None:
        self.locale = negotiate(locale)
        self._messages = _load(self.locale)
        self._fallback = _load(DEFAULT_LOCALE)

    def has(self, key: str) -> bool:
        return key in self._messages or key in self._fallback

    def __call__(self, key: str, /, **params: object) -> str:
        template = self._messages.get(key)
        if template is None:
            template = self._fallback.get(key, key)
        if not params:
            return template
        return _PLACEHOLDER.sub(lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0), template)

    @property
    def dir(self) -> str:
        return "rtl" if self("meta.dir") == "rtl" else "ltr"

    # --- dates and times, in the zone of the datetimes given ---

    def format_time(self, dt: datetime) -> str:
        if self("meta.clock") == "12h":
            hour = dt.hour % 12 or 12
            suffix = self("time.pm") if dt.hour >= 12 else self("time.am")
            return f"{hour}:{dt.minute:02d}\u00a0{suffix}"
        return f"{dt.hour:02d}:{dt.minute:02d}"

    def format_date(self, dt: datetime) -> str:
        return self("date.format", weekday=self(f"date.weekday.{dt.weekday()}"), day=dt.day,
                    month=self(f"date.month.{dt.month}"), year=dt.year)

    def format_datetime(self, dt: datetime) -> str:
        return self("date.datetime", date=self.format_date(dt), time=self.format_time(dt))

    def plural(self, key: str, count: int, **params: object) -> str:
        """`key.zero` for 0 when the catalogue has it, else `key.one` for 1, else `key.other`."""
        if count == 0 and self.has(f"{key}.zero"):
            return self(f"{key}.zero", count=count, **params)
        return self(f"{key}.one" if count == 1 else f"{key}.other", count=count, **params)


def catalogue(locale: str) -> Mapping[str, str]:
    """The raw messages of one available locale (for tests and tooling)."""
    return _load(negotiate(locale))
