"""The one JSON error shape, as documented in OpenAPI."""

from __future__ import annotations

from chalicelib.core.types import Model_


class ErrorDetail(Model_):
    field: str
    reason: str


class ErrorInfo(Model_):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(Model_):
    error: ErrorInfo
