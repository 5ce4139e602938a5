"""Edge models of the lookup page's settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from chalicelib.core.types import Model_, Strict_
from chalicelib.lookup.rules import MAX_ALLOWED_ORIGINS, ORIGIN_PATTERN, SLUG_PATTERN


def _lower_origin(value: str) -> str:
    return value.rstrip("/").lower()


Slug = Annotated[str, Field(pattern=SLUG_PATTERN, description="3-40 lower-case letters, digits and inner hyphens")]
AllowedOrigin = Annotated[str, AfterValidator(_lower_origin),
                          Field(max_length=300, pattern=ORIGIN_PATTERN.replace("[a-z0-9]", "[A-Za-z0-9]"),
                                description="https://host[:port] of a site that may embed the lookup form")]


class LookupSettings(Strict_):
    """The merchant's lookup page: `/lookup/{slug}`, and the sites that may embed its form."""

    slug: Slug | None = Field(default=None, description="The page's address; unique across merchants; null: no "
                                                        "lookup page")
    allowed_origins: Annotated[list[AllowedOrigin], Field(max_length=MAX_ALLOWED_ORIGINS)] = Field(
        default_factory=list, description="Origins whose pages may embed the form (CSP frame-ancestors) and post it")


class LookupSettingsOut(Model_):
    slug: str | None
    allowed_origins: list[str]
    page_url: str | None = Field(description="The lookup page, to link from the merchant's site")
    embed_script_url: str | None = Field(description="The snippet: <script src=...></script> where the form goes")
    embed_frame_url: str | None = Field(description="The form alone, for an <iframe> of your own")
