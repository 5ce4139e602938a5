"""OpenAPI 3.1 document generated from the route registry and its pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.http.models import ErrorResponse
from chalicelib.http.routes import RouteSpec

_ERROR_TEXT = {
    400: "Malformed request: not JSON, a byte order mark, a member name twice, nested deeper than 32 levels, "
         "a bad cursor or Idempotency-Key",
    401: "Missing or invalid bearer token", 404: "Not found (or owned by another merchant)",
    403: "Forbidden: with the console's session cookie, an unsafe method without the session's X-CSRF-Token",
    409: "Conflict with the current state", 413: "Body over 1 MB",
    415: "Body not declared as application/json (UTF-8)",
    422: "Invalid fields, each named: out of range (also numbers DynamoDB cannot store, integers beyond 2^53, "
         "times outside 1970-2099), text with control characters or lone surrogates, a parameter given twice",
    503: "Storage busy or timing out; retry after Retry-After seconds",
}
_HEADER_TEXT = {
    "Location": "The created resource", "Idempotent-Replayed": "true: the answer of an earlier identical request",
    "Retry-After": "Seconds to wait before retrying", "WWW-Authenticate": "The credential to present",
    "Allow": "The methods the path answers", "Cache-Control": "Caching policy",
}


def _headers(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {"description": _HEADER_TEXT.get(name, name), "schema": {"type": "string"}} for name in names}


def build_openapi(specs: list[RouteSpec]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorResponse, "serialization")]
    for spec in specs:
        for model, mode in ((spec.body or spec.body_doc, "validation"), (spec.response, "serialization")):
            if model is not None:
                models.append((model, mode))
    keyed, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    refs = {key: schema for key, schema in keyed.items()}
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        operation: dict[str, Any] = {
            "summary": spec.summary, "tags": [spec.tag],
            "operationId": re.sub(r"\W+", "_", f"{spec.method.lower()}_{spec.path}").strip("_"),
            "responses": {},
        }
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in re.findall(r"{(\w+)}", spec.path)]
        if spec.query is not None:
            schema = spec.query.model_json_schema(ref_template="#/components/schemas/{model}")
            for def_name, definition in schema.get("$defs", {}).items():
                schemas.setdefault(def_name, definition)  # e.g. an enum only a query parameter uses
            for name, prop in schema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                               "schema": prop})
        params += [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                   for h in spec.extra_headers]
        if params:
            operation["parameters"] = params
        body_model = spec.body or spec.body_doc
        if body_model is not None:
            operation["requestBody"] = {"required": not spec.optional_body, "content": {
                "application/json": {"schema": refs[(body_model, "validation")]}}}
        answers: list[tuple[int, str, tuple[str, ...]]] = [(spec.status, "Created" if spec.status == 201 else "OK", ())]
        answers += [(a.status, a.description, a.headers) for a in spec.also]
        for status, description, headers in answers:
            answer: dict[str, Any] = {"description": description}
            if spec.response is not None and status not in (204, 304):  # 304 Not Modified has no body either
                answer["content"] = {"application/json": {"schema": refs[(spec.response, "serialization")]}}
                answer["content"].update({media: {"schema": {"type": "string"}} for media in spec.text_media})
            elif status == 204:
                answer["description"] = "No content"
            if headers:
                answer["headers"] = _headers(headers)
            operation["responses"][str(status)] = answer
        for status in spec.all_error_statuses():
            error: dict[str, Any] = {"description": _ERROR_TEXT.get(status, "Error"), "content": {
                "application/json": {"schema": refs[(ErrorResponse, "serialization")]}}}
            error_headers = {401: ("WWW-Authenticate",), 503: ("Retry-After",)}.get(status, ())
            if error_headers:
                error["headers"] = _headers(error_headers)
            operation["responses"][str(status)] = error
        if spec.auth != "none":
            # A merchant route takes the API key or, from the dispatcher console, its session cookie.
            operation["security"] = [{"merchantKey": []}, {"consoleSession": []}] if spec.auth == "merchant" \
                else [{"driverToken": []}]
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Doorstep API", "version": "0.1.0",
                 "description": "Last-mile delivery tracking: merchants, drivers, shipments, routes, pings."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "merchantKey": {"type": "http", "scheme": "bearer", "description": "Merchant API key"},
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": "doorstep_console",
                                   "description": "The dispatcher console's session (POST /console/session); "
                                                  "unsafe methods also need the X-CSRF-Token header"},
                "driverToken": {"type": "http", "scheme": "bearer",
                                "description": "Driver token, or a driver web app link's token"},
            },
        },
    }
