"""The fix chunk encoding (storage/fix_chunks.py) and the ingest fast paths, without AWS."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core.json_input import value_problems
from chalicelib.ingest.models import PingIn, fast_fix, parse_ping
from chalicelib.ingest.rules import Fix, Ping
from chalicelib.storage.fix_chunks import (
    CHUNK_MAX_FIXES,
    CHUNK_MAX_SPAN_MS,
    chunk_range,
    chunk_sk,
    decode_fix_times,
    decode_fixes,
    encode_fixes,
    split_chunks,
)
from chalicelib.storage.repository import fix_chunk_items


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    # any float of the range (subnormals, 17 significant digits) and the few decimals phones send
    return st.one_of(st.floats(low, high, allow_nan=False), st.integers(int(low * 100), int(high * 100)).map(
        lambda n: n / 100), st.sampled_from([low, high, 0.0]))


def optional(low: float, high: float) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), floats(low, high))


rows = st.lists(st.tuples(
    st.integers(0, 4_102_444_800_000), floats(-90, 90), floats(-180, 180), optional(0, 100_000),
    optional(0, 150), optional(0, 360), optional(-1000, 20_000), optional(0, 100),
), min_size=1, max_size=60, unique_by=lambda r: r[0]).map(lambda rs: sorted(rs, key=lambda r: r[0]))


@settings(max_examples=300, deadline=None)
@given(rows)
def test_the_encoding_gives_back_the_very_fixes(fixes: list[Any]) -> None:
    text = encode_fixes(fixes)
    assert decode_fixes(text) == fixes
    assert decode_fix_times(text) == [r[0] for r in fixes]
    assert ";" not in "".join(text.split(";")) and "\n" not in text


def test_extreme_and_missing_values_round_trip() -> None:
    fixes: list[Any] = [
        (0, -90.0, -180.0, None, None, None, None, None),
        (1, 90.0, 180.0, 0.0, 150.0, 360.0, -1000.0, 100.0),
        (2, 5e-324, -5e-324, 1e-130, None, 0.1, None, 99.9),  # subnormal, DynamoDB's smallest magnitude
        (3, 52.520008123456789, 13.404954000000001, None, 3.14159, None, 20_000.0, None),
        (4_102_444_799_999, -0.0, 0.0, 100_000.0, None, None, None, 0.0),
    ]
    assert decode_fixes(encode_fixes(fixes)) == fixes


def test_a_phone_fix_is_a_few_bytes() -> None:
    fixes = [(1_763_600_000_000 + i * 1000, 52.5200081 + i * 1e-5, 13.4049541 + i * 2e-5, 8.5, 9.37, 75.4,
              34.2, 87.0 - i * 0.1) for i in range(10)]
    text = encode_fixes(fixes)
    assert decode_fixes(text) == fixes
    assert len(text) < 400, text  # ten ~0.3 KB items before


def test_chunks_are_bounded_in_count_and_span() -> None:
    times = [i * 1000 for i in range(120)] + [10_000_000 + i * 200_000 for i in range(5)]
    parts = split_chunks(times)
    assert [len(times[p]) for p in parts][:3] == [CHUNK_MAX_FIXES, CHUNK_MAX_FIXES, 20]
    assert sum(len(times[p]) for p in parts) == len(times)
    assert all(times[p][-1] - times[p][0] <= CHUNK_MAX_SPAN_MS for p in parts)
    assert split_chunks([]) == []


@given(st.lists(st.integers(0, 10**13 - 1), min_size=1, max_size=80, unique=True),
       st.integers(0, 10**13 - 1), st.integers(0, CHUNK_MAX_SPAN_MS * 3))
def test_the_key_range_finds_every_chunk_overlapping_a_window(times: list[int], since: int, width: int) -> None:
    times.sort()
    until = since + width
    low, high = chunk_range(since, until)
    for part in split_chunks(times):
        chunk = times[part]
        overlaps = any(since <= t <= until for t in chunk)
        if overlaps:
            assert low <= chunk_sk(chunk) <= high


def test_the_key_is_deterministic_in_the_fix_set() -> None:
    assert chunk_sk([1, 2, 3]) == chunk_sk([1, 2, 3]) != chunk_sk([2, 3])
    assert chunk_sk([1, 2, 3]).startswith("POINTS#0000000000003#")


def ping(fix_ms: int, driver: str = "drv_1", **extra: Any) -> Ping:
    return Ping(driver, "mer_1", fix_ms, 47.6, -122.3, "8a28d5553577fff", 1_000, **extra)


def test_chunk_items_per_driver_sorted_with_ttl() -> None:
    pings = [ping(3000, battery=50.0), ping(1000), ping(2000, driver="drv_2")]
    items = fix_chunk_items(pings, ttl_s=86_400)
    assert [i["PK"]["S"] for i in items] == ["DRIVER#drv_1", "DRIVER#drv_2"]
    first = items[0]
    assert first["SK"]["S"] == chunk_sk([1000, 3000])
    assert decode_fixes(first["f"]["S"]) == [(1000, 47.6, -122.3, None, None, None, None, None),
                                             (3000, 47.6, -122.3, None, None, None, None, 50.0)]
    assert first["expires_at"]["N"] == str(3 + 86_400) and first["received_ms"]["N"] == "1000"
    assert set(first) == {"PK", "SK", "merchant_id", "driver_id", "received_ms", "expires_at", "f"}


# --- the ingest fast paths decide exactly as the full paths do ------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=True),
                    st.text(max_size=6))
fix_times = st.one_of(
    st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?[Zz]\Z"), scalars)
items = st.fixed_dictionaries({"lat": st.one_of(floats(-91, 91), scalars), "lng": st.one_of(floats(-181, 181), scalars),
                               "fix_time": fix_times},
                              optional={name: st.one_of(floats(-2000, 200_000), scalars)
                                        for name in ("accuracy", "speed", "heading", "altitude", "battery", "extra")})


@settings(max_examples=500, deadline=None)
@given(items)
def test_the_fast_fix_accepts_only_what_pydantic_accepts_with_the_same_value(raw: dict[str, Any]) -> None:
    from chalicelib.core.times import to_ms

    fast = fast_fix(raw)
    if value_problems(raw) or fast is None:
        return
    model = PingIn.model_validate(raw)  # raises if the fast path accepted something pydantic refuses
    assert fast == Fix(model.lat, model.lng, to_ms(model.fix_time), model.accuracy, model.speed, model.heading,
                       model.altitude, model.battery)


def test_the_fast_fix_takes_a_phone_ping_and_leaves_the_rest_to_pydantic() -> None:
    phone = {"lat": 52.52, "lng": 13.4, "fix_time": "2026-01-01T10:00:00.250Z", "speed": 3.5}
    assert fast_fix(phone) == Fix(52.52, 13.4, 1_767_261_600_250, None, 3.5)
    for other in ({**phone, "lat": 52}, {**phone, "fix_time": 1_767_261_600}, {**phone, "speed": 151.0},
                  {**phone, "fix_time": "2026-01-01T11:00:00+01:00"}, {**phone, "fix_time": "2026-02-30T10:00:00Z"}):
        assert fast_fix(other) is None
    assert parse_ping(0, {**phone, "lat": 52}) == Fix(52, 13.4, 1_767_261_600_250, None, 3.5)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=4), scalars, max_size=6))
def test_the_flat_value_screen_names_the_same_problems(raw: dict[str, Any]) -> None:
    from chalicelib.core.json_input import walk_values

    for numbers in (True, False):
        assert value_problems(raw, numbers=numbers) == walk_values(raw, numbers=numbers)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e-200, 2**53, "a\x00b", True])
def test_the_flat_value_screen_refuses_what_the_walker_refuses(bad: Any) -> None:
    problems = value_problems({"lat": bad})
    assert (problems == []) is (bad is True)


def test_values_outside_any_field_range_still_round_trip() -> None:
    fixes: list[Any] = [(5, 1e300, -1e300, 1.5e8, 2.0**60, None, None, 1e-300)]
    assert decode_fixes(encode_fixes(fixes)) == fixes


def test_runs_of_fix_times_split_at_large_gaps() -> None:
    from chalicelib.storage.fix_chunks import clusters

    assert clusters([], 10) == []
    assert clusters([1, 5, 15, 40, 41], 10) == [(1, 15), (40, 41)]
    assert clusters([7], 10) == [(7, 7)]
