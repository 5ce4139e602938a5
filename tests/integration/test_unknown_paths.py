"""Unknown paths answer the one JSON error shape with 404: through the test client, `chalice local` (as `make run`
starts it) and, deployed, API Gateway's MISSING_AUTHENTICATION_TOKEN gateway response (issue 14)."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_errors import assert_error

UNKNOWN = ["/nope", "/v1", "/v1/nope", "/v1/shipments/abc/nope", "/v1/drivers/a/b/c/d", "/openapi.json/x",
           "/v1/shipments/a/b"]


@pytest.mark.parametrize("path", UNKNOWN)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH", "OPTIONS"])
def test_an_unknown_path_is_the_json_404_with_or_without_a_key(merchant, path, method):
    from chalicelib.http.errors import unknown_path_error

    for headers in ({}, merchant.headers()):  # chalice's gateway answered each with a different 403 text
        r = merchant.client.http.request(method, path, headers=headers, body=b"{}" if method == "POST" else b"")
        assert_error(r, 404, "not_found")
        assert r.headers["Content-Type"] == "application/json"
        assert json.loads(r.body) == unknown_path_error().body()


def test_a_known_path_still_answers_its_own_status(merchant):
    assert merchant.call("GET", "/v1/shipments").status_code == 200
    assert merchant.call("GET", "/health").status_code == 200
    assert_error(merchant.client.http.request("TRACE", "/v1/shipments", headers=merchant.headers()), 405,
                 "method_not_allowed")
    assert_error(merchant.call("GET", "/v1/shipments/shp_unknown"), 404, "not_found")


def test_chalice_local_answers_an_unknown_path_with_the_json_404(chalice_app):
    from chalice.config import Config
    from chalice.local import ChaliceRequestHandler, LocalDevServer

    class Handler(ChaliceRequestHandler):
        pass

    server = LocalDevServer(chalice_app, Config(), "127.0.0.1", 0, handler_cls=Handler)
    thread = threading.Thread(target=server.handle_single_request, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server.server_address[1], timeout=10)
        connection.request("GET", "/definitely/not/here", headers={"Authorization": "Bearer x"})
        answer = connection.getresponse()
        status, content_type, body = answer.status, answer.getheader("Content-Type"), answer.read()
        connection.close()
    finally:
        thread.join(10)
        server.server.server_close()
    assert (status, content_type) == (404, "application/json")
    assert json.loads(body)["error"]["code"] == "not_found"


def test_the_patch_is_applied_once_and_leaves_known_routes_alone():
    from chalice.local import LocalGateway

    from infra.local.api_server import answer_unknown_paths

    handle = LocalGateway.handle_request
    assert answer_unknown_paths() is LocalGateway
    assert LocalGateway.handle_request is handle  # idempotent: no second wrapper


def _render(template: str, kind: str, message: str) -> Any:
    """What API Gateway substitutes into a gateway response template."""
    return json.loads(template.replace("$context.error.responseType", kind)
                      .replace("$context.error.messageString", json.dumps(message)))


def test_the_gateway_responses_have_the_error_shape_of_the_app():
    from chalicelib.core.errors import error_body
    from chalicelib.http.errors import unknown_path_response
    from infra.package import unknown_path_gateway_response

    shape = error_body("code", "message")
    local = unknown_path_response()
    gateway = unknown_path_gateway_response()
    assert gateway["statusCode"] == str(local.status_code) == "404"
    assert gateway["responseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
    rendered = json.loads(gateway["responseTemplates"]["application/json"])
    assert rendered == local.body  # the same body, built from the same function
    assert set(rendered) == set(shape) and set(rendered["error"]) == set(shape["error"])
    merged = json.loads((Path(__file__).resolve().parents[2] / "infra" / "resources.json").read_text())
    responses = merged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        body = _render(responses[kind]["responseTemplates"]["application/json"], kind, 'a "quoted" text')
        assert set(body) == set(shape) and set(body["error"]) == set(shape["error"])
        assert body["error"]["message"] == 'a "quoted" text'


def test_add_unknown_path_response_writes_it_into_a_packaged_template(tmp_path):
    from infra.package import add_unknown_path_response, unknown_path_gateway_response

    template = tmp_path / "sam.json"
    existing = {"DEFAULT_4XX": {"responseTemplates": {}}}
    template.write_text(json.dumps({"Resources": {"RestAPI": {"Properties": {"DefinitionBody": {
        "x-amazon-apigateway-gateway-responses": existing}}}}}))
    add_unknown_path_response(template)
    written = json.loads(template.read_text())["Resources"]["RestAPI"]["Properties"]["DefinitionBody"][
        "x-amazon-apigateway-gateway-responses"]
    assert written == {**existing, "MISSING_AUTHENTICATION_TOKEN": unknown_path_gateway_response()}


def test_the_local_server_entry_point_applies_both_patches(monkeypatch):
    """`make run` starts `python -m infra.local.api_server local ...`: its main must patch before serving."""
    import chalice.cli

    from infra.local import api_server

    applied: list[str] = []
    monkeypatch.setattr(api_server, "accept_every_method", lambda: applied.append("every method"))
    monkeypatch.setattr(api_server, "answer_unknown_paths", lambda: applied.append("unknown paths"))
    monkeypatch.setattr(chalice.cli, "main", lambda: applied.append("chalice") or 0)
    monkeypatch.setattr("sys.argv", ["api_server"])
    assert api_server.main(["local", "--port", "0"]) == 0
    assert applied == ["every method", "unknown paths", "chalice"]
