"""Ids, secrets, cursors and H3 coverage."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core.config import SettingsError, load_settings
from chalicelib.core.security import (
    CursorError,
    decode_cursor,
    encode_cursor,
    hash_secret,
    looks_like_tracking_token,
    new_id,
    new_secret,
    tracking_token,
)
from chalicelib.geo import cells as geo
from chalicelib.shipments.lifecycle import ALLOWED, FINAL, ShipmentStatus, TransitionError, check_transition

SECRET = "s" * 40


def test_ids_sort_by_creation_time():
    ids = [new_id("shp", now_ms=ms) for ms in (1, 2, 1000, 10**12)]
    assert ids == sorted(ids)
    assert len({new_id("shp", now_ms=5) for _ in range(100)}) == 100


def test_secrets_are_long_and_hashed():
    key = new_secret("dsk")
    assert key.startswith("dsk_") and len(key) >= 40
    assert hash_secret(key) == hash_secret(key) != hash_secret(new_secret("dsk"))
    assert len(hash_secret(key)) == 64


def test_tracking_tokens_are_256_bit_and_revocable_by_version():
    token = tracking_token(SECRET, "shp_1", 1)
    assert looks_like_tracking_token(token)
    assert tracking_token(SECRET, "shp_1", 2) != token
    assert tracking_token("t" * 40, "shp_1", 1) != token
    assert not looks_like_tracking_token("short") and not looks_like_tracking_token(token[:-1] + "!")


def test_cursor_round_trip_and_tampering():
    key = {"PK": "MERCHANT#a", "SK": "SHIPMENT#b"}
    cursor = encode_cursor(SECRET, "scope", key)
    assert decode_cursor(SECRET, "scope", cursor) == key
    with pytest.raises(CursorError):
        decode_cursor(SECRET, "other-scope", cursor)
    with pytest.raises(CursorError):
        decode_cursor("x" * 40, "scope", cursor)
    with pytest.raises(CursorError):
        decode_cursor(SECRET, "scope", "!!!not-base64")
    with pytest.raises(CursorError):
        decode_cursor(SECRET, "scope", cursor[:-4] + "AAAA")


def test_haversine_known_distance():
    # Seattle Space Needle to Pike Place Market, about 1.3 km
    assert geo.haversine_m(47.6205, -122.3493, 47.6097, -122.3422) == pytest.approx(1315, rel=0.02)


@settings(max_examples=60, deadline=None)
@given(lat=st.floats(-70, 70), lng=st.floats(-179, 179), radius=st.floats(10, geo.MAX_NEARBY_RADIUS_M),
       bearing=st.floats(0, 2 * math.pi), frac=st.floats(0, 1))
def test_cells_within_cover_every_point_within_the_radius(lat, lng, radius, bearing, frac):
    cells = set(geo.cells_within(lat, lng, radius))
    # a point at distance frac*radius in direction bearing (small-distance approximation, then checked)
    d = frac * radius
    dlat = d * math.cos(bearing) / 111_320
    dlng = d * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    plat, plng = lat + dlat, lng + dlng
    if geo.haversine_m(lat, lng, plat, plng) <= radius:
        assert geo.coarse_cell(plat, plng) in cells


def test_lifecycle_final_states_and_conflicts():
    assert {ShipmentStatus.DELIVERED, ShipmentStatus.RETURNED, ShipmentStatus.CANCELLED} == FINAL
    check_transition(ShipmentStatus.CREATED, ShipmentStatus.ASSIGNED)
    with pytest.raises(TransitionError) as info:
        check_transition(ShipmentStatus.DELIVERED, ShipmentStatus.CANCELLED)
    assert info.value.current == ShipmentStatus.DELIVERED
    assert set(ALLOWED) == set(ShipmentStatus)


def test_settings_are_validated_once_with_named_variables():
    good = {"DOORSTEP_STAGE": "local", "DOORSTEP_TABLE_NAME": "t-1", "DOORSTEP_BUCKET_NAME": "b-1",
            "DOORSTEP_PUBLIC_BASE_URL": "http://127.0.0.1:8000", "DOORSTEP_TOKEN_SECRET": SECRET}
    assert load_settings(good).ping_retention_days == 30
    with pytest.raises(SettingsError, match="DOORSTEP_TOKEN_SECRET"):
        load_settings({**good, "DOORSTEP_TOKEN_SECRET": "short"})
    with pytest.raises(SettingsError, match="DOORSTEP_PING_RETENTION_DAYS"):
        load_settings({**good, "DOORSTEP_PING_RETENTION_DAYS": "zero"})
