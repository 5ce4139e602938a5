"""The driver web app: signed, expiring, revocable links (made by the merchant), today's route, and the page.

`{DOORSTEP_PUBLIC_BASE_URL}/driver/{token}`: malformed, tampered, expired, revoked and unknown links all get the
same 404 page. The page's script uses the link token as its bearer credential for /v1/driver/*.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.http.routes import Call, Routes, WebCall, html_response, json_response
from chalicelib.storage import get_repository
from chalicelib.web.api import static_base

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    pass

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.driver_app.models")


@routes.route("/v1/drivers/{driver_id}/app-link", "POST", summary="A signed, expiring link to the driver web app "
              "(body optional: expires_in_hours, 1 to 72, default 16)", tag="drivers", body="DriverAppLinkCreate",
              optional_body=True, response="DriverAppLink", status=201, errors_=(400, 401, 404, 413, 415, 422))
def create_driver_app_link(call: Call, driver_id: str) -> Response:
    from chalicelib.driver_app import service

    link = service.create_app_link(get_repository(), get_settings(), call.merchant_id, driver_id, call.body,
                                   datetime.now(UTC))
    return json_response(link, 201, {"Cache-Control": "no-store"})


@routes.route("/v1/drivers/{driver_id}/app-link/revoke", "POST", summary="Revoke every driver web app link issued "
              "so far for this driver (they answer 404 / 401 from now on)", tag="drivers", status=204,
              errors_=(401, 404, 409))
def revoke_driver_app_links(call: Call, driver_id: str) -> Response:
    from chalicelib.driver_app import service

    service.revoke_app_links(get_repository(), call.merchant_id, driver_id)
    return Response(body="", status_code=204)


@routes.route("/v1/driver/route", "GET", summary="The driver's route of today (the merchant's time zone): stops "
              "in order with address, window, ETA, instructions, and which is next", tag="driver", auth="driver",
              response="DriverRouteView", errors_=(401,))
def driver_route(call: Call) -> Response:
    from chalicelib.driver_app import service

    view = service.driver_route(get_repository(), call.merchant_id, call.driver_id, datetime.now(UTC))
    return json_response(view, 200, {"Cache-Control": "no-store"})


@routes.web("/driver/{token}")
def driver_page(call: WebCall, token: str) -> Response:
    from chalicelib.driver_app import service
    from chalicelib.driver_app.page import (
        DriverShell,
        driver_not_found_headers,
        driver_page_headers,
        render_driver_not_found,
        render_driver_page,
    )
    from chalicelib.recipient.rules import first_name
    from chalicelib.shipments.proof import blob_store
    from chalicelib.web.i18n import negotiate

    s = get_settings()
    try:
        context = service.resolve_page(get_repository(), s, token, datetime.now(UTC))
    except DomainError as exc:
        if exc.kind is not ErrorKind.NOT_FOUND:  # e.g. storage unavailable: 503, not "link not valid"
            raise
        html = render_driver_not_found(negotiate(None, call.accept_language), static_base=static_base())
        return html_response(html, 404, driver_not_found_headers())
    shell = DriverShell(token=token, driver_id=context.driver.driver_id,
                        driver_first_name=first_name(context.driver.name), merchant_name=context.branding.name,
                        locale=context.locale(call.accept_language), api_base=s.public_path,
                        brand_colour=context.branding.primary)
    html = render_driver_page(shell, static_base=static_base())
    return html_response(html, 200, driver_page_headers(blob_store().upload_url()))
