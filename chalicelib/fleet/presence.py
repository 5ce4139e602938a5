"""Driver presence: shifts, what the app reports of the phone, last seen, offline episodes and the fleet view.

One item per driver in the merchant's partition, `MERCHANT#<mid>` / `PRESENCE#<did>` (docs/data-model.md rows
89-94), so the fleet view reads every driver's presence with one Query. While the driver is on duty and not
offline the item carries the sparse due index keys (GSI1 `PRESENCE_DUE#<shard>` / `<due ms>#<mid>#<did>`): the
scheduler reads only the drivers due by now, never scans.

Exactly once: an offline episode is one transaction that removes the due keys (condition: they are still the
ones the scheduler read, the driver is on duty and not offline) and puts the `driver_offline` event under a key
made of the episode number (condition: absent). Recovery is the same with `offline = true` and the episode's
number as the condition. Repeated scheduler runs and redelivered stream batches find the condition false.

Events: `DRIVER#<did>` / `EVENT#<occurred>#<event id>`, type `driver_offline` / `driver_online`, with merchant_id,
driver_id, occurred_at, recorded_at, source and data {"reason"}: they reach the table's stream like a
shipment's timeline events (the pipeline's and the webhook sender's filters admit them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.core.config import get_settings
from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.fleet.models import AppStatusReport, DriverPresenceOut
from chalicelib.fleet.presence_rules import (
    DUE_SHARDS,
    AppStatus,
    OfflineReason,
    Presence,
    due_shard,
    due_sort_key,
    off_duty_event_id,
    offline_event_id,
    offline_reason,
    online_event_id,
    state_of,
)
from chalicelib.storage.repository import Repository

PRESENCE_PREFIX = "PRESENCE#"
DRIVER_EVENT_RETENTION_DAYS = 90
DRIVER_OFFLINE = "driver_offline"
DRIVER_ONLINE = "driver_online"
DRIVER_OFF_DUTY = "driver_off_duty"  # the shift ended while the driver was offline: that episode is closed


def presence_key(merchant_id: str, driver_id: str) -> dict[str, Any]:
    return {"PK": {"S": f"MERCHANT#{merchant_id}"}, "SK": {"S": f"{PRESENCE_PREFIX}{driver_id}"}}


def due_gsi_pk(shard: int) -> str:
    return f"PRESENCE_DUE#{shard}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _table() -> str:
    return get_settings().table_name


def _conditional_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


@dataclass(frozen=True, slots=True)
class StoredPresence:
    merchant_id: str
    driver_id: str
    presence: Presence
    episode: int
    due_ms: int | None
    due_sk: str | None
    route_id: str | None
    on_duty_since_ms: int | None
    offline_since_ms: int | None


def _num(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(float(value["N"])) if value and "N" in value else None


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else None


def parse_presence(item: dict[str, Any]) -> StoredPresence:
    """A presence item in DynamoDB's wire format."""
    status = AppStatus(_num(item, "battery"), _str(item, "location_permission"),  # type: ignore[arg-type]
                       _str(item, "app_state"))  # type: ignore[arg-type]
    presence = Presence(on_duty=bool(item.get("on_duty", {}).get("BOOL", False)),
                        offline=bool(item.get("is_offline", {}).get("BOOL", False)),
                        last_seen_ms=_num(item, "last_seen_ms"), reason=_str(item, "reason"),  # type: ignore[arg-type]
                        status=status)
    return StoredPresence(_str(item, "merchant_id") or "", _str(item, "driver_id") or "", presence,
                          _num(item, "episode") or 0, _num(item, "due_ms"), _str(item, "GSI1SK"),
                          _str(item, "route_id"), _num(item, "on_duty_since_ms"), _num(item, "offline_since_ms"))


def get_presence(repo: Repository, merchant_id: str, driver_id: str, *, consistent: bool = False
                 ) -> StoredPresence | None:
    item = repo.client.get_item(TableName=_table(), Key=presence_key(merchant_id, driver_id),
                                ConsistentRead=consistent).get("Item")
    return parse_presence(item) if item else None


