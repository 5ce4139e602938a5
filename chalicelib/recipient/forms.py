"""The tracking page's form posts: CSRF tokens and parsing of the four forms (pure, stdlib only).

A form post carries a `csrf` field minted by `csrf_token` for this tracking
token: `<issued>.<mac>`, the stage secret's HMAC of (tracking token, issue time)
for the `csrf` purpose (`core.signing`), valid for `max_age_s`. The route layer
should also refuse requests the browser marks as cross-site (`is_cross_site`).
Parsers return a small dataclass or a `FormError` whose `kind` is a
`render_message` kind, so the route answers with a page in the recipient's language.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.core.signing import Purpose, Signer, b64decode, b64encode, issued_recently
from chalicelib.recipient.page import COMMENT_MAX, GATE_CODE_MAX, NEIGHBOUR_NAME_MAX, NOTE_MAX, REDIRECT_NOTE_MAX

CSRF_FIELD = "csrf"
CSRF_MAX_AGE_S = 24 * 3600
_CSRF_MAC_BYTES = 18  # 24 base64url characters


@dataclass(frozen=True, slots=True)
class FormError:
    kind: str  # "form_expired" | "invalid_input"
    field: str | None = None


@dataclass(frozen=True, slots=True)
class InstructionsForm:
    gate_code: str | None
    leave_at_door: bool
    note: str | None


@dataclass(frozen=True, slots=True)
class RescheduleForm:
    option_id: str


@dataclass(frozen=True, slots=True)
class RedirectForm:
    kind: str  # "safe_place" | "neighbour"
    note: str | None
    neighbour_name: str | None
    option_id: str


@dataclass(frozen=True, slots=True)
class RatingForm:
    rating: int
    comment: str | None


# --- CSRF ------------------------------------------------------------------------------


def csrf_token(secret: str, page_token: str, now_s: int | None = None) -> str:
    """`<issued>.<mac>`, bound to one tracking token; put it in the page's forms."""
    issued = int(time.time()) if now_s is None else now_s
    mac = Signer(secret, Purpose.CSRF).mac(f"{page_token}:{issued}", _CSRF_MAC_BYTES)
    return f"{issued}.{b64encode(mac)}"


def check_csrf(secret: str, page_token: str, value: str | None, now_s: int | None = None,
               max_age_s: int = CSRF_MAX_AGE_S) -> bool:
    if not value or len(value) > 64:
        return False
    issued_text, _, encoded_mac = value.partition(".")
    mac = b64decode(encoded_mac)
    if not (issued_text.isascii() and issued_text.isdigit()) or mac is None:
        return False
    issued = int(issued_text)
    now = int(time.time()) if now_s is None else now_s
    if not issued_recently(issued, now, max_age_s):
        return False
    return Signer(secret, Purpose.CSRF).verify(f"{page_token}:{issued}", mac, _CSRF_MAC_BYTES)


def is_cross_site(headers: Mapping[str, str], expected_origin: str | None = None) -> bool:
    """True when the browser says the post came from another site (Sec-Fetch-Site, else Origin).

    `headers` with lower-case names (as Chalice gives them). `expected_origin` is the
    page's own `scheme://host[:port]`; without it only Sec-Fetch-Site is checked.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is not None and expected_origin is not None:
        return origin.rstrip("/").lower() != expected_origin.rstrip("/").lower()
    return False


# --- parsing ---------------------------------------------------------------------------


def clean_text(value: str | None, max_len: int, *, multiline: bool = False) -> str | None:
    """Trimmed, NFC, control characters removed (newlines kept when multiline); None if empty.

    Raises ValueError when longer than `max_len` characters after cleaning.
    """
    if value is None:
        return None
    value = unicodedata.normalize("NFC", value).replace("\r\n", "\n")
    kept = "".join(c for c in value if (multiline and c == "\n") or unicodedata.category(c)[0] != "C")
    kept = kept.strip()
    if len(kept) > max_len:
        raise ValueError("too long")
    return kept or None


def _checked(fields: Mapping[str, str], secret: str, page_token: str, now_s: int | None) -> FormError | None:
    if not check_csrf(secret, page_token, fields.get(CSRF_FIELD), now_s):
        return FormError("form_expired", CSRF_FIELD)
    return None


def parse_instructions(fields: Mapping[str, str], *, secret: str, page_token: str,
                       now_s: int | None = None) -> InstructionsForm | FormError:
    error = _checked(fields, secret, page_token, now_s)
    if error:
        return error
    try:
        gate = clean_text(fields.get("gate_code"), GATE_CODE_MAX)
    except ValueError:
        return FormError("invalid_input", "gate_code")
    try:
        note = clean_text(fields.get("note"), NOTE_MAX, multiline=True)
    except ValueError:
        return FormError("invalid_input", "note")
    leave = fields.get("leave_at_door") in ("1", "on", "true")
    return InstructionsForm(gate, leave, note)


def parse_reschedule(fields: Mapping[str, str], offered_ids: set[str] | frozenset[str], *, secret: str,
                     page_token: str, now_s: int | None = None) -> RescheduleForm | FormError:
    """The chosen option, which must be one of `offered_ids` (else `not_available`)."""
    error = _checked(fields, secret, page_token, now_s)
    if error:
        return error
    option = fields.get("option")
    if not option:
        return FormError("invalid_input", "option")
    if option not in offered_ids:
        return FormError("not_available", "option")
    return RescheduleForm(option)


def parse_redirect(fields: Mapping[str, str], offered_ids: set[str] | frozenset[str], *, secret: str,
                   page_token: str, now_s: int | None = None) -> RedirectForm | FormError:
    """Safe place (with a note saying where) or neighbour (with a name), and one of `offered_ids`."""
    error = _checked(fields, secret, page_token, now_s)
    if error:
        return error
    kind = fields.get("kind")
    if kind not in ("safe_place", "neighbour"):
        return FormError("invalid_input", "kind")
    try:
        note = clean_text(fields.get("note"), REDIRECT_NOTE_MAX, multiline=True)
    except ValueError:
        return FormError("invalid_input", "note")
    try:
        name = clean_text(fields.get("neighbour_name"), NEIGHBOUR_NAME_MAX)
    except ValueError:
        return FormError("invalid_input", "neighbour_name")
    if kind == "safe_place" and note is None:
        return FormError("invalid_input", "note")
    if kind == "neighbour" and name is None:
        return FormError("invalid_input", "neighbour_name")
    option = fields.get("option")
    if not option:
        return FormError("invalid_input", "option")
    if option not in offered_ids:
        return FormError("not_available", "option")
    return RedirectForm(kind, note, name if kind == "neighbour" else None, option)


def parse_rating(fields: Mapping[str, str], *, secret: str, page_token: str,
                 now_s: int | None = None) -> RatingForm | FormError:
    error = _checked(fields, secret, page_token, now_s)
    if error:
        return error
    raw = fields.get("rating", "")
    if raw not in ("1", "2", "3", "4", "5"):
        return FormError("invalid_input", "rating")
    try:
        comment = clean_text(fields.get("comment"), COMMENT_MAX, multiline=True)
    except ValueError:
        return FormError("invalid_input", "comment")
    return RatingForm(int(raw), comment)
