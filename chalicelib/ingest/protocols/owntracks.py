"""OwnTracks HTTP mode: one JSON message per POST in, a native ping or a driver-reported event out.

What the apps send (owntracks.org/booklet, tech/http and tech/json):

* `POST` of one JSON object, the same payloads as in MQTT mode, told apart by `_type`.
  A **zero-length body** happens (a deleted friend) and is ignored.
* `_type: location`: `lat`, `lon` (degrees), `tst` (epoch **seconds** of the fix),
  `acc` (m), `alt` (m), `vel` (**km/h**), `cog` (degrees), `batt` (percent), `tid`,
  `t` (trigger), `topic` (`owntracks/user/device`, HTTP payloads only), and extras.
  Some numbers arrive as strings (`"tst": "1385997757"`); `-1` means unknown for
  `vel`, `cog` and `batt`. Without `tst` (seen in the booklet's samples) the fix
  time is the receive time.
* `_type: transition`: `event` enter/leave of a region the driver defined on the phone,
  `desc` (region name), `rid`, `tst`, `lat`/`lon`/`acc` where it fired, `wtst`, `t`.
  Returned as a `Transition` for the route to record as a driver-reported event.
* `_type: lwt`: the last will the broker publishes when the phone's connection drops (`tst`: when the
  phone connected). Returned as `Ignored("lwt")`; the route marks the driver offline at once (reason `lwt`).
* Other `_type`s (`waypoint`, `waypoints`, `card`, `status`, `steps`, `beacon`,
  `cmd`, `configuration`, `encrypted`...) are accepted and ignored (`Ignored`);
  encrypted payloads cannot be read (turn encryption off in the app).
* Credentials: HTTP **Basic** auth (`parse_basic_auth`). The app also sends `X-Limit-U`
  (user) and `X-Limit-D` (device) headers, and the Recorder accepts `?u=&d=`; they are
  ignored: the driver is whoever the Basic credentials belong to, never whoever a header names.

What the route answers:

* accepted, ignored, empty body, and also a fix the ingest screening refused: **200**,
  `Content-Type: application/json`, body **`[]`** (`RESPONSE_BODY`): the app expects a
  JSON array (it may carry commands back; Doorstep sends none).
* missing or wrong credentials: **401** with `WWW-Authenticate: Basic realm="doorstep"`
  (`unauthorized()`).
* unreadable JSON, a missing `_type`, garbage fields: **400** with the JSON error body
  naming the field (`parse_message` raises it). The app counts any HTTP answer, even an
  error, as delivered and does not resend; it queues and resends only when unreachable.

Validation happens once, in `chalicelib.models.parse_ping`, via `_common.NativeItem.check`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from chalicelib.core import json_input
from chalicelib.core.errors import DomainError, ErrorKind, FieldProblem
from chalicelib.ingest.protocols.common import (
    KMH_MPS,
    NativeItem,
    as_bytes,
    bad_request,
    number,
    parse_event_time_ms,
    refusal,
    scaled,
)
from chalicelib.ingest.rules import Fix, ItemResult

RESPONSE_STATUS = 200
RESPONSE_BODY = "[]"
RESPONSE_CONTENT_TYPE = "application/json"
MAX_AUTH_HEADER_CHARS = 4096
MAX_REGION_CHARS = 200
MAX_LABEL_CHARS = 200
LAST_WILL = "lwt"


@dataclass(frozen=True, slots=True)
class Location:
    """A `_type: location` message: one native ping, validated."""

    ping: dict[str, object]  # the native ping item, as a native client would POST it
    fix: Fix  # the same, as chalicelib.models.parse_ping parsed it
    tracker_id: str | None = None  # tid
    topic: str | None = None
    trigger: str | None = None  # t


@dataclass(frozen=True, slots=True)
class Transition:
    """A `_type: transition` message: the phone says the driver entered or left one of its regions."""

    event: Literal["enter", "leave"]
    occurred_ms: int  # tst
    region: str | None = None  # desc
    region_id: str | None = None  # rid
    lat: float | None = None
    lng: float | None = None
    accuracy: float | None = None  # acc, metres
    trigger: str | None = None  # t: c (circular region), b (beacon), l (location update)
    waypoint_created_ms: int | None = None  # wtst
    tracker_id: str | None = None  # tid


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message that is valid but carries nothing for Doorstep: answer 200 `[]`."""

    type: str | None
    reason: str


Message = Location | Transition | Ignored


