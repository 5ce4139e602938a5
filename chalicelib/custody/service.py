"""Chain-of-custody use cases: the per-shipment hash chain, completion checks, PINs, scans, signed receipts."""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from chalicelib.core import errors
from chalicelib.core.config import get_settings
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.custody import jws, rules
from chalicelib.custody.models import (
    ChainHead,
    CustodyChain,
    CustodyEvent,
    Jwks,
    PinResult,
    ReceiptOut,
    ScanRequest,
    ScanResult,
    ShipmentCustody,
)
from chalicelib.custody.store import ChainRaced, CustodyStore, ReceiptKey, Spec
from chalicelib.storage.repository import Repository

APPEND_ATTEMPTS = 8  # a lost race re-reads the head; writers to one shipment's chain are few (phone, API)
HEAD_CACHE_SIZE = 2048
_kms: Any = None
# The heads this container wrote last, so the next append of the same shipment (a delivery appends its proofs and
# then `delivered`) skips the head read. Only a hint: the transaction's condition on the seq still decides, and a
# stale head costs one ChainRaced and a read.
_heads: OrderedDict[str, tuple[int, str]] = OrderedDict()


def custody_store(repo: Repository) -> CustodyStore:
    return CustodyStore(repo.hot_client)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the chain -------------------------------------------------------------------------


def append_event(repo: Repository, merchant_id: str, shipment_id: str, kind: str, at: datetime, actor: str,
                 data: dict[str, Any] | None = None) -> tuple[int, str]:
    """Append one event to the shipment's chain: (seq, hash). Conditional on the head read, retried on a race."""
    return append_events(repo, merchant_id, shipment_id, [(kind, at, actor, data or {})])


def append_events(repo: Repository, merchant_id: str, shipment_id: str,
                  events: list[tuple[str, datetime, str, dict[str, Any]]]) -> tuple[int, str]:
    """Append events in order, in one transaction: (the last's seq, its hash)."""
    store = custody_store(repo)
    cached = _heads.pop(shipment_id, None)
    for _ in range(APPEND_ATTEMPTS):
        seq, prev = cached if cached is not None else store.head(shipment_id)
        cached = None
        first, encoded_events = seq + 1, []
        for kind, at, actor, data in events:
            seq += 1
            body = rules.chain_body(shipment_id, seq, prev or rules.GENESIS, kind, _iso(at), actor, data)
            encoded = rules.canonical_json(body)
            prev = hashlib.sha256(encoded).hexdigest()
            encoded_events.append((encoded.decode(), prev))
        try:
            store.append_many(merchant_id, shipment_id, first, encoded_events)
        except ChainRaced:
            continue
        assert prev is not None
        _heads[shipment_id] = (seq, prev)
        if len(_heads) > HEAD_CACHE_SIZE:
            _heads.popitem(last=False)
        return seq, prev
    raise errors.service_unavailable("The custody log is busy; please retry.")


def _require_shipment(repo: Repository, merchant_id: str, shipment_id: str) -> Any:
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None:
        raise errors.not_found("Shipment")
    return shipment


def custody_chain(repo: Repository, merchant_id: str, shipment_id: str) -> CustodyChain:
    """The merchant's shipment's chain (another merchant's id answers 404: the shipment is read by its keys)."""
    _require_shipment(repo, merchant_id, shipment_id)
    store = custody_store(repo)
    events = store.events(shipment_id)
    seq, head = store.head(shipment_id)
    verdict = rules.verify_chain(shipment_id, events, {"seq": seq, "hash": head})
    return CustodyChain(shipment_id=shipment_id, events=[CustodyEvent(**e) for e in events],
                        head=ChainHead(seq=seq, hash=head), verified=verdict.ok)


# --- requirements, PIN, parcels ----------------------------------------------------------------


