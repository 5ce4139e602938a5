"""The fuzz run over the OpenAPI document, in-process against the Chalice app with in-process moto.

1. Schema fuzz: schemathesis generates requests from /openapi.json for every operation, valid ones (positive)
   and ones the schema forbids (negative), and sends them through chalice's local gateway (see
   `fuzzing.ChaliceWSGI`) as a real merchant and a real driver, with real ids substituted into the paths about
   half of the time, so the requests reach the views and the storage, not only the 401s and 404s. Allowed: no
   5xx at all; every status answered is one the document lists for the operation; every JSON answer matches
   its schema and content type.
2. Hostile fuzz: valid requests from the same generator, then one hostile mutation each (a number DynamoDB
   cannot store, a lone surrogate, a control character, year 1, deep nesting, a BOM, a duplicate key, UTF-16,
   a missing or odd Content-Type, a repeated or epoch query parameter, an odd path id). Allowed: no 5xx; every
   status documented for the operation; every error in the one error shape, naming its fields.
3. The tracker routes (/osmand, /owntracks), outside the document: hostile mutations of valid messages.

Bounded and deterministic: `DOORSTEP_FUZZ_EXAMPLES` (default 25) examples per operation and mode, derandomized
(the same inputs every run), no shrinking and no example database. The figures are printed at the end
(`pytest -s`).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chalicelib.core import json_input
from tests.integration.conftest import new_merchant
from tests.integration.fuzzing import (
    BODY_MUTATIONS,
    CONTENT_TYPES,
    HOSTILE_QUERY,
    HOSTILE_VALUES,
    ChaliceWSGI,
    Tally,
    World,
    is_error_shape,
    leaf_paths,
    put,
    seed_world,
)

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = int(os.environ.get("DOORSTEP_FUZZ_EXAMPLES", "25"))


def _empty_table() -> None:
    """Start from an empty table: moto copies a whole table for every transaction (and keeps the copies), so
    after the rest of the session thousands of fuzzed transactions would cost minutes and gigabytes. The fuzz
    run is the session's last test (tests/conftest.py orders it), and every test makes its own merchant."""
    import boto3

    from infra.local.resources import create_table
    from tests.conftest import TEST_ENV

    dynamodb = boto3.client("dynamodb")
    dynamodb.delete_table(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"])
    create_table(dynamodb, TEST_ENV["DOORSTEP_TABLE_NAME"])


@pytest.fixture(scope="module")
def fuzz_target(chalice_app: Any) -> Iterator[tuple[Any, World, dict[str, Any], Any]]:
    import schemathesis
    from chalice.test import Client

    _empty_table()

    from chalicelib.http.openapi import build_openapi
    from chalicelib.http.routes import SPECS

    with Client(chalice_app) as client:
        world = seed_world(client, new_merchant(client, "Fuzz Merchant"))
        document = build_openapi(SPECS)
        schema = schemathesis.openapi.from_dict(document)
        schema.app = ChaliceWSGI(chalice_app)
        schema.config.generation.update(with_security_parameters=False, allow_x00=True, codec="utf-8")
        yield schema, world, document, client
        world.tear_down()


def _checks() -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _auth(document: dict[str, Any], operation: Any, world: World) -> dict[str, str]:
    security = document["paths"][operation.path][operation.method.lower()].get("security") or [{}]
    scheme = next(iter(security[0]), None)
    return {"merchantKey": {"Authorization": f"Bearer {world.merchant_key}"},
            "driverToken": {"Authorization": f"Bearer {world.driver_token}"}}.get(scheme, {})


def _fuzz_one(operation: Any, mode: Any, label: str, auth: dict[str, str], world: World, tally: Tally,
              checks: list[Any]) -> Any:
    """One operation in one generation mode, as a hypothesis test (derandomized, no shrinking)."""

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: Any) -> None:
        for name in list(case.path_parameters or {}):
            real = world.ids.get(name) or []
            choice = data.draw(st.sampled_from([None, *real]), label=f"real {name}")
            if choice is not None:
                case.path_parameters[name] = choice
        response = case.call(headers=auth)
        tally.record(label, response.status_code,
                     f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}")
        case.validate_response(response, checks=checks, headers=auth)

    return run


