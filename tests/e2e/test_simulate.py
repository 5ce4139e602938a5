"""(e) `make simulate` against the running stack."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.local.simulate import BUILTIN_TRACE, parse_gpx
from infra.local.stack import LocalStack, http_json
from tests.conftest import shared_path
from tests.e2e.conftest import api, iso, new_driver, run_module, write_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _demo_for_new_driver(demo: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A demo.json naming a fresh driver, so the run does not depend on other tests' pings."""
    driver = new_driver(demo, "Simulated Driver")
    # An old fix far from the trace: "the position moved" is then measurable, and being an hour
    # old it is outside the speed check's window, so it cannot veto the trace's first fixes.
    old = {"lat": 47.60, "lng": -122.33, "fix_time": iso(datetime.now(UTC) - timedelta(hours=1))}
    posted = http_json("POST", f"{demo['base_url']}/v1/driver/pings", {"pings": [old]}, token=driver["token"])
    assert posted.status == 200 and posted.body["accepted"] == 1, posted.body
    mine = {**demo, "driver_id": driver["id"], "driver_token": driver["token"]}
    return write_demo(tmp_path / "demo.json", mine), mine


def _position(demo: dict[str, Any]) -> dict[str, Any]:
    result = api(demo, "GET", f"/v1/drivers/{demo['driver_id']}/position")
    assert result.status == 200, result.body
    position: dict[str, Any] = result.body
    return position


def _check_run(demo_file: Path, demo: dict[str, Any], trace: Path, speed: str, batch: str) -> str:
    before = _position(demo)
    # --no-park-stops: this checks the ping path; waiting for the pipeline to drain a shared stack's
    # backlog would make it slow and timing-dependent (tests/integration/test_pipeline.py covers it).
    proc = run_module("infra.local.simulate", "--demo", demo_file, "--trace", trace, "--speed", speed,
                      "--batch", batch, "--no-park-stops")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = _position(demo)
    last = parse_gpx(trace)[-1]
    assert (after["lat"], after["lng"]) == (last.lat, last.lng)
    assert datetime.fromisoformat(after["fix_time"]) > datetime.fromisoformat(before["fix_time"])
    assert "Final position" in proc.stdout
    return proc.stdout


def test_simulate_plays_the_builtin_trace_and_moves_the_driver(stack: LocalStack, demo: dict[str, Any],
                                                               tmp_path: Path) -> None:
    demo_file, mine = _demo_for_new_driver(demo, tmp_path)
    out = _check_run(demo_file, mine, BUILTIN_TRACE, speed="2000", batch="25")
    fixes = len(parse_gpx(BUILTIN_TRACE))
    assert f"-> {fixes} accepted, 0 duplicate, 0 rejected" in out


def test_simulate_plays_the_real_ridealong_trace(stack: LocalStack, demo: dict[str, Any], tmp_path: Path) -> None:
    trace = shared_path("traces", "ridealong", "test1.gpx")
    demo_file, mine = _demo_for_new_driver(demo, tmp_path)
    out = _check_run(demo_file, mine, trace, speed="1000", batch="50")
    counts = re.search(r"-> (\d+) accepted, (\d+) duplicate, (\d+) rejected", out)
    assert counts is not None, out
    accepted, duplicates, rejected = map(int, counts.groups())
    # test1.gpx repeats some fixes with the same time: the API reports them as duplicates.
    assert accepted + duplicates == len(parse_gpx(trace)) and duplicates > 0 and rejected == 0


def test_simulate_without_demo_json_says_to_run_make_run(tmp_path: Path) -> None:
    proc = run_module("infra.local.simulate", "--demo", tmp_path / "missing.json")
    assert proc.returncode == 1
    assert "run `make run` first" in proc.stderr


def test_simulate_against_a_stopped_stack_says_so(demo: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    stale = write_demo(tmp_path / "demo.json", {**demo, "base_url": f"http://127.0.0.1:{closed}"})
    proc = run_module("infra.local.simulate", "--demo", stale, "--trace", BUILTIN_TRACE, "--speed", "5000")
    assert proc.returncode == 1
    assert "is `make run` still running?" in proc.stderr
