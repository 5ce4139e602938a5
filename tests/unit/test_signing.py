"""The one signed-token helper: purposes kept apart, the old token bytes kept, constant-time checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.core.security import decode_cursor, encode_cursor, tracking_token
from chalicelib.core.signing import Purpose, Signer, b64decode, b64encode, issued_recently, unexpired
from chalicelib.driver_app.rules import sign_link, verify_link
from chalicelib.recipient.forms import check_csrf, csrf_token

SECRET = "test-secret-" + "x" * 32
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _old_mac(message: bytes) -> bytes:
    return hmac.new(SECRET.encode(), message, hashlib.sha256).digest()


def test_tokens_already_handed_out_keep_working() -> None:
    # Tracking tokens are derived, never stored: a changed derivation would break every link already sent.
    old = base64.urlsafe_b64encode(_old_mac(b"track:shp_1:3")).rstrip(b"=").decode()
    assert tracking_token(SECRET, "shp_1", 3) == old and len(old) == 43
    expires = NOW + timedelta(hours=16)
    payload = f"mer_1:drv_2:0:{int(expires.timestamp())}".encode()
    link = ("dl1." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + "."
            + base64.urlsafe_b64encode(_old_mac(b"driver-app-link:" + payload)).rstrip(b"=").decode())
    assert sign_link(SECRET, "mer_1", "drv_2", 0, expires) == link and verify_link(SECRET, link, NOW) is not None
    issued = int(NOW.timestamp())
    csrf = f"{issued}." + base64.urlsafe_b64encode(_old_mac(f"csrf:{'A' * 43}:{issued}".encode())[:18]).decode()
    assert csrf_token(SECRET, "A" * 43, issued) == csrf and check_csrf(SECRET, "A" * 43, csrf, issued + 1)


def test_a_token_of_one_purpose_is_never_valid_for_another() -> None:
    message = b'{"k":{"PK":"x"},"s":"scope"}'
    macs = {purpose: Signer(SECRET, purpose).mac(message) for purpose in Purpose}
    assert len(set(macs.values())) == len(Purpose)
    for purpose in Purpose:
        for other in Purpose:
            assert Signer(SECRET, other).verify(message, macs[purpose]) is (purpose is other)
    sealed = Signer(SECRET, Purpose.CURSOR).seal(b"mer_1:drv_2:0:9999999999")
    assert Signer(SECRET, Purpose.DRIVER_LINK).unseal(sealed) is None
    assert verify_link(SECRET, "dl1." + sealed, NOW) is None  # a cursor-signed payload is not a link
    cursor = encode_cursor(SECRET, "scope", {"PK": "x"})
    assert verify_link(SECRET, "dl1." + cursor, NOW) is None and not check_csrf(SECRET, "A" * 43, cursor)
    assert decode_cursor(SECRET, "scope", cursor) == {"PK": "x"}


def test_seal_and_unseal() -> None:
    signer = Signer(SECRET, Purpose.DRIVER_LINK)
    token = signer.seal(b"payload")
    assert signer.unseal(token) == b"payload"
    assert Signer("another-secret", Purpose.DRIVER_LINK).unseal(token) is None
    encoded_payload, encoded_mac = token.split(".")
    assert signer.unseal(f"{b64encode(b'payloaf')}.{encoded_mac}") is None
    assert signer.unseal(f"{encoded_payload}.{encoded_mac[:22]}") is None  # a truncated MAC is refused
    for bad in ("", ".", "a.", ".b", "!!.??", token + "=", token.replace(".", "")):
        assert signer.unseal(bad) is None


def test_macs_and_base64() -> None:
    signer = Signer(SECRET, Purpose.CSRF)
    assert len(signer.mac("m")) == 32 and signer.mac("m", 16) == signer.mac(b"m")[:16]
    with pytest.raises(ValueError):
        signer.mac("m", 8)
    assert not signer.verify("m", signer.mac("m")[:31])
    assert b64decode(b64encode(b"\xff\x00abc")) == b"\xff\x00abc"
    assert b64decode("a+b/") is None and b64decode("abcde") is None and b64decode("") is None


def test_expiry_helpers() -> None:
    assert unexpired(100, 99.999) and not unexpired(100, 100)  # expiry is exclusive
    assert issued_recently(1000, 1000 + 86400, 86400) and not issued_recently(1000, 1001 + 86400, 86400)
    assert issued_recently(1060, 1000, 86400) and not issued_recently(1061, 1000, 86400)  # a minute of skew
