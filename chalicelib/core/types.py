"""Shared pydantic field types and the strict base model of every merchant request.

Times and days at the edge are strict and bounded: `Instant` is an RFC 3339 date-time string with an offset,
`Day` an ISO 8601 `YYYY-MM-DD` string, both between 1970 and 2099 (`EARLIEST`, `LATEST`). Pydantic alone would
read `0` or `0.5` as Unix times, and accepts year 1 or 9999, whose conversion to UTC or to epoch milliseconds
later raises `OverflowError`. `FixTime` (a ping's fix time) also takes epoch seconds or milliseconds, as the
README promises phones. What every JSON value must be (text, integer and float ranges) is decided once, before
these types, by `chalicelib.core.json_input`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from chalicelib.core.errors import FieldProblem

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$")
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RANGE = "between 1970-01-01T00:00:00Z and 2099-12-31T23:59:59Z"


def _rfc3339_text(value: Any) -> Any:
    """Only an RFC 3339 string (with an offset) reaches pydantic's datetime parser: no epoch numbers."""
    if isinstance(value, datetime):
        return value  # built in code, not read from a request
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-21T16:00:00Z")
    return value


def _fix_time_input(value: Any) -> Any:
    """A ping's fix time: an RFC 3339 string or epoch seconds / milliseconds as a JSON number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return _rfc3339_text(value)


def _in_range(value: datetime) -> datetime:
    try:  # aware comparisons subtract offsets as timedeltas: no OverflowError near year 1 or 9999
        inside = EARLIEST <= value < LATEST
    except (OverflowError, TypeError):
        inside = False
    if not inside:
        raise ValueError(f"must be {_RANGE}")
    return value


def _iso_day_text(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DAY.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


def _day_in_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError("must be between 1970-01-01 and 2099-12-31")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_in_range)]
"""A moment sent by a client: RFC 3339 with an offset, 1970 to 2099."""


FixTime = Annotated[AwareDatetime, BeforeValidator(_fix_time_input), AfterValidator(_in_range),
                    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"},
                                              {"type": "number", "minimum": 0,
                                               "description": "epoch seconds, or milliseconds when above 2e10"}]})]
"""A ping's fix time: RFC 3339 with an offset, or epoch seconds / milliseconds; 1970 to 2099."""


Day = Annotated[date, BeforeValidator(_iso_day_text), AfterValidator(_day_in_range)]
"""A calendar day sent by a client: YYYY-MM-DD, 1970 to 2099."""


_DIGITS = re.compile(r"^[0-9]{1,15}$")


def _digits(value: Any) -> Any:
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("must be a whole number written in digits")
    return value


QueryInt = Annotated[int, BeforeValidator(_digits)]
"""A whole number in a query string: digits only (pydantic alone reads `1.0`, ` 5` and `+5` as integers)."""

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


class Model_(BaseModel):
    """The app's models build their validators on first use, not at import: a cold start that answers one
    route builds the few it needs, not the eighty every blueprint declares."""

    model_config = ConfigDict(defer_build=True)


class Strict_(Model_):
    """Merchant requests refuse unknown fields, so a typo is an error, not silence."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Location(Strict_):
    lat: Latitude
    lng: Longitude


BLAMED = "blamed_field"  # the pydantic error type of `blame`


def blame(field_name: str, message: str) -> PydanticCustomError:
    """A model validator's error that names the field at fault (relative to the model), not the whole model.

    `chalicelib.http.routes.problems_from` appends `field_name` to the error's location, so a reversed window
    is reported at `time_window.end`, not at `time_window`.
    """
    return PydanticCustomError(BLAMED, message, {"field": field_name})


def field_problems(exc: ValidationError, prefix: str = "") -> list[FieldProblem]:
    """Pydantic's errors as field problems; a model validator's `blame` names the field it blames."""
    out = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        if err["type"] == BLAMED and (err.get("ctx") or {}).get("field"):
            parts.append(str(err["ctx"]["field"]))
        loc = ".".join(parts)
        name = f"{prefix}.{loc}" if prefix and loc else (loc or prefix or "body")
        out.append(FieldProblem(name, err["msg"]))
    return out


def patch_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """The body of a merge patch (`chalicelib.core.patch`) of `model`: every field optional and nullable, a
    nested model patched the same way, unknown fields refused. It checks each sent value where it stands, so an
    error names the field sent; the merged whole is validated by `model` itself (its rules across fields)."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = patch_model(annotation, f"{annotation.__name__}Patch")
        elif info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[field_name] = (annotation | None, Field(default=None, description=info.description))
    doc = f"Merge patch of {model.__name__}: fields sent change, nested objects merge, null restores the default."
    patched: type[BaseModel] = create_model(name, __base__=Strict_, __doc__=doc, **fields)
    return patched
