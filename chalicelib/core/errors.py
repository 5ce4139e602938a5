"""Domain errors: what went wrong, in the domain's words, with no HTTP status.

Services and rules raise `DomainError`; the HTTP edge (`chalicelib.http.errors`) is the one place that maps an
`ErrorKind` to a status code and renders the one error shape
`{"error": {"code": ..., "message": ..., "details": [{"field": ..., "reason": ...}]}}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    MALFORMED = "malformed"  # the request cannot be read (syntax, missing body, unknown device)
    INVALID = "invalid"  # readable, but a field breaks a rule
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"  # the resource's state does not allow it now
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # transient: storage busy or timing out; retry
    INTERNAL = "internal"


@dataclass(frozen=True)
class FieldProblem:
    field: str
    reason: str


@dataclass
class DomainError(Exception):
    kind: ErrorKind
    code: str
    message: str
    details: list[FieldProblem] = field(default_factory=list)
    retry_after_s: int | None = None  # for UNAVAILABLE and RATE_LIMITED
    auth_scheme: str = "Bearer"  # for UNAUTHENTICATED: the credential the caller should present

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


def bad_request(message: str, field_name: str | None = None, reason: str | None = None) -> DomainError:
    details = [FieldProblem(field_name, reason or message)] if field_name else []
    return DomainError(ErrorKind.MALFORMED, "bad_request", message, details)


def validation_failed(details: list[FieldProblem]) -> DomainError:
    return DomainError(ErrorKind.INVALID, "validation_failed", "The request has invalid fields.", details)


def invalid(code: str, message: str, details: list[FieldProblem] | None = None) -> DomainError:
    return DomainError(ErrorKind.INVALID, code, message, details or [])


def unauthorized(message: str = "A valid bearer token is required.") -> DomainError:
    return DomainError(ErrorKind.UNAUTHENTICATED, "unauthorized", message, [FieldProblem("Authorization", message)])


def not_found(what: str) -> DomainError:
    return DomainError(ErrorKind.NOT_FOUND, "not_found", f"{what} not found.")


def conflict(message: str, field_name: str | None = None, reason: str | None = None,
             code: str = "conflict") -> DomainError:
    details = [FieldProblem(field_name, reason or message)] if field_name else []
    return DomainError(ErrorKind.CONFLICT, code, message, details)


def payload_too_large(limit_bytes: int) -> DomainError:
    return DomainError(ErrorKind.TOO_LARGE, "payload_too_large", f"The request body exceeds {limit_bytes} bytes.",
                       [FieldProblem("body", f"at most {limit_bytes} bytes")])


def service_unavailable(message: str, retry_after_s: int = 1) -> DomainError:
    return DomainError(ErrorKind.UNAVAILABLE, "service_unavailable", message, retry_after_s=retry_after_s)
