"""The VROOM engine (pyvroom) behind route sequencing: one vehicle, the stops as jobs with service times and
time windows, over our own travel-time matrix. docs/routing.md says why VROOM and not OR-Tools.

`vroom` (and with it numpy and pandas, ~230 ms) is imported on the first solve only: the API's cold start and every
route that does not optimize never pay for it (tests/unit/test_cold_start.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.sequencing.rules import (
    FEW_HEURISTICS_ABOVE,
    NO_END,
    Matrix,
    Point,
    cheapest_insertion,
    exploration_level,
    solver_window,
)

_PROFILE = "car"


def solve(points: Sequence[Point], matrix: Matrix, *, stops: Sequence[int], end: int | None = None,
          threads: int = 2) -> list[int]:
    """The order (indexes into `points`, starting with point 0) that serves every index of `stops` in the least
    travel time, within their windows where it can; stops whose window cannot be met are put in by cheapest
    insertion afterwards (the caller reports them late). `end`: the point to finish at (not listed in the order).
    """
    if len(stops) <= 1:
        return [0, *stops]
    import vroom  # lazy: see the module docstring

    problem: Any = vroom.Input()
    problem.set_durations_matrix(profile=_PROFILE, matrix_input=matrix.seconds)
    # The vehicle leaves once the start's own service is over (a stop in progress), as `rules.evaluate` counts it.
    leaves = vroom.TimeWindow(round(points[0].service_s), NO_END)
    if end is None:
        problem.add_vehicle(vroom.Vehicle(id=0, start=0, profile=_PROFILE, time_window=leaves))
    else:
        problem.add_vehicle(vroom.Vehicle(id=0, start=0, end=end, profile=_PROFILE, time_window=leaves))
    jobs = []
    for index in stops:
        point = points[index]
        window = solver_window(point.window)
        extra: dict[str, Any] = {"time_windows": [vroom.TimeWindow(*window)]} if window else {}
        jobs.append(vroom.Job(id=index, location=index, service=round(point.service_s), **extra))
    problem.add_job(jobs)
    answer = _solve(vroom, problem, len(stops), threads)
    order = [0]
    for route in answer.get("routes", []):
        order.extend(int(step["id"]) for step in route["steps"] if step["type"] == "job")
    missing = [int(job["id"]) for job in answer.get("unassigned", [])]
    return cheapest_insertion(order, missing, matrix)


def _solve(vroom: Any, problem: Any, stops: int, threads: int) -> dict[str, Any]:
    """Solve within the time budget. A large route runs two chosen construction heuristics (one per thread)
    instead of exploration level 0's default set: on 200 stops ~0.5 s instead of ~1-3 s (`make bench`), for
    ~2 % more travel on the ALMRRC routes (`make eval-routes`: median 0.83 of the drivers' time, not 0.81).
    pyvroom 1.14 takes them only through its private `_solve` (its public `solve` has no such argument, and
    its `timeout` cannot be passed from Python); a version that refuses it gets the public call."""
    level = exploration_level(stops)
    if stops > FEW_HEURISTICS_ABOVE:
        try:
            from vroom.solution.solution import Solution

            native = vroom._vroom
            basic = native.HEURISTIC.BASIC
            chosen = [native.HeuristicParameters(basic, native.INIT.NONE, 0.0),
                      native.HeuristicParameters(basic, native.INIT.NEAREST, 0.0)]
            return dict(Solution(problem._solve(exploration_level=level, nb_threads=threads,
                                                h_param=chosen)).to_dict())
        except (AttributeError, TypeError, ImportError):
            pass
    return dict(problem.solve(exploration_level=level, nb_threads=threads).to_dict())
