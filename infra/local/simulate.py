"""Drive the demo route along its GPS trace through the driver ping API of the local stack (`make simulate`).

Reads .local/demo.json (written by `make run`), loads the GPX trace the demo route was planned along (the
real ride-along trace from ../shared/data when present, else the synthetic events/demo_trace.gpx) and posts
its fixes as the demo driver, in batches, at N times real speed. Then it does at the stops the trace reached
what the driver's app would: the first delivered with a photo, the second failed (nobody home), the others
delivered, the last left "arrived" (the trace ends there). Another trace (--trace) is not along the demo
route: a new driver drives a shipment at each of its parking waypoints instead.

Fix times: the API refuses fixes more than 2 minutes in the future or more than 7 days old, so the trace
keeps its real durations and is shifted so its LAST fix lands at the moment the simulation starts: every
fix is then in the recent past when it is posted, whatever the playback speed. But the drive never starts
before the route did, nor before the driver's latest fix (the pipeline ignores older ones): then its first
fix lands just after that moment, and the fixes later than now are posted as real time reaches them
(--backdate lifts the route's bound). Batches arrive in the order a phone would send them.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.local.demo_plan import BUILTIN_TRACE as BUILTIN_TRACE  # re-exported: where the trace lives
from infra.local.demo_plan import TraceFix as TraceFix
from infra.local.demo_plan import default_trace as _default_trace
from infra.local.demo_plan import parse_gpx as parse_gpx
from infra.local.demo_plan import parse_waypoints
from infra.local.stack import (
    DEFAULT_DEMO_PATH,
    DEMO_KEYS,
    HttpResult,
    default_data_dir,
    http_json,
    tracking_json_url,
)

MAX_BATCH = 500  # the API's limit per request
RETRIES = 3


class SimulationError(RuntimeError):
    """Something the user must fix (no demo.json, stack down, token refused); the message says what."""


def plan_park_stops(demo: dict[str, Any], waypoints: Sequence[tuple[str, float, float]], base_url: str,
                    first_fix: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A shipment at each parking waypoint, on a started route of a new driver ("Trace Driver"), so the replay
    exercises the pipeline (approaching, arrived and departed at each stop) while the demo driver keeps the
    demo route (one active route per driver; the driver app keeps showing it). Returns the demo with that
    driver in place of the demo driver, and the shipments."""
    key = demo["merchant_api_key"]
    driver = http_json("POST", f"{base_url}/v1/drivers", {"name": "Trace Driver"}, token=key)
    if driver.status != 201:
        raise SimulationError(f"could not create the trace's driver: HTTP {driver.status} {driver.body}")
    shipments = []
    for number, (_name, lat, lng) in enumerate(waypoints, start=1):
        created = http_json("POST", f"{base_url}/v1/shipments", {
            "recipient": {"name": f"Park Stop {number}", "phone": f"+1206555{number:04d}",
                          "email": f"park-stop-{number}@example.com"},
            "address": {"line1": f"Parking waypoint {number}", "city": demo.get("city") or "Seattle", "country": "US"},
            "location": {"lat": lat, "lng": lng}}, token=key)
        if created.status != 201:
            raise SimulationError(f"could not create the park-stop shipment: HTTP {created.status}")
        shipments.append(created.body)
    route = http_json("POST", f"{base_url}/v1/routes", {
        "driver_id": driver.body["id"], "day": first_fix.date().isoformat(),
        "planned_start": first_fix.isoformat(), "shipment_ids": [s["id"] for s in shipments]}, token=key)
    if route.status != 201:
        raise SimulationError(f"could not create the park-stop route: HTTP {route.status} {route.body}")
    started = http_json("POST", f"{base_url}/v1/routes/{route.body['id']}/start", token=key)
    if started.status != 200:
        raise SimulationError(f"could not start the park-stop route: HTTP {started.status} {started.body}")
    return {**demo, "driver_id": driver.body["id"], "driver_token": driver.body["token"],
            "route_id": route.body["id"]}, shipments