def on_shipment_created(repo: Repository, merchant_id: str, shipment_id: str, custody: ShipmentCustody | None,
                        at: datetime) -> None:
    """The shipment's custody spec (its own requirements, parcels, the PIN's digest) and the chain's first event,
    once: a replayed create finds the spec and appends nothing."""
    requirements = custody.requirements.model_dump(exclude_none=True) if custody and custody.requirements else {}
    parcels = list(dict.fromkeys(custody.parcels)) if custody else []
    pin = rules.delivery_pin(get_settings().token_secret, shipment_id)
    spec = Spec(merchant_id=merchant_id, requirements=requirements, parcels=parcels,
                pin_digest=rules.pin_digest(shipment_id, pin))
    store = custody_store(repo)
    store.put_spec(shipment_id, spec)
    first = store.spec(shipment_id) or spec  # a replay keeps what the first request stored
    body = rules.chain_body(shipment_id, 1, rules.GENESIS, "created", _iso(at), "merchant",
                            {"parcels": first.parcels, "requirements": first.requirements})
    encoded = rules.canonical_json(body)
    with contextlib.suppress(ChainRaced):  # seq 1 exactly once: a replayed create that wrote it appends nothing
        store.append(merchant_id, shipment_id, 1, encoded.decode(), hashlib.sha256(encoded).hexdigest())


def patch_custody(repo: Repository, merchant_id: str, shipment_id: str, patch: dict[str, Any] | None) -> None:
    """A merge patch of the shipment's requirements (null member: inherit the merchant's) and parcels (whole);
    null clears both. The change goes into the chain."""
    from chalicelib.core.patch import merge_patch

    spec = _spec(repo, merchant_id, shipment_id)
    patch = patch if patch is not None else {"requirements": None, "parcels": []}
    requirements = merge_patch(spec.requirements, patch["requirements"]) if "requirements" in patch \
        else spec.requirements
    requirements = {k: v for k, v in (requirements or {}).items() if v is not None}
    parcels = list(dict.fromkeys(patch["parcels"])) if "parcels" in patch else spec.parcels
    if requirements == spec.requirements and parcels == spec.parcels:
        return
    custody_store(repo).set_spec(shipment_id, requirements, parcels)
    append_event(repo, merchant_id, shipment_id, "requirements_changed", datetime.now(UTC), "merchant",
                 {"requirements": requirements, "parcels": parcels})


def _spec(repo: Repository, merchant_id: str, shipment_id: str) -> Spec:
    """The spec; a shipment created before custody existed gets an empty one (and its PIN) on first use."""
    store = custody_store(repo)
    found = store.spec(shipment_id)
    if found is None:
        pin = rules.delivery_pin(get_settings().token_secret, shipment_id)
        store.put_spec(shipment_id, Spec(merchant_id=merchant_id, pin_digest=rules.pin_digest(shipment_id, pin)))
        found = store.spec(shipment_id)
        assert found is not None
    return found


def requirements_of(repo: Repository, merchant_id: str, spec: Spec | None) -> rules.Requirements:
    from chalicelib.fleet.service import merchant_settings

    merchant = merchant_settings(repo, merchant_id).completion_requirements.model_dump(exclude_none=True)
    return rules.merged_requirements(merchant, spec.requirements if spec else None)


def stop_requirements(repo: Repository, merchant_id: str, shipment_ids: list[str]) -> dict[str, tuple[list[str],
                                                                                                   list[str]]]:
    """Per stop: the requirement names a delivery needs and the parcels to scan, for the driver app (it checks
    them before it lets the driver finish, offline too)."""
    specs = custody_store(repo).specs(shipment_ids) if shipment_ids else {}
    return {sid: (requirements_of(repo, merchant_id, specs.get(sid)).names(),
                  specs[sid].parcels if sid in specs else []) for sid in shipment_ids}


def check_completion(repo: Repository, merchant_id: str, shipment_id: str, proof_keys: list[str],
                     recipient_name: str | None, age_verified: bool) -> None:
    """422 naming each requirement a `delivered` update lacks (before anything is written)."""
    from chalicelib.shipments.rules import parse_proof_key

    spec = custody_store(repo).spec(shipment_id)
    required = requirements_of(repo, merchant_id, spec)
    if not required.names():
        return
    kinds = frozenset(p.kind for p in (parse_proof_key(k) for k in proof_keys) if p is not None)
    done = rules.Completion(proof_kinds=kinds, recipient_name=recipient_name,
                            pin_verified=bool(spec and spec.pin_verified),
                            parcels=frozenset(spec.parcels if spec else ()),
                            scanned_at_delivery=frozenset((spec.scans if spec else {}).get("delivery", [])),
                            age_verified=age_verified)
    missing = rules.missing_requirements(required, done)
    if missing:
        raise errors.invalid("requirements_missing", "The delivery lacks what this shipment requires: "
                             + ", ".join(sorted({f for f, _ in missing})) + ".",
                             [errors.FieldProblem(f, reason) for f, reason in missing])


