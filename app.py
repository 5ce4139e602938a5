"""Doorstep HTTP API: thin routes that parse, call a service, and shape the answer.

Storage (pynamodb) and the services are imported on first use, so a cold
start pays only for what the first request needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

from chalice.app import Chalice, Rate, Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib import errors
from chalicelib.domain.geo import MAX_NEARBY_RADIUS_M
from chalicelib.domain.lifecycle import ShipmentStatus
from chalicelib.http import Api, Auth, Call, WebCall, html_response, json_response, normalize_chalice_error
from chalicelib.models import (
    DriverAppLink,
    DriverAppLinkCreate,
    DriverCreate,
    DriverOut,
    DriverPage,
    DriverRouteView,
    DriverStatusResult,
    DriverStatusUpdate,
    DriverToken,
    DriverWithToken,
    MerchantSettings,
    NearbyDrivers,
    PingBatch,
    PingBatchResult,
    Position,
    ProofUpload,
    ProofUploadRequest,
    ProofView,
    RouteCreate,
    RouteOut,
    ShipmentCreate,
    ShipmentOut,
    ShipmentPage,
    Timeline,
    TrackingLink,
    TrackingView,
    WebhookDeliveryDetail,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    WebhookDeliveryQuery,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookReplayRange,
    WebhookReplayResult,
    WebhookResumeResult,
    ZoneCreate,
    ZoneEvents,
    ZoneOut,
    ZonePage,
)
from chalicelib.observability import MetricUnit, flush_metrics, flushes_metrics, logger, metrics

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.storage.repository import Repository
    from chalicelib.tracking import Link

# powertools Logger owns the "doorstep" logger (the same one as app.log), so Chalice must not configure it.
app = Chalice(app_name="doorstep", configure_logs=False)
# Every answer is text (JSON, HTML, CSS, JS as str bodies), so Chalice's default binary types stay as they are:
# no text type may be binary, or API Gateway would base64 it. API Gateway gzips answers of at least
# `minimum_compression_size` bytes (.chalice/config.json) for clients that accept it, Leaflet included.


@cache
def services() -> ModuleType:
    from chalicelib import services as module

    return module


@cache
def repo() -> Repository:
    from chalicelib.storage.repository import Repository

    return Repository()


def settings() -> Settings:
    from chalicelib.config import get_settings

    return get_settings()


def authenticate(kind: Auth, authorization: str | None) -> tuple[str, str]:
    if kind == "driver":  # the driver's own token, or a driver app link
        return services().authenticate_driver(repo(), authorization, settings())  # type: ignore[no-any-return]
    return services().authenticate_merchant(repo(), authorization), ""


def static_base() -> str:
    return f"{settings().public_path}/static"


api = Api(app, authenticate, static_base)


@app.middleware("http")
def request_context(event: Any, get_response: Any) -> Response:
    started = time.perf_counter()
    logger.set_correlation_id((event.context or {}).get("requestId"))
    try:
        response = normalize_chalice_error(get_response(event))
    finally:
        flush_metrics()
    logger.info("request", extra={"method": event.method, "route": (event.context or {}).get("resourcePath"),
                                  "status": response.status_code,
                                  "latency_ms": round((time.perf_counter() - started) * 1000, 1)})
    return response


# --- query models --------------------------------------------------------------


class Paging(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, Field(max_length=2000)] | None = None


class ShipmentQuery(Paging):
    status: ShipmentStatus | None = None
    date_from: date | None = None
    date_to: date | None = None


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class NearbyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    lng: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
    radius_m: Annotated[float, Field(gt=0, le=MAX_NEARBY_RADIUS_M, allow_inf_nan=False)] = 1000
    limit: Annotated[int, Field(ge=1, le=100)] = 20


# --- documentation -----------------------------------------------------------------


@app.route("/openapi.json", methods=["GET"])
def openapi_document() -> Response:
    from chalicelib.openapi import build_openapi

    return Response(body=build_openapi(api.specs), headers={"Content-Type": "application/json",
                                                            "Cache-Control": "public, max-age=300"})


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


# --- drivers -------------------------------------------------------------------------


@api.route("/v1/drivers", "POST", summary="Create a driver (returns its token once)", tag="drivers",
           body=DriverCreate, response=DriverWithToken, status=201, errors_=(400, 401, 413, 415, 422))
def create_driver(call: Call) -> DriverWithToken:
    return services().create_driver(repo(), call.merchant_id, call.body)  # type: ignore[no-any-return]


@api.route("/v1/drivers", "GET", summary="List drivers", tag="drivers", query=Paging, response=DriverPage,
           errors_=(400, 401, 422))
def list_drivers(call: Call) -> DriverPage:
    return services().list_drivers(repo(), settings(), call.merchant_id,  # type: ignore[no-any-return]
                                   call.query.limit, call.query.cursor)


@api.route("/v1/drivers/nearby", "GET", summary="Drivers within radius_m of a point, nearest first",
           tag="drivers", query=NearbyQuery, response=NearbyDrivers, errors_=(401, 422))
def nearby_drivers(call: Call) -> NearbyDrivers:
    q = call.query
    return services().nearby_drivers(repo(), call.merchant_id, q.lat, q.lng,  # type: ignore[no-any-return]
                                     q.radius_m, q.limit)


@api.route("/v1/drivers/{driver_id}", "GET", summary="Get a driver", tag="drivers", response=DriverOut,
           errors_=(401, 404))
def get_driver(call: Call, driver_id: str) -> DriverOut:
    return services().get_driver(repo(), call.merchant_id, driver_id)  # type: ignore[no-any-return]


@api.route("/v1/drivers/{driver_id}/token", "POST", summary="Rotate a driver's token", tag="drivers",
           response=DriverToken, errors_=(401, 404))
def rotate_driver_token(call: Call, driver_id: str) -> DriverToken:
    return services().rotate_driver_token(repo(), call.merchant_id, driver_id)  # type: ignore[no-any-return]


@cache
def driver_app() -> ModuleType:
    from chalicelib import driver_app as module

    return module


@api.route("/v1/drivers/{driver_id}/app-link", "POST", summary="A signed, expiring link to the driver web app "
           "(body optional: expires_in_hours, 1 to 72, default 16)", tag="drivers", body=DriverAppLinkCreate,
           optional_body=True, response=DriverAppLink, status=201, errors_=(400, 401, 404, 413, 415, 422))
def create_driver_app_link(call: Call, driver_id: str) -> Response:
    link = driver_app().create_app_link(repo(), settings(), call.merchant_id, driver_id, call.body, datetime.now(UTC))
    return json_response(link, 201, {"Cache-Control": "no-store"})


@api.route("/v1/drivers/{driver_id}/app-link/revoke", "POST", summary="Revoke every driver web app link issued "
           "so far for this driver (they answer 404 / 401 from now on)", tag="drivers", status=204,
           errors_=(401, 404, 409))
def revoke_driver_app_links(call: Call, driver_id: str) -> Response:
    driver_app().revoke_app_links(repo(), call.merchant_id, driver_id)
    return Response(body="", status_code=204)


@api.route("/v1/drivers/{driver_id}/position", "GET", summary="A driver's latest position", tag="drivers",
           response=Position, errors_=(401, 404))
def driver_position(call: Call, driver_id: str) -> Position:
    return services().driver_position(repo(), call.merchant_id, driver_id)  # type: ignore[no-any-return]


@api.route("/v1/drivers/{driver_id}/zone-events", "GET", summary="A driver's zone enter/exit/dwell events, newest "
           "first", tag="drivers", query=EventsQuery, response=ZoneEvents, errors_=(401, 404, 422))
def driver_zone_events(call: Call, driver_id: str) -> ZoneEvents:
    return services().driver_zone_events(repo(), call.merchant_id, driver_id,  # type: ignore[no-any-return]
                                         call.query.limit)


# --- merchant settings and zones -------------------------------------------------------


@api.route("/v1/settings", "GET", summary="The merchant's geofence, approach and tracking page settings",
           tag="settings", response=MerchantSettings, errors_=(401,))
def get_merchant_settings(call: Call) -> MerchantSettings:
    return services().merchant_settings(repo(), call.merchant_id)  # type: ignore[no-any-return]


@api.route("/v1/settings", "PUT", summary="Replace the merchant's settings (omitted fields take defaults)",
           tag="settings", body=MerchantSettings, response=MerchantSettings, errors_=(400, 401, 413, 415, 422))
def put_merchant_settings(call: Call) -> MerchantSettings:
    return services().replace_merchant_settings(repo(), call.merchant_id, call.body)  # type: ignore[no-any-return]


@app.route("/v1/notifications/settings", methods=["GET"])
def get_notification_settings() -> Response:
    """The notification policy and template overrides (documented in the README; shapes are the domain's)."""
    from chalicelib.http import error_response

    try:
        merchant_id, _ = authenticate("merchant", app.current_request.headers.get("authorization")
                                      if app.current_request else None)
    except errors.ApiError as exc:
        return error_response(exc)
    return Response(body=services().notification_settings(repo(), merchant_id),
                    headers={"Content-Type": "application/json"})


@app.route("/v1/notifications/settings", methods=["PUT"], content_types=["application/json"])
def put_notification_settings() -> Response:
    from chalicelib.http import error_response

    request = app.current_request
    assert request is not None
    try:
        merchant_id, _ = authenticate("merchant", request.headers.get("authorization"))
        try:
            body = request.json_body
        except Exception:  # chalice raises BadRequestError on invalid JSON
            raise errors.bad_request("The body is not valid JSON.", "body", "invalid JSON") from None
        stored = services().replace_notification_settings(repo(), merchant_id, body)
    except errors.ApiError as exc:
        return error_response(exc)
    return Response(body=stored, headers={"Content-Type": "application/json"})


@api.route("/v1/zones", "POST", summary="Create a polygon zone (depot, restricted area) from GeoJSON", tag="zones",
           body=ZoneCreate, response=ZoneOut, status=201, errors_=(400, 401, 413, 415, 422))
def create_zone(call: Call) -> Response:
    zone = services().create_zone(repo(), call.merchant_id, call.body)
    return json_response(zone, 201, {"Location": f"/v1/zones/{zone.id}"})


@api.route("/v1/zones", "GET", summary="List zones", tag="zones", query=Paging, response=ZonePage,
           errors_=(400, 401, 422))
def list_zones(call: Call) -> ZonePage:
    return services().list_zones(repo(), settings(), call.merchant_id,  # type: ignore[no-any-return]
                                 call.query.limit, call.query.cursor)


@api.route("/v1/zones/{zone_id}", "GET", summary="Get a zone", tag="zones", response=ZoneOut, errors_=(401, 404))
def get_zone(call: Call, zone_id: str) -> ZoneOut:
    return services().get_zone(repo(), call.merchant_id, zone_id)  # type: ignore[no-any-return]


@api.route("/v1/zones/{zone_id}", "DELETE", summary="Delete a zone", tag="zones", status=204, errors_=(401, 404))
def delete_zone(call: Call, zone_id: str) -> Response:
    services().delete_zone(repo(), call.merchant_id, zone_id)
    return Response(body="", status_code=204)


# --- shipments -----------------------------------------------------------------------


@api.route("/v1/shipments", "POST", summary="Create a shipment (idempotent with Idempotency-Key)",
           tag="shipments", body=ShipmentCreate, response=ShipmentOut, status=201,
           errors_=(400, 401, 413, 415, 422), extra_headers=("Idempotency-Key",))
def create_shipment(call: Call) -> Response:
    key = call.idempotency_key()
    shipment, created = services().create_shipment(repo(), settings(), call.merchant_id, call.body, key,
                                                   call.raw_body)
    headers = {"Location": f"/v1/shipments/{shipment.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(shipment, 201 if created else 200, headers)


@api.route("/v1/shipments", "GET", summary="List shipments by status and date", tag="shipments",
           query=ShipmentQuery, response=ShipmentPage, errors_=(400, 401, 422))
def list_shipments(call: Call) -> ShipmentPage:
    q = call.query
    return services().list_shipments(repo(), settings(), call.merchant_id,  # type: ignore[no-any-return]
                                     status=q.status, date_from=q.date_from, date_to=q.date_to, limit=q.limit,
                                     cursor=q.cursor)


@api.route("/v1/shipments/{shipment_id}", "GET", summary="Get a shipment", tag="shipments",
           response=ShipmentOut, errors_=(401, 404))
def get_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    return services().get_shipment(repo(), settings(), call.merchant_id, shipment_id)  # type: ignore[no-any-return]


@api.route("/v1/shipments/{shipment_id}/cancel", "POST", summary="Cancel a shipment", tag="shipments",
           response=ShipmentOut, errors_=(401, 404, 409))
def cancel_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    return services().cancel_shipment(repo(), settings(), call.merchant_id,  # type: ignore[no-any-return]
                                      shipment_id)


@api.route("/v1/shipments/{shipment_id}/timeline", "GET", summary="A shipment's event timeline",
           tag="shipments", response=Timeline, errors_=(401, 404))
def shipment_timeline(call: Call, shipment_id: str) -> Timeline:
    return services().timeline(repo(), call.merchant_id, shipment_id)  # type: ignore[no-any-return]


@api.route("/v1/shipments/{shipment_id}/tracking-link/revoke", "POST",
           summary="Revoke the tracking link and issue a new one (the old link answers 404)", tag="shipments",
           response=TrackingLink, errors_=(401, 404, 409))
def revoke_tracking_link(call: Call, shipment_id: str) -> TrackingLink:
    return services().revoke_tracking_link(repo(), settings(), call.merchant_id,  # type: ignore[no-any-return]
                                           shipment_id)


# --- routes --------------------------------------------------------------------------


@api.route("/v1/routes", "POST", summary="Create a route: a driver's ordered stops for a day", tag="routes",
           body=RouteCreate, response=RouteOut, status=201, errors_=(400, 401, 404, 409, 413, 415, 422))
def create_route(call: Call) -> RouteOut:
    return services().create_route(repo(), call.merchant_id, call.body)  # type: ignore[no-any-return]


@api.route("/v1/routes/{route_id}", "GET", summary="Get a route", tag="routes", response=RouteOut,
           errors_=(401, 404))
def get_route(call: Call, route_id: str) -> RouteOut:
    return services().get_route(repo(), call.merchant_id, route_id)  # type: ignore[no-any-return]


@api.route("/v1/routes/{route_id}/start", "POST", summary="Start a route: its shipments go out for delivery",
           tag="routes", response=RouteOut, errors_=(401, 404, 409))
def start_route(call: Call, route_id: str) -> RouteOut:
    return services().start_route(repo(), call.merchant_id, route_id)  # type: ignore[no-any-return]


# --- driver pings --------------------------------------------------------------------


@api.route("/v1/driver/pings", "POST", summary="Post 1 to 500 location fixes (idempotent per fix time)",
           tag="driver", auth="driver", response=PingBatchResult, body_doc=PingBatch, raw_body=True,
           errors_=(400, 401, 413, 415, 422, 503))
def post_pings(call: Call) -> PingBatchResult:
    data = call.body
    items = data.get("pings") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise errors.validation_failed([errors.FieldProblem("pings", "a list of 1 to 500 pings is required")])
    if not 1 <= len(items) <= 500:
        raise errors.validation_failed([errors.FieldProblem("pings", f"must hold 1 to 500 items, got {len(items)}")])
    from chalicelib.storage.repository import StorageUnavailable

    try:
        result: PingBatchResult = services().ingest_pings(repo(), settings(), call.merchant_id, call.driver_id,
                                                          items, int(time.time() * 1000))
    except StorageUnavailable:
        raise errors.service_unavailable("Storage is busy; retry the same batch, it is idempotent.") from None
    metrics.add_metric(name="PingsAccepted", unit=MetricUnit.Count, value=result.accepted)
    metrics.add_metric(name="PingsRejected", unit=MetricUnit.Count, value=result.rejected)
    metrics.add_metric(name="PingsDuplicate", unit=MetricUnit.Count, value=result.duplicates)
    return result


@api.route("/v1/driver/shipments/{shipment_id}/status", "POST",
           summary="Report arrived / delivered / failed, stamped with when it happened", tag="driver",
           auth="driver", body=DriverStatusUpdate, response=DriverStatusResult,
           errors_=(400, 401, 404, 409, 413, 415, 422), extra_headers=("Idempotency-Key",))
def driver_status(call: Call, shipment_id: str) -> DriverStatusResult:
    key = call.idempotency_key()
    return services().driver_status_update(repo(), call.merchant_id, call.driver_id,  # type: ignore[no-any-return]
                                           shipment_id, call.body, key, call.raw_body, datetime.now(UTC))


@api.route("/v1/driver/shipments/{shipment_id}/proof-uploads", "POST", summary="A presigned upload for a proof "
           "of delivery photo or signature (JPEG, PNG or WebP, at most 10 MB, valid 5 minutes)", tag="driver",
           auth="driver", body=ProofUploadRequest, response=ProofUpload, status=201,
           errors_=(400, 401, 404, 409, 413, 415, 422))
def proof_upload(call: Call, shipment_id: str) -> Response:
    upload = services().proof_upload(repo(), call.merchant_id, call.driver_id, shipment_id, call.body)
    return json_response(upload, 201)


@api.route("/v1/shipments/{shipment_id}/proof", "GET", summary="Proof of delivery, with short-lived image links",
           tag="shipments", response=ProofView, errors_=(401, 404))
def shipment_proof(call: Call, shipment_id: str) -> ProofView:
    return services().shipment_proof(repo(), call.merchant_id, shipment_id)  # type: ignore[no-any-return]


@api.route("/v1/driver/route", "GET", summary="The driver's route of today (the merchant's time zone): stops in "
           "order with address, window, ETA, instructions, and which is next", tag="driver", auth="driver",
           response=DriverRouteView, errors_=(401,))
def driver_route(call: Call) -> Response:
    view = driver_app().driver_route(repo(), call.merchant_id, call.driver_id, datetime.now(UTC))
    return json_response(view, 200, {"Cache-Control": "no-store"})


# --- off-the-shelf tracker apps --------------------------------------------------------
# Their protocols are fixed by the apps (query strings, forms, Basic auth, `[]` answers), so these
# routes sit outside the JSON API registry; both translate into the same ingest as /v1/driver/pings.

_TRACKER_TYPES = ["application/x-www-form-urlencoded", "application/json", "text/plain", "application/octet-stream"]


class DeviceRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    device_id: Annotated[str, Field(min_length=4, max_length=256, pattern=r"^[\x21-\x7e]+$")]


@api.route("/v1/drivers/{driver_id}/device-id", "PUT", summary="Register a tracker app's device id for a driver "
           "(OsmAnd / Traccar Client)", tag="drivers", body=DeviceRegistration, status=204,
           errors_=(400, 401, 404, 409, 415, 422))
def register_device(call: Call, driver_id: str) -> Response:
    services().register_device(repo(), call.merchant_id, driver_id, call.body.device_id)
    return Response(body="", status_code=204)


@app.route("/osmand", methods=["GET", "POST"], content_types=_TRACKER_TYPES)
def osmand_tracker() -> Response:
    """OsmAnd / Traccar Client: `id` is the driver's token or a device id the merchant registered."""
    from chalicelib.adapters import traccar
    from chalicelib.http import error_response

    request = app.current_request
    assert request is not None
    now = int(time.time() * 1000)
    try:
        parsed = traccar.parse_request(request.method, request.query_params or {},
                                       request.headers.get("content-type"), request.raw_body, now_ms=now)
        found = services().driver_for_device(repo(), parsed.device_id)
        if found is None:
            raise traccar.unknown_device(parsed)
        if parsed.pings:
            result = services().ingest_pings(repo(), settings(), found[0], found[1], parsed.pings, now)
            metrics.add_metric(name="PingsAccepted", unit=MetricUnit.Count, value=result.accepted)
    except errors.ApiError as exc:
        return error_response(exc)
    # 200 even when screening refused the fix: otherwise the app would resend it forever, ahead of newer ones.
    return Response(body=traccar.SUCCESS_BODY, status_code=traccar.SUCCESS_STATUS)


@app.route("/owntracks", methods=["POST"], content_types=_TRACKER_TYPES)
def owntracks_tracker() -> Response:
    """OwnTracks HTTP mode: Basic auth with the driver's id as user and the driver's token as password."""
    from chalicelib.adapters import owntracks
    from chalicelib.domain.security import hash_secret
    from chalicelib.http import error_response

    request = app.current_request
    assert request is not None
    now = int(time.time() * 1000)
    try:
        credentials = owntracks.parse_basic_auth(request.headers.get("authorization"))
        found = repo().driver_for_token(hash_secret(credentials[1])) if credentials else None
        if credentials is None or found is None or found[1] != credentials[0]:
            raise owntracks.unauthorized()
        message = owntracks.parse_message(request.raw_body, received_ms=now)
        if isinstance(message, owntracks.Location):
            services().ingest_pings(repo(), settings(), found[0], found[1], [message.ping], now)
        elif isinstance(message, owntracks.Transition):
            services().record_driver_transition(repo(), found[0], found[1], message.event, message.region,
                                                message.region_id, message.occurred_ms, message.lat, message.lng)
    except errors.ApiError as exc:
        return error_response(exc)
    return Response(body=owntracks.RESPONSE_BODY, status_code=owntracks.RESPONSE_STATUS,
                    headers={"Content-Type": owntracks.RESPONSE_CONTENT_TYPE})


# --- recipient tracking --------------------------------------------------------------
# The tracking link is `{DOORSTEP_PUBLIC_BASE_URL}/track/{token}`: an HTML page (readable without JavaScript)
# whose script polls `/track/{token}/status`. Unknown, malformed, revoked and expired tokens all get the
# same 404 page after the same reads (chalicelib.tracking.resolve).


@cache
def tracking() -> ModuleType:
    from chalicelib import tracking as module

    return module


def resolve_link(token: str, now: datetime) -> Link:
    return tracking().resolve(repo(), token, now)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PagePaths:
    page: str
    status: str
    theme: str
    static: str


def page_paths(token: str) -> PagePaths:
    """The page's own links, under the path of the public base URL (e.g. the API Gateway stage)."""
    page = f"{settings().public_path}/track/{token}"
    return PagePaths(page, f"{page}/status", f"{page}/theme.css", static_base())


@api.route("/v1/track/{token}", "GET", summary="Recipient tracking view (JSON)", tag="tracking", auth="none",
           response=TrackingView, errors_=(404,))
def track_json(call: Call, token: str) -> Response:
    view = tracking().tracking_view(repo(), resolve_link(token, datetime.now(UTC)))
    return json_response(view, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                     "X-Robots-Tag": "noindex, nofollow"})


@api.web("/track/{token}")
def tracking_page(call: WebCall, token: str) -> Response:
    from chalicelib.web import csrf_token, page_headers, render_tracking_page

    s, now = settings(), datetime.now(UTC)
    link = resolve_link(token, now)
    page = tracking().tracking_page(repo(), link, now, call.accept_language)
    branding = tracking().branding(link)
    paths = page_paths(token)
    html = render_tracking_page(page, branding, tile_url=s.tile_url, csrf_token=csrf_token(s.token_secret, token),
                                status_url=paths.status, action_base=paths.page, theme_href=paths.theme,
                                static_base=paths.static, tile_attribution=s.tile_attribution,
                                poll_seconds=s.tracking_poll_seconds)
    return html_response(html, 200, page_headers(page, branding, s.tile_url))


@api.web("/track/{token}/status", errors_as="json")
def tracking_status(call: WebCall, token: str) -> Response:
    """The live part of the page as JSON; 304 when the If-None-Match ETag still holds."""
    from chalicelib.web import etag_matches, status_headers, status_json, status_payload

    now = datetime.now(UTC)
    payload = status_payload(tracking().tracking_page(repo(), resolve_link(token, now), now, call.accept_language))
    headers: dict[str, str | list[str]] = dict(status_headers(payload))
    if etag_matches(call.headers.get("if-none-match"), str(headers["ETag"])):
        headers.pop("Content-Type")
        return Response(body="", status_code=304, headers=headers)
    return Response(body=status_json(payload), status_code=200, headers=headers)


@api.web("/track/{token}/theme.css")
def tracking_theme(call: WebCall, token: str) -> Response:
    from chalicelib.web import render_theme_css, theme_headers

    branding = tracking().branding(resolve_link(token, datetime.now(UTC)))
    return html_response(render_theme_css(branding), 200, theme_headers())


@api.web("/static/{name}")
def static_file(call: WebCall, name: str) -> Response:
    """The page's scripts and stylesheets (a fixed whitelist), cached for a year: links carry ?v=<hash>."""
    from chalicelib.web import static_asset, static_headers

    found = static_asset(name)
    if found is None:
        raise errors.not_found("File")
    body, content_type = found
    return html_response(body.decode("utf-8"), 200, static_headers(content_type))


# --- driver web app --------------------------------------------------------------------
# `{DOORSTEP_PUBLIC_BASE_URL}/driver/{token}`: a signed, expiring, revocable link the merchant makes
# (POST /v1/drivers/{id}/app-link). Malformed, tampered, expired, revoked and unknown links all get the
# same 404 page. The page's script uses the link token as its bearer credential for /v1/driver/*.


@api.web("/driver/{token}")
def driver_page(call: WebCall, token: str) -> Response:
    from chalicelib.domain.tracking import first_name
    from chalicelib.web import negotiate
    from chalicelib.web.driver import (
        DriverShell,
        driver_not_found_headers,
        driver_page_headers,
        render_driver_not_found,
        render_driver_page,
    )

    s = settings()
    try:
        context = driver_app().resolve_page(repo(), s, token, datetime.now(UTC))
    except errors.ApiError:
        html = render_driver_not_found(negotiate(None, call.accept_language), static_base=static_base())
        return html_response(html, 404, driver_not_found_headers())
    shell = DriverShell(token=token, driver_id=context.driver.driver_id,
                        driver_first_name=first_name(context.driver.name), merchant_name=context.merchant_name,
                        locale=context.locale(call.accept_language), api_base=s.public_path)
    html = render_driver_page(shell, static_base=static_base())
    return html_response(html, 200, driver_page_headers(services().blob_store().upload_url()))


FORM_ERROR_STATUS = {"form_expired": 403, "invalid_input": 422, "not_available": 409}


def form_post(call: WebCall, token: str, act: Callable[[Link, datetime, str], None]) -> Response:
    """The shared part of the page's form posts: resolve the link (else the 404 page), refuse cross-site posts,
    run `act(link, now, secret)` (which checks the CSRF token as it parses), and answer 303 back to the page,
    or a message page in the recipient's language with a 4xx status."""
    from chalicelib.web import (
        MESSAGE_KINDS,
        content_security_policy,
        is_cross_site,
        not_found_headers,
        render_message,
    )

    s, now = settings(), datetime.now(UTC)
    link = resolve_link(token, now)
    try:
        if is_cross_site(call.headers, s.public_origin):
            raise errors.ApiError(403, "form_expired", "Cross-site form posts are refused.")
        act(link, now, s.token_secret)
    except errors.ApiError as exc:
        paths = page_paths(token)
        branding = tracking().branding(link)
        kind = exc.code if exc.code in MESSAGE_KINDS else "invalid_input"
        html = render_message(kind, tracking().locale(link, call.accept_language), back_href=paths.page,
                              branding=branding, theme_href=paths.theme, static_base=paths.static)
        headers = {**not_found_headers(), "Content-Security-Policy": content_security_policy(None, branding.logo_url)}
        return html_response(html, exc.status, headers)
    return Response(body="", status_code=303, headers={"Location": f"{s.public_base_url}/track/{token}",
                                                       "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def form_error(kind: str) -> errors.ApiError:
    return errors.ApiError(FORM_ERROR_STATUS.get(kind, 422), kind, f"The form was refused: {kind}.")


@api.web("/track/{token}/instructions", "POST", form=True)
def post_instructions(call: WebCall, token: str) -> Response:
    from chalicelib.web import FormError, parse_instructions

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_instructions(call.form, secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        tracking().save_instructions(repo(), link, gate_code=form.gate_code, leave_at_door=form.leave_at_door,
                                     note=form.note, now=now)

    return form_post(call, token, act)


@api.web("/track/{token}/reschedule", "POST", form=True)
def post_reschedule(call: WebCall, token: str) -> Response:
    from chalicelib.web import FormError, parse_reschedule

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_reschedule(call.form, tracking().offered_ids(link, now), secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        tracking().reschedule(repo(), link, form.option_id, now)

    return form_post(call, token, act)


@api.web("/track/{token}/rating", "POST", form=True)
def post_rating(call: WebCall, token: str) -> Response:
    from chalicelib.web import FormError, parse_rating

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_rating(call.form, secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        tracking().rate(repo(), link, score=form.rating, comment=form.comment, now=now)

    return form_post(call, token, act)


# --- merchant webhooks ------------------------------------------------------------------
# Delivery itself runs in the webhook_sender (stream) and webhook_retries (schedule) functions below;
# these routes configure the endpoint and read or replay the delivery log.


@cache
def webhooks() -> ModuleType:
    from chalicelib import webhooks as module

    return module


@api.route("/v1/webhook", "GET", summary="The webhook endpoint (the secret is never shown again, only its prefix)",
           tag="webhooks", response=WebhookEndpointOut, errors_=(401, 404))
def get_webhook(call: Call) -> WebhookEndpointOut:
    return webhooks().get_endpoint(repo(), call.merchant_id)  # type: ignore[no-any-return]


@api.route("/v1/webhook", "PUT", summary="Create (201, with the signing secret once) or replace the webhook endpoint",
           tag="webhooks", body=WebhookEndpointIn, response=WebhookEndpointOut, errors_=(400, 401, 413, 415, 422))
def put_webhook(call: Call) -> Response:
    endpoint, created = webhooks().put_endpoint(repo(), settings(), call.merchant_id, call.body)
    return json_response(endpoint, 201 if created else 200)


@api.route("/v1/webhook", "DELETE", summary="Delete the webhook endpoint (the delivery log stays)", tag="webhooks",
           status=204, errors_=(401, 404))
def delete_webhook(call: Call) -> Response:
    webhooks().delete_endpoint(repo(), call.merchant_id)
    return Response(body="", status_code=204)


@api.route("/v1/webhook/secret", "POST", summary="Rotate the signing secret (the old one also signs for 24 h)",
           tag="webhooks", response=WebhookEndpointOut, errors_=(401, 404, 409))
def rotate_webhook_secret(call: Call) -> WebhookEndpointOut:
    return webhooks().rotate_secret(repo(), call.merchant_id)  # type: ignore[no-any-return]


@api.route("/v1/webhook/resume", "POST", summary="Un-pause the endpoint and send its held deliveries",
           tag="webhooks", response=WebhookResumeResult, errors_=(401, 404))
def resume_webhook(call: Call) -> WebhookResumeResult:
    return webhooks().resume(repo(), call.merchant_id)  # type: ignore[no-any-return]


@api.route("/v1/webhook/deliveries", "GET", summary="The delivery log, newest first", tag="webhooks",
           query=WebhookDeliveryQuery, response=WebhookDeliveryPage, errors_=(400, 401, 422))
def list_webhook_deliveries(call: Call) -> WebhookDeliveryPage:
    return webhooks().list_deliveries(repo(), settings(), call.merchant_id,  # type: ignore[no-any-return]
                                      call.query)


@api.route("/v1/webhook/deliveries/{delivery_id}", "GET", summary="One delivery with its attempts and payload",
           tag="webhooks", response=WebhookDeliveryDetail, errors_=(401, 404))
def get_webhook_delivery(call: Call, delivery_id: str) -> WebhookDeliveryDetail:
    return webhooks().get_delivery(repo(), call.merchant_id, delivery_id)  # type: ignore[no-any-return]


@api.route("/v1/webhook/deliveries/{delivery_id}/replay", "POST", summary="Send a delivery again (same event id, "
           "fresh signature) within a minute", tag="webhooks", response=WebhookDeliveryOut, status=202,
           errors_=(401, 404, 409))
def replay_webhook_delivery(call: Call, delivery_id: str) -> WebhookDeliveryOut:
    return webhooks().replay_delivery(repo(), call.merchant_id, delivery_id)  # type: ignore[no-any-return]


@api.route("/v1/webhook/replay", "POST", summary="Send again every delivery created in a time range (at most 7 days "
           "and 1000 deliveries)", tag="webhooks", body=WebhookReplayRange, response=WebhookReplayResult,
           status=202, errors_=(400, 401, 409, 413, 415, 422))
def replay_webhook_range(call: Call) -> WebhookReplayResult:
    return webhooks().replay_range(repo(), call.merchant_id, call.body)  # type: ignore[no-any-return]


# --- stream functions ------------------------------------------------------------------
# Declared as plain Lambda functions: their event source mappings (ReportBatchItemFailures,
# bisect on error, bounded retries, SQS on-failure destination) live in infra/resources.json,
# which @app.on_dynamodb_record cannot express. The local stream runner calls the same function.


@app.lambda_function(name="stream_pipeline")
@flushes_metrics
def stream_pipeline(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.pipeline import handle_stream_event

    return handle_stream_event(event, context)


@app.lambda_function(name="webhook_sender")
@flushes_metrics
def webhook_sender(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Merchant webhooks from the table stream: its own event source mapping (infra/resources.json), so a
    slow merchant endpoint never delays the pipeline. Failed POSTs are retried by webhook_retries."""
    from chalicelib.webhook_delivery import handle_stream_event as send_webhooks

    return send_webhooks(event, context)


# --- scheduled functions -----------------------------------------------------------------
# Locally, infra/local/scheduler.py runs every schedule declared here, faster than deployed.


@app.schedule(Rate(1, unit=Rate.MINUTES), name="release_deferred_notifications")
@flushes_metrics
def release_deferred_notifications(event: Any) -> dict[str, Any]:
    from chalicelib.scheduled import release_deferred

    return release_deferred(repo()).as_dict()


@app.schedule(Rate(1, unit=Rate.HOURS), name="day_before_reminders")
@flushes_metrics
def day_before_reminders(event: Any) -> dict[str, Any]:
    from chalicelib.scheduled import send_day_before_reminders

    return send_day_before_reminders(repo()).as_dict()


@app.schedule(Rate(1, unit=Rate.MINUTES), name="webhook_retries")
@flushes_metrics
def webhook_retries(event: Any) -> dict[str, Any]:
    """Webhook deliveries whose next attempt is due (backoff over 24 h), and held ones of paused endpoints."""
    from chalicelib.webhook_delivery import run_retries

    return run_retries(event.context)
