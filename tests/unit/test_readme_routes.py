"""The README's route tables are the app's routes, exactly, so they cannot drift again (issue 14).

- The "## API" table lists every operation of the OpenAPI document (and `/openapi.json`, `/health`), each once.
- Every route the app registers (pages and tracker protocols included) is in one of the README's route tables,
  and every row of those tables is a route the app answers.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
Route = tuple[str, str]  # (METHOD, path with every {parameter} as {})


def _normal(path: str) -> str:
    return re.sub(r"{[^}]*}", "{}", path.split("?", 1)[0])


def readme_tables(text: str) -> list[tuple[str, list[Route]]]:
    """Every table whose first two columns are `method | path`: (the section it is in, its routes in order)."""
    tables: list[tuple[str, list[Route]]] = []
    section = ""
    current: list[Route] | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:2] == ["method", "path"]:
            current = []
            tables.append((section, current))
        elif current is not None and cells and not set(cells[0]) <= set("-: "):
            methods = [m.strip() for m in cells[0].split(",")]
            paths = re.findall(r"`([^`]+)`", cells[1])
            assert methods and paths, line
            current.extend((m, _normal(p)) for m in methods for p in paths)
        elif not cells:
            current = None
    return tables


def app_routes() -> set[Route]:
    import app

    return {(method, _normal(path)) for path, methods in app.app.routes.items() for method in methods}


def openapi_routes() -> set[Route]:
    import app  # noqa: F401  (registers every blueprint, filling SPECS)
    from chalicelib.http.openapi import build_openapi
    from chalicelib.http.routes import SPECS

    document = build_openapi(SPECS)
    return {(method.upper(), _normal(path)) for path, operations in document["paths"].items()
            for method in operations}


@pytest.fixture(scope="module")
def tables() -> list[tuple[str, list[Route]]]:
    return readme_tables(README.read_text(encoding="utf-8"))


def test_the_api_table_is_the_openapi_document_each_route_once(tables):
    (api,) = [routes for section, routes in tables if section == "API"]
    repeated = [route for route, n in Counter(api).items() if n > 1]
    assert not repeated, f"listed more than once in the README's API table: {repeated}"
    expected = openapi_routes() | {("GET", "/openapi.json"), ("GET", "/health")}
    assert not expected - set(api), f"missing from the README's API table: {sorted(expected - set(api))}"
    assert not set(api) - expected, f"in the README's API table, not in the API: {sorted(set(api) - expected)}"


def test_every_app_route_is_in_a_readme_table_and_every_row_is_a_route(tables):
    listed = {route for _, routes in tables for route in routes}
    routes = app_routes()
    assert not routes - listed, f"routes the README does not list: {sorted(routes - listed)}"
    assert not listed - routes, f"README rows the app does not answer: {sorted(listed - routes)}"
    for section, rows in tables:
        repeated = [route for route, n in Counter(rows).items() if n > 1]
        assert not repeated, f"listed twice in the table of '{section}': {repeated}"


def test_the_openapi_document_is_the_apps_json_routes():
    # JSON routes: /v1 and the receipt keys (a JWKS at its well-known address); the rest are pages and assets
    pages = {route for route in app_routes() if not route[1].startswith(("/v1/", "/.well-known/"))}
    assert openapi_routes() == {route for route in app_routes() if route not in pages}


def test_the_parser_sees_drift():
    """The comparison is only as good as its parser: a table with a phantom row, a twice-listed route and a
    query string must read as such."""
    text = ("## API\n\n| method | path | who | what |\n|---|---|---|---|\n"
            "| GET, PUT | `/v1/settings` | merchant | x |\n| GET | `/v1/settings` | merchant | again |\n"
            "| POST | `/v1/a/{id}/b`, `/v1/c?x&y` | merchant | two paths |\n\nprose | not a table\n")
    ((section, rows),) = readme_tables(text)
    assert section == "API"
    assert rows == [("GET", "/v1/settings"), ("PUT", "/v1/settings"), ("GET", "/v1/settings"),
                    ("POST", "/v1/a/{}/b"), ("POST", "/v1/c")]
