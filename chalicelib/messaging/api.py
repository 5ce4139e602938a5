"""Conversations: the merchant's (as dispatch) per shipment and per driver, and broadcasts to the drivers on
duty; the driver's (under the driver token) with dispatch and per stop; the recipient's (under the tracking
token: JSON for the page's poll, and a form post that works without JavaScript)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.observability import flushes_metrics
from chalicelib.http.routes import Call, Routes, WebCall, json_response
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.messaging.models import BroadcastOut, ConversationOut, DriverUnread, MessageOut

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.messaging.models")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _now() -> datetime:
    return datetime.now(UTC)


def _limit(call: Call) -> int:
    return int(call.query.limit) if call.query is not None else 50


# --- the merchant, as dispatch -----------------------------------------------------------------------------------


@routes.route("/v1/shipments/{shipment_id}/messages", "GET", summary="The shipment's conversation (recipient, "
              "driver, dispatch), oldest first; marks it read by dispatch", tag="messages", query="MessagesQuery",
              response="ConversationOut", errors_=(401, 404, 422))
def shipment_messages(call: Call, shipment_id: str) -> ConversationOut:
    from chalicelib.messaging import service

    return service.shipment_messages(get_repository(), call.merchant_id, shipment_id, _limit(call), _now())


@routes.route("/v1/shipments/{shipment_id}/messages", "POST", summary="Send a message to the shipment's "
              "conversation as dispatch (409 once closed, 429 past the rate limit)", tag="messages",
              body="MessageIn", response="MessageOut", status=201, errors_=(401, 404, 409, 422, 429))
def post_shipment_message(call: Call, shipment_id: str) -> Response:
    from chalicelib.messaging import service

    message = service.post_shipment_message(get_repository(), call.merchant_id, shipment_id, call.body.text, _now())
    return json_response(message, 201)


@routes.route("/v1/drivers/{driver_id}/messages", "GET", summary="The driver's dispatch thread, oldest first; "
              "marks it read by dispatch", tag="messages", query="MessagesQuery", response="ConversationOut",
              errors_=(401, 404, 422))
def driver_messages(call: Call, driver_id: str) -> ConversationOut:
    from chalicelib.messaging import service

    return service.driver_messages(get_repository(), call.merchant_id, driver_id, _limit(call), _now())


@routes.route("/v1/drivers/{driver_id}/messages", "POST", summary="Send a message to the driver as dispatch",
              tag="messages", body="MessageIn", response="MessageOut", status=201, errors_=(401, 404, 422, 429))
def post_driver_message(call: Call, driver_id: str) -> Response:
    from chalicelib.messaging import service

    message = service.post_driver_message(get_repository(), call.merchant_id, driver_id, call.body.text, _now())
    return json_response(message, 201)


@routes.route("/v1/drivers/messages/broadcast", "POST", summary="Send one message to every driver on duty",
              tag="messages", body="MessageIn", response="BroadcastOut", status=201, errors_=(401, 422, 429))
def broadcast(call: Call) -> Response:
    from chalicelib.messaging import service

    sent: BroadcastOut = service.broadcast(get_repository(), call.merchant_id, call.body.text, _now())
    return json_response(sent, 201)


# --- the driver ------------------------------------------------------------------------------------------------


@routes.route("/v1/driver/messages", "GET", summary="The driver's thread with dispatch; marks it read by the "
              "driver", tag="driver", auth="driver", query="MessagesQuery", response="ConversationOut",
              errors_=(401, 422))
def driver_dispatch_thread(call: Call) -> Response:
    from chalicelib.messaging import service

    thread = service.driver_dispatch_thread(get_repository(), call.merchant_id, call.driver_id, _limit(call), _now())
    return json_response(thread, 200, NO_STORE)


@routes.route("/v1/driver/messages", "POST", summary="Send a message to dispatch", tag="driver", auth="driver",
              body="MessageIn", response="MessageOut", status=201, errors_=(401, 422, 429))
def driver_post_dispatch(call: Call) -> Response:
    from chalicelib.messaging import service

    message = service.driver_post_dispatch(get_repository(), call.merchant_id, call.driver_id, call.body.text, _now())
    return json_response(message, 201)


@routes.route("/v1/driver/messages/unread", "GET", summary="Unread messages: the dispatch thread and each stop "
              "of today's route", tag="driver", auth="driver", response="DriverUnread", errors_=(401,))
def driver_unread(call: Call) -> Response:
    from chalicelib.messaging import service

    counts: DriverUnread = service.driver_unread(get_repository(), call.merchant_id, call.driver_id, _now())
    return json_response(counts, 200, NO_STORE)


@routes.route("/v1/driver/shipments/{shipment_id}/messages", "GET", summary="A stop's conversation with its "
              "recipient (and dispatch); marks it read by the driver", tag="driver", auth="driver",
              query="MessagesQuery", response="ConversationOut", errors_=(401, 404, 422))
def driver_shipment_thread(call: Call, shipment_id: str) -> Response:
    from chalicelib.messaging import service

    thread = service.driver_shipment_thread(get_repository(), call.merchant_id, call.driver_id, shipment_id,
                                            _limit(call), _now())
    return json_response(thread, 200, NO_STORE)


@routes.route("/v1/driver/shipments/{shipment_id}/messages", "POST", summary="Send a message to the stop's "
              "recipient (409 once closed)", tag="driver", auth="driver", body="MessageIn", response="MessageOut",
              status=201, errors_=(401, 404, 409, 422, 429))
def driver_post_shipment(call: Call, shipment_id: str) -> Response:
    from chalicelib.messaging import service

    message: MessageOut = service.driver_post_shipment(get_repository(), call.merchant_id, call.driver_id,
                                                       shipment_id, call.body.text, _now())
    return json_response(message, 201)


# --- the recipient, under the tracking token ----------------------------------------------------------------------


@routes.web("/track/{token}/messages", errors_as="json")
def recipient_thread(call: WebCall, token: str) -> Response:
    """The conversation for the page's poll (this poll is what "the page is open" means for notifications)."""
    from chalicelib.messaging import service
    from chalicelib.recipient.service import resolve

    now = _now()
    link = resolve(get_repository(), token, now)
    thread = service.recipient_thread(get_repository(), link.shipment, now)
    return json_response(thread, 200, {**NO_STORE, "X-Robots-Tag": "noindex, nofollow"})


