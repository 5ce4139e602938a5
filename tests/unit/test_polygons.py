"""Zone polygon rules (chalicelib/geo/polygons.py): closed, enough corners, simple, holes inside, RFC 7946 order."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from chalicelib.geo.polygons import InvalidPolygon, normalise_polygon

SQUARE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]  # counterclockwise
HOLE = [[0.2, 0.2], [0.2, 0.4], [0.4, 0.4], [0.4, 0.2], [0.2, 0.2]]  # clockwise


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def problems(geometry: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidPolygon) as caught:
        normalise_polygon(geometry)
    return [(p.where, p.reason) for p in caught.value.problems]


def signed_area(ring: list[list[float]]) -> float:
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring)) / 2


def test_a_valid_polygon_with_a_hole_is_kept_as_is():
    assert normalise_polygon(polygon(SQUARE, HOLE)) == polygon(SQUARE, HOLE)


def test_rings_the_other_way_round_are_reversed_to_the_right_hand_rule():
    out = normalise_polygon(polygon(SQUARE[::-1], HOLE[::-1]))
    assert out == polygon(SQUARE, HOLE)
    exterior, hole = out["coordinates"]
    assert signed_area(exterior) > 0 > signed_area(hole)
    assert exterior[0] == exterior[-1] == SQUARE[::-1][0]  # the same start, the same corners


@pytest.mark.parametrize(("rings", "where", "words"), [
    ([SQUARE[:-1]], "coordinates.0", "not closed"),
    ([[[0, 0], [1, 0], [0, 0]]], "coordinates.0", "at least 4 positions"),
    ([[[0, 0], [1, 0], [1, 0], [0, 0]]], "coordinates.0", "3 distinct corners"),
    ([[[0, 0], [1, 0], [2, 0], [0, 0]]], "coordinates.0", "one line"),
    ([[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]], "coordinates.0", "crosses or touches itself"),  # a bow tie
    ([[[0, 0], [2, 0], [1, 0], [1, 1], [0, 0]]], "coordinates.0", "crosses or touches itself"),  # a spike
    ([[[0, 0], [2, 0], [2, 2], [1, 0], [0, 2], [0, 0]]], "coordinates.0", "crosses or touches itself"),  # a touch
    ([SQUARE, [[2, 2], [3, 2], [3, 3], [2, 2]]], "coordinates.1", "inside the exterior"),
    ([SQUARE, [[0, 0], [0.5, 0.2], [0.5, 0.5], [0, 0]]], "coordinates.0", "ring 1"),  # a hole on a corner
    ([SQUARE, [[0.5, 0.5], [1.5, 0.5], [0.5, 0.7], [0.5, 0.5]]], "coordinates.0", "ring 1"),  # crossing out
    ([SQUARE, [[0.1, 0.1], [0.1, 0.9], [0.9, 0.9], [0.9, 0.1], [0.1, 0.1]], HOLE], "coordinates.2",
     "inside another hole"),
    ([[[0, 0], [1, 0], [1, 95], [0, 0]]], "coordinates.0.2", "latitude 95.0"),
    ([[[0, 0], [1, 0], [200, 1], [0, 0]]], "coordinates.0.2", "longitude 200.0"),
    ([[[0, 0], [1, 0], [1], [0, 0]]], "coordinates.0.2", "[lng, lat]"),
    ([[[0, 0], [1, 0], [1, True], [0, 0]]], "coordinates.0.2", "[lng, lat]"),
    ([[[0, 0], [1, 0], "x", [0, 0]]], "coordinates.0.2", "[lng, lat]"),
    (["ring"], "coordinates.0", "list of [lng, lat]"),
])
def test_a_bad_ring_is_refused_naming_where(rings, where, words):
    found = problems(polygon(*rings))
    assert found[0][0] == where, found
    assert words in found[0][1], found


def test_a_polygon_with_no_rings_and_multipolygon_paths():
    assert problems(polygon())[0][0] == "coordinates"
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[5, 5], [6, 5], [6, 6], [5, 6]]]]}
    assert problems(multi) == [("coordinates.1.0", problems(polygon([[5, 5], [6, 5], [6, 6], [5, 6]]))[0][1])]
    assert problems({"type": "MultiPolygon", "coordinates": []}) == [
        ("coordinates", "a MultiPolygon is a non-empty list of polygons")]
    ok = normalise_polygon({"type": "MultiPolygon", "coordinates": [[SQUARE], [[[5, 5], [5, 6], [6, 6], [6, 5],
                                                                                  [5, 5]]]]})
    assert signed_area(ok["coordinates"][1][0]) > 0  # each exterior turned counterclockwise


def test_every_problem_is_reported_not_only_the_first():
    found = problems(polygon([[0, 0], [1, 0], [1, 95], [0, 0]], [[0, 0], [1, 0]]))
    assert [w for w, _ in found] == ["coordinates.0.2", "coordinates.1"]


def test_repeated_positions_and_altitudes_are_dropped():
    ring = [[0, 0, 12.5], [1, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    assert normalise_polygon(polygon(ring)) == polygon(SQUARE)


def test_two_thousand_positions_are_checked_quickly():
    n = 1999
    circle = [[math.cos(2 * math.pi * k / n) * 0.01, math.sin(2 * math.pi * k / n) * 0.01] for k in range(n)]
    started = time.perf_counter()
    normalise_polygon(polygon([*circle, circle[0]]))
    assert time.perf_counter() - started < 2.0  # the sweep, not 2 million pair tests


# --- properties -------------------------------------------------------------------------------

def convex(n: int, angles: list[float], radius: float, lng: float, lat: float) -> list[list[float]]:
    """n corners on a circle in counterclockwise order, closed."""
    points = [[lng + radius * math.cos(a), lat + radius * math.sin(a)] for a in sorted(angles)[:n]]
    return [*points, points[0]]


@st.composite
def spread_angles(draw: st.DrawFn, min_size: int = 3) -> list[float]:
    """3 to 40 corner angles around a circle whose gaps are all under half a turn (so the centre is strictly
    inside): built that way rather than filtered, which made Hypothesis give up on some seeds."""
    weights = draw(st.lists(st.floats(1.0, 1.9), min_size=min_size, max_size=40))
    turn = draw(st.floats(0, 2 * math.pi, exclude_max=True))
    total, angles, at = sum(weights), [], 0.0
    for w in weights:
        angles.append((turn + at) % (2 * math.pi))
        at += 2 * math.pi * w / total
    return angles


angle_sets = spread_angles()
centres = st.tuples(st.floats(-170, 170), st.floats(-80, 80))


def _spread(angles: list[float]) -> bool:
    ordered = sorted(angles)
    gaps = [b - a for a, b in itertools.pairwise(ordered)] + [2 * math.pi - ordered[-1] + ordered[0]]
    return min(gaps) > 1e-3 and max(gaps) < math.pi - 1e-3  # distinct corners, the centre strictly inside


@given(angle_sets, st.floats(0.001, 1), centres, st.booleans(), st.integers(0, 39))
def test_any_convex_ring_is_valid_in_either_order_from_any_start(angles, radius, centre, reverse, start):
    assume(_spread(angles))
    ring = convex(len(angles), angles, radius, *centre)
    corners = ring[:-1]
    start %= len(corners)
    corners = corners[start:] + corners[:start]
    if reverse:
        corners = corners[::-1]
    out = normalise_polygon(polygon([*corners, corners[0]]))["coordinates"][0]
    assert signed_area(out) > 0
    assert out[0] == out[-1] == corners[0]
    assert sorted(map(tuple, out[:-1])) == sorted(map(tuple, corners))


@given(spread_angles(min_size=4), st.floats(0.001, 1), centres, st.integers(0, 39))
def test_swapping_two_neighbouring_corners_makes_a_bow_tie_that_is_refused(angles, radius, centre, i):
    assume(len(angles) >= 4)
    assert _spread(angles)
    corners = convex(len(angles), angles, radius, *centre)[:-1]
    i %= len(corners)
    j = (i + 1) % len(corners)
    corners[i], corners[j] = corners[j], corners[i]
    found = problems(polygon([*corners, corners[0]]))
    assert found[0][0] == "coordinates.0" and "crosses or touches itself" in found[0][1]


@given(angle_sets, st.floats(0.001, 1), centres)
def test_dropping_the_closing_position_is_refused(angles, radius, centre):
    assume(_spread(angles))
    ring = convex(len(angles), angles, radius, *centre)
    ((where, reason),) = problems(polygon(ring[:-1]))
    assert where == "coordinates.0"
    assert ("not closed" in reason) if len(ring) - 1 >= 4 else ("at least 4 positions" in reason)


@given(angle_sets, st.floats(0.01, 1), centres, st.floats(0.05, 0.6))
def test_a_scaled_copy_inside_is_a_valid_hole_and_outside_is_not(angles, radius, centre, scale):
    assume(_spread(angles))
    outer = convex(len(angles), angles, radius, *centre)
    inner = convex(len(angles), angles, radius * scale, *centre)[::-1]
    out = normalise_polygon(polygon(outer, inner))["coordinates"]
    assert signed_area(out[0]) > 0 > signed_area(out[1])
    far = [[p[0] + 3 * radius, p[1]] for p in inner]
    assert problems(polygon(outer, far))[0][0] == "coordinates.1"


def star(n: int) -> list[list[float]]:
    """n corners alternating between two radii: long edges that overlap in longitude (the grid's hard case)."""
    points = [[(0.01 if k % 2 else 0.004) * math.cos(2 * math.pi * k / n) - 122.3,
               (0.01 if k % 2 else 0.004) * math.sin(2 * math.pi * k / n) + 47.6] for k in range(n)]
    return [*points, points[0]]


def test_a_dense_star_is_checked_in_bounded_time_and_one_swapped_corner_is_found():
    ring = star(1998)
    started = time.perf_counter()
    normalise_polygon(polygon(ring))
    assert time.perf_counter() - started < 5.0  # ~0.4 s measured; a pair-by-pair test takes minutes
    corners = ring[:-1]
    corners[1000], corners[1002] = corners[1002], corners[1000]  # two inner corners: edges 999-1000, 1002-1003 cross
    bad = [*corners, corners[0]]
    assert _brute_force_meets([(p[0], p[1]) for p in bad])
    assert "crosses or touches itself" in problems(polygon(bad))[0][1]


def _brute_force_meets(ring: list[tuple[float, float]]) -> bool:
    from chalicelib.geo.polygons import _adjacent_overlap, _segments_meet

    size = len(ring) - 1
    for i in range(size):
        if _adjacent_overlap(ring[i - 1] if i else ring[size - 1], ring[i], ring[i + 1]):
            return True
        for j in range(i + 2, size):
            if i == 0 and j == size - 1:
                continue
            if _segments_meet(ring[i], ring[i + 1], ring[j], ring[j + 1]):
                return True
    return False


grid_points = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=3, max_size=9)


@given(grid_points)
def test_the_grid_finds_a_crossing_exactly_when_every_pair_test_does(points):
    """Small integer corners make touches, collinear overlaps and crossings on cell borders common."""
    from chalicelib.geo.polygons import _first_crossing

    ring = [(float(x), float(y)) for x, y in points]
    ring = [p for i, p in enumerate(ring) if i == 0 or p != ring[i - 1]]
    assume(len(ring) >= 3 and ring[0] != ring[-1])
    ring.append(ring[0])
    assert (_first_crossing([ring]) is not None) == _brute_force_meets(ring)
