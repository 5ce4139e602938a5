"""OpenAPI 3.1 document generated from the route registry and its pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.http.models import ErrorResponse
from chalicelib.http.routes import RouteSpec

_ERROR_TEXT = {
    400: "Malformed request (bad JSON, bad cursor)", 401: "Missing or invalid bearer token",
    404: "Not found (or owned by another merchant)", 409: "Conflict with the current state",
    413: "Body over 1 MB", 415: "Body is not JSON", 422: "Invalid fields", 503: "Storage busy; retry",
}


def build_openapi(specs: list[RouteSpec]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorResponse, "serialization")]
    for spec in specs:
        for model, mode in ((spec.body or spec.body_doc, "validation"), (spec.response, "serialization")):
            if model is not None:
                models.append((model, mode))
    keyed, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    refs = {key: schema for key, schema in keyed.items()}
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
        if spec.response is not None:
            operation["responses"][str(spec.status)] = {"description": "OK", "content": {
                "application/json": {"schema": refs[(spec.response, "serialization")]}}}
        for status in spec.error_statuses:
            operation["responses"][str(status)] = {"description": _ERROR_TEXT.get(status, "Error"), "content": {
                "application/json": {"schema": refs[(ErrorResponse, "serialization")]}}}
        if spec.auth != "none":
            operation["security"] = [{"merchantKey" if spec.auth == "merchant" else "driverToken": []}]
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Doorstep API", "version": "0.1.0",
                 "description": "Last-mile delivery tracking: merchants, drivers, shipments, routes, pings."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "merchantKey": {"type": "http", "scheme": "bearer", "description": "Merchant API key"},
                "driverToken": {"type": "http", "scheme": "bearer",
                                "description": "Driver token, or a driver web app link's token"},
            },
        },
    }
