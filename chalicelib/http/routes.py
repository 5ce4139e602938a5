"""HTTP plumbing shared by every route: auth, body and query parsing, the one error shape.

Each feature's `api.py` owns a Chalice Blueprint wrapped in `Routes`. `Routes.route` registers a JSON API
view and records its models in `SPECS`, so the OpenAPI document (`chalicelib/http/openapi.py`) is generated
from the same source. `Routes.web` registers a page view (the tracking page, the driver app, their assets and
form posts): no bearer auth, urlencoded form bodies, and errors answered as a page in the browser's language
(or, for JSON a page polls, in the one JSON error shape). Web routes are not part of the OpenAPI document.

This package imports no feature: how a caller is authenticated and how an error page looks are injected by
`app.py` through `configure`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel, ValidationError

from chalicelib.core import errors
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.observability import logger
from chalicelib.http.errors import error_response, internal_error

MAX_BODY_BYTES = 1024 * 1024
MAX_FORM_BYTES = 16 * 1024
Auth = Literal["merchant", "driver", "none"]
WebErrors = Literal["html", "json"]
_FORM_TYPE = re.compile(r"^\s*application/x-www-form-urlencoded\s*(;|$)", re.I)


@dataclass
class RouteSpec:
    path: str
    method: str
    summary: str
    tag: str
    auth: Auth
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    error_statuses: tuple[int, ...]
    body_doc: type[BaseModel] | None = None
    extra_headers: tuple[str, ...] = ()
    optional_body: bool = False  # an empty body means the body model's defaults


@dataclass
class Call:
    """What a view receives: the authenticated principal and parsed input."""

    merchant_id: str = ""
    driver_id: str = ""
    body: Any = None
    query: Any = None
    raw_body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def idempotency_key(self) -> str | None:
        key = self.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise errors.bad_request("Idempotency-Key must be 1 to 255 characters.", "Idempotency-Key",
                                     "1 to 255 characters")
        return key


@dataclass
class WebCall:
    """What a web view receives: lower-case headers, the query string and, for form posts, the form fields."""

    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)

    @property
    def accept_language(self) -> str | None:
        return self.headers.get("accept-language")


def problems_from(exc: ValidationError, prefix: str = "") -> list[errors.FieldProblem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        name = f"{prefix}.{loc}" if prefix and loc else (loc or prefix or "body")
        out.append(errors.FieldProblem(name, err["msg"]))
    return out


def json_response(model: BaseModel, status: int = 200, extra_headers: dict[str, str] | None = None) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", **(extra_headers or {})}
    return Response(body=model.model_dump_json(), status_code=status, headers=headers)


def parse_json_body(raw: bytes | None) -> Any:
    if raw is None or raw == b"":
        raise errors.bad_request("The request body is empty; a JSON object is required.", "body", "required")
    if len(raw) > MAX_BODY_BYTES:
        raise errors.payload_too_large(MAX_BODY_BYTES)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request("The request body is not valid JSON.", "body", str(exc)[:200]) from None


def parse_form(body: bytes | str | None) -> dict[str, str] | None:
    """An urlencoded body as {field: first value}; None when it is too big or not UTF-8."""
    if body is None:
        return {}
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_FORM_BYTES:
        return None
    try:
        text = raw.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items() if v}


def parse_form_body(raw: bytes | str | None, content_type: str | None) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as {field: first value}; errors name a web message kind."""
    if not content_type or not _FORM_TYPE.match(content_type):
        raise DomainError(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "invalid_input",
                          "Send the form as application/x-www-form-urlencoded.",
                          [errors.FieldProblem("Content-Type", "must be application/x-www-form-urlencoded")])
    data = raw.encode() if isinstance(raw, str) else (raw or b"")
    if len(data) > MAX_FORM_BYTES:
        raise DomainError(ErrorKind.TOO_LARGE, "invalid_input", f"The form exceeds {MAX_FORM_BYTES} bytes.",
                          [errors.FieldProblem("body", f"at most {MAX_FORM_BYTES} bytes")])
    fields = parse_form(data)
    if fields is None:
        raise DomainError(ErrorKind.MALFORMED, "invalid_input", "The form is not valid UTF-8 urlencoded data.")
    return fields


def html_response(body: str, status: int, headers: dict[str, str]) -> Response:
    sent: dict[str, str | list[str]] = dict(headers)
    return Response(body=body, status_code=status, headers=sent)


Authenticator = Callable[[Auth, str | None], tuple[str, str]]
ErrorPage = Callable[[DomainError, str | None], Response]


@dataclass
class Hooks:
    """What the edge needs from the features, injected once by app.py (so this package imports no feature)."""

    authenticate: Authenticator | None = None
    error_page: ErrorPage | None = None  # a web route's error as a page in the browser's language


HOOKS = Hooks()
SPECS: list[RouteSpec] = []  # every JSON API route of every blueprint, for the OpenAPI document


def configure(*, authenticate: Authenticator, error_page: ErrorPage) -> None:
    HOOKS.authenticate = authenticate
    HOOKS.error_page = error_page


