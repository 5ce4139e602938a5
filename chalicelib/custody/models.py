"""Edge models of the chain of custody."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict

from chalicelib.core.types import Instant, Location, Model_, Strict_

Barcode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                               description="A parcel's barcode value (printable ASCII, no spaces)")]
Flag = Annotated[bool, Strict()]


class CompletionRequirements(Strict_):
    """What a driver must collect before a stop may be marked delivered. On a shipment, a field left out (or null)
    inherits the merchant's setting."""

    photo: Flag | None = Field(default=None, description="A proof photo")
    signature: Flag | None = Field(default=None, description="A drawn signature")
    recipient_name: Flag | None = Field(default=None, description="Who took the parcel")
    pin: Flag | None = Field(default=None, description="The PIN sent to the recipient with the out-for-delivery "
                                                         "message, checked by the driver app")
    parcel_scan: Flag | None = Field(default=None, description="A delivery scan of every parcel's barcode")
    min_age: Annotated[int, Strict(), Field(ge=1, le=25)] | None = Field(
        default=None, description="The driver confirms the recipient is at least this old (age_verified)")


class ShipmentCustody(Strict_):
    """A shipment's own completion requirements and parcels (on create)."""

    requirements: CompletionRequirements | None = None
    parcels: Annotated[list[Barcode], Field(max_length=50)] = Field(
        default_factory=list, description="Barcode values of the shipment's parcels (scanned at load, delivery, "
                                          "return)")


class PinCheck(Strict_):
    pin: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="The six digits the recipient tells the driver")]


class PinResult(Model_):
    verified: bool
    attempts_left: int


class ScanRequest(Strict_):
    stage: Literal["load", "delivery", "return"] = Field(description="load: at the depot; delivery: at the door; "
                                                                      "return: back at the depot")
    barcodes: Annotated[list[Barcode], Field(min_length=1, max_length=50)]
    occurred_at: Instant
    location: Location | None = None


class ScanResult(Model_):
    shipment_id: str
    stage: str
    matched: list[str]
    unexpected: list[str] = Field(description="Scanned, but not a parcel of this shipment (opens an exception)")
    missing: list[str] = Field(description="Parcels not scanned at this stage yet")


class CustodyEvent(Model_):
    body: dict[str, Any] = Field(description="shipment_id, seq, prev (the previous event's hash), type, at, actor, "
                                             "data: hashed as canonical JSON (sorted keys, no spaces, UTF-8)")
    hash: str = Field(description="SHA-256 (hex) of the body's canonical JSON")


class ChainHead(Model_):
    seq: int
    hash: str | None


class CustodyChain(Model_):
    shipment_id: str
    events: list[CustodyEvent]
    head: ChainHead
    verified: bool = Field(description="The chain checked by the server as it was read (the verifier re-checks "
                                       "this document: python -m chalicelib.custody verify <file>)")


class ReceiptOut(Model_):
    shipment_id: str
    jws: str = Field(description="Compact JWS (ES256), verifiable with /.well-known/doorstep-receipt-keys.json")
    kid: str
    claims: dict[str, Any]


class Jwks(Model_):
    keys: list[dict[str, str]]
