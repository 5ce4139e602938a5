"""Shared pydantic field types and the strict base model of every merchant request."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
)

Latitude = Annotated[float, Strict(), Field(ge=-90, le=90, allow_inf_nan=False, description="WGS84 degrees")]


Longitude = Annotated[float, Strict(), Field(ge=-180, le=180, allow_inf_nan=False, description="WGS84 degrees")]


E164Phone = Annotated[str, Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164, e.g. +14155550100")]


Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


ShortText = Annotated[str, Field(min_length=1, max_length=200)]


FenceRadius = Annotated[float, Strict(), Field(ge=20, le=1000, allow_inf_nan=False, description="metres")]


LocaleTag = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="e.g. en, de, pt-BR")]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone name (e.g. Europe/Berlin)") from None
    return value


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        raise ValueError("must be an https:// URL without credentials")
    return value


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Berlin"),
                         AfterValidator(_time_zone)]


HttpsUrl = Annotated[str, Field(max_length=2048, pattern=r"^https://[^\s\"'<>\\`]+$"), AfterValidator(_https_url)]


HexColour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$", description="#RRGGBB")]


ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, 24-hour, local time")]


class Strict_(BaseModel):
    """Merchant requests refuse unknown fields, so a typo is an error, not silence."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Location(Strict_):
    lat: Latitude
    lng: Longitude
