"""Chain-of-custody rules: the hash chain, completion requirements, delivery PINs and parcel scans.

Pure domain code (no AWS, no HTTP): the service and the verifier (`python -m chalicelib.custody verify`) share it,
so what the API writes and what a third party checks are computed by the same lines.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64  # the `prev` of a chain's first event
PIN_DIGITS = 6
PIN_MAX_ATTEMPTS = 5  # then the PIN is locked: a dispatcher must deliver another way
SCAN_STAGES = ("load", "delivery", "return")


# --- the hash chain -------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8 (the same JSON the verifier re-hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def event_hash(body: dict[str, Any]) -> str:
    """SHA-256 of the event's canonical JSON; `body` carries `seq` and `prev`, so the hash covers both."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


def chain_body(shipment_id: str, seq: int, prev: str, kind: str, at: str, actor: str,
               data: dict[str, Any]) -> dict[str, Any]:
    return {"shipment_id": shipment_id, "seq": seq, "prev": prev, "type": kind, "at": at, "actor": actor,
            "data": data}


@dataclass
class ChainVerdict:
    ok: bool
    problems: list[str] = field(default_factory=list)
    head: str | None = None
    length: int = 0


def verify_chain(shipment_id: str, events: Sequence[dict[str, Any]], head: dict[str, Any] | None) -> ChainVerdict:
    """Check every link: seq 1, 2, 3 ... without gaps, each `prev` the previous event's hash, each stored hash the
    hash of its body, and the head (the last event's seq and hash, as the store's head item holds them) the end.
    An altered event changes its hash; a removed or inserted one breaks a `prev` or the numbering."""
    problems: list[str] = []
    prev = GENESIS
    for index, event in enumerate(events):
        body = event.get("body")
        if not isinstance(body, dict):
            problems.append(f"event {index + 1}: no body")
            break
        seq = body.get("seq")
        if seq != index + 1:
            problems.append(f"event {index + 1}: seq is {seq}, expected {index + 1}")
        if body.get("shipment_id") != shipment_id:
            problems.append(f"event {index + 1}: belongs to {body.get('shipment_id')}")
        if body.get("prev") != prev:
            problems.append(f"event {index + 1}: prev does not match the hash of event {index}")
        computed = event_hash(body)
        if event.get("hash") != computed:
            problems.append(f"event {index + 1}: hash does not match its content")
        prev = computed
    if head is not None:
        if head.get("seq") != len(events):
            problems.append(f"head: seq is {head.get('seq')}, the chain has {len(events)} events")
        if head.get("hash") != (prev if events else None):
            problems.append("head: hash is not the last event's")
    return ChainVerdict(ok=not problems, problems=problems, head=prev if events else None, length=len(events))


def proof_hashes(events: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The proof objects the chain vouches for: key -> SHA-256 (hex) from its `proof_attached` events."""
    found: dict[str, str] = {}
    for event in events:
        body = event.get("body") or {}
        if body.get("type") == "proof_attached":
            data = body.get("data") or {}
            if isinstance(data.get("key"), str) and isinstance(data.get("sha256"), str):
                found[data["key"]] = data["sha256"]
    return found


# --- completion requirements ------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    photo: bool = False
    signature: bool = False
    recipient_name: bool = False
    pin: bool = False
    parcel_scan: bool = False
    min_age: int | None = None

    def names(self) -> list[str]:
        wanted = [name for name in ("photo", "signature", "recipient_name", "pin", "parcel_scan")
                  if getattr(self, name)]
        if self.min_age:
            wanted.append("age_verified")
        return wanted


def merged_requirements(merchant: dict[str, Any] | None, shipment: dict[str, Any] | None) -> Requirements:
    """The shipment's own requirements win over the merchant's, field by field (an unset field inherits)."""
    values: dict[str, Any] = {}
    for source in (merchant or {}, shipment or {}):
        values.update({k: v for k, v in source.items() if v is not None and k in Requirements.__dataclass_fields__})
    return Requirements(**values)


@dataclass(frozen=True)
class Completion:
    """What a `delivered` update brings: the kinds of its proof images and the driver's confirmations."""

    proof_kinds: frozenset[str]
    recipient_name: str | None
    pin_verified: bool
    parcels: frozenset[str]
    scanned_at_delivery: frozenset[str]
    age_verified: bool


def missing_requirements(required: Requirements, done: Completion) -> list[tuple[str, str]]:
    """(field, reason) for each requirement the update lacks; empty: it may complete."""
    missing: list[tuple[str, str]] = []
    if required.photo and "photo" not in done.proof_kinds:
        missing.append(("proof_keys", "a photo is required"))
    if required.signature and "signature" not in done.proof_kinds:
        missing.append(("proof_keys", "a signature is required"))
    if required.recipient_name and not done.recipient_name:
        missing.append(("recipient_name", "the recipient's name is required"))
    if required.pin and not done.pin_verified:
        missing.append(("pin", "the recipient's PIN must be checked first"))
    if required.parcel_scan:
        unscanned = sorted(done.parcels - done.scanned_at_delivery)
        if unscanned:
            missing.append(("parcels", "every parcel must be scanned at delivery; missing: " + ", ".join(unscanned)))
    if required.min_age and not done.age_verified:
        missing.append(("age_verified", f"the recipient's age (at least {required.min_age}) must be checked"))
    return missing


# --- delivery PINs ------------------------------------------------------------------------


def delivery_pin(secret: str, shipment_id: str) -> str:
    """The shipment's PIN: derived from the server secret, so the notifier can print it and nothing stores it
    in clear (the custody item keeps only `pin_digest`)."""
    mac = hmac.new(secret.encode(), f"delivery-pin:{shipment_id}".encode(), hashlib.sha256).digest()
    return str(int.from_bytes(mac[:8], "big") % 10**PIN_DIGITS).zfill(PIN_DIGITS)


def pin_digest(shipment_id: str, pin: str) -> str:
    return hashlib.sha256(f"{shipment_id}:{pin}".encode()).hexdigest()


def pin_matches(shipment_id: str, pin: str, stored_digest: str) -> bool:
    return hmac.compare_digest(pin_digest(shipment_id, pin), stored_digest)


# --- parcel scans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanOutcome:
    matched: list[str]
    unexpected: list[str]  # scanned but not a parcel of this shipment
    missing: list[str]  # parcels of the shipment not scanned at this stage yet

    @property
    def mismatch(self) -> bool:
        return bool(self.unexpected)


def compare_scan(parcels: Iterable[str], scanned_before: Iterable[str], scanned_now: Iterable[str]) -> ScanOutcome:
    expected = set(parcels)
    now = list(dict.fromkeys(scanned_now))
    seen = set(scanned_before) | {b for b in now if b in expected}
    return ScanOutcome(matched=[b for b in now if b in expected], unexpected=[b for b in now if b not in expected],
                       missing=sorted(expected - seen))