def test_schema_fuzz_answers_no_5xx_and_only_documented_statuses(fuzz_target):
    from schemathesis import GenerationMode

    schema, world, document, _ = fuzz_target
    checks = _checks()
    tally = Tally()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in document["paths"].values())

    for operation in operations:
        auth = _auth(document, operation, world)
        definition = document["paths"][operation.path][operation.method.lower()]
        # A path id is any string: only a body or query parameters can be made invalid.
        negatable = "requestBody" in definition or any(p["in"] == "query" for p in definition.get("parameters", []))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negatable else (GenerationMode.POSITIVE,)
        for mode in modes:
            world.prepare()
            label = f"{operation.method.upper()} {operation.path} [{mode.value}]"
            try:
                _fuzz_one(operation, mode, label, auth, world, tally, checks)()
            except (Exception, BaseExceptionGroup) as exc:  # one failing operation must not hide the others
                failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:1500]}")

    summary = tally.summary()
    print(f"\nschema fuzz: {summary}\n{tally.table()}")
    assert not tally.server_errors, "\n".join(tally.server_errors)
    assert not failures, "\n\n".join(failures)
    assert {label.split(" [")[0] for label in tally.sent} == {f"{o.method.upper()} {o.path}" for o in operations}
    # The run reached the views on most operations: answers a view decides (2xx, 409), not only 400/401/404/422.
    reached = {label.split(" [")[0] for label, counts in tally.statuses.items()
               if any(s < 300 or s == 409 for s in counts)}
    assert len(reached) >= len(operations) * 4 // 5, sorted(set(tally.sent) - reached)


# --- 2. hostile mutations of valid requests ----------------------------------------------------------------


def _hostile_one(operation: Any, definition: dict[str, Any], auth: dict[str, str], world: World, client: Any,
                 tally: Tally) -> Any:
    label = f"{operation.method.upper()} {operation.path} [hostile]"
    documented = {int(status) for status in definition["responses"]}
    query_names = [p["name"] for p in definition.get("parameters", []) if p["in"] == "query"]
    has_body = "requestBody" in definition

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(case=operation.as_strategy(), data=st.data())
    def run(case: Any, data: Any) -> None:
        from schemathesis.core import NOT_SET

        body = None if case.body is NOT_SET else copy.deepcopy(case.body)
        path_params = {k: str(v) for k, v in (case.path_parameters or {}).items()}
        for name in path_params:
            real = world.ids.get(name) or []
            if real and data.draw(st.booleans(), label=f"real {name}"):
                path_params[name] = data.draw(st.sampled_from(real))
        query: list[tuple[str, str]] = [(k, str(v).lower() if isinstance(v, bool) else str(v))
                                        for k, v in (case.query or {}).items() if not isinstance(v, list | dict)]
        content_type: str | None = "application/json"
        kinds = ["path"] if path_params else []
        kinds += ["value", "body", "content-type"] if has_body else []
        kinds += ["query", "repeat"] if query_names else []
        if not kinds:
            kinds = ["method-body"]
        kind = data.draw(st.sampled_from(kinds), label="mutation")
        raw: bytes | None = None
        where: tuple[Any, ...] | None = None
        screened = False  # the hostile value breaks a value rule of the edge, so the refusal must name it
        if kind == "value":
            if not isinstance(body, dict | list):
                body = {"x": body}
            where = data.draw(st.sampled_from(leaf_paths(body)), label="where")
            value = data.draw(st.sampled_from(HOSTILE_VALUES), label="value")
            screened = bool(json_input.value_problems(value)) and not any(
                isinstance(step, str) and json_input.text_problem(step) for step in where)
            body = put(body, where, copy.deepcopy(value))
        elif kind == "body":
            name, mutate = data.draw(st.sampled_from(BODY_MUTATIONS), label="body mutation")
            raw = mutate(json.dumps(body if body is not None else {}))
        elif kind == "content-type":
            content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content type")
        elif kind == "query":
            name = data.draw(st.sampled_from(query_names), label="parameter")
            query = [(k, v) for k, v in query if k != name] + [(name, data.draw(st.sampled_from(HOSTILE_QUERY)))]
        elif kind == "repeat":
            name = data.draw(st.sampled_from(query_names), label="parameter")
            query += [(name, "1"), (name, "2")]
        elif kind == "path":
            name = data.draw(st.sampled_from(sorted(path_params)), label="path parameter")
            path_params[name] = data.draw(st.sampled_from(["%00", "%ED%A0%80", "%FF", "x" * 3000, "..", "%2F",
                                                           "%20", "a%0Ab"]))
        elif kind == "method-body":
            raw = b'{"x": "\\ud800", "y": 1e-200}'
        if raw is None and (body is not None or has_body):
            raw = json.dumps(body).encode()
        target = operation.path
        for name, value in path_params.items():
            target = target.replace("{" + name + "}", quote(value, safe="%"))
        if query:
            target += "?" + "&".join(f"{quote(k)}={quote(v, safe='%')}" for k, v in query)
        headers = dict(auth)
        if content_type is not None:
            headers["Content-Type"] = content_type
        for name, value in (case.headers or {}).items():
            if name.lower() not in ("authorization", "content-type") and isinstance(value, str):
                headers[name] = value
        response = client.http.request(operation.method.upper(), target, headers=headers, body=raw or b"")
        status = response.status_code
        tally.record(label, status, f"{kind}: {operation.method.upper()} {target[:200]} {(raw or b'')[:200]!r}")
        assert status < 500, (kind, target[:300], (raw or b"")[:300], response.body[:500])
        # An id with an encoded slash no longer matches the route: the gateway's JSON 404 for an unknown path.
        gateway = status == 404 and kind == "path"
        assert status in documented or gateway, (status, sorted(documented), kind, target[:300], response.body[:300])
        if status >= 400:
            assert is_error_shape(response.body), (status, response.body[:300])
        if screened and where and status == 422:  # the refusal names the field that was changed, not a neighbour
            mutated = ".".join(str(step) for step in where) or "body"
            named = [d["field"] for d in json.loads(response.body)["error"]["details"]]
            if len(named) < json_input.MAX_PROBLEMS and not any(
                    f == mutated or f.startswith(mutated + ".") for f in named):
                tally.misnamed.append(f"{label}: changed {mutated}, refusal named {named}")

    return run


