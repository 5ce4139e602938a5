"""Proof of delivery: presigned uploads, checks on what was uploaded, and short-lived reads."""

from __future__ import annotations

from typing import Any

from chalicelib.core import errors
from chalicelib.fleet.service import merchant_settings
from chalicelib.geo import cells as geo
from chalicelib.shipments import rules as proof
from chalicelib.shipments.lifecycle import ShipmentStatus as S
from chalicelib.shipments.models import (
    DriverStatusUpdate,
    ProofImage,
    ProofSummary,
    ProofUpload,
    ProofUploadRequest,
    ProofView,
)
from chalicelib.shipments.store import require_shipment
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import (
    ShipmentItem,
    as_dict,
)

_blobs: Any = None


def blob_store() -> Any:
    global _blobs
    if _blobs is None:
        from chalicelib.storage.blobs import BlobStore

        _blobs = BlobStore()
    return _blobs


def proof_upload(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str,
                 body: ProofUploadRequest) -> ProofUpload:
    """A presigned POST for one photo or signature of a shipment on the driver's route."""
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or shipment.driver_id != driver_id:
        raise errors.not_found("Shipment")
    if shipment.status in (S.DELIVERED, S.FAILED, S.CANCELLED, S.RETURNED):
        raise errors.conflict(f"The shipment is {shipment.status}.", "status", shipment.status)
    key = proof.new_proof_key(merchant_id, shipment_id, body.kind, body.content_type)
    upload = blob_store().presigned_upload(key.key, body.content_type, proof.MAX_BYTES, proof.UPLOAD_TTL_S)
    return ProofUpload(key=key.key, url=upload.url, fields=upload.fields, expires_in_s=upload.expires_in_s,
                       max_bytes=proof.MAX_BYTES)


def checked_proof(repo: Repository, merchant_id: str, shipment: ShipmentItem,
                   body: DriverStatusUpdate) -> dict[str, Any]:
    """Every attached key must be this shipment's, uploaded, and a real image within the limits
    (checked here: the local emulator enforces no presigned conditions, and a phone may upload
    something else than it announced). Also measures how far from the stop it was marked delivered."""
    keys = body.proof_keys or []
    problems = []
    for i, key in enumerate(keys):
        reason = proof.key_problem(key, merchant_id, shipment.shipment_id)
        if reason is None:
            stored = blob_store().stored(key)
            reason = proof.uploaded_object_problem(key, stored.size if stored else None,
                                                   stored.content_type if stored else None,
                                                   stored.head if stored else b"")
        if reason is not None:
            problems.append(errors.FieldProblem(f"proof_keys.{i}", reason))
    if len(set(keys)) != len(keys):
        problems.append(errors.FieldProblem("proof_keys", "must not repeat"))
    if problems:
        raise errors.validation_failed(problems)
    distance = None
    if body.location is not None:
        distance = round(geo.haversine_m(body.location.lat, body.location.lng, float(shipment.lat),
                                         float(shipment.lng)), 1)
    threshold = merchant_settings(repo, merchant_id).far_from_stop_m
    return {"keys": keys, "recipient_name": body.recipient_name, "contactless": body.contactless,
            "distance_m": distance, "far_from_stop": proof.far_from_stop(distance, threshold)}


def proof_summary(raw: Any) -> ProofSummary | None:
    if raw is None:
        return None
    data = as_dict(raw)
    return ProofSummary(keys=list(data.get("keys") or []), recipient_name=data.get("recipient_name"),
                        contactless=bool(data.get("contactless")),
                        distance_m=float(data["distance_m"]) if data.get("distance_m") is not None else None,
                        far_from_stop=bool(data.get("far_from_stop")))


def shipment_proof(repo: Repository, merchant_id: str, shipment_id: str) -> ProofView:
    """The proof of delivery with short-lived links to its images (the objects are never public)."""
    shipment = require_shipment(repo, merchant_id, shipment_id)
    summary = proof_summary(shipment.proof)
    if summary is None:
        raise errors.not_found("Proof of delivery")
    images = []
    for key in summary.keys:
        parsed = proof.parse_proof_key(key)
        if parsed is not None:
            images.append(ProofImage(kind=parsed.kind, url=blob_store().presigned_read(key, proof.READ_TTL_S),
                                     expires_in_s=proof.READ_TTL_S))
    return ProofView(shipment_id=shipment_id, images=images, **summary.model_dump())
