"""The VROOM engine (pyvroom) behind route sequencing: one vehicle, the stops as jobs with service times and
time windows, over our own travel-time matrix. docs/routing.md says why VROOM and not OR-Tools.

`vroom` (and with it numpy and pandas, ~230 ms) is imported on the first solve only: the API's cold start and every
route that does not optimize never pay for it (tests/unit/test_cold_start.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.sequencing.rules import Matrix, Point, cheapest_insertion, exploration_level, solver_window

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
    if end is None:
        problem.add_vehicle(vroom.Vehicle(id=0, start=0, profile=_PROFILE))
    else:
        problem.add_vehicle(vroom.Vehicle(id=0, start=0, end=end, profile=_PROFILE))
    jobs = []
    for index in stops:
        point = points[index]
        window = solver_window(point.window)
        extra: dict[str, Any] = {"time_windows": [vroom.TimeWindow(*window)]} if window else {}
        jobs.append(vroom.Job(id=index, location=index, service=round(point.service_s), **extra))
    problem.add_job(jobs)
    answer = problem.solve(exploration_level=exploration_level(len(stops)), nb_threads=threads).to_dict()
    order = [0]
    for route in answer.get("routes", []):
        order.extend(int(step["id"]) for step in route["steps"] if step["type"] == "job")
    missing = [int(job["id"]) for job in answer.get("unassigned", [])]
    return cheapest_insertion(order, missing, matrix)
