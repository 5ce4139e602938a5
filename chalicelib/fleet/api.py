"""Fleet routes: drivers and their tokens and devices, positions, zone events, merchant settings, zones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Rate, Response

from chalicelib.core.config import get_settings
from chalicelib.core.observability import flushes_metrics
from chalicelib.http.paging import Paging
from chalicelib.http.routes import Answer, Auth, Call, Routes, json_response
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.fleet.models import (
        DriverOut,
        DriverPage,
        DriverPresenceOut,
        DriverToken,
        DriverWithToken,
        MerchantSettings,
        NearbyDrivers,
        Position,
        ZoneEvents,
        ZoneOut,
        ZonePage,
    )

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.fleet.models")


def authenticate(kind: Auth, headers: dict[str, str], method: str) -> tuple[str, str]:
    """(merchant id, driver id) of the caller: a merchant API key, or a driver's token or app link; on merchant
    routes, without an Authorization header, the dispatcher console's session cookie (chalicelib.console)."""
    from chalicelib.fleet import auth

    authorization = headers.get("authorization")
    if kind == "driver":
        return auth.authenticate_driver(get_repository(), authorization, get_settings())
    if authorization is None and "cookie" in headers:
        from chalicelib.console import rules as console_rules

        if console_rules.session_cookie(headers) is not None:  # other cookies alone: as if none were sent
            from chalicelib.console import service as console

            return console.authenticate(get_repository(), get_settings().token_secret, headers, method,
                                        datetime.now(UTC)), ""
    return auth.authenticate_merchant(get_repository(), authorization), ""


# --- drivers -------------------------------------------------------------------------


@routes.route("/v1/drivers", "POST", summary="Create a driver (returns its token once)", tag="drivers",
              body="DriverCreate", response="DriverWithToken", status=201, errors_=(400, 401, 413, 415, 422))
def create_driver(call: Call) -> DriverWithToken:
    from chalicelib.fleet import service

    return service.create_driver(get_repository(), call.merchant_id, call.body)


@routes.route("/v1/drivers", "GET", summary="List drivers", tag="drivers", query=Paging, response="DriverPage",
              errors_=(400, 401, 422))
def list_drivers(call: Call) -> DriverPage:
    from chalicelib.fleet import service

    return service.list_drivers(get_repository(), get_settings(), call.merchant_id, call.query.limit,
                                call.query.cursor)


@routes.route("/v1/drivers/nearby", "GET", summary="Drivers within radius_m of a point, nearest first",
              tag="drivers", query="NearbyQuery", response="NearbyDrivers", errors_=(401, 422))
def nearby_drivers(call: Call) -> NearbyDrivers:
    from chalicelib.fleet import service

    q = call.query
    return service.nearby_drivers(get_repository(), call.merchant_id, q.lat, q.lng, q.radius_m, q.limit)


@routes.route("/v1/drivers/{driver_id}", "GET", summary="Get a driver", tag="drivers", response="DriverOut",
              errors_=(401, 404))
def get_driver(call: Call, driver_id: str) -> DriverOut:
    from chalicelib.fleet import service

    return service.get_driver(get_repository(), call.merchant_id, driver_id)


@routes.route("/v1/drivers/{driver_id}/token", "POST", summary="Rotate a driver's token", tag="drivers",
              response="DriverToken", errors_=(401, 404))
def rotate_driver_token(call: Call, driver_id: str) -> DriverToken:
    from chalicelib.fleet import service

    return service.rotate_driver_token(get_repository(), call.merchant_id, driver_id)


@routes.route("/v1/drivers/{driver_id}/position", "GET", summary="A driver's latest position", tag="drivers",
              response="Position", errors_=(401, 404))
def driver_position(call: Call, driver_id: str) -> Position:
    from chalicelib.fleet import service

    return service.driver_position(get_repository(), call.merchant_id, driver_id)


@routes.route("/v1/drivers/{driver_id}/zone-events", "GET", summary="A driver's zone enter/exit/dwell events, "
              "newest first", tag="drivers", query="EventsQuery", response="ZoneEvents", errors_=(401, 404, 422))
def driver_zone_events(call: Call, driver_id: str) -> ZoneEvents:
    from chalicelib.fleet import zones

    return zones.driver_zone_events(get_repository(), call.merchant_id, driver_id, call.query.limit)


@routes.route("/v1/drivers/{driver_id}/device-id", "POST", summary="Generate a device id for a tracker app "
              "(OsmAnd / Traccar Client) of this driver; answered once", tag="drivers", response="GeneratedDeviceId",
              status=201, errors_=(401, 404, 503))
def generate_device_id(call: Call, driver_id: str) -> Response:
    from chalicelib.fleet import service

    generated = service.generate_device(get_repository(), call.merchant_id, driver_id)
    return json_response(generated, 201, {"Cache-Control": "no-store"})


@routes.route("/v1/drivers/{driver_id}/device-id", "PUT", summary="Register a tracker app's device id of your "
              "choice for a driver (at least 96 bits random)", tag="drivers", body="DeviceRegistration", status=204,
              errors_=(400, 401, 404, 409, 415, 422, 503))
def register_device(call: Call, driver_id: str) -> Response:
    from chalicelib.fleet import service

    service.register_device(get_repository(), call.merchant_id, driver_id, call.body.device_id)
    return Response(body="", status_code=204)


# --- merchant settings -------------------------------------------------------------------


@routes.route("/v1/settings", "GET", summary="The merchant's geofence, approach and tracking page settings",
              tag="settings", response="MerchantSettings", errors_=(401,))