def _authenticate(kind: Auth, authorization: str | None) -> tuple[str, str]:
    if HOOKS.authenticate is None:
        raise RuntimeError("chalicelib.http.routes.configure() was not called")
    return HOOKS.authenticate(kind, authorization)


class Routes:
    """A feature's routes on its Blueprint: JSON API views (`route`) and page views (`web`)."""

    def __init__(self, blueprint: Blueprint) -> None:
        self.blueprint = blueprint

    def current_request(self) -> Request:
        request = self.blueprint.current_request
        assert request is not None
        return request

    def route(self, path: str, method: str, *, summary: str, tag: str, auth: Auth = "merchant",
              body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              response: type[BaseModel] | None = None, status: int = 200, errors_: tuple[int, ...] = (),
              body_doc: type[BaseModel] | None = None, extra_headers: tuple[str, ...] = (),
              raw_body: bool = False, optional_body: bool = False
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        spec = RouteSpec(path, method, summary, tag, auth, body, query, response, status, errors_,
                         body_doc, extra_headers, optional_body)
        SPECS.append(spec)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            def handler(**path_params: str) -> Response:
                return self._handle(spec, view, raw_body, path_params)

            handler.__name__ = view.__name__
            self.blueprint.route(path, methods=[method], content_types=["*/*"])(handler)
            return view

        return decorator

    def _handle(self, spec: RouteSpec, view: Callable[..., Any], wants_raw: bool,
                path_params: dict[str, str]) -> Response:
        request = self.current_request()
        try:
            call = Call(headers={k.lower(): v for k, v in request.headers.items()})
            if spec.auth != "none":
                call.merchant_id, call.driver_id = _authenticate(spec.auth, call.headers.get("authorization"))
            if spec.optional_body and spec.body is not None and not (request.raw_body or b"").strip():
                call.body = spec.body()  # every field of an optional body has a default
            elif spec.body is not None or wants_raw:
                raw = request.raw_body or b""
                if isinstance(raw, str):
                    raw = raw.encode()
                if len(raw) > MAX_BODY_BYTES:
                    raise errors.payload_too_large(MAX_BODY_BYTES)
                content_type = call.headers.get("content-type", "application/json")
                if not re.match(r"^\s*application/([\w.+-]+\+)?json\s*(;|$)", content_type, re.I):
                    raise DomainError(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                      "Send the body as application/json.",
                                      [errors.FieldProblem("Content-Type", "must be application/json")])
                call.raw_body = raw
                data = parse_json_body(raw)
                if spec.body is not None:
                    try:
                        call.body = spec.body.model_validate(data)
                    except ValidationError as exc:
                        raise errors.validation_failed(problems_from(exc)) from None
                else:
                    call.body = data
            if spec.query is not None:
                try:
                    call.query = spec.query.model_validate(dict(request.query_params or {}))
                except ValidationError as exc:
                    raise errors.validation_failed(problems_from(exc)) from None
            result = view(call, **path_params)
        except DomainError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("unhandled error", extra={"route": spec.path, "method": spec.method})
            return error_response(internal_error())
        if isinstance(result, Response):
            return result
        return json_response(result, spec.status)

    # --- page views ------------------------------------------------------------------------

    def web(self, path: str, method: str = "GET", *, form: bool = False,
            errors_as: WebErrors = "html") -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        """Register a page view `view(call: WebCall, **path_params) -> Response`.

        With `form=True` the body must be application/x-www-form-urlencoded (at most
        16 KB) and arrives parsed in `call.form`. A `DomainError` becomes the injected
        error page (the one 404 page, or a message page); `errors_as="json"` keeps the
        JSON error shape instead (for JSON the page polls).
        """

        def decorator(view: Callable[..., Response]) -> Callable[..., Response]:
            def handler(**path_params: str) -> Response:
                return self._handle_web(path, method, view, form, errors_as, path_params)

            handler.__name__ = view.__name__
            # Any content type reaches the view, which checks it: Chalice's own 415 would answer JSON.
            self.blueprint.route(path, methods=[method], content_types=["*/*"])(handler)
            return view

        return decorator

    def _handle_web(self, path: str, method: str, view: Callable[..., Response], form: bool, errors_as: WebErrors,
                    path_params: dict[str, str]) -> Response:
        request = self.current_request()
        call = WebCall(headers={k.lower(): v for k, v in request.headers.items()},
                       query=dict(request.query_params or {}))
        try:
            if form:
                call.form = parse_form_body(request.raw_body, call.headers.get("content-type"))
            return view(call, **path_params)
        except DomainError as exc:
            return error_response(exc) if errors_as == "json" else error_page(exc, call.accept_language)
        except Exception:
            logger.exception("unhandled error", extra={"route": path, "method": method})
            failure = internal_error("server_error")
            return error_response(failure) if errors_as == "json" else error_page(failure, call.accept_language)


def error_page(exc: DomainError, accept_language: str | None) -> Response:
    if HOOKS.error_page is None:
        return error_response(exc)
    return HOOKS.error_page(exc, accept_language)
