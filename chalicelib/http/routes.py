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

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from chalice.app import Blueprint, Request, Response
from pydantic import BaseModel, ValidationError

from chalicelib.core import errors, json_input
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.observability import logger
from chalicelib.core.types import field_problems
from chalicelib.http.errors import error_response, internal_error

MAX_BODY_BYTES = 1024 * 1024
MAX_PATH_ID_BYTES = 200  # every id the API issues is far shorter; a DynamoDB sort key allows 1,024 bytes
MAX_FORM_BYTES = 16 * 1024
Auth = Literal["merchant", "driver", "none"]
WebErrors = Literal["html", "json"]
_FORM_TYPE = re.compile(r"^\s*application/x-www-form-urlencoded\s*(;|$)", re.I)
# application/json or any +json type, with at most a UTF-8 charset parameter.
_JSON_TYPE = re.compile(r"^\s*application/(?:[\w.+-]+\+)?json\s*(?:;\s*charset\s*=\s*\"?utf-8\"?\s*)?;?\s*$", re.I)
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")


@dataclass(frozen=True)
class Answer:
    """A success status a route answers besides its main one (e.g. 200 for an idempotent replay)."""

    status: int
    description: str
    headers: tuple[str, ...] = ()  # response headers it carries


ModelRef = type[BaseModel] | str
"""A route's model: the class, or its name in the module its `Routes` was given (`models=`), imported on first
use, so a cold start builds the model classes of the routes it answers, not of every blueprint."""


@dataclass
class RouteSpec:
    path: str
    method: str
    summary: str
    tag: str
    auth: Auth
    body_ref: ModelRef | None
    query_ref: ModelRef | None
    response_ref: ModelRef | None
    status: int
    error_statuses: tuple[int, ...]
    body_doc_ref: ModelRef | None = None
    extra_headers: tuple[str, ...] = ()
    optional_body: bool = False  # an empty body means the body model's defaults
    also: tuple[Answer, ...] = ()
    reads_body: bool = False  # body, body_doc or a raw body the view reads
    models: str | None = None  # the module model names are looked up in
    text_media: tuple[str, ...] = ()  # other media types the success answer may have (e.g. text/csv), as text

    def _model(self, ref: ModelRef | None) -> type[BaseModel] | None:
        if ref is None or not isinstance(ref, str):
            return ref
        if self.models is None:
            raise RuntimeError(f"{self.method} {self.path} names model {ref!r} but its Routes has no models module")
        model: type[BaseModel] = getattr(importlib.import_module(self.models), ref)
        return model

    @property
    def body(self) -> type[BaseModel] | None:
        return self._model(self.body_ref)

    @property
    def query(self) -> type[BaseModel] | None:
        return self._model(self.query_ref)

    @property
    def response(self) -> type[BaseModel] | None:
        return self._model(self.response_ref)

    @property
    def body_doc(self) -> type[BaseModel] | None:
        return self._model(self.body_doc_ref)

    def all_error_statuses(self) -> tuple[int, ...]:
        """Every error status this route can answer: those the view declares and those the edge adds.

        The edge answers 401 on authenticated routes (403 on unsafe merchant ones: the console cookie's CSRF
        check); 400 (malformed JSON), 413, 415 and 422 on routes with a
        body; 422 on routes with query parameters (400 too when one is a paging cursor); 404 on routes with a
        path id; and 503 everywhere (every route reads storage, if only to authenticate).
        """
        found = set(self.error_statuses) | {503}
        if self.auth != "none":
            found.add(401)
        if self.auth == "merchant" and self.method not in ("GET", "HEAD", "OPTIONS"):
            found.add(403)  # the console's session cookie without its X-CSRF-Token
        if self.reads_body:
            found |= {400, 413, 415, 422}
        if self.query is not None:
            found.add(422)
            if "cursor" in self.query.model_fields:
                found.add(400)
        if "{" in self.path:
            found.add(404)
        return tuple(sorted(found))


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
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise errors.bad_request("Idempotency-Key must be 1 to 255 printable ASCII characters.",
                                     "Idempotency-Key", "1 to 255 printable ASCII characters")
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
    """Pydantic's errors as field problems; a model validator's `blame` names the field it blames."""
    return field_problems(exc, prefix)


def json_response(model: BaseModel, status: int = 200, extra_headers: dict[str, str] | None = None) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", **(extra_headers or {})}
    return Response(body=model.model_dump_json(), status_code=status, headers=headers)


def check_json_content_type(content_type: str | None) -> None:
    """415 unless the body is declared JSON (`application/json` or `application/*+json`, UTF-8 at most)."""
    if content_type is None or not _JSON_TYPE.match(content_type):
        raise DomainError(ErrorKind.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                          "Send the body as application/json (UTF-8).",
                          [errors.FieldProblem("Content-Type", "must be application/json")])


def parse_json_body(raw: bytes | None) -> Any:
    """A request body under the strict JSON rules of `chalicelib.core.json_input` (400 naming the rule)."""
    if raw is None or raw == b"":
        raise errors.bad_request("The request body is empty; a JSON object is required.", "body", "required")
    if len(raw) > MAX_BODY_BYTES:
        raise errors.payload_too_large(MAX_BODY_BYTES)
    return json_input.loads(raw)


