"""Compact JWS (RFC 7515) with ES256 over a signer that holds the private key elsewhere (AWS KMS), and the JWKs
(RFC 7517/7518, thumbprint kids per RFC 7638) a third party verifies receipts with. Pure: the signature comes in."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

ALG = "ES256"
TYP = "doorstep-receipt+jws"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_input(kid: str, claims: dict[str, Any]) -> bytes:
    header = {"alg": ALG, "kid": kid, "typ": TYP}
    compact = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return f"{b64url(compact)}.{b64url(payload)}".encode()


def raw_signature(der: bytes) -> bytes:
    """KMS answers an ECDSA signature DER-encoded; JWS wants r || s, 32 bytes each."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def compact(signing_input_bytes: bytes, der_signature: bytes) -> str:
    return f"{signing_input_bytes.decode()}.{b64url(raw_signature(der_signature))}"


def public_jwk(public_key_der: bytes) -> dict[str, str]:
    """The P-256 public key (SubjectPublicKeyInfo DER, as KMS GetPublicKey answers it) as a JWK with its
    RFC 7638 thumbprint as kid."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key = load_der_public_key(public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("a receipt key must be an EC P-256 key")
    numbers = key.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64url(numbers.x.to_bytes(32, "big")),
           "y": b64url(numbers.y.to_bytes(32, "big"))}
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    return {**jwk, "kid": b64url(thumbprint), "alg": ALG, "use": "sig"}


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, unverified (for display; verification needs the JWKS)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    value = json.loads(b64url_decode(parts[1]))
    if not isinstance(value, dict):
        raise ValueError("the payload is not an object")
    return value
