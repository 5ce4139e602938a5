"""POST /v1/zones validates the polygon (closed, simple, holes inside) and stores it in RFC 7946 ring order; every
refusal is a 422 naming the ring or position (issue 14). The rules themselves: tests/unit/test_polygons.py."""

from __future__ import annotations

import pytest

from tests.integration.test_errors import assert_error

W, S, E, N = -122.341, 47.609, -122.339, 47.611
SQUARE = [[W, S], [E, S], [E, N], [W, N], [W, S]]  # counterclockwise
HOLE = [[-122.3405, 47.6095], [-122.3405, 47.6100], [-122.3400, 47.6100], [-122.3400, 47.6095],
        [-122.3405, 47.6095]]  # clockwise


def _create(merchant, geometry):
    return merchant.call("POST", "/v1/zones", {"name": "Depot", "kind": "depot", "geometry": geometry})


@pytest.mark.parametrize(("coordinates", "field", "words"), [
    ([SQUARE[:-1]], "geometry.coordinates.0", "not closed"),
    ([[[W, S], [E, N], [E, S], [W, N], [W, S]]], "geometry.coordinates.0", "crosses or touches itself"),
    ([[[W, S], [E, S], [-122.340, S], [W, N], [W, S]]], "geometry.coordinates.0", "crosses or touches itself"),
    ([[[W, S], [E, S], [-122.340, S], [W, S]]], "geometry.coordinates.0", "one line"),
    ([SQUARE, [[W - 0.01, S], [W - 0.005, S], [W - 0.005, N], [W - 0.01, S]]], "geometry.coordinates.1",
     "inside the exterior"),
    ([SQUARE, [[W, S], [-122.340, 47.6095], [-122.340, 47.610], [W, S]]], "geometry.coordinates.0", "ring 1"),
    ([[[W, S], [E, S], [E, 91], [W, S]]], "geometry.coordinates.0.2", "latitude"),
])
def test_a_bad_polygon_is_422_naming_the_ring_or_position(merchant, coordinates, field, words):
    error = assert_error(_create(merchant, {"type": "Polygon", "coordinates": coordinates}), 422,
                         "validation_failed", field)
    assert words in error["details"][0]["reason"], error
    assert merchant.call("GET", "/v1/zones").json_body["items"] == []  # nothing stored


def test_a_multipolygon_refusal_names_the_polygon_too(merchant):
    geometry = {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[W, S], [E, S], [E, N], [W, N]]]]}
    assert_error(_create(merchant, geometry), 422, "validation_failed", "geometry.coordinates.1.0")


def test_rings_are_stored_and_answered_in_right_hand_order(merchant):
    r = _create(merchant, {"type": "Polygon", "coordinates": [SQUARE[::-1], HOLE[::-1]]})
    assert r.status_code == 201, r.body
    assert r.json_body["geometry"] == {"type": "Polygon", "coordinates": [SQUARE, HOLE]}
    assert merchant.call("GET", f"/v1/zones/{r.json_body['id']}").json_body["geometry"] == r.json_body["geometry"]


def test_a_valid_polygon_with_a_hole_is_unchanged(merchant):
    geometry = {"type": "Polygon", "coordinates": [SQUARE, HOLE]}
    r = _create(merchant, geometry)
    assert r.status_code == 201, r.body
    assert r.json_body["geometry"] == geometry
