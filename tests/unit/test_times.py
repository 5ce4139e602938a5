"""The one millisecond/datetime helper and the one tracking-URL builder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.core.config import Settings
from chalicelib.core.links import tracking_page_url, tracking_url
from chalicelib.core.security import tracking_token
from chalicelib.core.times import from_ms, iso_z, now_ms, to_ms

NOON = datetime(2026, 11, 21, 12, 0, 0, 123000, tzinfo=UTC)


def test_milliseconds_both_ways_without_float_rounding() -> None:
    assert to_ms(NOON) == 1795262400123
    assert from_ms(1795262400123) == NOON
    assert from_ms(Decimal("1795262400123")) == from_ms(1795262400123.0) == NOON  # as pynamodb hands them back
    assert to_ms(None) is None and from_ms(None) is None
    assert to_ms(NOON.replace(tzinfo=None)) == to_ms(NOON)  # naive is UTC
    assert to_ms(NOON.astimezone(timezone(timedelta(hours=-5)))) == to_ms(NOON)
    assert to_ms(NOON + timedelta(microseconds=999)) == to_ms(NOON)  # rounded down
    assert abs(now_ms() - to_ms(datetime.now(UTC))) < 5_000


@given(st.integers(-2**41, 2**45))
def test_property_round_trip(ms: int) -> None:
    assert to_ms(from_ms(ms)) == ms


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_property_iso_z_sorts_like_the_instant(a: datetime, b: datetime) -> None:
    assert (iso_z(a) < iso_z(b)) == (a < b) or a.year < 1000 or b.year < 1000
    assert iso_z(NOON) == "2026-11-21T12:00:00.123000Z"


def test_one_tracking_url_builder() -> None:
    settings = Settings(stage="test", table_name="doorstep", bucket_name="proofs", token_secret="s" * 40,
                        public_base_url="https://track.example")
    token = tracking_token(settings.token_secret, "shp_1", 2)
    assert tracking_url(settings, "shp_1", 2) == f"https://track.example/track/{token}"
    assert tracking_page_url("/api", token) == f"/api/track/{token}"