def test_hostile_mutations_of_valid_requests_answer_documented_4xx_in_the_error_shape(fuzz_target):
    schema, world, document, client = fuzz_target
    tally = Tally()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        world.prepare()
        definition = document["paths"][operation.path][operation.method.lower()]
        try:
            _hostile_one(operation, definition, _auth(document, operation, world), world, client, tally)()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {type(exc).__name__}: {str(exc)[:1500]}")
    print(f"\nhostile fuzz: {tally.summary()}\n{tally.table()}")
    assert not tally.server_errors, "\n".join(tally.server_errors)
    assert not failures, "\n\n".join(failures)
    assert not tally.misnamed, "\n".join(tally.misnamed)


# --- 3. the tracker routes ------------------------------------------------------------------------------------


def _tracker_messages(now_s: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("owntracks", {"_type": "location", "lat": 47.61, "lon": -122.33, "tst": now_s, "acc": 8, "vel": 30,
                       "cog": 90, "batt": 80, "tid": "dd", "topic": "owntracks/dana/phone"}),
        ("owntracks", {"_type": "transition", "event": "enter", "desc": "Depot", "rid": "r1", "tst": now_s,
                       "lat": 47.61, "lon": -122.33, "acc": 10, "t": "c", "wtst": now_s - 60}),
        ("owntracks", {"_type": "transition", "event": "leave", "desc": "Depot", "tst": now_s}),
        ("osmand", {"location": {"timestamp": "2026-11-21T15:00:00Z", "coords": {
            "latitude": 47.61, "longitude": -122.33, "accuracy": 8, "speed": 5, "heading": 90, "altitude": 20},
            "battery": {"level": 0.8, "is_charging": False}, "is_moving": True, "extras": {"a": "b"}}}),
        ("osmand", {"location": [{"timestamp": "2026-11-21T15:00:00Z", "coords": {"latitude": 47.61,
                                                                                  "longitude": -122.33}}]}),
    ]


