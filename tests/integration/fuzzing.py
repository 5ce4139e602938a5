"""The schema fuzz run's machinery: the Chalice app as a WSGI app, a seeded world, and counters.

`ChaliceWSGI` hands each WSGI request to chalice's own local gateway, the API Gateway emulation that
`chalice local` and `chalice.test.Client` use, so schemathesis drives the real routing, middleware and views
in-process (with the in-process moto of the integration tests), without a server or a port.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote


class ChaliceWSGI:
    """A WSGI app over chalice's `LocalGateway` (the gateway `chalice local` runs)."""

    def __init__(self, app: Any) -> None:
        from chalice.config import Config
        from chalice.local import LocalGateway

        self.gateway = LocalGateway(app, Config())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        from chalice.local import LocalGatewayException

        raw_path = environ.get("PATH_INFO", "/").encode("latin-1")
        target = quote(raw_path, safe="/:@!$&'()*+,;=-._~%")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        try:
            answer = self.gateway.handle_request(method=environ["REQUEST_METHOD"], path=target, headers=headers,
                                                 body=body)
            status, body_out = answer["statusCode"], answer.get("body") or b""
            if answer.get("isBase64Encoded"):
                body_out = base64.b64decode(body_out)
            out_headers: list[tuple[str, str]] = []
            for name, value in {**answer.get("headers", {}), **answer.get("multiValueHeaders", {})}.items():
                out_headers += [(name, str(v)) for v in (value if isinstance(value, list) else [value])]
        except LocalGatewayException as exc:
            status, body_out, out_headers = exc.CODE, exc.body or b"", list(exc.headers.items())
        data = body_out.encode() if isinstance(body_out, str) else bytes(body_out)
        if not any(name.lower() == "content-type" for name, _ in out_headers) and data:
            out_headers.append(("Content-Type", "application/json"))
        start_response(f"{status} {HTTPStatus(status).phrase}", out_headers)
        return [data]


WEBHOOK_URL = "https://hooks.example.com/doorstep/fuzz"


@dataclass
class World:
    """Real credentials and ids, so generated requests reach the views, not only 401 and 404."""

    merchant: Any
    driver_token: str
    ids: dict[str, list[str]]  # path parameter name -> real ids to substitute

    @property
    def merchant_key(self) -> str:
        return str(self.merchant.key)

    def prepare(self) -> None:
        """Before each operation: the webhook endpoint exists again (a fuzzed DELETE may have removed it)."""
        if self.merchant.call("GET", "/v1/webhook").status_code == 404:
            assert self.merchant.call("PUT", "/v1/webhook", {"url": WEBHOOK_URL}).status_code == 201

    def tear_down(self) -> None:
        """No endpoint outlives the run (the session's table is shared with later tests)."""
        self.merchant.call("DELETE", "/v1/webhook")


def seed_world(client: Any, merchant: Any) -> World:
    from tests.integration.helpers import iso, make_driver, make_shipment, post_pings

    now = iso(int(time.time() * 1000))
    # The driver that authenticates the driver routes is never a path id: rotating its token would lock us out.
    me = make_driver(merchant, "Fuzz Driver")
    other = make_driver(merchant, "Other Driver")
    ships = [make_shipment(merchant, n) for n in range(1, 5)]
    r = merchant.call("POST", "/v1/routes", {"driver_id": me["id"], "day": "2026-11-21",
                                             "planned_start": "2026-11-21T15:00:00Z",
                                             "shipment_ids": [s["id"] for s in ships[:2]]})
    assert r.status_code == 201, r.body
    route = r.json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    delivered = client.http.post(f"/v1/driver/shipments/{ships[0]['id']}/status", body=json.dumps(
        {"status": "delivered", "occurred_at": now, "recipient_name": "Ada"}), headers={
        "Authorization": f"Bearer {me['token']}", "Content-Type": "application/json"})
    assert delivered.status_code == 200, delivered.body
    zone = merchant.call("POST", "/v1/zones", {"name": "Depot", "kind": "depot", "geometry": {
        "type": "Polygon", "coordinates": [[[-122.34, 47.60], [-122.32, 47.60], [-122.32, 47.62], [-122.34, 47.60]]]}})
    assert zone.status_code == 201, zone.body
    for driver in (me, other):
        post_pings(client, driver["token"], [{"lat": 47.61, "lng": -122.33, "fix_time": now}])
    exception_ids = _seed_exceptions(merchant, [me["id"], other["id"]], [s["id"] for s in ships[1:]])
    world = World(
        merchant=merchant, driver_token=me["token"],
        ids={"driver_id": [other["id"]], "shipment_id": [s["id"] for s in ships], "route_id": [route["id"]],
             "zone_id": [zone.json_body["id"]], "token": [s["tracking_url"].rsplit("/", 1)[-1] for s in ships],
             "exception_id": exception_ids},
    )
    world.prepare()
    return world