def settled_timelines(demo: dict[str, Any], base_url: str, shipment_ids: Sequence[str],
                      timeout_s: float = 30.0) -> dict[str, list[str]]:
    """The pipeline's events per shipment, once they stop changing: the stream runner follows the
    table a moment behind the API, more so after a fast replay (moto answers each of the pipeline's
    reads and writes in tens of milliseconds, so a replay at 1000x leaves a backlog)."""
    def read() -> dict[str, list[str]]:
        found = {}
        for shipment_id in shipment_ids:
            timeline = http_json("GET", f"{base_url}/v1/shipments/{shipment_id}/timeline",
                                 token=demo["merchant_api_key"])
            kinds = [e["type"] for e in timeline.body.get("items", [])] if timeline.status == 200 else []
            found[shipment_id] = [k for k in kinds if k in ("approaching", "arrived", "dwell", "departed", "delayed")]
        return found

    deadline, last, stable_since = time.monotonic() + timeout_s, read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 2.0 and all(last.values()):
            break
    return last


def deliver_visited(demo: dict[str, Any], base_url: str, shipment_ids: Sequence[str]) -> list[str]:
    """Mark delivered, as the driver's phone would, each park stop the driver arrived at: at the time the
    pipeline saw the driver leave (else arrive), so its tracking page ends in the delivered state."""
    delivered = []
    for shipment_id in shipment_ids:
        timeline = http_json("GET", f"{base_url}/v1/shipments/{shipment_id}/timeline", token=demo["merchant_api_key"])
        events = timeline.body.get("items", []) if timeline.status == 200 else []
        visit = next((e for kind in ("departed", "arrived") for e in events if e["type"] == kind), None)
        if visit is None:
            continue
        result = http_json("POST", f"{base_url}/v1/driver/shipments/{shipment_id}/status",
                           {"status": "delivered", "occurred_at": visit["occurred_at"]}, token=demo["driver_token"],
                           headers={"Idempotency-Key": f"simulate-delivered-{shipment_id}"})
        if result.status == 200:
            delivered.append(shipment_id)
    return delivered


# --- the demo route's day (`make run`'s route lies along the default trace) ------------------


def demo_photo(width: int = 96, height: int = 64) -> bytes:
    """A small real PNG (a parcel on a doorstep), made here so the demo needs no image file: the API
    accepts as proof only an upload whose bytes are the image type it announced."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter: none
        for x in range(width):
            parcel = 30 <= x < 66 and 18 <= y < 50
            tape = parcel and 45 <= x < 51
            step = y >= 50
            row += bytes((200, 170, 120) if tape else (150, 105, 60) if parcel else
                         (120, 120, 125) if step else (225, 228, 232))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def _multipart(fields: dict[str, str], file: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = f"doorstep-demo-{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="proof.png"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n".encode() + file + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload_photo(demo: dict[str, Any], base_url: str, shipment_id: str) -> str:
    """Upload the demo photo through the driver's presigned POST, as the driver app does; its proof key."""
    photo = demo_photo()
    upload = http_json("POST", f"{base_url}/v1/driver/shipments/{shipment_id}/proof-uploads",
                       {"kind": "photo", "content_type": "image/png", "size_bytes": len(photo)},
                       token=demo["driver_token"])
    if upload.status != 201:
        raise SimulationError(f"the proof upload was refused: HTTP {upload.status} {json.dumps(upload.body)[:300]}")
    body, content_type = _multipart(upload.body["fields"], photo, "image/png")
    request = urllib.request.Request(upload.body["url"], data=body, method="POST",
                                     headers={"Content-Type": content_type})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the local emulator, never a proxy
    with opener.open(request, timeout=30) as answer:
        answer.read()
    return str(upload.body["key"])


@dataclass
class DemoDay:
    """What `make simulate` left on the demo route's stops the trace reached, by shipment id."""

    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)