def get_merchant_settings(call: Call) -> MerchantSettings:
    from chalicelib.fleet import service

    return service.merchant_settings(get_repository(), call.merchant_id)


@routes.route("/v1/settings", "PUT", summary="Replace the merchant's settings (omitted fields take defaults)",
              tag="settings", body="MerchantSettings", response="MerchantSettings", errors_=(400, 401, 413, 415, 422))
def put_merchant_settings(call: Call) -> MerchantSettings:
    from chalicelib.fleet import service

    return service.replace_merchant_settings(get_repository(), call.merchant_id, call.body)


@routes.route("/v1/settings", "PATCH", summary="Change only the settings sent (JSON merge patch: nested objects "
              "merge, lists replace, null restores a field's default)", tag="settings", body="MerchantSettingsPatch",
              response="MerchantSettings", errors_=(400, 401, 409, 413, 415, 422))
def patch_merchant_settings(call: Call) -> MerchantSettings:
    from chalicelib.fleet import service

    patch = call.body.model_dump(mode="json", exclude_unset=True)
    return service.patch_merchant_settings(get_repository(), call.merchant_id, patch)


# --- zones -------------------------------------------------------------------------------


@routes.route("/v1/zones", "POST", summary="Create a polygon zone (depot, restricted area) from GeoJSON",
              tag="zones", body="ZoneCreate", response="ZoneOut", status=201, errors_=(400, 401, 413, 415, 422))
def create_zone(call: Call) -> Response:
    from chalicelib.fleet import zones

    zone = zones.create_zone(get_repository(), call.merchant_id, call.body)
    return json_response(zone, 201, {"Location": f"/v1/zones/{zone.id}"})


@routes.route("/v1/zones", "GET", summary="List zones", tag="zones", query=Paging, response="ZonePage",
              errors_=(400, 401, 422))
def list_zones(call: Call) -> ZonePage:
    from chalicelib.fleet import zones

    return zones.list_zones(get_repository(), get_settings(), call.merchant_id, call.query.limit, call.query.cursor)


@routes.route("/v1/zones/{zone_id}", "GET", summary="Get a zone", tag="zones", response="ZoneOut", errors_=(401, 404))
def get_zone(call: Call, zone_id: str) -> ZoneOut:
    from chalicelib.fleet import zones

    return zones.get_zone(get_repository(), call.merchant_id, zone_id)


@routes.route("/v1/zones/{zone_id}", "DELETE", summary="Delete a zone", tag="zones", status=204,
              errors_=(401, 404))
def delete_zone(call: Call, zone_id: str) -> Response:
    from chalicelib.fleet import zones

    zones.delete_zone(get_repository(), call.merchant_id, zone_id)
    return Response(body="", status_code=204)


# --- presence: the fleet view, shifts, the phone's status, offline detection --------------------------


@routes.route("/v1/fleet", "GET", summary="Every driver with presence state (moving, stopped, offline, off duty), "
              "last seen, position, battery, offline reason and route progress; 304 while the If-None-Match ETag "
              "holds", tag="drivers", response="FleetView", extra_headers=("If-None-Match",),
              also=(Answer(304, "Not modified: nothing shown changed since the ETag", ("ETag",)),), errors_=(401,))
def fleet(call: Call) -> Response:
    from datetime import UTC, datetime

    from chalicelib.fleet.fleet_view import etag_matches, fleet_body, fleet_view
    from chalicelib.fleet.service import cached_merchant_profile

    repo = get_repository()
    settings = cached_merchant_profile(repo, call.merchant_id).settings  # polled every few seconds: cached 1 min
    body, etag = fleet_body(fleet_view(repo, call.merchant_id, settings.offline_after_minutes, datetime.now(UTC)))
    headers: dict[str, str | list[str]] = {"ETag": etag, "Cache-Control": "no-cache, private"}
    if etag_matches(call.headers.get("if-none-match"), etag):
        return Response(body="", status_code=304, headers=headers)
    return Response(body=body, status_code=200, headers={**headers, "Content-Type": "application/json"})


@routes.route("/v1/driver/shift", "POST", summary="Start or end the driver's shift (on duty: offline detection "
              "and location sharing; a route starting or completing does the same)", tag="driver", auth="driver",
              body="ShiftAction", response="DriverPresenceOut", errors_=(400, 401, 413, 415, 422))
def driver_shift(call: Call) -> DriverPresenceOut:
    from chalicelib.fleet import presence

    return presence.change_shift(get_repository(), call.merchant_id, call.driver_id, call.body.action)


@routes.route("/v1/driver/app-status", "POST", summary="What the driver app knows of the phone (battery, location "
              "permission, foreground or background): shown in the fleet view, the reason of an offline episode",
              tag="driver", auth="driver", body="AppStatusReport", response="DriverPresenceOut",
              errors_=(400, 401, 413, 415, 422))
def driver_app_status(call: Call) -> DriverPresenceOut:
    from chalicelib.fleet import presence

    return presence.report_app_status(get_repository(), call.merchant_id, call.driver_id, call.body)


@blueprint.schedule(Rate(1, unit=Rate.MINUTES), name="detect_offline_drivers")
@flushes_metrics
def detect_offline_drivers(event: Any) -> dict[str, int]:
    """Every minute: drivers on duty whose due time passed go offline (once per episode), from the due index."""
    import time

    from chalicelib.fleet.presence import detect_offline

    return {"offline": detect_offline(get_repository(), int(time.time() * 1000))}