@routes.web("/track/{token}/messages", "POST", form=True)
def recipient_send(call: WebCall, token: str) -> Response:
    """A message from the page: its form (no JavaScript: 303 back to the page) or its script (Accept JSON: 201).
    `quick` names a quick reply, sent in the page's language; else `text`."""
    from chalicelib.core.links import tracking_page_url
    from chalicelib.messaging import service
    from chalicelib.messaging.rules import QUICK_REPLIES
    from chalicelib.recipient.forms import check_csrf, is_cross_site
    from chalicelib.recipient.service import locale, resolve
    from chalicelib.web.i18n import catalogue

    s, now = get_settings(), _now()
    link = resolve(get_repository(), token, now)
    if is_cross_site(call.headers, s.public_origin) or not check_csrf(s.token_secret, token, call.form.get("csrf")):
        raise DomainError(ErrorKind.FORBIDDEN, "form_expired", "The form expired; reload the page.")
    quick = call.form.get("quick")
    text = catalogue(locale(link, call.accept_language)).get(f"messages.quick.{quick}") \
        if quick in QUICK_REPLIES else call.form.get("text", "")
    message = service.recipient_send(get_repository(), link.shipment, text or "", now)
    if "application/json" in (call.headers.get("accept") or ""):
        return json_response(message, 201, NO_STORE)
    return Response(body="", status_code=303, headers={
        "Location": tracking_page_url(s.public_base_url, token) + "#messages", **NO_STORE})


# --- inbound SMS ----------------------------------------------------------------------------------------------------


@routes.route("/v1/messaging/sms-number", "PUT", summary="The merchant's two-way SMS number (AWS End User "
              "Messaging SMS): recipients' replies to it reach their conversation; STOP opts out",
              tag="messages", body="SmsNumberIn", response="SmsNumberOut", errors_=(401, 409, 422))
def put_sms_number(call: Call) -> Response:
    from chalicelib.messaging import service
    from chalicelib.messaging.models import SmsNumberOut

    number = service.set_sms_number(get_repository(), call.merchant_id, call.body.number)
    return json_response(SmsNumberOut(number=number), 200)


@blueprint.lambda_function(name="inbound_sms")
@flushes_metrics
def inbound_sms(event: dict[str, Any], context: Any) -> dict[str, int]:
    """SNS delivers End User Messaging SMS's inbound messages (infra/resources.json, InboundSmsTopic). A storage
    failure raises, so SNS retries the delivery; a reply stored twice by such a retry is the only duplicate."""
    import json

    from chalicelib.core.observability import logger
    from chalicelib.messaging import service

    outcomes: dict[str, int] = {}
    for record in event.get("Records") or []:
        try:
            message = json.loads((record.get("Sns") or {}).get("Message") or "{}")
        except ValueError:
            message = {}
        outcome = service.inbound_sms(get_repository(), message if isinstance(message, dict) else {})
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    logger.info("inbound sms", extra={"outcomes": outcomes})
    return outcomes