def finish_demo_visits(demo: dict[str, Any], base_url: str, timeout_s: float = 60.0) -> DemoDay:
    """Do at the trace's stops what the driver's phone would: the first delivered with a photo, the second
    failed (nobody home), the others delivered, the last left as arrived (the trace ends there, the driver
    is at that door now). Each at the time the pipeline saw the driver leave it (else arrive)."""
    visited = list(demo["shipment_ids"][: int(demo.get("visited_stops") or 0)])
    places = {s["shipment_id"]: s for s in demo.get("stops", [])}
    day = DemoDay()
    if not visited:
        return day
    settled_timelines(demo, base_url, visited, timeout_s=timeout_s)
    for position, shipment_id in enumerate(visited):
        timeline = http_json("GET", f"{base_url}/v1/shipments/{shipment_id}/timeline", token=demo["merchant_api_key"])
        events = timeline.body.get("items", []) if timeline.status == 200 else []
        arrival = next((e for e in events if e["type"] == "arrived"), None)
        if arrival is None:
            day.not_reached.append(shipment_id)
            continue
        if position == len(visited) - 1:
            day.arrived.append(shipment_id)
            continue
        leaving = next((e for e in events if e["type"] == "departed"), arrival)
        place = places.get(shipment_id)
        update: dict[str, Any] = {"occurred_at": leaving["occurred_at"]}
        if place is not None:
            update["location"] = {"lat": place["lat"], "lng": place["lng"]}
        if position == 1 and len(visited) >= 3:
            update.update(status="failed", reason="not_home", note="Rang twice, no answer; no safe place")
            outcome = day.failed
        else:
            update.update(status="delivered", proof_keys=[upload_photo(demo, base_url, shipment_id)],
                          recipient_name="Left at the front door", contactless=True)
            outcome = day.delivered
        result = http_json("POST", f"{base_url}/v1/driver/shipments/{shipment_id}/status", update,
                           token=demo["driver_token"], headers={"Idempotency-Key": f"simulate-{shipment_id}"})
        if result.status != 200:
            raise SimulationError(f"the {update['status']} update of {shipment_id} was refused: HTTP {result.status} "
                                  f"{json.dumps(result.body)[:300]}")
        outcome.append(shipment_id)
    return day


def describe_demo_day(demo: dict[str, Any], day: DemoDay) -> None:
    """What each tracking link of the demo route shows now, in route order, in the words its page uses."""
    shown = {**{sid: "delivered, with the photo" for sid in day.delivered},
             **{sid: "not delivered (nobody home), can be rescheduled" for sid in day.failed},
             **{sid: "the driver is at the door" for sid in day.arrived},
             **{sid: "not reached yet (see .local/logs/streams.log)" for sid in day.not_reached}}
    upcoming = [sid for sid in demo["shipment_ids"] if sid not in shown]
    if upcoming:
        shown[upcoming[0]] = "on the way: the live driver and today's window"
    print("The demo route's tracking pages now show:")
    for number, (shipment_id, url) in enumerate(zip(demo["shipment_ids"], demo["tracking_urls"], strict=True), 1):
        if shipment_id in shown:
            print(f"  stop {number}: {shown[shipment_id]}   {url}")
    if len(upcoming) > 1:
        print(f"  stops {len(demo['shipment_ids']) - len(upcoming) + 2}-{len(demo['shipment_ids'])}: "
              "later today, in their promised windows (tracking_urls of demo.json)")


