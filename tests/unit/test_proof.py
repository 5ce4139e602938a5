"""Proof-of-delivery rules: key scoping, what counts as an acceptable upload, the far-from-stop flag."""

from __future__ import annotations

import pytest

from chalicelib.shipments.rules import (
    MAX_BYTES,
    far_from_stop,
    key_problem,
    new_proof_key,
    parse_proof_key,
    sniff_image,
    uploaded_object_problem,
)

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "


def test_keys_are_scoped_unguessable_and_parse_back() -> None:
    a = new_proof_key("mer_1", "shp_1", "photo", "image/jpeg")
    b = new_proof_key("mer_1", "shp_1", "photo", "image/jpeg")
    assert a.key != b.key and a.key.startswith("proof/mer_1/shp_1/photo-") and a.key.endswith(".jpg")
    assert len(a.key.split("-", 1)[1].split(".")[0]) >= 22  # 128 bits, base64url
    assert parse_proof_key(a.key) == a
    sig = new_proof_key("mer_1", "shp_1", "signature", "image/png")
    assert parse_proof_key(sig.key) == sig


@pytest.mark.parametrize("content_type", ["image/gif", "text/html", "application/pdf", "", "image/svg+xml"])
def test_only_jpeg_png_webp(content_type: str) -> None:
    with pytest.raises(ValueError):
        new_proof_key("mer_1", "shp_1", "photo", content_type)


def test_a_key_of_another_shipment_or_merchant_cannot_be_attached() -> None:
    key = new_proof_key("mer_1", "shp_1", "photo", "image/jpeg").key
    assert key_problem(key, "mer_1", "shp_1") is None
    assert key_problem(key, "mer_1", "shp_2") == key_problem(key, "mer_2", "shp_1") == "not an upload of this shipment"
    for forged in ("proof/mer_1/shp_1/../shp_2/photo-aaaaaaaaaaaaaaaaaaaaaa.jpg", "photo.jpg", "",
                   "proof/mer_1/shp_1/photo-short.jpg", "proof/mer_1/shp_1/photo-aaaaaaaaaaaaaaaaaaaaaa.exe"):
        assert key_problem(forged, "mer_1", "shp_1") is not None


def test_sniffing_recognises_the_three_types_only() -> None:
    assert sniff_image(JPEG) == "image/jpeg"
    assert sniff_image(PNG) == "image/png"
    assert sniff_image(WEBP) == "image/webp"
    assert sniff_image(b"GIF89a\x00\x00") is None
    assert sniff_image(b"<html><script>") is None
    assert sniff_image(b"") is None


def test_uploaded_objects_are_checked_by_size_type_and_content() -> None:
    key = new_proof_key("mer_1", "shp_1", "photo", "image/jpeg").key
    assert uploaded_object_problem(key, 50_000, "image/jpeg", JPEG) is None
    assert uploaded_object_problem(key, None, None, b"") == "not uploaded (no such object)"
    assert "larger than 10 MB" in str(uploaded_object_problem(key, MAX_BYTES + 1, "image/jpeg", JPEG))
    assert uploaded_object_problem(key, 10, "image/jpeg", JPEG) == "empty or truncated"
    assert "stored as image/png" in str(uploaded_object_problem(key, 50_000, "image/png", PNG))
    # declared as a JPEG, but the bytes are HTML: refused whatever the uploader said
    assert uploaded_object_problem(key, 50_000, "image/jpeg", b"<html>") == "content is not image/jpeg"


def test_far_from_stop_uses_the_threshold_and_ignores_unknown_distance() -> None:
    assert far_from_stop(151.0, 150.0) and not far_from_stop(150.0, 150.0)
    assert not far_from_stop(None, 150.0)
