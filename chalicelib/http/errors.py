"""The one place that turns a domain error into an HTTP answer: status code, headers, the JSON error shape."""

from __future__ import annotations

import re

from chalice.app import Response

from chalicelib.core.errors import DomainError, ErrorKind, error_body

STATUS: dict[ErrorKind, int] = {
    ErrorKind.MALFORMED: 400,
    ErrorKind.INVALID: 422,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}


def status_of(exc: DomainError) -> int:
    return STATUS[exc.kind]


def error_headers(exc: DomainError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if exc.kind is ErrorKind.UNAUTHENTICATED:
        charset = ', charset="UTF-8"' if exc.auth_scheme == "Basic" else ""
        headers["WWW-Authenticate"] = f'{exc.auth_scheme} realm="doorstep"{charset}'
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return headers


def error_response(exc: DomainError) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", **error_headers(exc)}
    return Response(body=exc.body(), status_code=status_of(exc), headers=headers)


# An unknown path (or a method API Gateway has no resource method for) never reaches a view: the local gateway
# (infra/local/api_server.py) and the deployed gateway's MISSING_AUTHENTICATION_TOKEN response (infra/package.py)
# both answer this, instead of API Gateway's 403 "Missing Authentication Token".
UNKNOWN_PATH_MESSAGE = "No route matches this path and method."


def unknown_path_error() -> DomainError:
    return DomainError(ErrorKind.NOT_FOUND, "not_found", UNKNOWN_PATH_MESSAGE)


def unknown_path_response() -> Response:
    return error_response(unknown_path_error())


def internal_error(code: str = "internal_error") -> DomainError:
    return DomainError(ErrorKind.INTERNAL, code, "An internal error occurred.")


def normalize_chalice_error(response: Response) -> Response:
    """Chalice answers 405/415 and a few others itself; give them our error shape."""
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body and "error" not in body:
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"])).lower().removesuffix("_error")
        response.body = error_body(code, str(body.get("Message", "")))
        response.headers["Content-Type"] = "application/json"
    return response