def ping_json(fix: TraceFix, fix_time: datetime) -> dict[str, Any]:
    ping: dict[str, Any] = {"lat": fix.lat, "lng": fix.lng,
                            "fix_time": fix_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    for name in ("accuracy", "speed", "heading", "altitude"):
        value = getattr(fix, name)
        if value is not None:
            ping[name] = value
    return ping


# --- inputs -------------------------------------------------------------------------------


def load_demo(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SimulationError(f"{path} not found: run `make run` first (in another terminal) and keep it running")
    try:
        demo: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SimulationError(f"{path} is not valid JSON ({exc}); run `make run` again") from None
    missing = [key for key in DEMO_KEYS if key not in demo]
    if missing:
        raise SimulationError(f"{path} lacks {', '.join(missing)}; run `make run` again")
    return demo


def default_trace() -> Path:
    return _default_trace(default_data_dir())


def _distance_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


# --- playback -----------------------------------------------------------------------------


@dataclass
class Tally:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    requests: int = 0
    eta_windows_seen: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def done(self) -> int:
        return self.accepted + self.duplicates + self.rejected


def _post(url: str, token: str, pings: list[dict[str, Any]]) -> HttpResult:
    """POST one batch; retries are safe because the API stores each (driver, fix time) once."""
    delay = 0.5
    for attempt in range(RETRIES + 1):
        try:
            result = http_json("POST", url, {"pings": pings}, token=token, timeout=30)
        except (urllib.error.URLError, ConnectionError) as exc:
            # Refused means nothing listens: the stack is down, and waiting will not bring it back.
            refused = isinstance(exc, ConnectionRefusedError) or isinstance(
                getattr(exc, "reason", None), ConnectionRefusedError)
            if refused or attempt == RETRIES:
                raise SimulationError(f"cannot reach {url} ({exc}): is `make run` still running?") from None
        else:
            if result.status not in {429, 500, 502, 503, 504} or attempt == RETRIES:
                return result
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _bar(done: int, total: int, tally: Tally, elapsed: float, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return (f"\r[{'#' * filled}{'-' * (width - filled)}] {100 * done // max(total, 1):3d}%  {done}/{total} fixes  "
            f"accepted {tally.accepted}  duplicate {tally.duplicates}  rejected {tally.rejected}  {elapsed:5.1f} s")


def drive_not_before(demo: dict[str, Any], base_url: str, after_route_start: bool) -> datetime | None:
    """The moment the played drive must start after: the driver's latest fix (the pipeline ignores older
    ones) and, with `after_route_start`, the start of the route it drives (a drive before it would put the route's
    events before its shipments were even ordered)."""
    bounds = []
    latest = http_json("GET", f"{base_url}/v1/drivers/{demo['driver_id']}/position", token=demo["merchant_api_key"])
    if latest.status == 200:
        bounds.append(datetime.fromisoformat(latest.body["fix_time"]))
    if after_route_start:
        route = http_json("GET", f"{base_url}/v1/routes/{demo['route_id']}", token=demo["merchant_api_key"])
        # (a demo.json naming another driver than the route's, as tests write, bounds nothing)
        if route.status == 200 and route.body.get("started_at") and route.body.get("driver_id") == demo["driver_id"]:
            bounds.append(datetime.fromisoformat(route.body["started_at"]))
    return max(bounds, default=None)


def playback_offset(fixes: Sequence[TraceFix], now: datetime, not_before: datetime | None) -> timedelta:
    """How far the trace's times move: its last fix lands at `now` (so the whole drive is in the recent past and
    plays at any speed), unless that puts its first fix at or before `not_before` (the driver's latest fix:
    the pipeline ignores fixes older than what it has processed); then the first fix lands just after it,
    and the fixes later than now are posted as real time reaches them (see `play`)."""
    offset = now - fixes[-1].time
    if not_before is not None and fixes[0].time + offset <= not_before:
        offset = not_before + timedelta(seconds=1) - fixes[0].time
    return offset


FUTURE_SLACK = timedelta(seconds=60)  # the API refuses fixes over 2 minutes ahead of its clock


def play(demo: dict[str, Any], fixes: Sequence[TraceFix], *, speed: float, batch: int,
         base_url: str | None = None, out: Any = sys.stdout, watch: str | None = None,
         not_before: datetime | None = None) -> Tally:
    """Post `fixes` in batches at `speed` x real time; returns the tally of per-item outcomes. A fix is never
    posted before real time is within FUTURE_SLACK of its (moved) time: a phone does not report the future."""
    url = f"{(base_url or demo['base_url']).rstrip('/')}/v1/driver/pings"
    started_wall = datetime.now(UTC)
    offset = playback_offset(fixes, started_wall, not_before)
    first = fixes[0].time
    if fixes[-1].time + offset > started_wall + FUTURE_SLACK:
        wait = (fixes[-1].time + offset - started_wall - FUTURE_SLACK).total_seconds()
        out.write(f"The drive starts after {not_before:%H:%M:%S} UTC (the route's start or the driver's latest fix), "
                  f"so its rest plays in real time: about {wait / 60:.0f} more minutes. Watch the tracking pages "
                  "meanwhile (or pass --backdate for a quick run).\n")
    batches = [list(fixes[i:i + batch]) for i in range(0, len(fixes), batch)]
    tally = Tally()
    start = time.monotonic()
    for chunk in batches:
        # A phone sends a batch once its last fix is taken: schedule against the start, so HTTP
        # latency does not accumulate into drift.
        due = max(start + (chunk[-1].time - first).total_seconds() / speed,
                  start + (chunk[-1].time + offset - FUTURE_SLACK - started_wall).total_seconds())
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        result = _post(url, demo["driver_token"], [ping_json(f, f.time + offset) for f in chunk])
        tally.requests += 1
        if result.status == 401:
            raise SimulationError("the driver token in demo.json was refused: the stack was restarted since it was "
                                  "written (moto keeps data in memory). Use the demo.json of the running `make run`.")
        if result.status != 200:
            raise SimulationError(f"the API answered HTTP {result.status}: {json.dumps(result.body)[:500]}")
        body = result.body
        tally.accepted += int(body["accepted"])
        tally.duplicates += int(body["duplicates"])
        tally.rejected += int(body["rejected"])
        for item in body.get("items", []):
            if item.get("status") == "rejected":
                tally.reasons[f"{item.get('field')}: {item.get('reason')}"] += 1
        if watch is not None:  # a recipient's tracking JSON polled while the driver comes
            view = http_json("GET", watch)
            if view.status == 200 and view.body.get("eta"):
                tally.eta_windows_seen += 1
        out.write(_bar(tally.done, len(fixes), tally, time.monotonic() - start))
        out.flush()
    out.write("\n")
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.simulate",
                                     description="Play a GPX trace through the driver ping API of `make run`.")
    parser.add_argument("--trace", type=Path, default=None,
                        help="GPX file (default: the trace the demo route was planned along, named in demo.json: "
                             "../shared/data/traces/ridealong/test1.gpx, else events/demo_trace.gpx)")
    parser.add_argument("--speed", type=float, default=20.0, help="playback speed, x real time (default 20)")
    parser.add_argument("--batch", type=int, default=10, help="fixes per request (default 10, max 500)")
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO_PATH, help="demo.json written by `make run`")
    parser.add_argument("--base-url", default=None, help="API base URL (default: base_url from demo.json)")
    parser.add_argument("--backdate", action="store_true",
                        help="end the drive now even when it then begins before the demo route started (quick at any "
                             "time, but the route's events precede its orders on the timelines)")
    parser.add_argument("--no-park-stops", action="store_true",
                        help="do not put a shipment at each GPX waypoint (parking) before playing")
    args = parser.parse_args(argv)
    if not (args.speed > 0 and math.isfinite(args.speed)):
        parser.error("--speed must be a positive number")
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be 1..{MAX_BATCH}")

    try:
        demo = load_demo(args.demo)
        seeded = Path(demo["trace"]) if demo.get("trace") else None
        # By default the trace the demo route was planned along (its stops lie on it), else the default one.
        trace = args.trace or (seeded if seeded is not None and seeded.is_file() else default_trace())
        if not trace.is_file():
            raise SimulationError(f"trace {trace} not found")
        try:
            fixes = parse_gpx(trace)
        except ET.ParseError as exc:
            raise SimulationError(f"{trace} is not valid GPX/XML ({exc})") from None
        if not fixes:
            raise SimulationError(f"{trace} has no track points with a time")
        duration = (fixes[-1].time - fixes[0].time).total_seconds()
        print(f"Playing {trace.name}: {len(fixes)} fixes over {duration / 60:.1f} min at {args.speed:g}x "
              f"(about {duration / args.speed:.0f} s), {args.batch} per request, as driver {demo['driver_id']}")
        # The demo route's own trace drives that route; any other trace gets a shipment at each of its
        # parking waypoints (a new route of the driver), as the demo route's stops are not on it.
        on_demo_route = seeded is not None and seeded.resolve() == trace.resolve()
        stops = demo.get("stops") or []
        if stops and not on_demo_route:
            gap = _distance_km(fixes[-1].lat, fixes[-1].lng, float(stops[0]["lat"]), float(stops[0]["lng"]))
            if gap > 50:
                print(f"note: the trace ends {gap:,.0f} km from the demo stops (trace and route come from different "
                      "cities); the positions are real, the map will just show them far apart")
        base_url = (args.base_url or demo["base_url"]).rstrip("/")
        waypoints = [] if args.no_park_stops or on_demo_route else parse_waypoints(trace)
        park: list[dict[str, Any]] = []
        if waypoints:
            demo, park = plan_park_stops(demo, waypoints, base_url,
                                         datetime.now(UTC) - (fixes[-1].time - fixes[0].time))
            print(f"Put a shipment at each of the {len(park)} parking waypoint(s), on a route of a new driver "
                  f"{demo['driver_id']} (the demo driver keeps the demo route); tracking: {park[0]['tracking_url']}")
        watched = park[-1]["tracking_url"] if park else (demo["tracking_urls"][0] if on_demo_route else None)
        # Both the demo route and a park-stop route started before this drive is posted.
        not_before = drive_not_before(demo, base_url, (on_demo_route or bool(park)) and not args.backdate)
        started = time.monotonic()
        try:
            tally = play(demo, fixes, speed=args.speed, batch=args.batch, base_url=args.base_url, not_before=not_before,
                         watch=tracking_json_url(watched) if watched else None)
        except KeyboardInterrupt:
            print("\ninterrupted")
            return 130
        print(f"Done in {time.monotonic() - started:.1f} s: {len(fixes)} fixes in {tally.requests} requests -> "
              f"{tally.accepted} accepted, {tally.duplicates} duplicate, {tally.rejected} rejected")
        for reason, count in tally.reasons.most_common(5):
            print(f"  rejected x{count}: {reason}")
        position = http_json("GET", f"{base_url}/v1/drivers/{demo['driver_id']}/position",
                             token=demo["merchant_api_key"])
        if position.status == 200:
            p = position.body
            accuracy = f", accuracy {p['accuracy']:g} m" if p.get("accuracy") is not None else ""
            print(f"Final position: {p['lat']:.6f}, {p['lng']:.6f} (fix {p['fix_time']}{accuracy})")
        else:
            print(f"Final position: not available (HTTP {position.status})")
        if on_demo_route and not args.no_park_stops:
            describe_demo_day(demo, finish_demo_visits(demo, base_url))
        else:
            print(f"Track it: {demo['tracking_urls'][0]} (in a browser)")
        if park:
            print(f"ETA window on the last park stop's tracking JSON during the drive: {tally.eta_windows_seen} "
                  f"of {tally.requests} polls")
            park_ids = [s["id"] for s in park]
            for shipment_id, shown in settled_timelines(demo, base_url, park_ids).items():
                print(f"  park stop {shipment_id}: {' -> '.join(shown) or 'no pipeline events yet'}")
            delivered = deliver_visited(demo, base_url, park_ids)
            print(f"Marked delivered (as the driver's app would): {len(delivered)} of {len(park)} park stops; "
                  f"their tracking pages now show the delivered state and the rating form")
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, ConnectionError) as exc:
        print(f"error: cannot reach the API ({exc}): is `make run` still running?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