def pin_for_message(repo: Repository, merchant_id: str, shipment_id: str) -> str | None:
    """The PIN to print in the out-for-delivery message, when the stop requires one (derived, never stored)."""
    spec = custody_store(repo).spec(shipment_id)
    if not requirements_of(repo, merchant_id, spec).pin:
        return None
    return rules.delivery_pin(get_settings().token_secret, shipment_id)


def _driver_shipment(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str) -> Any:
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or shipment.driver_id != driver_id:
        raise errors.not_found("Shipment")
    return shipment


def check_pin(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str, pin: str,
              now: datetime) -> PinResult:
    """The recipient's PIN, checked: 200 when right, 422 naming `pin` when wrong, 429 once the attempts are spent
    (locked until the dispatcher unlocks it: `unlock_pin`)."""
    _driver_shipment(repo, merchant_id, driver_id, shipment_id)
    spec = _spec(repo, merchant_id, shipment_id)
    if spec.pin_verified:
        return PinResult(verified=True, attempts_left=rules.PIN_MAX_ATTEMPTS - spec.pin_attempts)
    store = custody_store(repo)
    if not store.count_pin_attempt(shipment_id, rules.PIN_MAX_ATTEMPTS):
        raise DomainError(ErrorKind.RATE_LIMITED, "pin_locked", "Too many wrong PINs: the PIN is locked.",
                          [errors.FieldProblem("pin", "locked after too many wrong attempts")], retry_after_s=3600)
    left = rules.PIN_MAX_ATTEMPTS - spec.pin_attempts - 1
    if spec.pin_digest is None or not rules.pin_matches(shipment_id, pin, spec.pin_digest):
        append_event(repo, merchant_id, shipment_id, "pin_rejected", now, f"driver:{driver_id}",
                     {"attempts_left": left})
        raise errors.invalid("pin_wrong", "The PIN is not right.",
                             [errors.FieldProblem("pin", f"wrong; {left} attempts left")])
    store.mark_pin_verified(shipment_id)
    append_event(repo, merchant_id, shipment_id, "pin_verified", now, f"driver:{driver_id}")
    return PinResult(verified=True, attempts_left=left)


def unlock_pin(repo: Repository, merchant_id: str, shipment_id: str, now: datetime) -> PinResult:
    """The dispatcher, having checked who the recipient is another way (a call), gives the driver the PIN's
    attempts again; the unlock is a custody event. Safe to repeat: nothing spent, nothing changes."""
    _require_shipment(repo, merchant_id, shipment_id)
    spec = _spec(repo, merchant_id, shipment_id)
    if not spec.pin_verified and custody_store(repo).reset_pin_attempts(shipment_id):
        append_event(repo, merchant_id, shipment_id, "pin_unlocked", now, "merchant",
                     {"attempts_spent": spec.pin_attempts})
        return PinResult(verified=False, attempts_left=rules.PIN_MAX_ATTEMPTS)
    return PinResult(verified=spec.pin_verified, attempts_left=rules.PIN_MAX_ATTEMPTS - spec.pin_attempts)


