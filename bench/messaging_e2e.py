"""Message to screen on the real local stack (DynamoDB Local, moto server, chalice local).

Each trial sends a message from one side and times from the start of its POST until the other side's poll
returns it: the recipient's page and the driver app poll every POLL_MS (static/messages.js,
static/driver_messages.js), so each trial's poller runs on that interval at a random phase, and a poll that
would start before the POST has returned is skipped (it could not see the message). Trials alternate
recipient -> driver (the tracking page's form post, the driver's GET of the stop's conversation) and driver ->
recipient (the driver's POST, the page's GET /track/{token}/messages). Leaves out the browser: rendering a
list of text nodes is well under a frame.
"""

from __future__ import annotations

import random
import re
import time
import urllib.parse
import urllib.request
from typing import Any

from bench.common import Result, iso_ms, local_stack_api, log, now_ms, p95

NAMES = ("message_to_screen_p95_ms",)
TRIALS = 20
POLL_MS = 2000  # the pages' poll interval
STOP = (47.6205, -122.3493)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def _post_form(url: str, fields: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def run(trials: int = TRIALS) -> list[Result]:
    with local_stack_api("Bench Messaging") as (stack, call):
        rng = random.Random(17)
        latencies: list[float] = []
        for trial in range(trials):
            driver = call("POST", "/v1/drivers", {"name": f"Bench Driver{trial}"})
            shipment = call("POST", "/v1/shipments", {
                "recipient": {"name": "Bench Recipient", "phone": f"+1415555{trial:04d}"},
                "address": {"line1": "1 Bench St", "city": "Seattle", "country": "US"},
                "location": {"lat": STOP[0], "lng": STOP[1]}})
            t0 = now_ms() - 60_000
            route = call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso_ms(t0)[:10],
                                                "planned_start": iso_ms(t0), "shipment_ids": [shipment["id"]]})
            call("POST", f"/v1/routes/{route['id']}/start")
            page_url = shipment["tracking_url"].replace(stack.app_env.get("DOORSTEP_PUBLIC_BASE_URL", ""),
                                                        stack.base_url) if "://" in shipment["tracking_url"] \
                else f"{stack.base_url}{shipment['tracking_url']}"
            csrf = re.search(r'name="csrf" value="([^"]+)"', _get(page_url)[1])
            assert csrf, "the tracking page has no CSRF token"
            text = f"bench message {trial} {rng.random():.6f}"
            to_driver = trial % 2 == 0
            phase = rng.random() * POLL_MS / 1000
            started = time.perf_counter()
            if to_driver:
                assert _post_form(f"{page_url}/messages", {"csrf": csrf.group(1), "text": text}) == 201
            else:
                call("POST", f"/v1/driver/shipments/{shipment['id']}/messages", {"text": text},
                     token=driver["token"])
            returned = time.perf_counter()
            # the poller has been running at a random phase: its first poll after the POST returned
            since = returned - started
            wait = (phase - since) % (POLL_MS / 1000)
            deadline = returned + 10
            while True:
                time.sleep(wait)
                if to_driver:
                    body: Any = call("GET", f"/v1/driver/shipments/{shipment['id']}/messages",
                                     token=driver["token"])
                    seen = any(m["text"] == text for m in body["messages"])
                else:
                    seen = text in _get(f"{page_url}/messages")[1]
                if seen:
                    latencies.append((time.perf_counter() - started) * 1000)
                    break
                if time.perf_counter() > deadline:
                    raise AssertionError(f"trial {trial}: the message never reached the other side")
                wait = POLL_MS / 1000
        slowest = p95(latencies)
        p50 = sorted(latencies)[len(latencies) // 2]
        log(f"message_to_screen: p50 {p50:.0f} ms, p95 {slowest:.0f} ms")
        return [Result("message_to_screen_p95_ms", round(slowest, 1), "ms", 3000.0,
                       extra={"trials": trials, "p50_ms": round(p50, 1), "poll_ms": POLL_MS})]
