"""Ping ingest from every source: the native batch API and the off-the-shelf tracker apps.

OsmAnd / Traccar Client and OwnTracks fix their own protocols (query strings, forms, Basic auth, `[]` answers),
so those two routes sit outside the JSON API registry; all three feed the same `ingest.service.ingest_pings`.
"""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib.core import errors
from chalicelib.core.config import get_settings
from chalicelib.core.errors import DomainError
from chalicelib.core.observability import MetricUnit, metrics
from chalicelib.core.times import now_ms
from chalicelib.http.errors import error_response
from chalicelib.http.routes import Call, Routes
from chalicelib.ingest.models import PingBatch, PingBatchResult
from chalicelib.storage import get_repository

blueprint = Blueprint(__name__)
routes = Routes(blueprint)

MAX_PINGS_PER_BATCH = 500
_TRACKER_TYPES = ["application/x-www-form-urlencoded", "application/json", "text/plain", "application/octet-stream"]


def _source_ip() -> str | None:
    """The caller's address as API Gateway saw it (never a client-supplied header)."""
    identity = (routes.current_request().context or {}).get("identity") or {}
    return identity.get("sourceIp")


def _count(result: PingBatchResult) -> None:
    metrics.add_metric(name="PingsAccepted", unit=MetricUnit.Count, value=result.accepted)
    metrics.add_metric(name="PingsRejected", unit=MetricUnit.Count, value=result.rejected)
    metrics.add_metric(name="PingsDuplicate", unit=MetricUnit.Count, value=result.duplicates)


@routes.route("/v1/driver/pings", "POST", summary="Post 1 to 500 location fixes (idempotent per fix time)",
              tag="driver", auth="driver", response=PingBatchResult, body_doc=PingBatch, raw_body=True,
              screen_values=False, errors_=(400, 401, 413, 415, 422, 503))
def post_pings(call: Call) -> PingBatchResult:
    from chalicelib.ingest import service

    data = call.body
    items = data.get("pings") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise errors.validation_failed([errors.FieldProblem("pings", "a list of 1 to 500 pings is required")])
    if not 1 <= len(items) <= MAX_PINGS_PER_BATCH:
        raise errors.validation_failed([errors.FieldProblem("pings", f"must hold 1 to 500 items, got {len(items)}")])
    result = service.ingest_pings(get_repository(), get_settings(), call.merchant_id, call.driver_id, items,
                                  now_ms())
    _count(result)
    return result


@blueprint.route("/osmand", methods=["GET", "POST"], content_types=_TRACKER_TYPES)
def osmand_tracker() -> Response:
    """OsmAnd / Traccar Client: `id` is the driver's token or a device id the merchant registered (both secrets:
    nothing here logs the query string). Unknown ids answer 400 (the app shows the failure) and count against
    the source's failure limit (429 beyond it)."""
    from chalicelib.fleet import service as fleet
    from chalicelib.ingest import service
    from chalicelib.ingest.protocols import osmand

    request = routes.current_request()
    now = now_ms()
    try:
        parsed = osmand.parse_request(request.method, request.query_params or {},
                                      request.headers.get("content-type"), request.raw_body, now_ms=now)
        found = fleet.driver_for_device(get_repository(), parsed.device_id)
        if found is None:
            raise fleet.tracker_failed(get_repository(), get_settings(), _source_ip(), now // 1000,
                                       osmand.unknown_device(parsed))
        if parsed.pings:
            _count(service.ingest_pings(get_repository(), get_settings(), found[0], found[1], parsed.pings, now))
    except DomainError as exc:
        return error_response(exc)
    # 200 even when screening refused the fix: otherwise the app would resend it forever, ahead of newer ones.
    return Response(body=osmand.SUCCESS_BODY, status_code=osmand.SUCCESS_STATUS)


@blueprint.route("/owntracks", methods=["POST"], content_types=_TRACKER_TYPES)
def owntracks_tracker() -> Response:
    """OwnTracks HTTP mode: Basic auth with the driver's id as user and the driver's token as password."""
    from chalicelib.fleet import service as fleet
    from chalicelib.ingest import service
    from chalicelib.ingest.protocols import owntracks

    request = routes.current_request()
    now = now_ms()
    try:
        credentials = owntracks.parse_basic_auth(request.headers.get("authorization"))
        if credentials is None:  # no credentials yet (an HTTP client may wait for the challenge): not a failure
            raise owntracks.unauthorized()
        found = fleet.driver_for_credentials(get_repository(), *credentials)
        if found is None:
            raise fleet.tracker_failed(get_repository(), get_settings(), _source_ip(), now // 1000,
                                       owntracks.unauthorized())
        message = owntracks.parse_message(request.raw_body, received_ms=now)
        if isinstance(message, owntracks.Location):
            _count(service.ingest_pings(get_repository(), get_settings(), found[0], found[1], [message.ping], now))
        elif isinstance(message, owntracks.Transition):
            fleet.record_driver_transition(get_repository(), found[0], found[1], message.event, message.region,
                                           message.region_id, message.occurred_ms, message.lat, message.lng)
        elif isinstance(message, owntracks.Ignored) and message.type == owntracks.LAST_WILL:
            # The broker's last will: the phone dropped its connection. Offline at once (reason lwt), once.
            from chalicelib.fleet import presence

            presence.last_will(get_repository(), found[0], found[1], now)
    except DomainError as exc:
        return error_response(exc)
    return Response(body=owntracks.RESPONSE_BODY, status_code=owntracks.RESPONSE_STATUS,
                    headers={"Content-Type": owntracks.RESPONSE_CONTENT_TYPE})
