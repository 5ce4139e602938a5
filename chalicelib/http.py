"""HTTP plumbing shared by every route: auth, body and query parsing, the one error shape.

`Api.route` registers a JSON API view with Chalice and records its models, so the
OpenAPI document (chalicelib/openapi.py) is generated from the same source.
`Api.web` registers a recipient-facing view (the tracking page, its assets and
its form posts): no bearer auth, urlencoded form bodies, and errors answered as
a friendly HTML page in the browser's language (or, for the page's polled JSON,
in the one JSON error shape). Web routes are not part of the OpenAPI document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chalice.app import Chalice, Response
from pydantic import BaseModel, ValidationError

from chalicelib import errors
from chalicelib.observability import logger

MAX_BODY_BYTES = 1024 * 1024
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


def error_response(exc: errors.ApiError) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", **exc.headers}
    return Response(body=exc.body(), status_code=exc.status, headers=headers)


def parse_json_body(raw: bytes | None) -> Any:
    if raw is None or raw == b"":
        raise errors.bad_request("The request body is empty; a JSON object is required.", "body", "required")
    if len(raw) > MAX_BODY_BYTES:
        raise errors.payload_too_large(MAX_BODY_BYTES)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request("The request body is not valid JSON.", "body", str(exc)[:200]) from None


def parse_form_body(raw: bytes | str | None, content_type: str | None) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as {field: first value}; errors name a web message kind."""
    from chalicelib.web.forms import MAX_FORM_BYTES, parse_form

    if not content_type or not _FORM_TYPE.match(content_type):
        raise errors.ApiError(415, "invalid_input", "Send the form as application/x-www-form-urlencoded.",
                              [errors.FieldProblem("Content-Type", "must be application/x-www-form-urlencoded")])
    data = raw.encode() if isinstance(raw, str) else (raw or b"")
    if len(data) > MAX_FORM_BYTES:
        raise errors.ApiError(413, "invalid_input", f"The form exceeds {MAX_FORM_BYTES} bytes.",
                              [errors.FieldProblem("body", f"at most {MAX_FORM_BYTES} bytes")])
    fields = parse_form(data)
    if fields is None:
        raise errors.ApiError(400, "invalid_input", "The form is not valid UTF-8 urlencoded data.")
    return fields


def html_response(body: str, status: int, headers: dict[str, str]) -> Response:
    sent: dict[str, str | list[str]] = dict(headers)
    return Response(body=body, status_code=status, headers=sent)


class Api:
    def __init__(self, app: Chalice, authenticate: Callable[[Auth, str | None], tuple[str, str]],
                 static_base: Callable[[], str] = lambda: "/static") -> None:
        self.app = app
        self.specs: list[RouteSpec] = []
        self._authenticate = authenticate
        self._static_base = static_base

    def route(self, path: str, method: str, *, summary: str, tag: str, auth: Auth = "merchant",
              body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              response: type[BaseModel] | None = None, status: int = 200, errors_: tuple[int, ...] = (),
              body_doc: type[BaseModel] | None = None, extra_headers: tuple[str, ...] = (),
              raw_body: bool = False, optional_body: bool = False
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        spec = RouteSpec(path, method, summary, tag, auth, body, query, response, status, errors_,
                         body_doc, extra_headers, optional_body)
        self.specs.append(spec)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            def handler(**path_params: str) -> Response:
                return self._handle(spec, view, raw_body, path_params)

            handler.__name__ = view.__name__
            self.app.route(path, methods=[method], content_types=["*/*"])(handler)
            return view

        return decorator

    def _handle(self, spec: RouteSpec, view: Callable[..., Any], wants_raw: bool,
                path_params: dict[str, str]) -> Response:
        request = self.app.current_request
        assert request is not None
        try:
            call = Call(headers={k.lower(): v for k, v in request.headers.items()})
            if spec.auth != "none":
                call.merchant_id, call.driver_id = self._authenticate(spec.auth, call.headers.get("authorization"))
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
                    raise errors.ApiError(415, "unsupported_media_type", "Send the body as application/json.",
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
        except errors.ApiError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("unhandled error", extra={"route": spec.path, "method": spec.method})
            return error_response(errors.ApiError(500, "internal_error", "An internal error occurred."))
        if isinstance(result, Response):
            return result
        return json_response(result, spec.status)

    # --- recipient-facing web routes ------------------------------------------------------

    def web(self, path: str, method: str = "GET", *, form: bool = False,
            errors_as: WebErrors = "html") -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        """Register a web view `view(call: WebCall, **path_params) -> Response`.

        With `form=True` the body must be application/x-www-form-urlencoded (at most
        16 KB) and arrives parsed in `call.form`. An `errors.ApiError` becomes
        the friendly 404 page (status 404) or a message page whose kind is the error's
        code when it is one of chalicelib.web.MESSAGE_KINDS; `errors_as="json"` keeps the
        JSON error shape instead (for JSON the page polls).
        """

        def decorator(view: Callable[..., Response]) -> Callable[..., Response]:
            def handler(**path_params: str) -> Response:
                return self._handle_web(path, method, view, form, errors_as, path_params)

            handler.__name__ = view.__name__
            # Any content type reaches the view, which checks it: Chalice's own 415 would answer JSON.
            self.app.route(path, methods=[method], content_types=["*/*"])(handler)
            return view

        return decorator

    def _handle_web(self, path: str, method: str, view: Callable[..., Response], form: bool, errors_as: WebErrors,
                    path_params: dict[str, str]) -> Response:
        request = self.app.current_request
        assert request is not None
        call = WebCall(headers={k.lower(): v for k, v in request.headers.items()},
                       query=dict(request.query_params or {}))
        try:
            if form:
                call.form = parse_form_body(request.raw_body, call.headers.get("content-type"))
            return view(call, **path_params)
        except errors.ApiError as exc:
            return error_response(exc) if errors_as == "json" else self.html_error(exc, call.accept_language)
        except Exception:
            logger.exception("unhandled error", extra={"route": path, "method": method})
            failure = errors.ApiError(500, "server_error", "An internal error occurred.")
            return error_response(failure) if errors_as == "json" else self.html_error(failure, call.accept_language)

    def html_error(self, exc: errors.ApiError, accept_language: str | None) -> Response:
        """The error as a page in the browser's language: the one 404 page, or a short message page."""
        from chalicelib.web import MESSAGE_KINDS, negotiate, not_found_headers, render_message, render_not_found

        locale = negotiate(None, accept_language)
        static_base = self._static_base()
        if exc.status == 404:
            body = render_not_found(locale, static_base=static_base)
        else:
            kind = exc.code if exc.code in MESSAGE_KINDS else "server_error" if exc.status >= 500 else "invalid_input"
            body = render_message(kind, locale, static_base=static_base)
        return html_response(body, exc.status, {**not_found_headers(), **exc.headers})


def normalize_chalice_error(response: Response) -> Response:
    """Chalice answers 405/415 and a few others itself; give them our error shape."""
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and "Code" in body and "error" not in body:
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", str(body["Code"])).lower().removesuffix("_error")
        response.body = errors.error_body(code, str(body.get("Message", "")))
        response.headers["Content-Type"] = "application/json"
    return response
