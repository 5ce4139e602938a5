"""`make reply` against the running local stack: a recipient's SMS reply joins their conversation; STOP opts out."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import api, run_module

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_make_reply_reaches_the_conversation(demo: dict[str, Any], demo_path: Path) -> None:
    phone = "+14155550166"
    created = api(demo, "POST", "/v1/shipments", {
        "recipient": {"name": "Rhea Reply", "phone": phone},
        "address": {"line1": "2 Pike Street", "city": "Seattle", "country": "US"},
        "location": {"lat": 47.6205, "lng": -122.3493}})
    assert created.status == 201, created.body
    done = run_module("infra.local.reply", "--phone", phone, "--text", "Leave it with the neighbour",
                      "--demo", demo_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"delivered": 1}
    url = created.body["tracking_url"] + "/messages"
    with urllib.request.urlopen(url, timeout=10) as response:
        thread = json.load(response)
    assert [m["text"] for m in thread["messages"]] == ["Leave it with the neighbour"]
    stop = run_module("infra.local.reply", "--phone", phone, "--text", "STOP", "--demo", demo_path)
    assert json.loads(stop.stdout.strip().splitlines()[-1]) == {"opted_out": 1}, stop.stderr
