"""No driver token, device id, app link or tracking token reaches any log file of the local stack."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from infra.local.stack import LocalStack, http_json
from tests.e2e.conftest import api, iso, new_driver

pytestmark = [pytest.mark.e2e]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def send(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


def test_every_tracker_path_keeps_its_secrets_out_of_every_log(stack: LocalStack, demo: dict[str, Any]) -> None:
    base = demo["base_url"]
    driver = new_driver(demo, "Redaction Driver")
    generated = api(demo, "POST", f"/v1/drivers/{driver['id']}/device-id")
    assert generated.status == 201, generated.body
    device = generated.body["device_id"]
    link = api(demo, "POST", f"/v1/drivers/{driver['id']}/app-link", {})
    assert link.status == 201, link.body
    link_token = link.body["url"].rsplit("/driver/", 1)[1]
    tracking_token = demo["tracking_urls"][0].rsplit("/track/", 1)[1]
    unknown = "Unknown-Device-4h7k-2m9q-x3w8"
    secrets = {"driver token": driver["token"], "device id": device, "unknown device id": unknown,
               "app link": link_token, "tracking token": tracking_token}

    now = datetime.now(UTC)
    stop = demo["stops"][0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    statuses = []
    for n, secret in enumerate((driver["token"], device, unknown)):
        fix = now - timedelta(seconds=60 - 10 * n)
        query = f"lat={stop['lat']}&lon={stop['lng']}&timestamp={int(fix.timestamp())}"
        statuses += [
            send("GET", f"{base}/osmand?id={quote(secret)}&{query}"),
            send("GET", f"{base}/osmand?deviceid={quote(secret)}&{query}"),
            send("POST", f"{base}/osmand?id={quote(secret)}&{query}", b"", form),
            send("POST", f"{base}/osmand", f"id={quote(secret)}&{query}".encode(), form),
            send("POST", f"{base}/osmand", json.dumps({"device_id": secret, "location": {
                "timestamp": iso(fix + timedelta(seconds=1)),
                "coords": {"latitude": stop["lat"], "longitude": stop["lng"]}}}).encode(),
                 {"Content-Type": "application/json"}),
            send("POST", f"{base}/owntracks",
                 json.dumps({"_type": "location", "lat": stop["lat"], "lon": stop["lng"],
                             "tst": int(fix.timestamp()) + 2}).encode(),
                 {"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(
                     f"{driver['id']}:{secret}".encode()).decode()}),
        ]
    pinged = http_json("POST", f"{base}/v1/driver/pings", {"pings": [
        {"lat": stop["lat"], "lng": stop["lng"], "fix_time": iso(now)}]}, token=driver["token"])
    statuses += [pinged.status, send("GET", f"{base}/driver/{link_token}"),
                 send("GET", f"{base}/v1/driver/route", headers={"Authorization": f"Bearer {link_token}"}),
                 send("GET", f"{base}/track/{tracking_token}"), send("GET", f"{base}/track/{tracking_token}/status"),
                 send("GET", f"{base}/v1/track/{tracking_token}")]
    assert 200 in statuses and 400 in statuses and 401 in statuses and 500 not in statuses, statuses

    time.sleep(1.5)  # the log pumps and the stream runner catch up
    logs = [p for p in stack.log_dir.parent.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl", ".txt")]
    assert any(p.name == "chalice.log" for p in logs), logs
    found = {}
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        for what, secret in secrets.items():
            for form_of_it in {secret, quote(secret), quote(secret, safe="")}:
                if form_of_it in text:
                    found[f"{what} in {path.relative_to(stack.log_dir.parent)}"] = _line_with(text, form_of_it)
    assert not found, found
    access_log = (stack.log_dir / "chalice.log").read_text(encoding="utf-8", errors="replace")
    assert "/osmand?<redacted>" in access_log  # the requests are there, their query strings are not


def _line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line:
            return line[:300]
    return ""
