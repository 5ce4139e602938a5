"""Driver reports in DynamoDB (docs/data-model.md, access patterns 126-133). Written with the low-level client.

Items (every key starts from the merchant's id, so a merchant's read can only find its own drivers' reports):
- trip:  `PK = REPORT#<mid>#<did>`, `SK = TRIP#<start ms, 13 digits>`
- stop:  `PK = REPORT#<mid>#<did>`, `SK = STOP#<start ms>`
- behaviour event: `PK = REPORT#<mid>#<did>`, `SK = BEHAVIOUR#<at ms>#<kind>`
- day:   `PK = REPORT#<mid>#<did>`, `SK = DAY#<yyyy-mm-dd>` (the merchant's local day)
- shift: `PK = REPORT#<mid>#<did>`, `SK = SHIFT#<start ms>` (an on-duty shift that ended)
- week:  `PK = REPORTWEEK#<mid>#<YYYY-Www>`, `SK = DRIVER#<did>` (the scorecard's row, read by BatchGetItem)
- settings: `PK = MERCHANT#<mid>`, `SK = REPORTSETTINGS`
- a behaviour event also as a driver event, for webhooks: `PK = DRIVER#<did>`, `SK = EVENT#<occurred>#<event id>`

Trips, stops, events and days are written whole (puts keyed by fix times and days), so a batch run twice
writes the same items again. The week item holds each day's totals under its own attribute (SET whole too; the
scorecard sums them); its `on_duty_ms` is ADDed only
in the transaction that creates the shift item (conditional on its absence), so each shift counts once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.driver_reports.rules import BehaviourEvent, Closed, Stop, Totals, Trip, iso_week

RETENTION_S = 400 * 86_400  # reports are kept 400 days (a year on year comparison), then TTL removes them
SETTINGS_SK = "REPORTSETTINGS"


def report_pk(merchant_id: str, driver_id: str) -> str:
    return f"REPORT#{merchant_id}#{driver_id}"


def week_pk(merchant_id: str, week: str) -> str:
    return f"REPORTWEEK#{merchant_id}#{week}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float | int) -> dict[str, str]:
    return {"N": str(round(value, 3) if isinstance(value, float) else value)}


def _ms_key(ms: int) -> str:
    return f"{ms:013d}"


def closed_item(merchant_id: str, driver_id: str, closed: Closed) -> dict[str, Any]:
    pk = report_pk(merchant_id, driver_id)
    item: dict[str, Any] = {"PK": _s(pk), "merchant_id": _s(merchant_id), "driver_id": _s(driver_id)}
    if isinstance(closed, Trip):
        item.update({"SK": _s(f"TRIP#{_ms_key(closed.start.ms)}"), "start_ms": _n(closed.start.ms),
                     "end_ms": _n(closed.end.ms), "start_lat": _n(closed.start.lat),
                     "start_lng": _n(closed.start.lng), "end_lat": _n(closed.end.lat), "end_lng": _n(closed.end.lng),
                     "distance_m": _n(round(closed.distance_m, 1)), "driving_s": _n(closed.driving_s),
                     "max_kmh": _n(round(closed.max_speed_kmh, 1)), "avg_kmh": _n(round(closed.average_speed_kmh, 1))})
        at_ms = closed.end.ms
    elif isinstance(closed, Stop):
        item.update({"SK": _s(f"STOP#{_ms_key(closed.start.ms)}"), "start_ms": _n(closed.start.ms),
                     "end_ms": _n(closed.end.ms), "lat": _n(closed.start.lat), "lng": _n(closed.start.lng),
                     "duration_s": _n(closed.duration_s)})
        at_ms = closed.end.ms
    else:
        item.update({"SK": _s(f"BEHAVIOUR#{_ms_key(closed.at.ms)}#{closed.kind}"), "kind": _s(closed.kind),
                     "at_ms": _n(closed.at.ms), "lat": _n(closed.at.lat), "lng": _n(closed.at.lng),
                     "value": _n(float(closed.value)), "threshold": _n(float(closed.threshold))})
        at_ms = closed.at.ms
    item["expires_at"] = _n(at_ms // 1000 + RETENTION_S)
    return item


WEBHOOK_TYPES = {"speeding": "driver_speeding", "harsh_braking": "driver_harsh_braking",
                 "harsh_acceleration": "driver_harsh_acceleration", "long_idle": "driver_long_idle"}
DRIVER_EVENT_RETENTION_S = 90 * 86_400  # as presence's driver events


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def driver_event_item(merchant_id: str, driver_id: str, event: BehaviourEvent, now_s: int) -> dict[str, Any]:
    """The behaviour event as a driver event (`DRIVER#<did>` / `EVENT#<occurred>#<event id>`, as presence's
    driver_offline): its INSERT reaches the webhook sender, which posts it once (a delivery per event id). A
    rerun puts the same key again: a MODIFY, which no stream filter admits."""
    event_id = f"behaviour-{event.kind}-{driver_id}-{event.at.ms}"
    return {"PK": _s(f"DRIVER#{driver_id}"), "SK": _s(f"EVENT#{_iso(event.at.ms)}#{event_id}"),
            "merchant_id": _s(merchant_id), "driver_id": _s(driver_id), "event_id": _s(event_id),
            "type": _s(WEBHOOK_TYPES[event.kind]), "occurred_at": _s(_iso(event.at.ms)),
            "recorded_at": _s(_iso(now_s * 1000)), "source": _s("system"),
            "data": {"M": {"kind": _s(event.kind), "value": _n(float(event.value)),
                           "threshold": _n(float(event.threshold)), "lat": _n(event.at.lat), "lng": _n(event.at.lng)}},
            "expires_at": _n(event.at.ms // 1000 + DRIVER_EVENT_RETENTION_S)}


def _totals_attributes(totals: Totals) -> dict[str, Any]:
    return {"distance_m": _n(round(totals.distance_m, 1)), "driving_s": _n(round(totals.driving_s, 1)),
            "stopped_s": _n(round(totals.stopped_s, 1)), "trips": _n(totals.trips), "stops": _n(totals.stops),
            "max_kmh": _n(round(totals.max_speed_kmh, 1)),
            "events": _s(json.dumps(totals.events, separators=(",", ":"), sort_keys=True))}


def day_item(merchant_id: str, driver_id: str, totals: Totals, now_s: int) -> dict[str, Any]:
    return {"PK": _s(report_pk(merchant_id, driver_id)), "SK": _s(f"DAY#{totals.key}"),
            "merchant_id": _s(merchant_id), "driver_id": _s(driver_id), "day": _s(totals.key),
            **_totals_attributes(totals), "expires_at": _n(now_s + RETENTION_S)}


@dataclass(frozen=True)
class DayRow:
    day: str
    totals: Totals


@dataclass(frozen=True)
class WeekRow:
    driver_id: str
    totals: Totals
    on_duty_ms: int


def _num(item: dict[str, Any], name: str, default: float = 0.0) -> float:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else default


DAY_ATTRIBUTE = "day_"  # a week row's attribute per local day: the day's totals (rules.Totals.to_list, JSON)


def _week_totals(week: str, item: dict[str, Any]) -> Totals:
    """A week row's days summed (its max speed the days' max)."""
    total = Totals(week)
    for name, value in item.items():
        if not name.startswith(DAY_ATTRIBUTE):
            continue
        day = Totals.from_list(json.loads(value["S"]))
        total.distance_m += day.distance_m
        total.driving_s += day.driving_s
        total.stopped_s += day.stopped_s
        total.trips += day.trips
        total.stops += day.stops
        total.max_speed_kmh = max(total.max_speed_kmh, day.max_speed_kmh)
        for kind, n in day.events.items():
            total.events[kind] = total.events.get(kind, 0) + n
    return total


def _totals_of(key: str, item: dict[str, Any]) -> Totals:
    events = json.loads(item["events"]["S"]) if "events" in item else {}
    return Totals(key, _num(item, "distance_m"), _num(item, "driving_s"), _num(item, "stopped_s"),
                  int(_num(item, "trips")), int(_num(item, "stops")), _num(item, "max_kmh"),
                  {str(k): int(v) for k, v in events.items()})


class ReportStore:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.table = get_settings().table_name

    # --- written by the stream pipeline ---

    def write(self, merchant_id: str, driver_id: str, closed: Sequence[Closed], days: Sequence[Totals],
              now_s: int) -> int:
        """What a batch closed: its items and day items in BatchWriteItem calls (25 a call), and each changed day's
        totals on its week's scorecard row (one UpdateItem per day, SET whole under the day's own attribute, so
        the week sums its days and a rerun sets the same values). Returns the number of requests made."""
        puts = [closed_item(merchant_id, driver_id, c) for c in closed]
        puts += [driver_event_item(merchant_id, driver_id, c, now_s) for c in closed if isinstance(c, BehaviourEvent)]
        puts += [day_item(merchant_id, driver_id, d, now_s) for d in days]
        # one put per key in a BatchWriteItem call: the newest of a key wins (a fix-time key repeats only on a rerun)
        unique = list({(p["PK"]["S"], p["SK"]["S"]): p for p in puts}.values())
        calls = 0
        for i in range(0, len(unique), 25):
            calls += self._batch_put(unique[i:i + 25])
        for day in days:
            week = iso_week(date.fromisoformat(day.key))
            self.client.update_item(
                TableName=self.table, Key={"PK": _s(week_pk(merchant_id, week)), "SK": _s(f"DRIVER#{driver_id}")},
                UpdateExpression="SET driver_id = :d, merchant_id = :m, #day = :t, expires_at = :x",
                ExpressionAttributeNames={"#day": DAY_ATTRIBUTE + day.key},
                ExpressionAttributeValues={":t": _s(json.dumps(day.to_list(), separators=(",", ":"))),
                                           ":d": _s(driver_id), ":m": _s(merchant_id),
                                           ":x": _n(now_s + RETENTION_S)})
            calls += 1
        return calls

    def _batch_put(self, items: list[dict[str, Any]]) -> int:
        pending: dict[str, Any] = {self.table: [{"PutRequest": {"Item": item}} for item in items]}
        for calls in range(1, 9):
            response = self.client.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return calls
        raise RuntimeError("driver report writes kept coming back unprocessed")  # the record is retried

    # --- shifts (from presence) ---

    def record_shift(self, merchant_id: str, driver_id: str, start_ms: int, end_ms: int,
                     on_duty_by_week: dict[str, int]) -> bool:
        """The ended shift, once (conditional put), with its on-duty time ADDed to each week it touched in the
        same transaction. False when it was recorded already."""
        pk = report_pk(merchant_id, driver_id)
        actions: list[dict[str, Any]] = [{"Put": {
            "TableName": self.table, "ConditionExpression": "attribute_not_exists(PK)",
            "Item": {"PK": _s(pk), "SK": _s(f"SHIFT#{_ms_key(start_ms)}"), "start_ms": _n(start_ms),
                     "end_ms": _n(end_ms), "merchant_id": _s(merchant_id), "driver_id": _s(driver_id),
                     "expires_at": _n(end_ms // 1000 + RETENTION_S)}}}]
        for week, ms in sorted(on_duty_by_week.items()):
            actions.append({"Update": {
                "TableName": self.table, "Key": {"PK": _s(week_pk(merchant_id, week)), "SK": _s(f"DRIVER#{driver_id}")},
                "UpdateExpression": "SET driver_id = :d, merchant_id = :m ADD on_duty_ms :ms",
                "ExpressionAttributeValues": {":d": _s(driver_id), ":m": _s(merchant_id), ":ms": _n(ms)}}})
        try:
            self.client.transact_write_items(TransactItems=actions)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if any(str(r.get("Code")) == "ConditionalCheckFailed" for r in reasons):
                return False
            raise
        return True

    # --- read by the API ---

    def page(self, merchant_id: str, driver_id: str, prefix: str, from_key: str, to_key: str, limit: int,
             start: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Items of one kind with sort keys in [prefix+from_key, prefix+to_key), oldest first."""
        kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        response = self.client.query(
            TableName=self.table, Limit=limit, KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":pk": _s(report_pk(merchant_id, driver_id)), ":lo": _s(prefix + from_key),
                                       ":hi": _s(prefix + to_key)}, **kwargs)
        items = [i for i in response.get("Items", []) if i["SK"]["S"] != prefix + to_key]  # [from, to)
        return items, response.get("LastEvaluatedKey")

    def days(self, merchant_id: str, driver_id: str, first: str, last: str) -> list[DayRow]:
        items, _ = self.page(merchant_id, driver_id, "DAY#", first, last + "~", 400, None)
        return [DayRow(i["day"]["S"], _totals_of(i["day"]["S"], i)) for i in items]

    def shifts(self, merchant_id: str, driver_id: str, from_ms: int, to_ms: int) -> list[tuple[int, int]]:
        """Shifts that ended in [from_ms, to_ms + a day): a shift is keyed by its start, so start a day early."""
        items, _ = self.page(merchant_id, driver_id, "SHIFT#", _ms_key(max(0, from_ms - 86_400_000)),
                             _ms_key(to_ms), 1000, None)
        return [(int(_num(i, "start_ms")), int(_num(i, "end_ms"))) for i in items]

    def week_rows(self, merchant_id: str, week: str, driver_ids: Sequence[str]) -> dict[str, WeekRow]:
        """The week's rows of these drivers (at most 100): one BatchGetItem (and its unprocessed keys)."""
        if not driver_ids:
            return {}
        pk = _s(week_pk(merchant_id, week))
        pending: dict[str, Any] = {self.table: {"Keys": [{"PK": pk, "SK": _s(f"DRIVER#{d}")} for d in driver_ids]}}
        found: dict[str, WeekRow] = {}
        for _ in range(8):
            response = self.client.batch_get_item(RequestItems=pending)
            for i in response.get("Responses", {}).get(self.table, []):
                row = WeekRow(i["driver_id"]["S"], _week_totals(week, i), int(_num(i, "on_duty_ms")))
                found[row.driver_id] = row
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                return found
        raise RuntimeError("scorecard rows kept coming back unprocessed")

    # --- settings ---

    def settings(self, merchant_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table, Key={"PK": _s(f"MERCHANT#{merchant_id}"),
                                                               "SK": _s(SETTINGS_SK)}).get("Item")
        return json.loads(item["thresholds"]["S"]) if item else None

    def put_settings(self, merchant_id: str, thresholds: dict[str, Any]) -> None:
        self.client.put_item(TableName=self.table, Item={
            "PK": _s(f"MERCHANT#{merchant_id}"), "SK": _s(SETTINGS_SK), "merchant_id": _s(merchant_id),
            "thresholds": _s(json.dumps(thresholds, separators=(",", ":"), sort_keys=True))})


__all__ = ["BehaviourEvent", "DayRow", "ReportStore", "WeekRow", "closed_item", "report_pk", "week_pk"]
