"""The one error shape every HTTP answer uses.

`{"error": {"code": ..., "message": ..., "details": [{"field": ..., "reason": ...}]}}`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldProblem:
    field: str
    reason: str


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    details: list[FieldProblem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: list[FieldProblem] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": [{"field": d.field, "reason": d.reason} for d in details or []],
        }
    }


def bad_request(message: str, field_name: str | None = None, reason: str | None = None) -> ApiError:
    details = [FieldProblem(field_name, reason or message)] if field_name else []
    return ApiError(400, "bad_request", message, details)


def validation_failed(details: list[FieldProblem]) -> ApiError:
    return ApiError(422, "validation_failed", "The request has invalid fields.", details)


def unauthorized(message: str = "A valid bearer token is required.") -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        message,
        [FieldProblem("Authorization", message)],
        headers={"WWW-Authenticate": 'Bearer realm="doorstep"'},
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found.")


def conflict(message: str, field_name: str | None = None, reason: str | None = None) -> ApiError:
    details = [FieldProblem(field_name, reason or message)] if field_name else []
    return ApiError(409, "conflict", message, details)


def payload_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"The request body exceeds {limit_bytes} bytes.",
        [FieldProblem("body", f"at most {limit_bytes} bytes")],
    )


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "service_unavailable", message, headers={"Retry-After": "1"})
