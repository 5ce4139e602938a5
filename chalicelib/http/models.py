"""The one JSON error shape, as documented in OpenAPI."""

from __future__ import annotations

from pydantic import (
    BaseModel,
)


class ErrorDetail(BaseModel):
    field: str
    reason: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(BaseModel):
    error: ErrorInfo
