"""Cold start: how long a fresh interpreter takes to `import app`, relative to `import boto3`.

Absolute import times swing with the machine's load, so the figure with a target
is a ratio against boto3, which every Lambda cold start in Python pays for in some
form. Runs alternate (app, boto3, app, boto3, ...) so both medians see the same
noise; one unrecorded pair first fills the OS file cache and rewrites stale .pyc files.
"""

from __future__ import annotations

import subprocess
import time

from bench.common import PROJECT_ROOT, Result, cold_start_env, log, median, venv_python

NAMES = ("cold_start_import_ratio", "cold_start_import_ms")
RUNS = 11  # per side; the brief asks for at least 7
TARGET_RATIO = 2.0


def _time_import(python: str, module: str, env: dict[str, str]) -> float:
    """Wall time of a fresh interpreter importing `module`, in ms (interpreter start-up included, on both sides)."""
    started = time.perf_counter()
    done = subprocess.run([python, "-c", f"import {module}"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"`import {module}` failed:\n{done.stderr}")
    return elapsed


def run(runs: int = RUNS) -> list[Result]:
    with cold_start_env() as env:  # bytecode as a deployed package ships it (infra/package.py)
        return _measure(venv_python(), env, runs)


def _measure(python: str, env: dict[str, str], runs: int) -> list[Result]:
    _time_import(python, "app", env)  # warm-up pair, not recorded
    _time_import(python, "boto3", env)
    app_ms: list[float] = []
    boto3_ms: list[float] = []
    for i in range(runs):
        app_ms.append(_time_import(python, "app", env))
        boto3_ms.append(_time_import(python, "boto3", env))
        log(f"cold start {i + 1}/{runs}: app {app_ms[-1]:.0f} ms, boto3 {boto3_ms[-1]:.0f} ms")
    app_median, boto3_median = median(app_ms), median(boto3_ms)
    return [
        Result("cold_start_import_ratio", round(app_median / boto3_median, 3), "ratio", TARGET_RATIO,
               baseline=round(boto3_median, 1),
               extra={"baseline_unit": "ms", "baseline_is": "median wall time of a fresh `python -c 'import boto3'`",
                      "runs": runs}),
        Result("cold_start_import_ms", round(app_median, 1), "ms", None,
               extra={"is": "median wall time of a fresh `python -c 'import app'`, interpreter start-up included",
                      "min": round(min(app_ms), 1), "max": round(max(app_ms), 1), "runs": runs}),
    ]