def parse_message(body: bytes | str | None, *, received_ms: int) -> Message:
    """Decode one HTTP-mode POST body. Raises `DomainError` 400 (naming the field), 413, or 422 for text that is
    not plain Unicode (a lone surrogate, a control character: `chalicelib.core.json_input`).

    `received_ms` is the receive time, used when a location or transition has no `tst`.
    """
    data = as_bytes(body)
    if not data.strip():
        return Ignored(None, "empty body")
    root = json_input.loads(data)  # 400 for a BOM, duplicate keys, NaN, deep nesting, not JSON
    json_input.refuse_values(root, numbers=False)  # numbers are judged by the fix validator, as in every fix
    if not isinstance(root, dict):
        raise bad_request("body", "expected a JSON object")
    kind = root.get("_type")
    if kind is None:
        raise bad_request("_type", "required")
    if not isinstance(kind, str):
        raise bad_request("_type", "expected a string")
    if kind == "location":
        return _location(root, received_ms)
    if kind == "transition":
        return _transition(root, received_ms)
    if kind == "encrypted":
        return Ignored(kind, "encrypted payloads are not supported: turn encryption off in the app")
    return Ignored(kind, "nothing to record for this _type")


def _label(root: Mapping[str, object], key: str) -> str | None:
    value = root.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(key, "expected a string")
    return value[:MAX_LABEL_CHARS]


def _fix_item(root: Mapping[str, object], received_ms: int) -> NativeItem:
    item = NativeItem()
    item.put("lat", "lat", number(root.get("lat")))
    item.put("lng", "lon", number(root.get("lon")))
    item.put_time("tst", root.get("tst"), received_ms)
    item.put("accuracy", "acc", number(root.get("acc")))
    return item


def _location(root: Mapping[str, object], received_ms: int) -> Location:
    item = _fix_item(root, received_ms)
    item.put("speed", "vel", scaled(root.get("vel"), KMH_MPS), "km/h, converted to m/s")
    item.put("heading", "cog", scaled(root.get("cog"), 1.0))
    item.put("altitude", "alt", number(root.get("alt")))
    item.put("battery", "batt", scaled(root.get("batt"), 1.0))
    result = item.check(0)
    if isinstance(result, ItemResult):
        raise refusal([result], f"Invalid location: {result.field}: {result.reason}")
    return Location(item.values, result, _label(root, "tid"), _label(root, "topic"), _label(root, "t"))


def _transition(root: Mapping[str, object], received_ms: int) -> Transition:
    event = root.get("event")
    if event not in ("enter", "leave"):
        raise bad_request("event", "expected enter or leave")
    region = _label(root, "desc")
    lat, lng, accuracy = None, None, None
    if root.get("lat") is None and root.get("lon") is None:
        raw_tst = root.get("tst")
        try:
            occurred_ms = received_ms if raw_tst is None or raw_tst == "" else parse_event_time_ms(raw_tst)
        except ValueError as exc:
            raise bad_request("tst", str(exc)) from None
    else:
        # Where it fired: checked by the same validator as every fix.
        item = _fix_item(root, received_ms)
        result = item.check(0)
        if isinstance(result, ItemResult):
            raise refusal([result], f"Invalid transition: {result.field}: {result.reason}")
        occurred_ms, lat, lng, accuracy = result.fix_ms, result.lat, result.lng, result.accuracy
    waypoint_ms = None
    if root.get("wtst") is not None:
        try:
            waypoint_ms = parse_event_time_ms(root.get("wtst"))
        except ValueError as exc:
            raise bad_request("wtst", str(exc)) from None
    return Transition("enter" if event == "enter" else "leave", occurred_ms,
                      region[:MAX_REGION_CHARS] if region else None, _label(root, "rid"),
                      lat, lng, accuracy, _label(root, "t"), waypoint_ms, _label(root, "tid"))


# --- credentials and labels ------------------------------------------------------------


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """`Authorization: Basic base64(user:password)` as (user, password); None for anything else.

    Robust to garbage: a missing header, another scheme, bad base64, no colon, an empty
    user or password, control characters, an oversized header all give None. The
    credentials are decoded as UTF-8, or ISO-8859-1 when they are not UTF-8 (OkHttp's
    default, used by the Android app). The password may contain colons.
    """
    if not isinstance(header, str) or len(header) > MAX_AUTH_HEADER_CHARS:
        return None
    parts = header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    token = parts[1].strip()
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None
    return user, password


def unauthorized() -> DomainError:
    """401 asking for Basic credentials (what OwnTracks is configured with)."""
    reason = "HTTP Basic credentials of a driver are required"
    return DomainError(ErrorKind.UNAUTHENTICATED, "unauthorized", "Valid Basic credentials are required.",
                       [FieldProblem("Authorization", reason)], auth_scheme="Basic")
