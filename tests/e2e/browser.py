"""What the browser tests share: the system Chromium, its flags, one browser per module, screenshots, polling.

The `browser` fixture (one Chromium per module) is in tests/e2e/conftest.py. A test module calls
`require_browser()` at import time: without /usr/bin/chromium or playwright the whole
module is skipped with the reason (`.ci/run` installs Chromium, so CI never skips). Playwright drives the
system's Chromium, never a browser downloaded by `playwright install`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import PROJECT_DIR

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_DIR / "test-artifacts" / "screenshots"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed: the browser tests need the system Chromium "
                    "(apt-get install -y chromium; .ci/run installs it on CI)", allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt: make venv")


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `check` every half second until it returns something truthy; that value, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
