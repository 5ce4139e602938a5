"""Shipment and route routes for merchants, and the driver's status and proof-of-delivery routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.http.routes import Answer, Call, Routes, json_response
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.shipments.models import (
        DriverStatusResult,
        ProofView,
        RouteOut,
        RoutePage,
        ShipmentOut,
        ShipmentPage,
        ShipmentSearch,
        Timeline,
        TrackingLink,
    )

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.shipments.models")


# --- shipments -----------------------------------------------------------------------


@routes.route("/v1/shipments", "POST", summary="Create a shipment (idempotent with Idempotency-Key)",
              tag="shipments", body="ShipmentCreate", response="ShipmentOut", status=201,
              errors_=(400, 401, 409, 413, 415, 422), extra_headers=("Idempotency-Key",),
              also=(Answer(200, "A replay: the shipment an earlier request with the same Idempotency-Key created",
                           ("Location", "Idempotent-Replayed")),))
def create_shipment(call: Call) -> Response:
    from chalicelib.shipments import service

    key = call.idempotency_key()
    shipment, created = service.create_shipment(get_repository(), get_settings(), call.merchant_id, call.body, key,
                                                call.raw_body)
    headers = {"Location": f"/v1/shipments/{shipment.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(shipment, 201 if created else 200, headers)


@routes.route("/v1/shipments", "GET", summary="List shipments by status and date, or find one by external_ref",
              tag="shipments",
              query="ShipmentQuery", response="ShipmentPage", errors_=(400, 401, 422))
def list_shipments(call: Call) -> ShipmentPage:
    from chalicelib.shipments import service

    q = call.query
    return service.list_shipments(get_repository(), get_settings(), call.merchant_id, status=q.status,
                                  date_from=q.date_from, date_to=q.date_to, limit=q.limit, cursor=q.cursor,
                                  external_ref=q.external_ref)


@routes.route("/v1/shipments/search", "GET", summary="Find shipments by external_ref, shipment id, tracking link "
              "or the recipient's exact phone or email (the dispatcher console's search)", tag="shipments",
              query="ShipmentSearchQuery", response="ShipmentSearch", errors_=(401, 422))
def search_shipments(call: Call) -> ShipmentSearch:
    from chalicelib.shipments import service

    return service.search_shipments(get_repository(), get_settings(), call.merchant_id, call.query.q)


@routes.route("/v1/shipments/{shipment_id}", "GET", summary="Get a shipment", tag="shipments",
              response="ShipmentOut", errors_=(401, 404))
def get_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    from chalicelib.shipments import service

    return service.get_shipment(get_repository(), get_settings(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}", "PATCH", summary="Change a shipment's recipient contact, address, "
              "location, time window, instructions or fence radius (JSON merge patch: nested objects merge, "
              "null clears an optional field)", tag="shipments", body="ShipmentPatch", response="ShipmentOut",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def patch_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    from chalicelib.shipments import edit

    patch = call.body.model_dump(mode="json", exclude_unset=True)
    return edit.patch_shipment(get_repository(), get_settings(), call.merchant_id, shipment_id, patch)


@routes.route("/v1/shipments/{shipment_id}/cancel", "POST", summary="Cancel a shipment", tag="shipments",
              response="ShipmentOut", errors_=(401, 404, 409))
def cancel_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    from chalicelib.shipments import service

    return service.cancel_shipment(get_repository(), get_settings(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}/reschedule", "POST",
              summary="Move a shipment to a new delivery day (created, assigned, failed or rescheduled): it leaves "
                      "its route and is planned again", tag="shipments", body="ShipmentReschedule",
              response="ShipmentOut", errors_=(400, 401, 404, 409, 413, 415, 422))
def reschedule_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    from chalicelib.shipments import redelivery, service

    repo = get_repository()
    redelivery.merchant_reschedule(repo, call.merchant_id, shipment_id, call.body, datetime.now(UTC))
    return service.get_shipment(repo, get_settings(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}/redirect", "POST",
              summary="After a failed attempt: leave it in a safe place or with a neighbour next time (the shipment "
                      "is rescheduled)", tag="shipments", body="ShipmentRedirect", response="ShipmentOut",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def redirect_shipment(call: Call, shipment_id: str) -> ShipmentOut:
    from chalicelib.shipments import redelivery, service

    repo = get_repository()
    redelivery.merchant_redirect(repo, call.merchant_id, shipment_id, call.body, datetime.now(UTC))
    return service.get_shipment(repo, get_settings(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}/timeline", "GET", summary="A shipment's event timeline",
              tag="shipments", response="Timeline", errors_=(401, 404))
def shipment_timeline(call: Call, shipment_id: str) -> Timeline:
    from chalicelib.shipments import service

    return service.timeline(get_repository(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}/tracking-link/revoke", "POST",
              summary="Revoke the tracking link and issue a new one (the old link answers 404)", tag="shipments",
              response="TrackingLink", errors_=(401, 404, 409))
def revoke_tracking_link(call: Call, shipment_id: str) -> TrackingLink:
    from chalicelib.shipments import service

    return service.revoke_tracking_link(get_repository(), get_settings(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}/proof", "GET", summary="Proof of delivery, with short-lived image "
              "links", tag="shipments", response="ProofView", errors_=(401, 404))
def shipment_proof(call: Call, shipment_id: str) -> ProofView:
    from chalicelib.shipments import proof

    return proof.shipment_proof(get_repository(), call.merchant_id, shipment_id)


# --- routes --------------------------------------------------------------------------


@routes.route("/v1/routes", "POST", summary="Create a route: a driver's ordered stops for a day", tag="routes",
              body="RouteCreate", response="RouteOut", status=201, errors_=(400, 401, 404, 409, 413, 415, 422))
def create_route(call: Call) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    created = route_service.create_route(get_repository(), call.merchant_id, call.body)
    if not call.body.optimize or len(created.stops) < 2:
        return created
    from chalicelib.sequencing import service as sequencing
    from chalicelib.sequencing.models import RouteOptimize

    return sequencing.optimize_route(get_repository(), call.merchant_id, created.id,
                                     RouteOptimize(version=created.version)).route


@routes.route("/v1/routes", "GET", summary="List routes by date, driver and status", tag="routes",
              query="RouteQuery", response="RoutePage", errors_=(400, 401, 422))
def list_routes(call: Call) -> RoutePage:
    from chalicelib.shipments import routes as route_service

    q = call.query
    return route_service.list_routes(get_repository(), get_settings(), call.merchant_id, day=q.date,
                                     driver_id=q.driver_id, status=q.status, limit=q.limit, cursor=q.cursor)


@routes.route("/v1/routes/{route_id}", "PATCH", summary="Add, remove and reorder the stops of a planned or active "
              "route (conditional on its version)", tag="routes", body="RoutePatch", response="RouteOut",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def edit_route(call: Call, route_id: str) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    return route_service.edit_route(get_repository(), call.merchant_id, route_id, call.body)


@routes.route("/v1/routes/{route_id}/reassign", "POST", summary="Give a planned or active route to another driver",
              tag="routes", body="RouteReassign", response="RouteOut", errors_=(400, 401, 404, 409, 413, 415, 422))
def reassign_route(call: Call, route_id: str) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    return route_service.reassign_route(get_repository(), call.merchant_id, route_id, call.body)


@routes.route("/v1/routes/{route_id}/stops/{shipment_id}/move", "POST", summary="Move one stop to the end of "
              "another planned or active route", tag="routes", body="StopMove", response="RouteOut",
              errors_=(400, 401, 404, 409, 413, 415, 422))
def move_stop(call: Call, route_id: str, shipment_id: str) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    return route_service.move_stop(get_repository(), call.merchant_id, route_id, shipment_id, call.body)


@routes.route("/v1/routes/{route_id}/complete", "POST", summary="End an active route: stops still to do go back "
              "to created", tag="routes", response="RouteOut", errors_=(401, 404, 409))
def complete_route(call: Call, route_id: str) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    return route_service.complete_route(get_repository(), call.merchant_id, route_id)


@routes.route("/v1/routes/{route_id}", "GET", summary="Get a route", tag="routes", response="RouteOut",
              errors_=(401, 404))
def get_route(call: Call, route_id: str) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    return route_service.get_route(get_repository(), call.merchant_id, route_id)


@routes.route("/v1/routes/{route_id}/start", "POST", summary="Start a route: its shipments go out for delivery",
              tag="routes", response="RouteOut", errors_=(401, 404, 409))
def start_route(call: Call, route_id: str) -> RouteOut:
    from chalicelib.shipments import routes as route_service

    return route_service.start_route(get_repository(), call.merchant_id, route_id)


# --- the driver's status updates and proof ---------------------------------------------


@routes.route("/v1/driver/shipments/{shipment_id}/status", "POST",
              summary="Report arrived / delivered / failed, stamped with when it happened", tag="driver",
              auth="driver", body="DriverStatusUpdate", response="DriverStatusResult",
              errors_=(400, 401, 404, 409, 413, 415, 422), extra_headers=("Idempotency-Key",))
def driver_status(call: Call, shipment_id: str) -> DriverStatusResult:
    from chalicelib.shipments import service

    key = call.idempotency_key()
    return service.driver_status_update(get_repository(), call.merchant_id, call.driver_id, shipment_id, call.body,
                                        key, call.raw_body, datetime.now(UTC))


@routes.route("/v1/driver/shipments/{shipment_id}/proof-uploads", "POST", summary="A presigned upload for a proof "
              "of delivery photo or signature (JPEG, PNG or WebP, at most 10 MB, valid 5 minutes)", tag="driver",
              auth="driver", body="ProofUploadRequest", response="ProofUpload", status=201,
              errors_=(400, 401, 404, 409, 413, 415, 422))
def proof_upload(call: Call, shipment_id: str) -> Response:
    from chalicelib.shipments import proof

    upload = proof.proof_upload(get_repository(), call.merchant_id, call.driver_id, shipment_id, call.body)
    return json_response(upload, 201)
