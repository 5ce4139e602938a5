"""Protocol adapters (OsmAnd / Traccar Client, OwnTracks HTTP mode): real samples, units, times, bad input.

The samples come from ../shared/data/clients (Traccar's decoder tests, the OwnTracks
booklet and Recorder); tests that read them skip with the reason when it is absent.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.app import MultiDict
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.core.errors import DomainError as ApiError
from chalicelib.geo.geofence import DriverState, FenceIndex, GeofenceParams, GeoFix, evaluate, stop_fence
from chalicelib.http.errors import error_headers, status_of
from chalicelib.ingest.models import parse_ping
from chalicelib.ingest.protocols import osmand as traccar
from chalicelib.ingest.protocols import owntracks
from chalicelib.ingest.protocols.common import KNOT_MPS, parse_time_ms
from chalicelib.ingest.rules import Fix, LastFix, ScreenLimits, screen_batch
from tests.conftest import shared_path

NOW = 1_750_000_000_000  # 2025-06-15T15:06:40Z
# The deployed defaults: Settings.max_ping_accuracy_m / max_speed_mps, and GeofenceParams.max_accuracy_m.
LIMITS = ScreenLimits(max_accuracy_m=500.0, max_speed_mps=70.0)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def query(target: str, method: str = "GET") -> traccar.TraccarRequest:
    return traccar.parse_request(method, target, None, None, now_ms=NOW)


def form(target: str) -> traccar.TraccarRequest:
    body = target.split("?", 1)[1]
    return traccar.parse_request("POST", None, "application/x-www-form-urlencoded", body.encode(), now_ms=NOW)


def post_json(body: Any, target: str | None = None) -> traccar.TraccarRequest:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return traccar.parse_request("POST", target, "application/json; charset=utf-8", raw, now_ms=NOW)


def refused(call: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def fields(error: ApiError) -> list[str]:
    return [d.field for d in error.details]


def one(request: traccar.TraccarRequest) -> Fix:
    assert len(request.fixes) == 1 and len(request.pings) == 1
    return request.fixes[0]


def ot(payload: Any, received_ms: int = NOW) -> owntracks.Message:
    raw = payload if isinstance(payload, bytes | str) or payload is None else json.dumps(payload)
    return owntracks.parse_message(raw, received_ms=received_ms)


def ot_location(payload: Any) -> owntracks.Location:
    message = ot(payload)
    assert isinstance(message, owntracks.Location)
    return message


# --- Traccar / OsmAnd: the real samples -----------------------------------------------------


def _annotated() -> list[dict[str, Any]]:
    data = json.loads(shared_path("clients", "traccar", "osmand_samples_annotated.json").read_text())
    return list(data["samples"])


def test_every_annotated_traccar_sample_gets_its_documented_answer() -> None:
    accepted, rejected, no_fix = 0, 0, 0
    for sample in _annotated():
        expect = sample["expect"]
        if "request_target" in sample:
            target = sample["request_target"]
            calls = [lambda t=target: query(t, "GET"), lambda t=target: query(t, "POST"), lambda t=target: form(t)]
        else:
            calls = [lambda b=sample["body"]: post_json(b)]
        for call in calls:
            if expect.startswith("verifyNull"):  # missing id -> rejected, HTTP 400
                error = refused(call)
                assert (status_of(error), error.details[0].field) == (400, "id"), sample["n"]
                assert error.body()["error"]["details"][0]["field"] == "id"
            else:
                request = call()
                assert request.device_id, sample["n"]
                if expect.startswith("verifyNotNull"):  # cell/Wi-Fi only: valid, no position to store
                    assert request.fixes == [] and request.attributes["cell"], sample["n"]
                else:
                    one(request)
        if expect.startswith("verifyNull"):
            rejected += 1
        else:
            accepted += 1
            no_fix += expect.startswith("verifyNotNull")
    assert (accepted, rejected, no_fix) == (14, 1, 1)


def test_traccar_sample_files_match_the_annotated_outcomes() -> None:
    annotated = {s["request_target"]: s["expect"] for s in _annotated() if "request_target" in s}
    lines = shared_path("clients", "traccar", "osmand_query_requests.txt").read_text().split("\n")
    targets = [line.strip() for line in lines if line.strip()]
    assert len(targets) == 11 and set(targets) == set(annotated)
    outcomes = []
    for target in targets:
        try:
            outcomes.append(len(query(target).fixes))
        except ApiError as error:
            assert annotated[target].startswith("verifyNull") and status_of(error) == 400
            outcomes.append(-1)
    assert sorted(outcomes) == [-1, 0] + [1] * 9
    bodies = shared_path("clients", "traccar", "traccar_json_bodies.jsonl").read_text().splitlines()
    assert len(bodies) == 4
    for body in bodies:
        request = traccar.parse_request("POST", None, "application/json", body.encode(), now_ms=NOW)
        assert request.form == "json" and len(request.fixes) == 1


def test_traccar_sample_values_and_units() -> None:
    samples = {s["n"]: s for s in _annotated()}
    fix = one(query(samples[11]["request_target"]))  # speed=40 knots
    assert fix.speed == pytest.approx(40 * 0.514444, rel=1e-5)
    assert (fix.lat, fix.lng, fix.fix_ms) == (40.7232948571, -74.0061408571, 1504763810000)
    assert fix.heading == pytest.approx(7.19889788244)
    fix = one(query(samples[9]["request_target"]))  # batt=87 percent, no timestamp: the receive time
    assert (fix.battery, fix.fix_ms, fix.altitude, fix.speed) == (87.0, NOW, 350.059479, 0.0)
    fix = one(query(samples[3]["request_target"]))  # hdop=6.0: OsmAnd's accuracy placeholder, metres
    assert (fix.accuracy, fix.fix_ms) == (6.0, ms("2016-01-27T18:55:47+00:00"))
    request = query(samples[8]["request_target"])  # deviceid, hacc=0 (unknown), vacc kept as attribute
    assert request.device_id == "123456" and one(request).accuracy is None and request.attributes["vacc"] == "0"
    assert query(samples[10]["request_target"]).pings[0] == {"lat": 60.0, "lng": 30.0,
                                                             "fix_time": "2013-08-22T13:14:27.000Z"}
    assert query(samples[11]["request_target"]).attributes == {"ignition": "true", "rpm": "933", "fuel": "24"}

    fix = one(post_json(samples[104]["body"]))  # JSON: speed already m/s, battery level 0..1
    assert (fix.speed, fix.heading, fix.battery, fix.accuracy, fix.altitude) == (18.67, 63.0, 79.0, 3.8, 35.7)
    assert fix.fix_ms == ms("2021-07-21T08:06:34.444+00:00")
    fix = one(post_json(samples[103]["body"]))  # speed -1, heading -1, battery -1: unknown
    assert (fix.speed, fix.heading, fix.battery, fix.accuracy) == (None, None, None, 5.0)
    request = post_json(samples[101]["body"])
    fix = one(request)
    assert (request.device_id, fix.battery, fix.heading, fix.speed) == ("48241179", 100.0, None, 0.0)
    assert request.attributes["event"] == "motionchange" and "_" not in request.attributes


def test_traccar_pings_are_native_items_that_the_native_validator_accepts_as_is() -> None:
    for sample in _annotated():
        if sample["expect"].startswith("verify") and not sample["expect"].startswith("verifyPosition"):
            continue
        request = query(sample["request_target"]) if "request_target" in sample else post_json(sample["body"])
        for index, (item, fix) in enumerate(zip(request.pings, request.fixes, strict=True)):
            assert parse_ping(index, json.loads(json.dumps(item))) == fix  # JSON-ready, same answer again


# --- Traccar / OsmAnd: forms, times, units ---------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("1377177267", 1377177267000),  # epoch seconds
    ("1442068686579", 1442068686579),  # epoch milliseconds
    ("2147483646", 2147483646000),  # below 2**31-1: still seconds (Traccar's rule)
    ("2147483647", 2147483647),  # from 2**31-1: milliseconds
    ("1377177267.25", 1377177267250),
    ("2016-01-27T18:55:47Z", 1453920947000),  # ISO 8601 / RFC 3339
    ("2016-01-27T18:55:47.123Z", 1453920947123),
    ("2016-01-27T20:55:47%2B02:00", 1453920947000),
    ("2016-01-27T20:55:47%2B0200", 1453920947000),
    ("2016-01-27T20:55:47+02:00", 1453920947000),  # "+" sent unencoded: it decodes to a space
    ("2016-01-27T16:55:47-02:00", 1453920947000),
    ("2016-01-27T18:55:47", 1453920947000),  # no offset: UTC
    ("2014-06-04+09%3A10%3A11", 1401873011000),  # yyyy-MM-dd HH:mm:ss, form-encoded as in the sample
    ("2014-06-04%2009:10:11", 1401873011000),
    ("270116185547", 1453920947000),  # Traccar's 12-digit device time ddMMyyHHmmss (UTC)
])
def test_traccar_timestamp_forms(value: str, expected: int) -> None:
    assert one(query(f"/?id=7&lat=1&lon=2&timestamp={value}")).fix_ms == expected
    assert one(form(f"/?id=7&lat=1&lon=2&timestamp={value}")).fix_ms == expected


def test_traccar_timestamp_absent_or_empty_is_the_receive_time() -> None:
    assert one(query("/?id=7&lat=1&lon=2")).fix_ms == NOW
    assert one(query("/?id=7&lat=1&lon=2&timestamp=")).fix_ms == NOW


@pytest.mark.parametrize("value", ["yesterday", "2016-01-27", "2016-13-45T99:00:00Z", "1e400", "99999999999999999",
                                   "-", "1.2.3", "0x10", "nan"])
def test_traccar_garbage_timestamps_are_refused_naming_the_field(value: str) -> None:
    error = refused(query, f"/?id=7&lat=1&lon=2&timestamp={value}")
    assert status_of(error) == 400 and fields(error) == ["timestamp"]


def test_speed_in_knots_becomes_metres_per_second() -> None:
    assert one(query("/?id=7&lat=1&lon=2&speed=10")).speed == pytest.approx(5.144444, rel=1e-6)
    assert one(query("/?id=7&lat=1&lon=2&speed=1")).speed == KNOT_MPS == pytest.approx(0.514444, rel=1e-5)
    assert one(query("/?id=7&lat=1&lon=2&speed=-1")).speed is None  # unknown
    error = refused(query, "/?id=7&lat=1&lon=2&speed=400")  # 205.8 m/s: above the native 150 m/s cap
    assert fields(error) == ["speed"] and "knots, converted to m/s" in error.details[0].reason


def test_query_and_form_and_multidict_inputs_agree() -> None:
    target = "/?id=42&lat=52.5&lon=13.4&timestamp=1700000000&speed=2&bearing=90&altitude=35&accuracy=8&batt=55"
    expected = Fix(52.5, 13.4, 1700000000000, 8.0, 2 * KNOT_MPS, 90.0, 35.0, 55.0)
    assert one(query(target)) == expected
    assert one(query(target, "POST")) == expected
    assert one(form(target)) == expected
    as_dict = dict(pair.split("=", 1) for pair in target[2:].split("&"))
    assert one(traccar.parse_request("GET", as_dict, None, None, now_ms=NOW)) == expected
    lists = {k: [v] for k, v in as_dict.items()}
    assert one(traccar.parse_request("GET", lists, None, b"", now_ms=NOW)) == expected
    chalice_params = MultiDict({k: ["0", v] if k == "lat" else [v] for k, v in as_dict.items()})
    assert one(traccar.parse_request("GET", chalice_params, None, None, now_ms=NOW)) == expected  # last wins
    # A form body whose content type the client did not set, and location=lat,lon.
    request = traccar.parse_request("POST", {}, None, b"id=42&location=52.5,13.4&timestamp=1700000000", now_ms=NOW)
    assert (one(request).lat, one(request).lng) == (52.5, 13.4)
    request = traccar.parse_request("POST", None, "application/x-www-form-urlencoded",
                                    b"id=42&lat=1&lon=2&alarm=what?now", now_ms=NOW)
    assert request.attributes == {"alarm": "what?now"}


def test_query_string_wins_over_the_body_as_in_traccar() -> None:
    request = traccar.parse_request("POST", "id=1&lat=1&lon=1", "application/x-www-form-urlencoded",
                                    b"id=2&lat=2&lon=2", now_ms=NOW)
    assert request.device_id == "1" and one(request).lat == 1.0


def test_missing_or_ambiguous_device_id_is_refused_with_400() -> None:
    for target in ("/?lat=1&lon=2", "/?id=&lat=1&lon=2", "/?id=%20&lat=1&lon=2", "/", ""):
        error = refused(query, target)
        assert (status_of(error), fields(error)) == (400, ["id"]), target
    assert (status_of(refused(form, "/?lat=1&lon=2")), refused(form, "/?lat=1&lon=2").details[0].field) == (400, "id")
    error = refused(query, "/?id=1&deviceid=2&lat=1&lon=2")
    assert fields(error) == ["id"] and "different values" in error.details[0].reason
    assert query("/?id=1&deviceid=1&lat=1&lon=2").device_id == "1"
    assert fields(refused(query, "/?id=a%00b&lat=1&lon=2")) == ["id"]  # control characters
    assert fields(refused(query, f"/?id={'x' * 300}&lat=1&lon=2")) == ["id"]
    # JSON form: device_id, or the query string's id
    body = {"location": {"timestamp": "2025-06-15T13:45:12Z", "coords": {"latitude": 1, "longitude": 2}}}
    error = refused(post_json, body)
    assert (status_of(error), fields(error)) == (400, ["device_id"])
    assert post_json(body, "/?id=99").device_id == "99"
    assert fields(refused(post_json, {**body, "device_id": True})) == ["device_id"]
    assert fields(refused(post_json, {**body, "device_id": {"x": 1}})) == ["device_id"]
    assert post_json({**body, "device_id": 12345}).device_id == "12345"


def test_unknown_device_answer_follows_traccar() -> None:
    assert status_of(traccar.unknown_device(query("/?id=1&lat=1&lon=2"))) == 400
    body = {"device_id": "1", "location": {"timestamp": "2025-06-15T13:45:12Z",
                                           "coords": {"latitude": 1, "longitude": 2}}}
    error = traccar.unknown_device(post_json(body))
    assert (status_of(error), fields(error)) == (404, ["device_id"])


@pytest.mark.parametrize(("target", "field"), [
    ("/?id=1&lat=abc&lon=2", "lat"),
    ("/?id=1&lat=91&lon=2", "lat"),
    ("/?id=1&lat=1&lon=200", "lon"),
    ("/?id=1&lat=1&lon=nan", "lon"),
    ("/?id=1&lat=1&lon=inf", "lon"),
    ("/?id=1&lat=1", "lon"),
    ("/?id=1&lon=1", "lat"),
    ("/?id=1&location=60.0", "location"),
    ("/?id=1&location=60.0,abc", "location"),
    ("/?id=1&location=60.0,30.0,5", "location"),
    ("/?id=1&lat=1&lon=2&speed=fast", "speed"),
    ("/?id=1&lat=1&lon=2&bearing=400", "bearing"),
    ("/?id=1&lat=1&lon=2&heading=north", "heading"),
    ("/?id=1&lat=1&lon=2&altitude=high", "altitude"),
    ("/?id=1&lat=1&lon=2&accuracy=-3", "accuracy"),
    ("/?id=1&lat=1&lon=2&hdop=bad", "hdop"),
    ("/?id=1&lat=1&lon=2&batt=150", "batt"),
    ("/?id=1&lat=1&lon=2&batt=full", "batt"),
    ("/?id=1&lat=1_000&lon=2", "lat"),
])
def test_traccar_garbage_fields_are_refused_naming_the_field(target: str, field: str) -> None:
    error = refused(query, target)
    assert status_of(error) == 400 and fields(error) == [field]
    body = error.body()["error"]
    assert body["code"] == "bad_request" and body["details"][0]["field"] == field and body["details"][0]["reason"]


def test_traccar_valid_false_and_no_position_carry_no_fix() -> None:
    assert query("/?id=1&lat=1&lon=2&valid=false").fixes == []
    assert query("/?id=1&lat=1&lon=2&valid=0").fixes == []
    assert len(query("/?id=1&lat=1&lon=2&valid=true").fixes) == 1
    assert query("/?id=1&timestamp=1377177267").fixes == []  # a heartbeat
    assert query("/?id=1&lat=&lon=").fixes == []  # empty values are skipped, as Traccar does


def test_traccar_json_garbage_and_batches() -> None:
    def loc(**coords: Any) -> dict[str, Any]:
        return {"timestamp": "2025-06-15T13:45:12.862Z", "coords": {"latitude": 1.5, "longitude": 2.5, **coords}}

    assert fields(refused(post_json, b"{not json")) == ["body"]
    assert fields(refused(post_json, [1, 2])) == ["body"]
    assert fields(refused(post_json, {"device_id": "1"})) == ["location"]
    assert fields(refused(post_json, {"device_id": "1", "location": "here"})) == ["location"]
    assert fields(refused(post_json, {"device_id": "1", "location": []})) == ["location"]
    bad_lat = refused(post_json, {"device_id": "1", "location": loc(latitude="north")})
    assert (status_of(bad_lat), fields(bad_lat)) == (400, ["location.coords.latitude"])
    assert fields(refused(post_json, {"device_id": "1", "location": loc(longitude=True)})) == \
        ["location.coords.longitude"]
    assert fields(refused(post_json, {"device_id": "1", "location": {**loc(), "timestamp": "soon"}})) == \
        ["location.timestamp"]
    no_time = loc()
    del no_time["timestamp"]
    assert fields(refused(post_json, {"device_id": "1", "location": no_time})) == ["location.timestamp"]
    assert fields(refused(post_json, {"device_id": "1", "location": {**loc(), "coords": [1, 2]}})) == \
        ["location.coords"]
    battery = refused(post_json, {"device_id": "1", "location": {**loc(), "battery": {"level": 79}}})
    assert fields(battery) == ["location.battery.level"] and "fraction" in battery.details[0].reason
    # Strings that are numbers are numbers, in the JSON form too.
    assert one(post_json({"device_id": "1", "location": loc(latitude="1.5", speed="3")})).speed == 3.0
    # A heartbeat (no coords) is valid and stores nothing.
    assert post_json({"device_id": "1", "location": {"timestamp": "2025-06-15T13:45:12Z"}}).fixes == []
    # A batch: the valid items are kept, the refused ones reported; all refused is a 400.
    request = post_json({"device_id": "1", "location": [loc(), loc(latitude=99), "x", loc(longitude=3.5)]})
    assert [f.lng for f in request.fixes] == [2.5, 3.5]
    assert [(d.index, d.field) for d in request.dropped] == [(1, "location[1].coords.latitude"), (2, "location[2]")]
    error = refused(post_json, {"device_id": "1", "location": [loc(latitude=99), loc(longitude=999)]})
    assert fields(error) == ["location[0].coords.latitude", "location[1].coords.longitude"]
    assert fields(refused(post_json, {"device_id": "1", "location": [loc()] * 501})) == ["location"]
    # No content type, but a JSON body and no query string: read as JSON (curl --data).
    request = traccar.parse_request("POST", None, None, json.dumps({"device_id": "5", "location": loc()}), now_ms=NOW)
    assert request.form == "json" and request.device_id == "5"


def test_traccar_transport_level_refusals() -> None:
    assert status_of(refused(traccar.parse_request, "DELETE", "/?id=1", None, None, now_ms=NOW)) == 405
    big = b"id=1&x=" + b"a" * 300_000
    assert status_of(refused(traccar.parse_request, "POST", None, "application/x-www-form-urlencoded", big,
                   now_ms=NOW)) == 413
    assert fields(refused(traccar.parse_request, "POST", None, "application/x-www-form-urlencoded", b"id=1&\xff",
                          now_ms=NOW)) == ["body"]
    many = "&".join(f"k{i}=1" for i in range(300))
    assert fields(refused(query, f"/?id=1&{many}")) == ["query"]


@given(st.text(max_size=200), st.binary(max_size=200), st.sampled_from([None, "application/json", "text/plain"]))
def test_traccar_never_fails_with_anything_but_a_4xx(target: str, body: bytes, content_type: str | None) -> None:
    for q in (target, None):
        try:
            traccar.parse_request("POST", q, content_type, body, now_ms=NOW)
        except ApiError as error:
            assert 400 <= status_of(error) < 500 and error.details


# --- OwnTracks: the real samples ------------------------------------------------------------


def _ot_samples() -> list[dict[str, Any]]:
    lines = shared_path("clients", "owntracks", "owntracks_payloads.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_every_owntracks_sample_is_accepted() -> None:
    kinds: dict[str, int] = {}
    for sample in _ot_samples():
        message = ot(sample["payload"])  # raises on refusal
        kinds[type(message).__name__] = kinds.get(type(message).__name__, 0) + 1
        if sample.get("expect", "").startswith("accepted"):
            assert isinstance(message, owntracks.Location)
        if isinstance(message, owntracks.Location):
            assert parse_ping(0, json.loads(json.dumps(message.ping))) == message.fix
    assert kinds == {"Location": 11, "Transition": 2, "Ignored": 1}


def test_owntracks_sample_values_and_units() -> None:
    payloads = [s["payload"] for s in _ot_samples()]
    full = ot_location(payloads[2])  # vel 61 km/h, cog 271, acc 5, alt 167, batt 67
    assert full.fix.speed == pytest.approx(61 / 3.6) == pytest.approx(16.9444, rel=1e-4)
    assert (full.fix.heading, full.fix.accuracy, full.fix.altitude, full.fix.battery) == (271.0, 5.0, 167.0, 67.0)
    assert (full.fix.fix_ms, full.tracker_id, full.trigger) == (1497349316000, "JJ", "u")
    unknown = ot_location(payloads[13])  # cog -1, batt -1, vel -1: unknown
    assert (unknown.fix.speed, unknown.fix.heading, unknown.fix.battery) == (None, None, None)
    assert ot_location(payloads[5]).topic == "owntracks/qtripp/865284041968706"
    no_tst = ot_location(payloads[7])  # the booklet's topic sample has no tst: the receive time
    assert no_tst.fix.fix_ms == NOW
    transition = ot(payloads[11])
    assert transition == owntracks.Transition("enter", 1433342520000, "Main@WestWing", None, 2.2222, 1.1111, 65.0,
                                              None, 1432817332000, "jp")
    transition = ot(payloads[9])
    assert isinstance(transition, owntracks.Transition)
    assert (transition.region, transition.region_id, transition.accuracy) == \
        ("My favorite coffee shop (Delaville)", "f7676c", None)
    waypoint = ot(payloads[10])  # "rad": "50", "tst": "1385997757" as strings
    assert waypoint == owntracks.Ignored("waypoint", "nothing to record for this _type")


def test_owntracks_numbers_that_arrive_as_strings() -> None:
    location = ot_location({"_type": "location", "lat": "48.85", "lon": " 2.295 ", "tst": "1497476456",
                            "acc": "15", "vel": "36", "cog": "90", "alt": "-12", "batt": "80"})
    assert location.fix == Fix(48.85, 2.295, 1497476456000, 15.0, 10.0, 90.0, -12.0, 80.0)
    transition = ot({"_type": "transition", "event": "leave", "tst": "1433342520", "lat": "2.5", "lon": "1.5",
                     "acc": "30"})
    assert isinstance(transition, owntracks.Transition)
    assert (transition.event, transition.occurred_ms, transition.lat, transition.accuracy) == \
        ("leave", 1433342520000, 2.5, 30.0)


@pytest.mark.parametrize("body", [b"", "", None, b"   ", b"\r\n"])
def test_owntracks_zero_length_bodies_are_ignored(body: bytes | str | None) -> None:
    assert ot(body) == owntracks.Ignored(None, "empty body")


@pytest.mark.parametrize("kind", ["lwt", "waypoint", "waypoints", "card", "status", "steps", "beacon", "cmd",
                                  "configuration", "encrypted", "request", "something-new"])
def test_owntracks_other_types_are_accepted_and_ignored(kind: str) -> None:
    message = ot({"_type": kind, "tst": "1440363922", "data": "..."})
    assert isinstance(message, owntracks.Ignored) and message.type == kind


@pytest.mark.parametrize(("payload", "field"), [
    (b"{not json", "body"),
    (b"\xff\xfe{", "body"),
    ([{"_type": "location"}], "body"),
    ("null", "body"),
    ({"lat": 1, "lon": 2}, "_type"),
    ({"_type": 7, "lat": 1, "lon": 2}, "_type"),
    ({"_type": "location", "lon": 2, "tst": 1497476456}, "lat"),
    ({"_type": "location", "lat": 1, "tst": 1497476456}, "lon"),
    ({"_type": "location", "lat": 1, "lon": 200, "tst": 1497476456}, "lon"),
    ({"_type": "location", "lat": "north", "lon": 2, "tst": 1497476456}, "lat"),
    ({"_type": "location", "lat": True, "lon": 2, "tst": 1497476456}, "lat"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": "yesterday"}, "tst"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "vel": "fast"}, "vel"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "vel": 900}, "vel"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "acc": -5}, "acc"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "cog": 720}, "cog"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "batt": 101}, "batt"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "alt": [1]}, "alt"),
    ({"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "tid": 5}, "tid"),
    ({"_type": "transition", "event": "exit", "tst": 1433342520}, "event"),
    ({"_type": "transition", "tst": 1433342520}, "event"),
    ({"_type": "transition", "event": "enter", "tst": "later"}, "tst"),
    ({"_type": "transition", "event": "enter", "tst": 1433342520, "lat": "x", "lon": 1}, "lat"),
    ({"_type": "transition", "event": "enter", "tst": 1433342520, "lat": 1}, "lon"),
    ({"_type": "transition", "event": "enter", "tst": 1433342520, "desc": 5}, "desc"),
    ({"_type": "transition", "event": "enter", "tst": 1433342520, "wtst": "then"}, "wtst"),
])
def test_owntracks_garbage_is_refused_naming_the_field(payload: Any, field: str) -> None:
    error = refused(ot, payload)
    assert status_of(error) == 400 and fields(error) == [field]


def test_owntracks_speed_reason_tells_the_unit() -> None:
    error = refused(ot, {"_type": "location", "lat": 1, "lon": 2, "tst": 1497476456, "vel": 900})
    assert "km/h, converted to m/s" in error.details[0].reason


def test_owntracks_oversized_body() -> None:
    assert status_of(refused(ot, b"{" + b" " * 300_000 + b"}")) == 413


@given(st.binary(max_size=300))
def test_owntracks_never_fails_with_anything_but_a_4xx(body: bytes) -> None:
    try:
        ot(body)
    except ApiError as error:
        assert 400 <= status_of(error) < 500 and error.details


# --- OwnTracks: credentials and labels -------------------------------------------------------


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(("header", "expected"), [
    (basic(b"drv_1:s3cret"), ("drv_1", "s3cret")),
    (basic(b"drv_1:pa:ss:word"), ("drv_1", "pa:ss:word")),  # the password may hold colons
    ("basic " + base64.b64encode(b"jane:pw").decode(), ("jane", "pw")),  # the scheme is case-insensitive
    ("  Basic   " + base64.b64encode(b"jane:pw").decode() + "  ", ("jane", "pw")),
    ("Basic " + base64.b64encode(b"jane:pw1").decode().rstrip("="), ("jane", "pw1")),  # padding left off
    (basic("jöhn:pässwörd".encode()), ("jöhn", "pässwörd")),  # UTF-8
    (basic("jöhn:pässwörd".encode("latin-1")), ("jöhn", "pässwörd")),  # ISO-8859-1 (OkHttp's default)
    (None, None),
    ("", None),
    ("Basic", None),
    ("Basic ", None),
    ("Bearer abc.def", None),
    ("Basic !!!notbase64!!!", None),
    ("Basic " + base64.b64encode(b"no-colon").decode(), None),
    (basic(b":password-only"), None),
    (basic(b"user-only:"), None),
    (basic(b"us\x00er:pw"), None),
    (basic(b"user:p\nw"), None),
    ("Basic " + "A" * 5000, None),
    ("Digest username=jane", None),
])
def test_parse_basic_auth(header: str | None, expected: tuple[str, str] | None) -> None:
    assert owntracks.parse_basic_auth(header) == expected


@given(st.text(max_size=300))
def test_parse_basic_auth_never_raises(header: str) -> None:
    result = owntracks.parse_basic_auth(header)
    assert result is None or (result[0] and result[1])


def test_unauthorized_asks_for_basic_credentials() -> None:
    error = owntracks.unauthorized()
    assert status_of(error) == 401 and error_headers(error)["WWW-Authenticate"].startswith("Basic realm=")
    assert fields(error) == ["Authorization"]


def test_response_constants() -> None:
    assert (traccar.SUCCESS_STATUS, traccar.SUCCESS_BODY) == (200, "")
    assert (owntracks.RESPONSE_STATUS, json.loads(owntracks.RESPONSE_BODY)) == (200, [])


# --- parse_time_ms directly -----------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, [1], {"t": 1}, float("nan"), float("inf"), "", "  "])
def test_parse_time_refuses_what_is_not_a_time(value: object) -> None:
    with pytest.raises(ValueError):
        parse_time_ms(value)


def test_parse_time_numbers() -> None:
    assert parse_time_ms(1440395361) == 1440395361000
    assert parse_time_ms(1440395361.5) == 1440395361500
    assert parse_time_ms(1442068686579) == 1442068686579
    assert parse_time_ms("1969-12-31T23:59:58.5Z") == -1500


# --- the real OwnTracks track: bad fixes must not move the driver ---------------------------


def _replay_rec() -> list[tuple[int, owntracks.Message]]:
    path: Path = shared_path("clients", "owntracks", "recorder_etc_demo-iphone.rec")
    out = []
    for line in path.read_text().splitlines():
        received, _topic, payload = line.split("\t", 2)
        received_ms = ms(received.replace("Z", "+00:00"))
        out.append((received_ms, owntracks.parse_message(payload.encode(), received_ms=received_ms)))
    return out


def test_rec_track_replay_through_adapter_and_screening() -> None:
    messages = _replay_rec()
    locations = [(r, m) for r, m in messages if isinstance(m, owntracks.Location)]
    assert len(messages) == 25 and len(locations) == 23
    assert [m.type for _, m in messages if isinstance(m, owntracks.Ignored)] == ["lwt", "lwt"]
    accuracies = [m.fix.accuracy or 0.0 for _, m in locations]
    assert (min(accuracies), max(accuracies)) == (5.0, 5000.0)
    assert sum(a > 100 for a in accuracies) == 15 and sum(a > 500 for a in accuracies) == 15

    # One POST per fix, as HTTP mode sends them: screened at the time the Recorder received each,
    # against the driver's last stored fix (what services.ingest_pings does).
    last: LastFix | None = None
    outcome: list[tuple[float, str]] = []
    for received_ms, location in locations:
        screening = screen_batch([location.fix], driver_id="drv", merchant_id="mer", now_ms=received_ms,
                                 limits=LIMITS, last_fix=last)
        (result,) = screening.finalize()
        outcome.append((location.fix.accuracy or 0.0, result.status))
        newest = screening.newest()
        if newest is not None:  # services.ingest_pings advances the latest position with this
            assert (newest.accuracy or 0.0) <= 100
            last = LastFix(newest.fix_ms, newest.lat, newest.lng)
    assert all(status == "rejected" for acc, status in outcome if acc > 500)
    assert all(status == "accepted" for acc, status in outcome if acc <= 100)
    assert sum(status == "accepted" for _, status in outcome) == 8
    assert last is not None and last.fix_ms == 1440405601000  # the last good fix, 08:40:01Z

    # In one batch (e.g. a queue flushed after a dead zone) the answer is the same.
    batch = screen_batch([m.fix for _, m in locations], driver_id="drv", merchant_id="mer",
                         now_ms=locations[-1][0], limits=LIMITS, last_fix=None)
    assert [r.status for r in batch.finalize()] == [s for _, s in outcome]


def test_rec_track_bad_fixes_never_trigger_a_geofence() -> None:
    """Worst case: a stop fence centred exactly on each fix. Only fixes of 100 m or better may enter it."""
    params = GeofenceParams()
    assert params.max_accuracy_m == 100.0
    entered = []
    for _, message in _replay_rec():
        if not isinstance(message, owntracks.Location):
            continue
        fix = message.fix
        index = FenceIndex([stop_fence("stop", fix.lat, fix.lng)])
        _, events = evaluate(GeoFix("drv", fix.fix_ms, fix.lat, fix.lng, fix.accuracy), DriverState("drv"), index,
                             params)
        if events:
            entered.append(fix.accuracy)
    assert len(entered) == 8 and max(a or 0.0 for a in entered) <= 10


def test_a_300m_fix_passes_screening_and_would_become_the_latest_position() -> None:
    """The gap between the two accuracy rules (screening 500 m, geofences 100 m), shown on one fix.

    A 300 m fix is stored (history keeps it, which is right) and fires no geofence, but
    `Screening.newest()` returns it, and `services.ingest_pings` advances the driver's latest
    position with `newest()`: the tracking page marker, nearby-driver queries and the
    pipeline's motion/ETA/approach-by-distance would follow a 300 m fix. See the report.
    """
    good = ot_location({"_type": "location", "lat": 52.52, "lon": 13.40, "tst": NOW // 1000 - 60, "acc": 10})
    coarse = ot_location({"_type": "location", "lat": 52.521, "lon": 13.40, "tst": NOW // 1000 - 30, "acc": 300})
    screening = screen_batch([good.fix, coarse.fix], driver_id="drv", merchant_id="mer", now_ms=NOW,
                             limits=LIMITS, last_fix=None)
    assert [r.status for r in screening.finalize()] == ["accepted", "accepted"]
    newest = screening.newest()
    assert newest is not None and newest.accuracy == 300.0
    index = FenceIndex([stop_fence("stop", 52.521, 13.40)])
    _, events = evaluate(GeoFix("drv", coarse.fix.fix_ms, 52.521, 13.40, 300.0), DriverState("drv"), index,
                         GeofenceParams())
    assert events == []