def list_presence(repo: Repository, merchant_id: str) -> list[StoredPresence]:
    """Every presence item of the merchant: one Query (paged past 1 MB, ~3,000 drivers a page)."""
    found: list[StoredPresence] = []
    for page in repo.client.get_paginator("query").paginate(
            TableName=_table(), KeyConditionExpression="PK = :pk AND begins_with(SK, :p)",
            ExpressionAttributeValues={":pk": {"S": f"MERCHANT#{merchant_id}"}, ":p": {"S": PRESENCE_PREFIX}}):
        found.extend(parse_presence(i) for i in page.get("Items", []))
    return found


def _event_put(merchant_id: str, driver_id: str, kind: str, event_id: str, occurred_ms: int, now_ms: int,
               reason: str | None, source: str) -> dict[str, Any]:
    expires = int((datetime.fromtimestamp(occurred_ms / 1000, UTC)
                   + timedelta(days=DRIVER_EVENT_RETENTION_DAYS)).timestamp())
    item = {"PK": {"S": f"DRIVER#{driver_id}"}, "SK": {"S": f"EVENT#{_stamp(occurred_ms)}#{event_id}"},
            "merchant_id": {"S": merchant_id}, "driver_id": {"S": driver_id}, "event_id": {"S": event_id},
            "type": {"S": kind}, "occurred_at": {"S": _iso(occurred_ms)}, "recorded_at": {"S": _iso(now_ms)},
            "source": {"S": source},
            "data": {"M": {"reason": {"S": reason} if reason else {"NULL": True}}},
            "expires_at": {"N": str(expires)}}
    return {"Put": {"TableName": _table(), "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}


def _due_values(merchant_id: str, driver_id: str, due_ms: int) -> dict[str, Any]:
    return {":due": {"N": str(due_ms)}, ":gpk": {"S": due_gsi_pk(due_shard(driver_id))},
            ":gsk": {"S": due_sort_key(due_ms, merchant_id, driver_id)}}


# --- shifts and app status ---------------------------------------------------------------------


def start_duty(repo: Repository, merchant_id: str, driver_id: str, now_ms: int, offline_after_minutes: float,
               *, route_id: str | None = None) -> None:
    """The driver goes on duty (the app's "start shift", or a route starting). Idempotent: a driver on duty
    already keeps its episode; the due time counts from now at the earliest."""
    due_ms = now_ms + int(offline_after_minutes * 60_000)
    names = ("SET merchant_id = :m, driver_id = :d, on_duty = :t, "
             "on_duty_since_ms = if_not_exists(on_duty_since_ms, :now)")
    values: dict[str, Any] = {":m": {"S": merchant_id}, ":d": {"S": driver_id}, ":t": {"BOOL": True},
                              ":now": {"N": str(now_ms)}, **_due_values(merchant_id, driver_id, due_ms)}
    if route_id is not None:
        names += ", route_id = :r"
        values[":r"] = {"S": route_id}
    # Not offline: the due keys go (back) on; offline: they stay off until a fix recovers the driver.
    try:
        repo.client.update_item(
            TableName=_table(), Key=presence_key(merchant_id, driver_id),
            UpdateExpression=names + ", is_offline = :f, due_ms = :due, GSI1PK = :gpk, GSI1SK = :gsk",
            ConditionExpression="attribute_not_exists(is_offline) OR is_offline = :f",
            ExpressionAttributeValues={**values, ":f": {"BOOL": False}})
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise
        repo.client.update_item(TableName=_table(), Key=presence_key(merchant_id, driver_id),
                                UpdateExpression=names, ExpressionAttributeValues={
                                    k: v for k, v in values.items() if k not in (":due", ":gpk", ":gsk")})


def end_duty(repo: Repository, merchant_id: str, driver_id: str, *, route_id: str | None = None) -> bool:
    """The shift ends (the app's "end shift", or the driver's route completing): off duty, out of the due index.
    With `route_id`, only while on duty for that route. False when nothing changed.

    A shift that ends during an offline episode closes it with a `driver_off_duty` event in the same transaction
    (once per episode: its id is the episode's), so the episode's `driver_offline` exception is resolved rather
    than left open for a driver who is simply no longer working."""
    for _ in range(3):  # the presence item may change between the read and the write (a fix, the scheduler)
        stored = get_presence(repo, merchant_id, driver_id, consistent=True)
        offline = stored is not None and stored.presence.offline
        condition = "attribute_exists(PK)"
        values: dict[str, Any] = {":f": {"BOOL": False}}
        if route_id is not None:  # a shift the driver started later (without a route) is not this route's to end
            condition = "route_id = :r"
            values[":r"] = {"S": route_id}
        if stored is not None:  # act on what was read: an episode opened meanwhile is re-read, never missed
            condition += (" AND is_offline = :t" if offline
                          else " AND (attribute_not_exists(is_offline) OR is_offline = :f)")
            condition += " AND (attribute_not_exists(episode) OR episode = :ep)"
            values[":ep"] = {"N": str(stored.episode)}
            if stored.on_duty_since_ms is None:  # and the shift whose hours are kept below is the one read
                condition += " AND attribute_not_exists(on_duty_since_ms)"
            else:
                condition += " AND on_duty_since_ms = :since"
                values[":since"] = {"N": str(stored.on_duty_since_ms)}
            if offline:
                values[":t"] = {"BOOL": True}
        update = {"TableName": _table(), "Key": presence_key(merchant_id, driver_id),
                  "UpdateExpression": "SET on_duty = :f, is_offline = :f REMOVE GSI1PK, GSI1SK, due_ms, "
                                      "on_duty_since_ms, route_id, reason, offline_since_ms",
                  "ConditionExpression": condition, "ExpressionAttributeValues": values}
        try:
            if stored is not None and offline and stored.presence.on_duty:
                now_ms = int(time.time() * 1000)
                event = _event_put(merchant_id, driver_id, DRIVER_OFF_DUTY,
                                   off_duty_event_id(driver_id, stored.episode),
                                   max(now_ms, (stored.offline_since_ms or 0) + 1), now_ms,
                                   stored.presence.reason, "driver")
                repo.client.transact_write_items(TransactItems=[{"Update": update}, event])
            else:
                repo.client.update_item(**update)
        except ClientError as exc:
            if _conditional_failed(exc):
                if stored is None or (route_id is not None and stored.route_id != route_id):
                    return False
                continue
            raise
        if stored is not None and stored.presence.on_duty and stored.on_duty_since_ms is not None:
            _shift_ended(repo, merchant_id, driver_id, stored.on_duty_since_ms, int(time.time() * 1000))
        return True
    return False


def _shift_ended(repo: Repository, merchant_id: str, driver_id: str, since_ms: int, ended_ms: int) -> None:
    """A shift just ended: its hours count once in the driver's reports and in the delivery figures. The shift has
    ended whatever they say: their trouble is logged, never the driver's request's."""
    from chalicelib.analytics.service import on_shift_ended
    from chalicelib.driver_reports.service import shift_ended

    for listener in (shift_ended, on_shift_ended):
        try:
            listener(repo, merchant_id, driver_id, since_ms, ended_ms)
        except Exception:
            logger.exception("shift hours not counted", extra={"driver_id": driver_id, "listener": listener.__name__})


def record_app_status(repo: Repository, merchant_id: str, driver_id: str, status: AppStatus, now_ms: int) -> None:
    """What the driver app says of the phone: kept for the fleet view and an offline episode's reason."""
    sets = ["merchant_id = :m", "driver_id = :d", "status_at_ms = :now"]
    removes: list[str] = []
    values: dict[str, Any] = {":m": {"S": merchant_id}, ":d": {"S": driver_id}, ":now": {"N": str(now_ms)}}
    for name, value in (("battery", status.battery), ("location_permission", status.location_permission),
                        ("app_state", status.app_state)):
        if value is None:
            removes.append(name)
        else:
            sets.append(f"{name} = :{name}")
            values[f":{name}"] = {"N": str(value)} if isinstance(value, int) else {"S": str(value)}
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    repo.client.update_item(TableName=_table(), Key=presence_key(merchant_id, driver_id),
                            UpdateExpression=expression, ExpressionAttributeValues=values)


def route_started(repo: Repository, merchant_id: str, driver_id: str, route_id: str) -> None:
    """A route started: its driver is on duty for it (shipments.routes.start_route)."""
    from chalicelib.fleet.service import cached_merchant_profile

    settings = cached_merchant_profile(repo, merchant_id).settings
    start_duty(repo, merchant_id, driver_id, int(time.time() * 1000), settings.offline_after_minutes,
               route_id=route_id)


def route_completed(repo: Repository, merchant_id: str, driver_id: str, route_id: str) -> None:
    """A route completed (its last stop, or the merchant): the driver's shift for it ends, and with it the
    driver app's location sharing (it reads `on_duty`). Safe to repeat."""
    end_duty(repo, merchant_id, driver_id, route_id=route_id)


def _presence_out(repo: Repository, merchant_id: str, driver_id: str) -> DriverPresenceOut:
    from chalicelib.fleet.service import cached_merchant_profile

    stored = get_presence(repo, merchant_id, driver_id, consistent=True)
    p = stored.presence if stored is not None else Presence()
    now_ms = int(time.time() * 1000)
    state = state_of(p, now_ms=now_ms, offline_after_minutes=cached_merchant_profile(
        repo, merchant_id).settings.offline_after_minutes, fix_ms=None, speed_mps=None)
    seen = datetime.fromtimestamp(p.last_seen_ms / 1000, UTC) if p.last_seen_ms is not None else None
    return DriverPresenceOut(driver_id=driver_id, on_duty=p.on_duty, state=state, last_seen_at=seen)


def change_shift(repo: Repository, merchant_id: str, driver_id: str, action: str) -> DriverPresenceOut:
    """The driver app's Start / End shift."""
    from chalicelib.fleet.service import cached_merchant_profile

    if action == "start":
        start_duty(repo, merchant_id, driver_id, int(time.time() * 1000),
                   cached_merchant_profile(repo, merchant_id).settings.offline_after_minutes)
    else:
        end_duty(repo, merchant_id, driver_id)
    return _presence_out(repo, merchant_id, driver_id)


def report_app_status(repo: Repository, merchant_id: str, driver_id: str, report: AppStatusReport
                      ) -> DriverPresenceOut:
    record_app_status(repo, merchant_id, driver_id, AppStatus(report.battery, report.location_permission,
                                                              report.app_state), int(time.time() * 1000))
    return _presence_out(repo, merchant_id, driver_id)


# --- fixes: last seen, due time, recovery ------------------------------------------------------


def driver_seen(repo: Repository, merchant_id: str, driver_id: str, seen_ms: int, offline_after_minutes: float,
                now_ms: int, battery: int | None = None) -> str | None:
    """A stream batch heard from the driver (its newest fix at `seen_ms`): last seen and the due time move on,
    and an offline driver recovers (`driver_online`, once). The caller calls this at most once per driver per
    batch and only when the due time moves by DUE_STEP_MS (presence_rules.due_moves). Returns the event type
    written, if any."""
    due_ms = seen_ms + int(offline_after_minutes * 60_000)
    key = presence_key(merchant_id, driver_id)
    seen: dict[str, Any] = {":seen": {"N": str(seen_ms)}}
    battery_set = ""
    if battery is not None:
        battery_set, seen[":batt"] = ", battery = :batt", {"N": str(battery)}
    try:  # the usual case: on duty and not offline (one conditional update)
        repo.client.update_item(
            TableName=_table(), Key=key,
            UpdateExpression="SET last_seen_ms = :seen, due_ms = :due, GSI1PK = :gpk, GSI1SK = :gsk" + battery_set,
            ConditionExpression="on_duty = :t AND is_offline = :f AND (attribute_not_exists(last_seen_ms) "
                                "OR last_seen_ms < :seen)",
            ExpressionAttributeValues={**seen, **_due_values(merchant_id, driver_id, due_ms), ":t": {"BOOL": True},
                                       ":f": {"BOOL": False}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        return None
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise
        old = exc.response.get("Item")
    # The failed condition answers the item as it is (DynamoDB; an engine that does not reads it instead).
    stored = parse_presence(old) if old else get_presence(repo, merchant_id, driver_id, consistent=True)
    if stored is not None and stored.presence.on_duty and stored.presence.offline:
        return DRIVER_ONLINE if _recover(repo, stored, seen_ms, due_ms, now_ms, battery) else None
    if stored is not None and stored.presence.last_seen_ms is not None and stored.presence.last_seen_ms >= seen_ms:
        return None  # an older batch, redelivered
    # Off duty (or never on duty): last seen only; no due keys, so no offline episode.
    repo.client.update_item(
        TableName=_table(), Key=key,
        UpdateExpression="SET merchant_id = :m, driver_id = :d, last_seen_ms = :seen" + battery_set,
        ConditionExpression="attribute_not_exists(last_seen_ms) OR last_seen_ms < :seen",
        ExpressionAttributeValues={**seen, ":m": {"S": merchant_id}, ":d": {"S": driver_id}})
    return None


def _recover(repo: Repository, stored: StoredPresence, seen_ms: int, due_ms: int, now_ms: int,
             battery: int | None) -> bool:
    merchant_id, driver_id, episode = stored.merchant_id, stored.driver_id, stored.episode
    values = {":seen": {"N": str(seen_ms)}, ":t": {"BOOL": True}, ":f": {"BOOL": False},
              ":ep": {"N": str(episode)}, **_due_values(merchant_id, driver_id, due_ms)}
    battery_set = ""
    if battery is not None:
        battery_set, values[":batt"] = ", battery = :batt", {"N": str(battery)}
    update = {"Update": {
        "TableName": _table(), "Key": presence_key(merchant_id, driver_id),
        "UpdateExpression": "SET is_offline = :f, last_seen_ms = :seen, due_ms = :due, GSI1PK = :gpk, GSI1SK = :gsk"
                            + battery_set + " REMOVE reason, offline_since_ms",
        "ConditionExpression": "on_duty = :t AND is_offline = :t AND episode = :ep",
        "ExpressionAttributeValues": values}}
    event = _event_put(merchant_id, driver_id, DRIVER_ONLINE, online_event_id(driver_id, episode),
                       max(seen_ms, stored.offline_since_ms or 0), now_ms, stored.presence.reason, "system")
    try:
        repo.client.transact_write_items(TransactItems=[update, event])
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    metrics.add_metric(name="DriversOnline", unit=MetricUnit.Count, value=1)
    logger.info("driver online", extra={"driver_id": driver_id, "episode": episode})
    return True


# --- offline: the scheduler and the OwnTracks last will ---------------------------------------


def mark_offline(repo: Repository, stored: StoredPresence, reason: OfflineReason, occurred_ms: int, now_ms: int,
                 *, due_sk: str | None) -> bool:
    """Open the next offline episode: one transaction (presence + `driver_offline` event), conditional on the
    driver being on duty, not offline and, for the scheduler, still due under the key it read. True once."""
    merchant_id, driver_id = stored.merchant_id, stored.driver_id
    episode = stored.episode + 1
    condition = "on_duty = :t AND is_offline = :f AND (attribute_not_exists(episode) OR episode = :ep0)"
    values: dict[str, Any] = {":t": {"BOOL": True}, ":f": {"BOOL": False}, ":ep0": {"N": str(stored.episode)},
                              ":ep": {"N": str(episode)}, ":r": {"S": reason}, ":since": {"N": str(occurred_ms)}}
    if due_sk is not None:
        condition += " AND GSI1SK = :gsk"
        values[":gsk"] = {"S": due_sk}
    update = {"Update": {
        "TableName": _table(), "Key": presence_key(merchant_id, driver_id),
        "UpdateExpression": "SET is_offline = :t, episode = :ep, reason = :r, offline_since_ms = :since "
                            "REMOVE GSI1PK, GSI1SK, due_ms",
        "ConditionExpression": condition, "ExpressionAttributeValues": values}}
    event = _event_put(merchant_id, driver_id, DRIVER_OFFLINE, offline_event_id(driver_id, episode), occurred_ms,
                       now_ms, reason, "system")
    # The pipeline's state item learns it too (a new version, so a batch racing with this re-reads): its next
    # batch of fixes recovers the driver at once.
    flag = {"Update": {
        "TableName": _table(), "Key": {"PK": {"S": f"DRIVER#{driver_id}"}, "SK": {"S": "GEOFENCE"}},
        "UpdateExpression": "SET version = if_not_exists(version, :zero) + :one, presence_offline = :t",
        "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"}, ":t": {"BOOL": True}}}}
    try:
        repo.client.transact_write_items(TransactItems=[update, event, flag])
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    metrics.add_metric(name="DriversOffline", unit=MetricUnit.Count, value=1)
    logger.info("driver offline", extra={"driver_id": driver_id, "episode": episode, "reason": reason})
    return True


def due_drivers(repo: Repository, now_ms: int) -> Iterator[tuple[str, str, str]]:
    """(merchant id, driver id, due sort key) of every driver due by now: one Query per due shard."""
    for shard in range(DUE_SHARDS):
        for page in repo.client.get_paginator("query").paginate(
                TableName=_table(), IndexName="GSI1",
                KeyConditionExpression="GSI1PK = :pk AND GSI1SK <= :now",
                ExpressionAttributeValues={":pk": {"S": due_gsi_pk(shard)}, ":now": {"S": f"{now_ms:013d}~"}}):
            for row in page.get("Items", []):
                yield row["merchant_id"]["S"], row["driver_id"]["S"], row["GSI1SK"]["S"]


def detect_offline(repo: Repository, now_ms: int) -> int:
    """The scheduler's run: every driver due by now goes offline once. Returns how many episodes opened."""
    opened = 0
    for merchant_id, driver_id, due_sk in due_drivers(repo, now_ms):
        stored = get_presence(repo, merchant_id, driver_id, consistent=True)
        if stored is None or stored.due_sk != due_sk or stored.due_ms is None:
            continue  # moved on since the index was read (a fix, the shift ended)
        reason = offline_reason(stored.presence)
        if mark_offline(repo, stored, reason, stored.due_ms, now_ms, due_sk=due_sk):
            opened += 1
    return opened


def last_will(repo: Repository, merchant_id: str, driver_id: str, now_ms: int) -> bool:
    """OwnTracks' last will (`_type: lwt`): the phone lost its connection; offline at once, reason lwt."""
    stored = get_presence(repo, merchant_id, driver_id, consistent=True)
    if stored is None or not stored.presence.on_duty or stored.presence.offline:
        return False
    return mark_offline(repo, stored, "lwt", now_ms, now_ms, due_sk=None)


def driver_events(repo: Repository, driver_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A driver's presence events, newest first (tests and support)."""
    response = repo.client.query(TableName=_table(), KeyConditionExpression="PK = :pk AND begins_with(SK, :e)",
                                 ExpressionAttributeValues={":pk": {"S": f"DRIVER#{driver_id}"},
                                                            ":e": {"S": "EVENT#"}},
                                 ScanIndexForward=False, Limit=limit)
    return [{"type": i["type"]["S"], "event_id": i["event_id"]["S"], "occurred_at": i["occurred_at"]["S"],
             "reason": (i.get("data", {}).get("M", {}).get("reason", {}) or {}).get("S")}
            for i in response.get("Items", [])]


__all__ = ["DRIVER_OFFLINE", "DRIVER_ONLINE", "detect_offline", "driver_seen", "end_duty", "get_presence",
           "last_will", "list_presence", "mark_offline", "record_app_status", "start_duty"]
