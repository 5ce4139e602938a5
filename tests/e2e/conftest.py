"""End-to-end fixtures: the local stack as real processes (DynamoDB Local, moto server, chalice local) on
free ports.

One stack and one seeded demo per session keep the whole e2e run short. Merchants are created
with `isolated=True` (in a fresh interpreter): this pytest process already imported chalicelib
with the unit/integration test settings, and chalicelib binds its table and endpoint at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import PROJECT_DIR, LocalStack, http_json, seed_demo


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-stack")


@pytest.fixture(scope="session")
def stack(work_dir: Path) -> Iterator[LocalStack]:
    # Logs go to the temp dir: a developer's `make run` may be using .local/logs right now.
    with LocalStack(port=0, moto_port=0, log_dir=work_dir / "logs") as running:
        yield running


@pytest.fixture(scope="session")
def demo_path(work_dir: Path) -> Path:
    return work_dir / "demo.json"


@pytest.fixture(scope="session")
def demo(stack: LocalStack, demo_path: Path) -> dict[str, Any]:
    # As `make run` seeds it: the demo merchant's webhooks go to the stack's bundled receiver.
    return seed_demo(stack.base_url, stack.app_env, demo_path=demo_path, isolated=True,
                     webhook_receiver_url=stack.webhook_receiver_url, webhook_secret_file=stack.webhook_secret_file)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def api(demo: dict[str, Any], method: str, path: str, body: Any = None, **headers: str) -> Any:
    """A merchant API call with the demo merchant's key."""
    return http_json(method, f"{demo['base_url']}{path}", body, token=demo["merchant_api_key"], headers=headers)


def new_driver(demo: dict[str, Any], name: str = "E2E Driver") -> dict[str, Any]:
    result = api(demo, "POST", "/v1/drivers", {"name": name})
    assert result.status == 201, result.body
    driver: dict[str, Any] = result.body
    return driver


def run_module(module: str, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=timeout, check=False)


def write_demo(path: Path, demo: dict[str, Any]) -> Path:
    path.write_text(json.dumps(demo), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The system Chromium under Playwright, one per module (modules call tests.e2e.browser.require_browser)."""
    from playwright import sync_api

    from tests.e2e.browser import CHROMIUM, LAUNCH_ARGS

    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()
