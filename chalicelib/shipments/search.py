"""What a dispatcher's search text is, pure: an external ref, a shipment id, a tracking link or token, or a
recipient's exact phone or email. Each kind has its own key lookup (docs/data-model.md rows 102-104): the search
never scans or filters a listing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

MAX_QUERY_CHARS = 300
SEARCH_LIMIT = 20
_SHIPMENT_ID = re.compile(r"^shp_[A-Za-z0-9_-]{4,60}$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # a tracking token: a base64url SHA-256 MAC (core/signing.py)
_TRACK_PATH = re.compile(r"/track/([A-Za-z0-9_-]{43})/?$")


class MatchedBy(StrEnum):
    SHIPMENT_ID = "shipment_id"
    TRACKING_LINK = "tracking_link"
    PHONE = "phone"
    EMAIL = "email"
    EXTERNAL_REF = "external_ref"


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One lookup to make: by what, and the normalized value (a token, an id, a contact or a ref)."""

    by: MatchedBy
    value: str


def search_keys(text: str) -> list[SearchKey]:
    """The lookups that can match `text`, most specific first. A phone without its `+`, spaces inside a
    phone, and case in an email are tolerated; everything that is not a link, id or contact is tried as an
    external ref (which may itself look like anything)."""
    q = text.strip()
    if not q:
        return []
    keys: list[SearchKey] = []
    if "/track/" in q:
        found = _TRACK_PATH.search(urlsplit(q).path if "://" in q else q.split("?", 1)[0].split("#", 1)[0])
        if found:
            return [SearchKey(MatchedBy.TRACKING_LINK, found.group(1))]
    compact_phone = re.sub(r"[\s().-]", "", q)
    if _PHONE.match(compact_phone):
        keys.append(SearchKey(MatchedBy.PHONE, compact_phone))
    elif _EMAIL.match(q):
        keys.append(SearchKey(MatchedBy.EMAIL, q.lower()))
    elif _SHIPMENT_ID.match(q):
        keys.append(SearchKey(MatchedBy.SHIPMENT_ID, q))
    elif _TOKEN.match(q):
        keys.append(SearchKey(MatchedBy.TRACKING_LINK, q))
    if len(q) <= 100:  # the longest external_ref a shipment can have
        keys.append(SearchKey(MatchedBy.EXTERNAL_REF, q))
    return keys
