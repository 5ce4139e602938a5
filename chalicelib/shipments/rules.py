"""Proof of delivery rules: what may be uploaded, where it lives, and when a delivery looks far from its stop.

Pure domain code. S3's presigned POST policy states the same limits, but the
local emulator does not enforce them, and a client may upload something other
than it announced, so the service checks every attached object against these
rules itself before a delivery refers to it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Literal

ProofKind = Literal["photo", "signature"]
CONTENT_TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
MAX_BYTES = 10 * 1024 * 1024
MIN_BYTES = 100  # smaller than any real photo or drawn signature: an empty or truncated upload
UPLOAD_TTL_S = 300  # a phone asks right before it uploads
READ_TTL_S = 300  # a merchant or recipient link to the image

_KEY = re.compile(r"^proof/(?P<merchant>[A-Za-z0-9_]+)/(?P<shipment>[A-Za-z0-9_]+)/"
                  r"(?P<kind>photo|signature)-(?P<nonce>[A-Za-z0-9_-]{22,})\.(?P<ext>jpg|png|webp)$")


@dataclass(frozen=True, slots=True)
class ProofKey:
    merchant_id: str
    shipment_id: str
    kind: ProofKind
    content_type: str
    key: str


def new_proof_key(merchant_id: str, shipment_id: str, kind: ProofKind, content_type: str) -> ProofKey:
    """An unguessable key scoped to the merchant and shipment (128 bits of randomness)."""
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"content type must be one of {', '.join(CONTENT_TYPES)}")
    key = f"proof/{merchant_id}/{shipment_id}/{kind}-{secrets.token_urlsafe(16)}.{CONTENT_TYPES[content_type]}"
    return ProofKey(merchant_id, shipment_id, kind, content_type, key)


def parse_proof_key(key: str) -> ProofKey | None:
    """The key's parts, or None when it is not a key this service issues."""
    match = _KEY.match(key)
    if match is None:
        return None
    content_type = next(t for t, ext in CONTENT_TYPES.items() if ext == match["ext"])
    kind: ProofKind = "photo" if match["kind"] == "photo" else "signature"
    return ProofKey(match["merchant"], match["shipment"], kind, content_type, key)


def key_problem(key: str, merchant_id: str, shipment_id: str) -> str | None:
    """Why this key cannot be attached to this shipment (None: it can). Same answer for 'another merchant's'
    and 'not ours at all', so a caller learns nothing about other tenants' keys."""
    parsed = parse_proof_key(key)
    if parsed is None or parsed.merchant_id != merchant_id or parsed.shipment_id != shipment_id:
        return "not an upload of this shipment"
    return None


def sniff_image(head: bytes) -> str | None:
    """The image type the first bytes show (JPEG, PNG, WebP), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def uploaded_object_problem(key: str, size: int | None, stored_type: str | None, head: bytes) -> str | None:
    """Why an uploaded object is not acceptable proof (None: it is): missing, too big or small, or not the
    image type its key says, whatever the uploader declared."""
    parsed = parse_proof_key(key)
    if parsed is None:
        return "not an upload of this shipment"
    if size is None:
        return "not uploaded (no such object)"
    if size > MAX_BYTES:
        return f"larger than {MAX_BYTES // (1024 * 1024)} MB"
    if size < MIN_BYTES:
        return "empty or truncated"
    if stored_type is not None and stored_type != parsed.content_type:
        return f"stored as {stored_type}, expected {parsed.content_type}"
    sniffed = sniff_image(head)
    if sniffed != parsed.content_type:
        return f"content is not {parsed.content_type}"
    return None


def far_from_stop(distance_m: float | None, threshold_m: float) -> bool:
    """A delivery marked more than the merchant's threshold from the stop (unknown distance: not flagged)."""
    return distance_m is not None and distance_m > threshold_m
