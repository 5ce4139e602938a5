"""(b) Driver pings over HTTP: counted, idempotent, and visible to the merchant and the recipient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infra.local.stack import http_json, tracking_json_url
from tests.e2e.conftest import api, iso

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_retried_batch_is_all_duplicates_and_the_newest_fix_is_the_position(demo: dict[str, Any]) -> None:
    stop = demo["stops"][0]
    now = datetime.now(UTC).replace(microsecond=0)
    # Five fixes 5 s apart creeping toward the first stop (about 11 m each: a plausible speed).
    pings = [{"lat": round(stop["lat"] - 0.0005 + 0.0001 * i, 6), "lng": stop["lng"],
              "fix_time": iso(now - timedelta(seconds=25 - 5 * i)), "accuracy": 8.0, "speed": 2.2}
             for i in range(5)]
    url = f"{demo['base_url']}/v1/driver/pings"

    first = http_json("POST", url, {"pings": pings}, token=demo["driver_token"])
    assert first.status == 200, first.body
    assert (first.body["accepted"], first.body["duplicates"], first.body["rejected"]) == (5, 0, 0)

    again = http_json("POST", url, {"pings": pings}, token=demo["driver_token"])
    assert again.status == 200, again.body
    assert (again.body["accepted"], again.body["duplicates"], again.body["rejected"]) == (0, 5, 0)

    newest = pings[-1]
    position = api(demo, "GET", f"/v1/drivers/{demo['driver_id']}/position")
    assert position.status == 200, position.body
    assert (position.body["lat"], position.body["lng"]) == (newest["lat"], newest["lng"])
    assert datetime.fromisoformat(position.body["fix_time"]) == datetime.fromisoformat(newest["fix_time"])

    tracking = http_json("GET", tracking_json_url(demo["tracking_urls"][0]))
    assert tracking.status == 200, tracking.body
    assert tracking.body["driver"] is not None
    assert (tracking.body["driver"]["lat"], tracking.body["driver"]["lng"]) == (newest["lat"], newest["lng"])


def test_a_ping_without_a_valid_driver_token_is_401(demo: dict[str, Any]) -> None:
    body = {"pings": [{"lat": 1.0, "lng": 1.0, "fix_time": iso(datetime.now(UTC))}]}
    result = http_json("POST", f"{demo['base_url']}/v1/driver/pings", body, token="dtk_not-a-real-token")
    assert result.status == 401
    assert result.body["error"]["code"]
