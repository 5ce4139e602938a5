"""Delivery analytics: the merchant's figures per day, driver or zone, as JSON or (`Accept: text/csv`) CSV."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.http.negotiation import wants_csv
from chalicelib.http.routes import Call, Routes
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.analytics.models import DeliveriesPage

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.analytics.models")


@routes.route("/v1/analytics/deliveries", "GET",
              summary="Delivery figures per day, driver or zone over a range of days (JSON, or CSV with "
                      "Accept: text/csv)", tag="analytics", query="DeliveriesQuery", response="DeliveriesPage",
              errors_=(400, 401, 422), extra_headers=("Accept",), text_media=("text/csv",))
def deliveries(call: Call) -> DeliveriesPage | Response:
    from chalicelib.analytics import service

    page = service.deliveries(get_repository(), get_settings(), call.merchant_id, call.query)
    if not wants_csv(call.headers):
        return page
    name = f"deliveries_{page.group_by}_{page.date_from}_{page.date_to}.csv"
    headers: dict[str, str | list[str]] = {"Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
                                           "Content-Disposition": f'attachment; filename="{name}"'}
    if page.next_cursor:
        headers["X-Next-Cursor"] = page.next_cursor
    return Response(body=service.deliveries_csv(page), status_code=200, headers=headers)
