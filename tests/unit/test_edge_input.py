"""The edge's input rules, one by one: strict JSON (400), value screening (422 naming the field), strict and
bounded times and days, the Content-Type rule, strict query parameters, and errors naming the field at fault."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from chalicelib.core import json_input
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.types import Day, FixTime, Instant, Strict_, blame
from chalicelib.http.routes import check_json_content_type, parse_query, problems_from

# --- structure: 400 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xef\xbb\xbf{}", "byte order mark"),
    ('\ufeff{}', "byte order mark"),
    (b'{"a": 1, "a": 2}', 'member name "a" appears twice'),
    (b'{"outer": {"b": 1, "b": 1}}', 'member name "b" appears twice'),
    (b'{"x": NaN}', "NaN is not a JSON number"),
    (b'{"x": Infinity}', "Infinity is not a JSON number"),
    (b'{"x": -Infinity}', "-Infinity is not a JSON number"),
    (b"[" * 50_000 + b"]" * 50_000, "nested deeper than 32 levels"),  # ~100 KB: a RecursionError before
    (b'{"a": ' * 33 + b"1" + b"}" * 33, "nested deeper than 32 levels"),
    ('{"x": "é"}'.encode("utf-16"), "not UTF-8"),
    (b'{"x": "\xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded in UTF-8 is not UTF-8
    (b"{not json", "not valid JSON"),
    (b'{"x": ' + b"9" * 5000 + b"}", "not valid JSON"),  # Python refuses more than 4300 digits
])
def test_structure_is_refused_as_malformed(raw, reason):
    with pytest.raises(DomainError) as caught:
        json_input.loads(raw)
    assert caught.value.kind is ErrorKind.MALFORMED
    assert reason in caught.value.details[0].reason
    assert caught.value.details[0].field == "body"


def test_nesting_up_to_the_limit_and_ordinary_json_are_read():
    assert json_input.loads(b'{"a": ' * 31 + b"[1]" + b"}" * 31) is not None  # 32 levels
    assert json_input.loads('{"name": "Zoë 🚚", "n": [1, 2.5, null, true]}'.encode()) == {
        "name": "Zoë 🚚", "n": [1, 2.5, None, True]}


def test_depth_check_is_iterative():
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    assert json_input.depth_exceeds(deep, 32)
    assert not json_input.depth_exceeds({"a": [[1]]}, 3)
    assert json_input.depth_exceeds({"a": [[1]]}, 2)


# --- values: 422 naming the field -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e-200, -1e-131, 5e-324, 1e126, -1e300, float("inf"), float("nan")])
def test_floats_dynamodb_cannot_store_are_named(value):
    (problem,) = json_input.value_problems({"pings": [{"lat": 1.0}, {"lat": value}]})
    assert problem.field == "pings.1.lat"
    assert "out of range" in problem.reason


@pytest.mark.parametrize("value", [0, 0.0, -0.0, 1e-130, -1e-130, 9.99e125, 47.61, -122.33, 2**53 - 1, -(2**53 - 1)])
def test_storable_numbers_pass(value):
    assert json_input.value_problems({"x": value}) == []


@pytest.mark.parametrize("value", [2**53, -(2**53), 10**400])
def test_integers_beyond_2_53_are_named(value):
    (problem,) = json_input.value_problems({"policy": {"max_age_minutes": {"approaching": value}}})
    assert problem.field == "policy.max_age_minutes.approaching"
    assert "integer out of range" in problem.reason


@pytest.mark.parametrize(("text", "what"), [
    ("\ud800", "lone surrogate"), ("ok\udfffok", "lone surrogate"), ("a\x00b", "control character"),
    ("\x1b[31m", "control character"), ("\x7f", "control character"), ("\x85", "control character"),
    ("\x0b", "control character"), ("\ufffe", "noncharacter"), ("\ufdd0", "noncharacter"),
])
def test_text_that_is_not_plain_unicode_is_named(text, what):
    (problem,) = json_input.value_problems({"recipient": {"name": text}})
    assert problem.field == "recipient.name"
    assert what in problem.reason


def test_multi_line_text_and_any_script_pass():
    assert json_input.value_problems({"note": "Line 1\nLine 2\r\n\tGate 1234 · Tür 3 · 門 · 🚚"}) == []


def test_member_names_are_screened_and_shown_escaped():
    (problem,) = json_input.value_problems({"templates": {"bad\ud800key": "x"}})
    assert problem.field == "templates.bad\\ud800key"
    assert "member name" in problem.reason


def test_refusal_is_invalid_and_bounded():
    with pytest.raises(DomainError) as caught:
        json_input.refuse_values({"items": ["\x00"] * 100})
    assert caught.value.kind is ErrorKind.INVALID
    assert len(caught.value.details) == json_input.MAX_PROBLEMS
    assert caught.value.details[0].field == "items.0"


def test_text_only_screening_leaves_numbers_to_the_fix_validator():
    assert json_input.value_problems({"lat": 1e-200, "desc": "ok"}, numbers=False) == []
    assert json_input.value_problems({"lat": 1e-200, "desc": "\ud800"}, numbers=False)[0].field == "desc"


# --- times and days: strict, 1970 to 2099 -----------------------------------------------------------------------


class _Times(BaseModel):
    at: Instant | None = None
    fix: FixTime | None = None
    day: Day | None = None


@pytest.mark.parametrize("value", ["2026-11-21T16:00:00Z", "2026-11-21T16:00:00.123+01:00", "2026-11-21 16:00:00z",
                                   "1970-01-01T00:00:00Z", "2099-12-31T23:59:59.999-00:00"])
def test_instants_in_range_are_read(value):
    assert _Times(at=value).at is not None


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                   "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
                                   "0", "0.5", 0, 0.5, 1763629200, "2026-11-21", "2026-11-21T16:00:00",
                                   "2026-11-21T16:00Z", "tomorrow"])
def test_instants_out_of_range_or_not_rfc_3339_are_refused(value):
    with pytest.raises(ValidationError) as caught:
        _Times(at=value)
    assert caught.value.errors()[0]["loc"] == ("at",)


def test_fix_times_also_take_epoch_seconds_and_milliseconds():
    assert _Times(fix=1763629200.25).fix == datetime(2025, 11, 20, 9, 0, 0, 250000, tzinfo=UTC)
    assert _Times(fix=1763629200250).fix == datetime(2025, 11, 20, 9, 0, 0, 250000, tzinfo=UTC)
    for bad in ["1763629200", 1e20, -1, True, "0001-01-01T00:00:00+14:00"]:
        with pytest.raises(ValidationError):
            _Times(fix=bad)


@pytest.mark.parametrize("value", ["0", 0, "2026-1-1", "20261121", "0001-01-01", "9999-12-31", "2100-01-01",
                                   "2026-11-21T00:00:00Z", "2026-02-30"])
def test_days_must_be_iso_dates_in_range(value):
    with pytest.raises(ValidationError):
        _Times(day=value)
    assert _Times(day="2026-11-21").day == date(2026, 11, 21)


# --- errors name the field at fault -----------------------------------------------------------------------------


class _Window(Strict_):
    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        if self.end <= self.start:
            raise blame("end", "end must be after start")
        return self


def test_a_blamed_field_is_named_not_its_model():
    class Outer(Strict_):
        time_window: _Window

    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"time_window": {"start": "2026-11-21T18:00:00Z", "end": "2026-11-21T16:00:00Z"}})
    (problem,) = problems_from(caught.value)
    assert (problem.field, problem.reason) == ("time_window.end", "end must be after start")


# --- Content-Type and query parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["application/json", "Application/JSON", "application/json; charset=utf-8",
                                   'application/json;charset="UTF-8"', "application/merge-patch+json",
                                   " application/json "])
def test_json_content_types_are_accepted(value):
    check_json_content_type(value)


@pytest.mark.parametrize("value", [None, "", "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                                   "application/json; charset=latin-1", "application/json; charset=utf-16",
                                   "multipart/form-data; boundary=x", "json"])
def test_other_content_types_are_415(value):
    with pytest.raises(DomainError) as caught:
        check_json_content_type(value)
    assert caught.value.kind is ErrorKind.UNSUPPORTED_MEDIA_TYPE
    assert caught.value.details[0].field == "Content-Type"


def test_query_parameters_are_single_and_plain_text():
    from chalice.app import MultiDict

    assert parse_query(MultiDict({"limit": ["5"], "cursor": ["abc"]})) == {"limit": "5", "cursor": "abc"}
    assert parse_query(None) == {}
    for params, field in [({"limit": ["1", "2"]}, "limit"), ({"status": ["a\x00"]}, "status"),
                          ({"bad\x01": ["1"]}, "query")]:
        with pytest.raises(DomainError) as caught:
            parse_query(MultiDict(params))
        assert caught.value.kind is ErrorKind.INVALID
        assert caught.value.details[0].field == field


def test_the_error_body_stays_json_for_every_refusal():
    with pytest.raises(DomainError) as caught:
        json_input.refuse_values({"k\ud800": "\ud800"})
    json.dumps(caught.value.body(), ensure_ascii=False).encode()  # no UnicodeEncodeError on the way out


# --- the ping validator and the tracker protocols use the same rules ---------------------------------------------

NOW_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z


def test_a_ping_dynamodb_cannot_store_is_refused_alone_naming_the_field():
    from chalicelib.ingest.models import parse_ping
    from chalicelib.ingest.rules import Fix, ItemResult

    bad = parse_ping(3, {"lat": 1e-200, "lng": 1, "fix_time": "2025-06-15T15:00:00Z"})
    assert isinstance(bad, ItemResult) and (bad.index, bad.status, bad.field) == (3, "rejected", "lat")
    assert "out of range" in (bad.reason or "")
    assert isinstance(parse_ping(0, {"lat": 0.0, "lng": 1e-130, "fix_time": "2025-06-15T15:00:00Z"}), Fix)
    odd = parse_ping(1, {"lat": 1, "lng": 1, "fix_time": "2025-06-15T15:00:00Z", "label": "\ud800"})
    assert isinstance(odd, ItemResult) and odd.field == "label"
    old = parse_ping(2, {"lat": 1, "lng": 1, "fix_time": "0001-01-01T00:00:00+14:00"})
    assert isinstance(old, ItemResult) and old.field == "fix_time"


def test_owntracks_text_that_is_not_unicode_is_422_naming_the_field():
    from chalicelib.ingest.protocols import owntracks

    body = json.dumps({"_type": "transition", "event": "enter", "desc": "\ud800", "tst": NOW_MS // 1000})
    with pytest.raises(DomainError) as caught:
        owntracks.parse_message(body.encode(), received_ms=NOW_MS)
    assert caught.value.kind is ErrorKind.INVALID
    assert caught.value.details[0].field == "desc"


@pytest.mark.parametrize(("body", "field"), [
    (b'\xef\xbb\xbf{"_type": "location"}', "body"),
    (b'{"_type": "location", "_type": "card"}', "body"),
    (b'{"_type": "location", "lat": NaN}', "body"),
    (b"[" * 50_000 + b"]" * 50_000, "body"),
    (b'{"_type": "transition", "event": "enter", "tst": 99999999999999999}', "tst"),
    (b'{"_type": "transition", "event": "leave", "tst": 1, "wtst": -99999999999}', "wtst"),
    (b'{"_type": "location", "lat": 1e-200, "lon": 1, "tst": 1750000000}', "lat"),
    (b'{"_type": "location", "lat": "1e-200", "lon": 1, "tst": 1750000000}', "lat"),
])
def test_owntracks_garbage_is_400_naming_the_field(body, field):
    from chalicelib.ingest.protocols import owntracks

    with pytest.raises(DomainError) as caught:
        owntracks.parse_message(body, received_ms=NOW_MS)
    assert caught.value.kind is ErrorKind.MALFORMED
    assert caught.value.details[0].field == field


def test_osmand_json_refuses_hostile_ids_and_drops_hostile_fixes_alone():
    from chalicelib.ingest.protocols import osmand

    def parse(body: object) -> osmand.TraccarRequest:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        return osmand.parse_request("POST", None, "application/json", raw, now_ms=NOW_MS)

    with pytest.raises(DomainError) as caught:
        parse({"device_id": "dev\ud800", "location": {"coords": {"latitude": 1, "longitude": 1}}})
    assert caught.value.details[0].field == "device_id"
    with pytest.raises(DomainError) as caught:
        parse(b'\xef\xbb\xbf{"device_id": "d"}')
    assert caught.value.kind is ErrorKind.MALFORMED
    good = {"timestamp": "2025-06-15T15:00:00Z", "coords": {"latitude": 47.6, "longitude": -122.3}}
    request = parse({"device_id": "dev-1", "location": [
        {**good, "coords": {"latitude": 1e-200, "longitude": 1}}, {**good, "activity": {"type": "\x00"}}, good]})
    assert len(request.fixes) == 1
    assert [d.field for d in request.dropped] == ["location[0].coords.latitude", "location[1].activity.type"]


def test_query_integers_are_digits_only():
    from chalicelib.http.paging import Paging

    assert Paging.model_validate({"limit": "7"}).limit == 7
    for bad in ["1.0", " 5", "+5", "5 ", "1e1", "0x10", "٣", "9" * 40]:
        with pytest.raises(ValidationError) as caught:
            Paging.model_validate({"limit": bad})
        assert caught.value.errors()[0]["loc"] == ("limit",)
