"""The exception queue: list by state (and kind), acknowledge, resolve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalice.app import Blueprint

from chalicelib.core.config import get_settings
from chalicelib.http.routes import Call, Routes
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.exceptions.models import ExceptionOut, ExceptionPage

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.exceptions.models")


def actor(call: Call) -> str:
    """Who acted, as kept on the exception: the API key by its prefix (as the key item keeps it), else the
    console session (its user id joins here once console sessions name one; never from a client header)."""
    authorization = call.headers.get("authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return f"api_key:{token.strip()[:8]}"
    return "console"


@routes.route("/v1/exceptions", "GET", summary="The exception queue in a state (default open), newest first",
              tag="exceptions", query="ExceptionQuery", response="ExceptionPage", errors_=(400, 401, 422))
def list_exceptions(call: Call) -> ExceptionPage:
    from chalicelib.exceptions import service

    return service.list_exceptions(get_repository(), get_settings(), call.merchant_id, call.query)


@routes.route("/v1/exceptions/{exception_id}/acknowledge", "POST", summary="Acknowledge an open exception",
              tag="exceptions", body="ExceptionAction", optional_body=True, response="ExceptionOut",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def acknowledge_exception(call: Call, exception_id: str) -> ExceptionOut:
    from chalicelib.exceptions import service

    return service.acknowledge(get_repository(), call.merchant_id, exception_id, actor(call), call.body)


@routes.route("/v1/exceptions/{exception_id}/resolve", "POST", summary="Resolve an open or acknowledged exception",
              tag="exceptions", body="ExceptionAction", optional_body=True, response="ExceptionOut",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def resolve_exception(call: Call, exception_id: str) -> ExceptionOut:
    from chalicelib.exceptions import service

    return service.resolve(get_repository(), call.merchant_id, exception_id, actor(call), call.body)
