"""OsmAnd / Traccar Client protocol: requests in, native pings out.

What the clients send (Traccar's OsmAnd decoder, traccar.org/osmand, Traccar Client sources):

* **Query form** (OsmAnd, Traccar Client up to 8.x): `GET` or `POST` with parameters in the
  query string, or, when the query string is empty, form-encoded in the body.
  `id` (or `deviceid`) is required; `lat`, `lon` (or `location=lat,lon`); `timestamp`
  as epoch seconds, epoch milliseconds (values >= 2**31-1), ISO 8601 (`...T...`), or
  `yyyy-MM-dd HH:mm:ss` (taken as UTC here; Traccar uses its server's zone); `speed` in
  **knots**; `bearing` or `heading` in degrees; `altitude` m; `accuracy` m (OsmAnd's
  `hdop` placeholder carries the fix accuracy in metres, used when `accuracy` is absent;
  `hacc` likewise); `batt` percent; `valid=false|0` marks a fix the phone itself
  distrusts. Unknown parameters (`cell`, `wifi`, `alarm`, `mock`, `ignition`...) are kept
  as `attributes`. Empty values are ignored, as Traccar does. Without `timestamp` the fix
  time is the receive time; without `lat`/`lon` (cell/Wi-Fi only, a heartbeat) the
  request is valid and carries no fix.
* **JSON form** (Traccar Client 9+, `Content-Type: application/json`):
  `{"location": {"timestamp": ISO 8601, "coords": {latitude, longitude, accuracy m,
  speed m/s (negative = unknown), heading deg (-1 = unknown), altitude m},
  "battery": {"level": 0..1 (-1 = unknown), "is_charging"}, "is_moving", "event",
  "activity", "extras", ...}, "device_id": "..."}`. `location` may also be an array (the
  SDK's batched upload); `device_id` may instead come as `id`/`deviceid` in the query string.
  A location without `coords` is a heartbeat (no fix).

What the route answers (Traccar server behaviour; Traccar Client for Android treats an
answer >= 400 as a failure, keeps the position and retries it, and a 2xx as delivered):

* success: **200 with an empty body** (`SUCCESS_STATUS`, `SUCCESS_BODY`), also when the
  request carried no fix, and also when the ingest screening refused the fix (too old,
  too inaccurate, impossible speed): a policy refusal must not make the phone resend
  the same fix forever.
* missing id: **400** (`parse_request` raises it). Unknown id: Traccar answers **400**
  in the query form and **404** in the JSON form: `unknown_device(request)`.
* garbage fields: **400**, JSON error body `{"error": {"code", "message", "details":
  [{"field", "reason"}]}}` naming the protocol's field (`lon`, `speed`, `timestamp`,
  `location.coords.latitude`). In a JSON batch, refused items are dropped (reported in
  `dropped`) and the valid ones accepted; the request is refused only when none is valid.
  Note that Traccar Client retries a refused position before sending newer ones.

The device id is the credential (a driver token or a device id the merchant registered):
the route must not log query strings.

Validation happens once, in `chalicelib.models.parse_ping` (the native edge's
validator), through `_common.NativeItem.check`; see `TraccarRequest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from chalicelib.core import json_input
from chalicelib.core.errors import DomainError, ErrorKind, FieldProblem
from chalicelib.ingest.protocols.common import (
    KNOT_MPS,
    MAX_FIXES_PER_REQUEST,
    NativeItem,
    as_bytes,
    bad_request,
    number,
    refusal,
    scaled,
)
from chalicelib.ingest.rules import Fix, ItemResult

SUCCESS_STATUS = 200
SUCCESS_BODY = ""
MAX_DEVICE_ID_CHARS = 256
MAX_PARAMETERS = 200

QueryParams = Mapping[str, str] | Mapping[str, Sequence[str]] | Mapping[str, str | Sequence[str]]
# Parameters the decoder reads; everything else is kept as an attribute.
_READ = frozenset({"id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading",
                   "altitude", "accuracy", "hacc", "hdop", "batt", "valid"})


@dataclass(slots=True)
class TraccarRequest:
    """A usable request: who sent it and its fixes, already validated.

    `pings` are native ping items (`{"lat", "lng", "fix_time", "accuracy", "speed",
    "heading", "altitude", "battery"}`, JSON-ready), exactly what a native client would
    POST; `fixes` are the same items as `chalicelib.models.parse_ping` parsed them (it
    ran once, here). The route feeds one or the other to the native ingest path.
    """

    device_id: str
    form: Literal["query", "json"]
    pings: list[dict[str, object]] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    dropped: list[ItemResult] = field(default_factory=list)
    attributes: dict[str, object] = field(default_factory=dict)

    @property
    def id_field(self) -> str:
        return "id" if self.form == "query" else "device_id"


def parse_request(method: str, query: QueryParams | str | None, content_type: str | None,
                  body: bytes | str | None, *, now_ms: int) -> TraccarRequest:
    """Decode one OsmAnd / Traccar Client request. Raises `DomainError` (400, 405, 413) for an unusable one.

    `query` is the query-string parameters (a dict, a dict of lists, Chalice's MultiDict,
    or the raw query string / request target); `now_ms` is the receive time, used as the
    fix time when the query form has no timestamp.
    """
    if method.upper() not in ("GET", "POST"):
        raise DomainError(ErrorKind.METHOD_NOT_ALLOWED, "method_not_allowed", "Use GET or POST.",
                          [FieldProblem("method", "GET or POST")])
    data = as_bytes(body)
    params = _multi(query)
    media = (content_type or "").split(";")[0].strip().lower()
    looks_json = not params and data.lstrip()[:1] in (b"{", b"[") and media in ("", "text/plain")
    if media == "application/json" or media.endswith("+json") or looks_json:
        return _decode_json(data, params)
    if not params and data.strip():
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise bad_request("body", "form parameters must be UTF-8") from None
        params = _parse_qs(text)
    return _decode_query(params, now_ms)


def unknown_device(request: TraccarRequest) -> DomainError:
    """What Traccar answers for an id it does not know: 400 in the query form, 404 in the JSON form."""
    kind = ErrorKind.MALFORMED if request.form == "query" else ErrorKind.NOT_FOUND
    return DomainError(kind, "unknown_device", "No driver is registered under this device id.",
                    [FieldProblem(request.id_field, "unknown device id")])


# --- query form -----------------------------------------------------------------------


def _parse_qs(text: str) -> dict[str, list[str]]:
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_PARAMETERS)
    except ValueError:
        raise bad_request("query", f"at most {MAX_PARAMETERS} parameters") from None


def _multi(query: QueryParams | str | None) -> dict[str, list[str]]:
    if query is None:
        return {}
    if isinstance(query, str):  # a raw query string, or a request target "/?id=..."
        return _parse_qs(query.split("?", 1)[1] if "?" in query else query)
    getlist = getattr(query, "getlist", None)
    out: dict[str, list[str]] = {}
    for key in query:
        raw: Any = getlist(key) if callable(getlist) else query[key]
        values = [raw] if isinstance(raw, str) else list(raw)
        out[str(key)] = [str(v) for v in values]
    if len(out) > MAX_PARAMETERS:
        raise bad_request("query", f"at most {MAX_PARAMETERS} parameters")
    return out


def _device_id(raw: object, field_name: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise bad_request(field_name, "expected a string")
    text = str(raw).strip()
    if not text:
        raise bad_request(field_name, "required (the device identifier)")
    if len(text) > MAX_DEVICE_ID_CHARS:
        raise bad_request(field_name, f"at most {MAX_DEVICE_ID_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise bad_request(field_name, "must not contain control characters")
    if (reason := json_input.text_problem(text)) is not None:
        raise bad_request(field_name, reason)
    return text


def _query_id(values: Mapping[str, list[str]]) -> str | None:
    ids = {v.strip() for key in ("id", "deviceid") for v in values.get(key, []) if v.strip()}
    if len(ids) > 1:
        raise bad_request("id", "given more than once with different values")
    return ids.pop() if ids else None


def _decode_query(params: Mapping[str, list[str]], now_ms: int) -> TraccarRequest:
    # Empty values are skipped, as Traccar does; the last value of a repeated parameter wins.
    values = {key: kept for key, given in params.items() if (kept := [v for v in given if v != ""])}
    raw_id = _query_id(values)
    if raw_id is None:
        raise bad_request("id", "required (the device identifier; deviceid is also accepted)",
                          "The device id is missing: send id (or deviceid).")
    request = TraccarRequest(_device_id(raw_id, "id"), "query")
    request.attributes = {k: (v[-1] if len(v) == 1 else list(v)) for k, v in values.items() if k not in _READ}

    def last(key: str) -> str | None:
        return values[key][-1] if key in values else None

    lat, lon = last("lat"), last("lon")
    lat_name = lon_name = ""
    if lat is not None or lon is not None:
        lat_name, lon_name = "lat", "lon"
    elif (location := last("location")) is not None:
        parts = location.split(",")
        if len(parts) != 2:
            raise bad_request("location", "expected lat,lon")
        lat, lon = parts
        lat_name = lon_name = "location"
    if lat is None and lon is None:
        return request  # no position (cell/Wi-Fi only, or a heartbeat): valid, nothing to store
    if lat is None or lon is None:
        missing = "lat" if lat is None else "lon"
        raise bad_request(missing, f"required when {'lon' if missing == 'lat' else 'lat'} is given")
    if last("valid") in ("false", "0"):
        request.attributes["valid"] = last("valid")
        return request  # the phone marked the fix invalid: it must not move the driver

    item = NativeItem()
    item.put("lat", lat_name, number(lat))
    item.put("lng", lon_name, number(lon))
    item.put_time("timestamp", last("timestamp"), now_ms)
    item.put("speed", "speed", scaled(last("speed"), KNOT_MPS), "knots, converted to m/s")
    heading_key = "bearing" if "bearing" in values else "heading"
    item.put("heading", heading_key, scaled(last(heading_key), 1.0))
    item.put("altitude", "altitude", number(last("altitude")))
    if "accuracy" in values:
        item.put("accuracy", "accuracy", number(last("accuracy")))
    else:
        for key in ("hacc", "hdop"):
            value = number(last(key))
            if value is None or (isinstance(value, float) and value <= 0):
                continue  # 0 or negative: the client had no figure
            item.put("accuracy", key, value, "metres")
            break
    item.put("battery", "batt", scaled(last("batt"), 1.0))
    result = item.check(0)
    if isinstance(result, ItemResult):
        raise refusal([result], f"Invalid request: {result.field}: {result.reason}")
    request.pings.append(item.values)
    request.fixes.append(result)
    return request


# --- JSON form ------------------------------------------------------------------------


def _decode_json(data: bytes, params: Mapping[str, list[str]]) -> TraccarRequest:
    root = json_input.loads(data)  # 400 for a BOM, duplicate keys, NaN, deep nesting, not JSON
    if not isinstance(root, dict):
        raise bad_request("body", "expected a JSON object with location and device_id")
    # Text outside the fixes is refused whole (422); a fix's own text drops that fix alone (below).
    json_input.refuse_values({k: v for k, v in root.items() if k != "location"}, numbers=False)
    raw_id: object = root.get("device_id")
    id_field = "device_id"
    if raw_id is None or raw_id == "":
        raw_id, id_field = _query_id(params), "id"
    if raw_id is None:
        raise bad_request("device_id", "required (the device identifier)",
                          "The device id is missing: send device_id.")
    request = TraccarRequest(_device_id(raw_id, id_field), "json")

    location = root.get("location")
    if isinstance(location, dict):
        entries: list[tuple[str, object]] = [("location", location)]
    elif isinstance(location, list):
        if not 1 <= len(location) <= MAX_FIXES_PER_REQUEST:
            raise bad_request("location", f"1 to {MAX_FIXES_PER_REQUEST} locations per request")
        entries = [(f"location[{i}]", entry) for i, entry in enumerate(location)]
    elif location is None:
        raise bad_request("location", "required")
    else:
        raise bad_request("location", "expected an object or an array of objects")

    for index, (where, entry) in enumerate(entries):
        if not isinstance(entry, dict):
            request.dropped.append(ItemResult(index, "rejected", None, where, "expected an object"))
            continue
        text = json_input.value_problems(entry, where, numbers=False)
        if text:
            request.dropped.append(ItemResult(index, "rejected", None, text[0].field, text[0].reason))
            continue
        request.attributes = {k: v for k, v in entry.items() if k not in ("coords", "timestamp", "battery", "_")}
        item = _json_item(where, entry)
        if item is None:
            continue  # no coords: a heartbeat
        result = item.check(index)
        if isinstance(result, ItemResult):
            request.dropped.append(result)
        else:
            request.pings.append(item.values)
            request.fixes.append(result)
    if request.dropped and not request.fixes:
        first = request.dropped[0]
        raise refusal(request.dropped, f"Invalid request: {first.field}: {first.reason}")
    return request


def _json_item(where: str, entry: Mapping[str, object]) -> NativeItem | None:
    coords = entry.get("coords")
    if coords is None:
        return None
    item = NativeItem()
    item.put_time(f"{where}.timestamp", entry.get("timestamp"), None)
    if not isinstance(coords, dict):
        item.fail(f"{where}.coords", "expected an object")
        return item
    c = f"{where}.coords"
    item.put("lat", f"{c}.latitude", number(coords.get("latitude")))
    item.put("lng", f"{c}.longitude", number(coords.get("longitude")))
    item.put("accuracy", f"{c}.accuracy", number(coords.get("accuracy")))
    item.put("speed", f"{c}.speed", scaled(coords.get("speed"), 1.0))
    item.put("heading", f"{c}.heading", scaled(coords.get("heading"), 1.0))
    item.put("altitude", f"{c}.altitude", number(coords.get("altitude")))
    battery = entry.get("battery")
    if isinstance(battery, dict):
        level = scaled(battery.get("level"), 100.0)
        item.put("battery", f"{where}.battery.level", round(level, 1) if isinstance(level, float) else level,
                 "fraction 0..1, converted to percent")
    return item
