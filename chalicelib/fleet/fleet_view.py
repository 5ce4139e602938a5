"""`GET /v1/fleet`: every driver of the merchant with presence state, position, battery, reason and route progress.

Reads per request, whatever the fleet's size up to ~3,000 drivers: one Query of the merchant's drivers and one of
their presence items (side by side), then one BatchGetItem per 50 on-duty drivers of their latest position and
pipeline state (`DRIVER#<did>` / `POSITION` and `GEOFENCE`; side by side): the pipeline's state caches the active
route's stop statuses and delayed stops, so route progress reads no shipment. No Scan.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from chalicelib.core.config import get_settings
from chalicelib.fleet.models import FleetDriver, FleetPosition, FleetRoute, FleetView
from chalicelib.fleet.presence import StoredPresence, list_presence
from chalicelib.fleet.presence_rules import Presence, shown_reason, state_of
from chalicelib.storage.repository import Repository

BATCH_GET_DRIVERS = 50  # two items each: BatchGetItem takes 100 keys
# Codes of the pipeline's cached stop statuses (pipeline.service.STATUS_CODE) that count as done for progress.
DONE_CODES = frozenset("dftx-")


def _drivers(repo: Repository, merchant_id: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in repo.client.get_paginator("query").paginate(
            TableName=get_settings().table_name, KeyConditionExpression="PK = :pk AND begins_with(SK, :d)",
            ExpressionAttributeValues={":pk": {"S": f"MERCHANT#{merchant_id}"}, ":d": {"S": "DRIVER#"}},
            ProjectionExpression="driver_id, #n", ExpressionAttributeNames={"#n": "name"}):
        found.extend((i["driver_id"]["S"], i["name"]["S"]) for i in page.get("Items", []))
    return found


def _live(repo: Repository, driver_ids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Latest positions and pipeline states of these drivers, keyed (driver id, POSITION|GEOFENCE)."""
    table = get_settings().table_name

    def one(ids: list[str]) -> list[dict[str, Any]]:
        keys = [{"PK": {"S": f"DRIVER#{d}"}, "SK": {"S": sk}} for d in ids for sk in ("POSITION", "GEOFENCE")]
        request: dict[str, Any] = {table: {"Keys": keys, "ProjectionExpression":
                                           "PK, SK, fix_ms, lat, lng, accuracy, speed, battery, #s",
                                           "ExpressionAttributeNames": {"#s": "state"}}}
        items: list[dict[str, Any]] = []
        while request:
            response = repo.client.batch_get_item(RequestItems=request)
            items.extend(response.get("Responses", {}).get(table, []))
            request = response.get("UnprocessedKeys") or {}
        return items

    chunks = [driver_ids[i:i + BATCH_GET_DRIVERS] for i in range(0, len(driver_ids), BATCH_GET_DRIVERS)]
    if not chunks:
        return {}
    with ThreadPoolExecutor(min(16, len(chunks)), thread_name_prefix="fleet") as pool:
        rows = [item for items in pool.map(one, chunks) for item in items]
    return {(r["PK"]["S"].removeprefix("DRIVER#"), r["SK"]["S"]): r for r in rows}


def _route(stored: StoredPresence, state_item: dict[str, Any] | None) -> FleetRoute | None:
    if stored.route_id is None or not stored.presence.on_duty:
        return None
    progress: dict[str, Any] = {}
    if state_item is not None and "state" in state_item:
        cached = (json.loads(state_item["state"]["S"]).get("route") or {})
        if cached.get("id") == stored.route_id:
            progress = cached
    statuses = str(progress.get("st", ""))
    done_indexes = {i for i, code in enumerate(statuses) if code in DONE_CODES}
    late = [i for i in progress.get("dl", []) if i not in done_indexes]
    return FleetRoute.model_construct(id=stored.route_id, status="active", done=len(done_indexes),
                      remaining=len(statuses) - len(done_indexes), late=len(late))


def fleet_view(repo: Repository, merchant_id: str, offline_after_minutes: float, now: datetime) -> FleetView:
    with ThreadPoolExecutor(2, thread_name_prefix="fleet") as pool:
        drivers_future = pool.submit(_drivers, repo, merchant_id)
        presence = {p.driver_id: p for p in list_presence(repo, merchant_id)}
        drivers = drivers_future.result()
    on_duty = sorted(d for d, p in presence.items() if p.presence.on_duty)
    live = _live(repo, on_duty)
    now_ms = int(now.timestamp() * 1000)
    out: list[FleetDriver] = []
    for driver_id, name in drivers:
        stored = presence.get(driver_id)
        p = stored.presence if stored is not None else Presence()
        position_item = live.get((driver_id, "POSITION"))
        fix_ms = int(position_item["fix_ms"]["N"]) if position_item else None
        speed = float(position_item["speed"]["N"]) if position_item and "speed" in position_item else None
        state = state_of(p, now_ms=now_ms, offline_after_minutes=offline_after_minutes, fix_ms=fix_ms,
                         speed_mps=speed)
        position = None
        if position_item is not None and fix_ms is not None:
            accuracy = position_item.get("accuracy", {}).get("N")
            position = FleetPosition.model_construct(
                lat=float(position_item["lat"]["N"]), lng=float(position_item["lng"]["N"]),
                accuracy_m=float(accuracy) if accuracy is not None else None,
                fix_time=datetime.fromtimestamp(fix_ms / 1000, UTC))
        battery = p.status.battery
        if battery is None and position_item is not None and "battery" in position_item:
            battery = round(float(position_item["battery"]["N"]))
        last_seen = datetime.fromtimestamp(p.last_seen_ms / 1000, UTC) if p.last_seen_ms is not None else None
        # Built without validation (`model_construct`): every value is typed here already, and validating 500
        # drivers per poll cost more than reading them.
        out.append(FleetDriver.model_construct(
            driver_id=driver_id, name=name, state=state, on_duty=p.on_duty, last_seen_at=last_seen,
            position=position if p.on_duty else None, battery=battery, reason=shown_reason(p, state),
            route=_route(stored, live.get((driver_id, "GEOFENCE"))) if stored is not None else None))
    return FleetView.model_construct(as_of=now, drivers=out)


_DRIVERS = TypeAdapter(list[FleetDriver])


def fleet_body(view: FleetView) -> tuple[str, str]:
    """The JSON body and its strong ETag, serialised once: the ETag covers what the view shows, not `as_of`
    (which changes every request)."""
    drivers = _DRIVERS.dump_json(view.drivers)
    etag = '"' + hashlib.sha256(drivers).hexdigest()[:32] + '"'
    as_of = view.as_of.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return '{"as_of":' + json.dumps(as_of) + ',"drivers":' + drivers.decode() + "}", etag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, `*` matches)."""
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    return any(c.strip() == "*" or c.strip().removeprefix("W/") == bare for c in if_none_match.split(","))
