"""Opaque, signed paging cursors over DynamoDB's LastEvaluatedKey."""

from __future__ import annotations

from typing import Any

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.security import (
    CursorError,
    decode_cursor,
    encode_cursor,
)


def cursor_out(settings: Settings, scope: str, last_key: dict[str, Any] | None) -> str | None:
    return encode_cursor(settings.token_secret, scope, last_key) if last_key else None


def cursor_in(settings: Settings, scope: str, cursor: str | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(settings.token_secret, scope, cursor)
    except CursorError as exc:
        raise errors.bad_request("The cursor is not valid for this listing.", "cursor", str(exc)) from None