def record_scan(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str,
                body: ScanRequest) -> ScanResult:
    """Record a scan of parcels at load, delivery or return (time, place, driver in the chain); a barcode that is
    not this shipment's, or a parcel missing at return, opens a `parcel_mismatch` exception."""
    shipment = _driver_shipment(repo, merchant_id, driver_id, shipment_id)
    store = custody_store(repo)
    for _ in range(APPEND_ATTEMPTS):
        spec = _spec(repo, merchant_id, shipment_id)
        before = spec.scans.get(body.stage, [])
        outcome = rules.compare_scan(spec.parcels, before, body.barcodes)
        scans = {**spec.scans, body.stage: sorted(set(before) | set(outcome.matched))}
        if store.save_scans(shipment_id, scans, spec.scans):
            break
    else:
        raise errors.service_unavailable("The shipment's scans are busy; please retry.")
    data: dict[str, Any] = {"stage": body.stage, "barcodes": list(dict.fromkeys(body.barcodes)),
                            "unexpected": outcome.unexpected, "missing": outcome.missing}
    if body.location is not None:
        data["lat"], data["lng"] = body.location.lat, body.location.lng
    kind = "loaded" if body.stage == "load" else "scanned"
    append_event(repo, merchant_id, shipment_id, kind, body.occurred_at, f"driver:{driver_id}", data)
    # A stranger parcel is a mismatch at any stage; back at the depot every parcel must be there (one scan of all)
    if outcome.mismatch or (body.stage == "return" and outcome.missing):
        _open_parcel_exception(repo, shipment, body.stage, outcome.unexpected, outcome.missing, body.occurred_at)
    return ScanResult(shipment_id=shipment_id, stage=body.stage, matched=outcome.matched,
                      unexpected=outcome.unexpected, missing=outcome.missing)


def _open_parcel_exception(repo: Repository, shipment: Any, stage: str, unexpected: list[str], missing: list[str],
                           at: datetime) -> None:
    from chalicelib.exceptions.rules import ExceptionKind
    from chalicelib.exceptions.service import Opening, open_exception

    episode = hashlib.sha256(f"{stage}:{','.join(unexpected)}:{','.join(missing)}".encode()).hexdigest()[:16]
    open_exception(repo, shipment.merchant_id, Opening(
        ExceptionKind.PARCEL_MISMATCH, shipment.shipment_id, episode, at,
        {"shipment_id": shipment.shipment_id, "stage": stage, "unexpected": unexpected, "missing": missing,
         "driver_id": shipment.driver_id},
        driver_id=shipment.driver_id, shipment_id=shipment.shipment_id, route_id=shipment.route_id))


# --- after a status change ----------------------------------------------------------------


