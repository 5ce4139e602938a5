"""Chain-of-custody routes: the merchant's custody log and receipt, the driver's PIN check and parcel scans, and
the public receipt keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.http.routes import Call, Routes, json_response
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.custody.models import CustodyChain, PinResult, ReceiptOut, ScanResult

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.custody.models")


@routes.route("/v1/shipments/{shipment_id}/custody", "GET", summary="A shipment's chain of custody: every custody "
              "event hash-chained to the previous one (verify with `python -m chalicelib.custody verify`)",
              tag="custody", response="CustodyChain", errors_=(401, 404))
def shipment_custody(call: Call, shipment_id: str) -> CustodyChain:
    from chalicelib.custody import service

    return service.custody_chain(get_repository(), call.merchant_id, shipment_id)


@routes.route("/v1/shipments/{shipment_id}/receipt", "GET", summary="The signed delivery receipt (compact JWS, "
              "ES256; keys at /.well-known/doorstep-receipt-keys.json)", tag="custody", response="ReceiptOut",
              errors_=(401, 404))
def shipment_receipt(call: Call, shipment_id: str) -> ReceiptOut:
    from chalicelib.custody import service

    return service.receipt(get_repository(), call.merchant_id, shipment_id)


@routes.route("/.well-known/doorstep-receipt-keys.json", "GET", summary="The public keys delivery receipts are "
              "signed with (JWKS; old keys stay published after a rotation)", tag="custody", auth="none",
              response="Jwks")
def receipt_keys(call: Call) -> Response:
    from chalicelib.custody import service

    return json_response(service.published_keys(get_repository()), 200, {"Cache-Control": "public, max-age=300"})


@routes.route("/v1/driver/shipments/{shipment_id}/pin", "POST", summary="Check the PIN the recipient tells the "
              "driver (5 attempts, then locked: 429)", tag="driver", auth="driver", body="PinCheck",
              response="PinResult", errors_=(400, 401, 404, 413, 415, 422, 429))
def check_pin(call: Call, shipment_id: str) -> PinResult:
    from chalicelib.custody import service

    return service.check_pin(get_repository(), call.merchant_id, call.driver_id, shipment_id, call.body.pin,
                             datetime.now(UTC))


@routes.route("/v1/shipments/{shipment_id}/pin/unlock", "POST", summary="Give the driver the PIN's attempts again "
              "after they ran out (check the recipient another way first); a custody event", tag="custody",
              response="PinResult", errors_=(401, 404))
def unlock_pin(call: Call, shipment_id: str) -> PinResult:
    from chalicelib.custody import service

    return service.unlock_pin(get_repository(), call.merchant_id, shipment_id, datetime.now(UTC))


@routes.route("/v1/driver/shipments/{shipment_id}/scans", "POST", summary="Record parcel barcode scans at load, "
              "delivery or return (a barcode not of this shipment opens a parcel_mismatch exception)", tag="driver",
              auth="driver", body="ScanRequest", response="ScanResult", errors_=(400, 401, 404, 413, 415, 422))
def record_scan(call: Call, shipment_id: str) -> ScanResult:
    from chalicelib.custody import service

    return service.record_scan(get_repository(), call.merchant_id, call.driver_id, shipment_id, call.body)