def parse_query(params: Any) -> dict[str, str]:
    """Query parameters as {name: value}: a repeated name or text that is not plain Unicode is refused (422)."""
    problems: list[errors.FieldProblem] = []
    out: dict[str, str] = {}
    getlist = getattr(params, "getlist", None)
    for name in list(params or {}):
        values = getlist(name) if callable(getlist) else [params[name]]
        if (reason := json_input.text_problem(name)) is not None:
            problems.append(errors.FieldProblem("query", f"a parameter name {reason}"))
        elif len(values) != 1:
            problems.append(errors.FieldProblem(name, "given more than once"))
        elif (reason := json_input.text_problem(values[0])) is not None:
            problems.append(errors.FieldProblem(name, reason))
        else:
            out[name] = values[0]
    if problems:
        raise errors.validation_failed(problems)
    return out


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


# (route kind, the request's lower-case headers, its method) -> (merchant id, driver id): the Bearer key or token,
# or for merchant routes the console's session cookie (with its CSRF header on unsafe methods).
Authenticator = Callable[[Auth, dict[str, str], str], tuple[str, str]]
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


def _authenticate(kind: Auth, headers: dict[str, str], method: str) -> tuple[str, str]:
    if HOOKS.authenticate is None:
        raise RuntimeError("chalicelib.http.routes.configure() was not called")
    return HOOKS.authenticate(kind, headers, method)


class Routes:
    """A feature's routes on its Blueprint: JSON API views (`route`) and page views (`web`)."""

    def __init__(self, blueprint: Blueprint, models: str | None = None) -> None:
        self.blueprint = blueprint
        self.models = models  # the module whose classes `route` may name as strings (`ModelRef`)

    def current_request(self) -> Request:
        request = self.blueprint.current_request
        assert request is not None
        return request

    def route(self, path: str, method: str, *, summary: str, tag: str, auth: Auth = "merchant",
              body: ModelRef | None = None, query: ModelRef | None = None,
              response: ModelRef | None = None, status: int = 200, errors_: tuple[int, ...] = (),
              body_doc: ModelRef | None = None, extra_headers: tuple[str, ...] = (),
              raw_body: bool = False, optional_body: bool = False, screen_values: bool = True,
              also: tuple[Answer, ...] = (), text_media: tuple[str, ...] = ()
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a JSON API view `view(call: Call, **path_params)`.

        A body (`body`, or `raw_body=True` for views that read it themselves) must be declared JSON (415), at
        most 1 MB (413), and strict JSON (400: see `chalicelib.core.json_input`); its values are screened
        (422 naming the field) unless `screen_values=False`, for a view that screens each item itself so that
        one bad item is refused alone (the ping batch).
        """
        spec = RouteSpec(path, method, summary, tag, auth, body, query, response, status, errors_,
                         body_doc, extra_headers, optional_body, also,
                         reads_body=body is not None or body_doc is not None or raw_body, models=self.models,
                         text_media=text_media)
        SPECS.append(spec)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            def handler(**path_params: str) -> Response:
                return self._handle(spec, view, raw_body, screen_values, path_params)

            handler.__name__ = view.__name__
            self.blueprint.route(path, methods=[method], content_types=["*/*"])(handler)
            return view

        return decorator

    def _handle(self, spec: RouteSpec, view: Callable[..., Any], wants_raw: bool, screen_values: bool,
                path_params: dict[str, str]) -> Response:
        request = self.current_request()
        try:
            call = Call(headers={k.lower(): v for k, v in request.headers.items()})
            if spec.auth != "none":
                call.merchant_id, call.driver_id = _authenticate(spec.auth, call.headers, spec.method)
            raw = request.raw_body or b""
            if isinstance(raw, str):
                raw = raw.encode()
            body_model = spec.body
            if spec.optional_body and body_model is not None and not raw.strip():
                call.body = body_model()  # every field of an optional body has a default
            elif body_model is not None or wants_raw:
                if len(raw) > MAX_BODY_BYTES:
                    raise errors.payload_too_large(MAX_BODY_BYTES)
                check_json_content_type(call.headers.get("content-type"))
                call.raw_body = raw
                data = parse_json_body(raw)
                if screen_values:
                    json_input.refuse_values(data)
                if body_model is not None:
                    try:
                        call.body = body_model.model_validate(data)
                    except ValidationError as exc:
                        raise errors.validation_failed(problems_from(exc)) from None
                else:
                    call.body = data
            query_model = spec.query
            if query_model is not None:
                try:
                    call.query = query_model.model_validate(parse_query(request.query_params))
                except ValidationError as exc:
                    raise errors.validation_failed(problems_from(exc)) from None
            if any(name.endswith("_id") and len(value.encode()) > MAX_PATH_ID_BYTES
                   for name, value in path_params.items()):
                # No id is this long; DynamoDB would refuse the key (a 500) rather than find nothing. (Tokens
                # are checked by their views, which answer every bad token alike.)
                raise errors.not_found("resource")
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