def _seed_exceptions(merchant: Any, driver_ids: list[str], shipment_ids: list[str]) -> list[str]:
    """Open exceptions (drivers offline, stops late) for the acknowledge and resolve routes to act on."""
    from datetime import UTC, datetime

    from chalicelib.exceptions import service as exceptions
    from chalicelib.storage import get_repository

    repo = get_repository()
    for driver_id in driver_ids:
        exceptions.on_driver_event(repo, merchant.id, driver_id, "driver_offline", datetime.now(UTC), "no_fixes")
    for shipment_id in shipment_ids:
        exceptions.on_lifecycle(repo, {"merchant_id": merchant.id, "shipment_id": shipment_id, "type": "delayed",
                                       "event_id": f"delayed-{shipment_id}", "occurred_at": datetime.now(UTC)})
    items = merchant.call("GET", "/v1/exceptions?limit=100").json_body["items"]
    return [item["id"] for item in items]


@dataclass
class Tally:
    """What the run did, per operation: examples sent and statuses answered."""

    sent: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    misnamed: list[str] = field(default_factory=list)  # 422s naming another field than the one changed

    def record(self, label: str, status: int, request: str) -> None:
        self.sent[label] += 1
        self.statuses.setdefault(label, Counter())[status] += 1
        if status >= 500:
            self.server_errors.append(f"{label} -> {status}: {request[:400]}")

    def summary(self) -> dict[str, Any]:
        total = Counter[int]()
        for counts in self.statuses.values():
            total.update(counts)
        return {"operations": len(self.sent), "examples": sum(self.sent.values()),
                "server_errors": len(self.server_errors), "statuses": dict(sorted(total.items()))}

    def table(self) -> str:
        """One line per operation and mode: examples sent and the statuses answered."""
        return "\n".join(f"{self.sent[label]:4d}  {label}  {dict(sorted(counts.items()))}"
                         for label, counts in self.statuses.items())


# --- hostile mutations of valid requests --------------------------------------------------------------------

DEEP = "[" * 50_000 + "]" * 50_000  # ~100 KB of nesting: a RecursionError in any recursive reader
HOSTILE_VALUES: list[Any] = [
    1e-200, -1e-131, 1e300, 1.7e308, 10**30, -(2**63), 2**53,  # numbers DynamoDB or a float() cannot take
    "\ud800", "x\udfffy", "a\x00b", "\x1b[31mred", "\x7f", "\u0085", "\ufffe",  # not text
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0", "0.5", "1e-200",  # times and epochs
    "0001-01-01", "9999-12-31",
    True, None, [], {}, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],  # odd types, too deep
    "x" * 5000,
]
# Whole-body mutations: (name, raw bytes from the valid JSON text, Content-Type or None to omit it).
BODY_MUTATIONS: list[tuple[str, Any]] = [
    ("deep nesting", lambda text: DEEP.encode()),
    ("deep nesting inside", lambda text: ('{"x": ' + DEEP + ', ' + text.lstrip()[1:]).encode()
     if text.lstrip().startswith("{") else DEEP.encode()),
    ("utf-8 bom", lambda text: b"\xef\xbb\xbf" + text.encode()),
    ("utf-16", lambda text: text.encode("utf-16")),
    ("raw lone surrogate", lambda text: '{"x": "\ud800"}'.encode("utf-8", "surrogatepass")),
    ("duplicate key", lambda text: ('{"a": 1, "a": 2, ' + text.lstrip()[1:]).encode()
     if text.lstrip().startswith("{") and text.strip() != "{}" else b'{"a": 1, "a": 2}'),
    ("NaN literal", lambda text: b'{"x": NaN}'),
    ("Infinity literal", lambda text: b'{"x": 1e400, "y": -Infinity}'),
    ("trailing garbage", lambda text: text.encode() + b" }"),
    ("huge integer literal", lambda text: b'{"x": ' + b"9" * 5000 + b"}"),
]
CONTENT_TYPES: list[str | None] = [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/json; charset=latin-1", "application/json;", "APPLICATION/JSON"]
HOSTILE_QUERY = ["0", "0.5", "-1", "1e-200", "1e400", "nan", "inf", "9" * 40, "\x00", "%ff", "0001-01-01",
                 "9999-12-31", "0001-01-01T00:00:00+14:00", "true", ""]


def leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value can be put: each member and item, and the root."""
    paths: list[tuple[Any, ...]] = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            paths += leaf_paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            paths += leaf_paths(child, (*prefix, index))
    return paths


def put(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`document` with the value at `path` replaced (the root too)."""
    if not path:
        return value
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return document


def is_error_shape(body: bytes | str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return (isinstance(error, dict) and set(error) == {"code", "message", "details"}
            and isinstance(error["details"], list)
            and all(isinstance(d, dict) and d.get("field") and d.get("reason") for d in error["details"]))