def _object_sha256(key: str) -> str:
    from chalicelib.shipments.proof import blob_store

    got = blob_store().client.get_object(Bucket=get_settings().bucket_name, Key=key)
    digest = hashlib.sha256()
    for chunk in got["Body"].iter_chunks(64 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def on_delivered(repo: Repository, shipment: Any, driver_id: str, evidence: dict[str, Any], occurred: datetime,
                 location: tuple[float, float] | None) -> None:
    """The proof objects' hashes and the delivery go into the chain, then the receipt is signed over its head."""
    from chalicelib.shipments.rules import parse_proof_key

    merchant_id, shipment_id = shipment.merchant_id, shipment.shipment_id
    store = custody_store(repo)
    if store.receipt(shipment_id) is not None:
        return  # a replayed delivery whose first request finished
    done = [e for e in store.events(shipment_id) if e["body"]["type"] in ("proof_attached", "delivered")]
    delivered = next((e for e in done if e["body"]["type"] == "delivered"), None)
    if delivered is not None:  # appended, but the receipt was not signed (the request failed after): sign it now
        seq, head = int(delivered["body"]["seq"]), str(delivered["hash"])
        proofs = [e["body"]["data"] for e in done if e["body"]["type"] == "proof_attached"]
        occurred = datetime.fromisoformat(str(delivered["body"]["at"]).replace("Z", "+00:00"))
    else:
        actor = f"driver:{driver_id}"
        proofs = []
        for key in evidence.get("keys") or []:
            parsed = parse_proof_key(key)
            proofs.append({"key": key, "kind": parsed.kind if parsed else "unknown", "sha256": _object_sha256(key)})
        data: dict[str, Any] = {"distance_m": evidence.get("distance_m"),
                                "recipient_name": evidence.get("recipient_name"),
                                "far_from_stop": bool(evidence.get("far_from_stop"))}
        if location is not None:
            data["lat"], data["lng"] = location
        spec = store.spec(shipment_id)
        unscanned = sorted(set(spec.parcels) - set(spec.scans.get("delivery", []))) if spec else []
        if unscanned:
            data["unscanned_parcels"] = unscanned
        seq, head = append_events(repo, merchant_id, shipment_id, [
            *(("proof_attached", occurred, actor, proof) for proof in proofs),
            ("delivered", occurred, actor, {k: v for k, v in data.items() if v is not None})])
        if unscanned:  # handed over without a scan of every parcel: the dispatcher looks at it
            _open_parcel_exception(repo, shipment, "delivery", [], unscanned, occurred)
    where = {"lat": location[0], "lng": location[1]} if location else None
    claims = {"iss": get_settings().public_origin, "sub": shipment_id, "merchant_id": merchant_id,
              "delivered_at": _iso(occurred), "location": where,
              "stop": {"lat": float(shipment.lat), "lng": float(shipment.lng)},
              "distance_m": evidence.get("distance_m"), "proof": [{"kind": p["kind"], "sha256": p["sha256"]}
                                                                  for p in proofs],
              "chain_head": {"seq": seq, "hash": head}, "iat": int(datetime.now(UTC).timestamp())}
    key = current_key(repo)
    token = sign(key, claims)
    store.put_receipt(merchant_id, shipment_id, token, key.kid)


def on_closed(repo: Repository, merchant_id: str, shipment_id: str, status: str, occurred: datetime, actor: str,
              data: dict[str, Any] | None = None) -> None:
    """failed / returned / out_for_delivery and other handovers: one event each."""
    append_event(repo, merchant_id, shipment_id, status, occurred, actor, data)


# --- receipts and keys ----------------------------------------------------------------------


def _kms_client() -> Any:
    global _kms
    if _kms is None:
        import boto3

        s = get_settings()
        _kms = boto3.client("kms", region_name=s.aws_region, endpoint_url=s.aws_endpoint_url)
    return _kms


def rotate_key(repo: Repository, now: datetime | None = None) -> ReceiptKey:
    """A new KMS signing key (EC P-256) becomes the current one; every older key stays published."""
    kms = _kms_client()
    created = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description="Doorstep delivery receipts",
                             Tags=[{"TagKey": "doorstep-receipts", "TagValue": "true"}],  # the functions may Sign
                             )["KeyMetadata"]["KeyId"]
    jwk = jws.public_jwk(kms.get_public_key(KeyId=created)["PublicKey"])
    moment = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    key = ReceiptKey(kid=jwk["kid"], kms_key_id=created, jwk=jwk, created_at=moment)
    custody_store(repo).register_key(key)
    return key


def current_key(repo: Repository) -> ReceiptKey:
    keys = custody_store(repo).receipt_keys()
    if keys:
        return keys[-1]
    if get_settings().stage not in ("local", "test"):  # on AWS an operator creates keys: `... custody rotate-key`
        raise errors.service_unavailable("No receipt signing key is registered.", 60)
    return rotate_key(repo)


def sign(key: ReceiptKey, claims: dict[str, Any]) -> str:
    message = jws.signing_input(key.kid, claims)
    signature = _kms_client().sign(KeyId=key.kms_key_id, Message=message, MessageType="RAW",
                                   SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    return jws.compact(message, signature)


def receipt(repo: Repository, merchant_id: str, shipment_id: str) -> ReceiptOut:
    _require_shipment(repo, merchant_id, shipment_id)
    found = custody_store(repo).receipt(shipment_id)
    if found is None:
        raise errors.not_found("Receipt")
    token, kid = found
    return ReceiptOut(shipment_id=shipment_id, jws=token, kid=kid, claims=jws.claims_of(token))


def receipt_of(repo: Repository, shipment_id: str) -> str | None:
    """The receipt's JWS for the tracking page (which has authenticated the link already)."""
    found = custody_store(repo).receipt(shipment_id)
    return found[0] if found else None


def published_keys(repo: Repository) -> Jwks:
    return Jwks(keys=[k.jwk for k in custody_store(repo).receipt_keys()])