def test_tracker_routes_answer_hostile_messages_without_5xx(fuzz_target):
    import time

    _, world, _, client = fuzz_target
    driver = world.merchant.call("POST", "/v1/drivers", {"name": "Tracker"}).json_body
    device_id = secrets.token_urlsafe(24)
    assert world.merchant.call("PUT", f"/v1/drivers/{driver['id']}/device-id",
                               {"device_id": device_id}).status_code == 204
    basic = "Basic " + base64.b64encode(f"{driver['id']}:{driver['token']}".encode()).decode()
    messages = _tracker_messages(int(time.time()))
    tally = Tally()

    @settings(max_examples=MAX_EXAMPLES * 4, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(data=st.data())
    def run(data: Any) -> None:
        route, message = copy.deepcopy(data.draw(st.sampled_from(messages), label="message"))
        if route == "osmand":
            message["device_id"] = device_id
        if data.draw(st.booleans(), label="whole body"):
            _, mutate = data.draw(st.sampled_from(BODY_MUTATIONS), label="body mutation")
            raw = mutate(json.dumps(message))
        else:
            where = data.draw(st.sampled_from(leaf_paths(message)[1:]), label="where")
            value = data.draw(st.sampled_from([*HOSTILE_VALUES, "1e-200", "-1e-200", "1e300", "99999999999999999"]))
            raw = json.dumps(put(message, where, copy.deepcopy(value))).encode()
        headers = {"Content-Type": "application/json"}
        if route == "owntracks":
            headers["Authorization"] = basic
        response = client.http.post(f"/{route}", headers=headers, body=raw)
        tally.record(f"POST /{route} [hostile]", response.status_code, f"{raw[:300]!r}")
        assert response.status_code < 500, (route, raw[:300], response.body[:500])
        if response.status_code >= 400:
            assert is_error_shape(response.body), (response.status_code, response.body[:300])

    run()
    print(f"\ntracker fuzz: {tally.summary()}\n{tally.table()}")
    assert not tally.server_errors


# --- 4. another tenant's ids look exactly like unknown ones -------------------------------------------------

SWEEP_EXAMPLES = 3  # valid requests per operation, each sent twice (a seeded id, an unknown one)


def _unknown_like(real: str) -> str:
    """An id of the same shape that names nothing: the same prefix and length, fresh random characters."""
    prefix, sep, rest = real.rpartition("_")
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz" if rest == rest.lower() else \
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return prefix + sep + "".join(secrets.choice(alphabet) for _ in rest)


def _sweep_one(operation: Any, names: list[str], label: str, auth: dict[str, str], world: World,
               leaks: list[str]) -> Any:
    """One operation as a hypothesis test: each valid example with the seeded ids, then with unknown ones."""
    from schemathesis import GenerationMode

    @settings(max_examples=SWEEP_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        world.prepare()
        theirs = {name: world.ids[name][-1] for name in names}
        answers = []
        for ids in (theirs, {name: _unknown_like(value) for name, value in theirs.items()}):
            case.path_parameters = dict(ids)
            response = case.call(headers=auth)
            body = response.json() if response.content else None
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            answers.append((response.status_code, code))
        seeded, unknown = answers
        if seeded[0] < 300 or seeded != unknown:
            leaks.append(f"{label}: another tenant's id answers {seeded}, an unknown id {unknown}")

    return run


def test_another_tenant_cannot_tell_this_tenants_ids_from_unknown_ones(fuzz_target):
    """Every operation that takes an id in its path, as another merchant (its key, its driver's token) with the
    seeded merchant's real ids: the answer must be the one an unknown id of the same shape gets (same status,
    same error code), never a success. Valid bodies (schemathesis, positive) so the request gets past
    validation to the ownership check; each example is sent with the real ids, then with unknown ones."""
    from tests.integration.helpers import make_driver

    schema, world, document, client = fuzz_target
    # The fuzz runs before may have deleted the seeded zone: a fresh one, and each id kind still the merchant's own.
    ring = [[-122.34, 47.60], [-122.32, 47.60], [-122.32, 47.62], [-122.34, 47.60]]
    zone = world.merchant.call("POST", "/v1/zones", {"name": "Sweep depot",
                                                     "geometry": {"type": "Polygon", "coordinates": [ring]}})
    assert zone.status_code == 201, zone.body
    world.ids["zone_id"].append(zone.json_body["id"])
    for path in ("/v1/drivers/{driver_id}", "/v1/shipments/{shipment_id}", "/v1/routes/{route_id}",
                 "/v1/zones/{zone_id}"):
        name = path.rsplit("{", 1)[1].rstrip("}")
        own = world.merchant.call("GET", path.replace("{" + name + "}", world.ids[name][-1]))
        assert own.status_code == 200, (path, own.body)
    outsider = new_merchant(client, "Outsider Merchant")
    outsider_driver = make_driver(outsider, "Outsider Driver")
    auths = {"merchantKey": {"Authorization": f"Bearer {outsider.key}"},
             "driverToken": {"Authorization": f"Bearer {outsider_driver['token']}"}}
    leaks: list[str] = []
    swept: set[str] = set()
    for operation in (result.ok() for result in schema.get_all_operations()):
        definition = document["paths"][operation.path][operation.method.lower()]
        names = [p["name"] for p in definition.get("parameters", []) if p["in"] == "path"]
        scheme = next(iter((definition.get("security") or [{}])[0]), None)
        if not names or scheme not in auths or not all(world.ids.get(name) for name in names):
            continue
        label = f"{operation.method.upper()} {operation.path}"
        swept.add(label)

        _sweep_one(operation, names, label, auths[scheme], world, leaks)()
    print(f"\ntenant sweep: {len(swept)} operations, {SWEEP_EXAMPLES} valid requests each")
    assert not leaks, "\n".join(sorted(set(leaks)))
    # Every operation with a seeded id kind was swept (delivery ids and tracking tokens are not tenant-keyed here:
    # a tracking token is the recipient's capability, and the seeded world makes no webhook delivery).
    with_ids = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m, d in ops.items()
                if any(x["in"] == "path" for x in d.get("parameters", []))
                and next(iter((d.get("security") or [{}])[0]), None) in auths}
    unswept = {label for label in with_ids - swept if "{delivery_id}" not in label}
    assert not unswept, sorted(unswept)
    assert len(swept) >= 40
