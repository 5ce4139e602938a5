"""The DynamoDB repository: one method per access pattern of docs/data-model.md."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, NoReturn, TypeVar

from botocore.exceptions import ClientError
from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PutError, PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.core import errors
from chalicelib.core.config import get_settings
from chalicelib.geo.cells import fine_cell
from chalicelib.ingest.rules import LastFix, Ping
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.storage.faults import StorageUnavailable, guard
from chalicelib.storage.fix_chunks import (
    CHUNK_MAX_SPAN_MS,
    CHUNK_PREFIX,
    chunk_range,
    chunk_sk,
    clusters,
    decode_fix_times,
    decode_fixes,
    encode_fixes,
    split_chunks,
)
from chalicelib.storage.session import create_client, pin_endpoint
from chalicelib.storage.tables import (
    ACTIVE_ROUTE_SK,
    EXTERNAL_REF_SK,
    MERCHANTS_GSI_PK,
    ROUTE_ETA_SK,
    SHIPMENT_INDEX_SHARDS,
    ActiveRouteItem,
    ApiKeyItem,
    ContactItem,
    DriverItem,
    DriverTokenItem,
    EventItem,
    ExternalRefItem,
    GeofenceStateItem,
    IdempotencyItem,
    MerchantItem,
    PingItem,
    PositionItem,
    RouteEtaItem,
    RouteItem,
    ShipmentItem,
    TableItem,
    TrackingTokenItem,
    ZoneCellItem,
    ZoneEventItem,
    ZoneItem,
    active_route_pk,
    as_dict,
    cell_gsi_pk,
    contact_pk,
    date_gsi_shard_pk,
    driver_pk,
    driver_routes_pk,
    external_ref_pk,
    merchant_pk,
    ping_sk,
    recipient_contacts,
    route_day_gsi_pk,
    route_eta_pk,
    share_client,
    shipment_pk,
    status_gsi_pk,
    status_gsi_shard_pk,
    tracking_pk,
    zone_cell_pk,
)

TRANSACTION_LIMIT = 100
ItemT = TypeVar("ItemT", bound=Model)


# (shipment as read, new status, extra update actions, timeline event)
StatusChange = tuple[ShipmentItem, ShipmentStatus, list[Any], EventItem]


__all__ = ["ActiveRouteTaken", "ConditionFailed", "Repository", "RouteVersionConflict", "RouteWrite", "ShipmentWrite",
           "StatusChange", "StorageUnavailable", "StoredFix", "now_utc", "status_actions"]


class ConditionFailed(RuntimeError):
    """A conditional write lost: the item changed since it was read."""


class RouteVersionConflict(RuntimeError):
    """The route changed (another edit, a start, a completion) since the version the caller read."""


class ActiveRouteTaken(RuntimeError):
    """The driver already has another active route (its id, or None if it ended meanwhile)."""

    def __init__(self, route_id: str | None) -> None:
        super().__init__(f"driver's active route is {route_id}")
        self.route_id = route_id


@dataclass
class RouteWrite:
    """One route's part of an edit: `actions` applied if it still has `expected_version` and one of `statuses`."""

    route: RouteItem
    actions: list[Any]
    expected_version: int
    statuses: tuple[str, ...] = ("planned", "active")


# A shipment's part of a route edit: (shipment as read, update actions, its timeline events); the update is
# conditional on the status that was read.
ShipmentWrite = tuple[ShipmentItem, list[Any], list[EventItem]]


def _contact_item(shipment: ShipmentItem, contact: str) -> ContactItem:
    return ContactItem(contact_pk(shipment.merchant_id, contact), f"SHIPMENT#{shipment.shipment_id}",
                       merchant_id=shipment.merchant_id, shipment_id=shipment.shipment_id,
                       created_at=shipment.created_at)


def _write_chunks(writes: Sequence[ShipmentWrite], first_room: int) -> list[list[ShipmentWrite]]:
    """The writes cut into transactions of at most TRANSACTION_LIMIT items (the first has `first_room`)."""
    chunks: list[list[ShipmentWrite]] = [[]]
    room = first_room
    for write in writes:
        size = 1 + len(write[2])
        if size > room:
            chunks.append([])
            room = TRANSACTION_LIMIT
        chunks[-1].append(write)
        room -= size
    return chunks


def status_actions(shipment: ShipmentItem, new_status: str, at: datetime) -> list[Any]:
    """The updates that move a shipment to `new_status` (its status index keys follow)."""
    return [ShipmentItem.status.set(str(new_status)),
            ShipmentItem.GSI1PK.set(status_gsi_pk(shipment.merchant_id, new_status, shipment.shipment_id)),
            ShipmentItem.GSI2SK.set(f"{new_status}#{shipment.shipment_id}"),
            ShipmentItem.updated_at.set(at)]


class ExternalRefTaken(RuntimeError):
    """Another shipment of the merchant already holds this external_ref."""

    def __init__(self, shipment_id: str) -> None:
        super().__init__(f"external_ref held by {shipment_id}")
        self.shipment_id = shipment_id


def _connection() -> Connection:
    s = get_settings()
    # The models' settings (tables._Meta), so transactions share their botocore client.
    return share_client(Connection(
        region=s.aws_region, host=s.ddb_endpoint_url,
        connect_timeout_seconds=s.ddb_connect_timeout_s, read_timeout_seconds=s.ddb_read_timeout_s,
        max_retry_attempts=s.ddb_max_attempts - 1, max_pool_connections=TableItem.Meta.max_pool_connections,
    ))


def transaction_token(*operations: Any) -> str:
    """The ClientRequestToken of a transaction: a digest of its items (keys, values, conditions).

    botocore retries a TransactWriteItems whose answer was lost (a read timeout after the commit) with the same
    parameters, and so the same token: DynamoDB recognises it for 10 minutes and answers success instead of
    failing the retry's own conditions. Derived from the content rather than drawn at random or from the API
    request id, so it is the same for every retry of one attempt, and two different transactions (every one
    carries a fresh event or item id, or a new timestamp) never share one (which DynamoDB would refuse with
    IdempotentParameterMismatch).
    """
    blob = json.dumps(operations, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:36]  # DynamoDB allows 1 to 36 characters


class IdempotentTransactWrite(TransactWrite):
    """pynamodb's TransactWrite with a ClientRequestToken derived from its items (`transaction_token`)."""

    def _commit(self) -> Any:
        if self._client_request_token is None:
            self._client_request_token = transaction_token(self._condition_check_items, self._delete_items,
                                                           self._put_items, self._update_items)
        return super()._commit()


def now_utc() -> datetime:
    return datetime.now(UTC)


class DriverState(NamedTuple):
    """The stream pipeline's per-driver state item, as read (docs/data-model.md #59)."""

    state: str | None
    version: int
    stops_version: int
    declared_offline: bool


class Repository:
    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._hot: Any = None

    @property
    def conn(self) -> Connection:
        """The connection transactions go through (its client guarded like every model's)."""
        if self._conn is None:
            self._conn = _connection()
        guard(self._conn.client)
        return self._conn

    def _transaction(self) -> IdempotentTransactWrite:
        return IdempotentTransactWrite(connection=self.conn)

    @property
    def client(self) -> Any:
        """The botocore client pynamodb uses, for the batch calls we tune ourselves."""
        return PingItem._get_connection().connection.client

    # --- merchants and keys ----------------------------------------------------

    def create_merchant(self, merchant_id: str, name: str, key_hash: str, key_prefix: str) -> None:
        now = now_utc()
        merchant = MerchantItem(merchant_pk(merchant_id), "MERCHANT", merchant_id=merchant_id, name=name,
                                created_at=now, GSI1PK=MERCHANTS_GSI_PK, GSI1SK=merchant_id)
        try:
            with self._transaction() as tx:
                tx.save(merchant, condition=MerchantItem.PK.does_not_exist())
                tx.save(ApiKeyItem(f"APIKEY#{key_hash}", "APIKEY", merchant_id=merchant_id, key_prefix=key_prefix,
                                   created_at=now), condition=ApiKeyItem.PK.does_not_exist())
        except TransactWriteError:
            if not _stored_as_written(merchant):
                raise

    def merchant_for_key(self, key_hash: str) -> str | None:
        item = _get(ApiKeyItem, f"APIKEY#{key_hash}", "APIKEY")
        return item.merchant_id if item else None

    def get_merchant(self, merchant_id: str) -> MerchantItem | None:
        return _get(MerchantItem, merchant_pk(merchant_id), "MERCHANT")

    def merchant_ids(self) -> Iterator[str]:
        """Every merchant's id, from the sparse merchants index (a Query, paged; never a scan): its sort key."""
        for item in self.client.get_paginator("query").paginate(
                TableName=get_settings().table_name, IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk",
                ExpressionAttributeValues={":pk": {"S": MERCHANTS_GSI_PK}}, ProjectionExpression="GSI1SK"):
            for row in item.get("Items", []):
                yield row["GSI1SK"]["S"]

    def mark_once(self, pk: str, sk: str, now: datetime) -> bool:
        """A marker item written once (False when it already exists): work done for a key is not redone."""
        try:
            self.client.put_item(TableName=get_settings().table_name, Item={"PK": {"S": pk}, "SK": {"S": sk},
                                                                  "created_at": {"S": now.isoformat()}},
                                 ConditionExpression="attribute_not_exists(PK)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def has_item(self, pk: str, sk: str) -> bool:
        response = self.client.get_item(TableName=get_settings().table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}},
                                        ProjectionExpression="PK")
        return "Item" in response

    # --- console sessions (docs/data-model.md row 101) -------------------------

    def put_console_session(self, session_id: str, merchant_id: str, expires_s: int, now: datetime) -> None:
        """A signed-in console session; the TTL removes it after expiry, sign-out before."""
        self.client.put_item(TableName=get_settings().table_name, Item={
            "PK": {"S": f"CONSOLE#{session_id}"}, "SK": {"S": "SESSION"}, "merchant_id": {"S": merchant_id},
            "created_at": {"S": now.isoformat()}, "expires_at": {"N": str(expires_s)}},
            ConditionExpression="attribute_not_exists(PK)")

    def console_session_merchant(self, session_id: str) -> str | None:
        """The merchant of a live console session (None once signed out). One GetItem, like an API key's."""
        response = self.client.get_item(TableName=get_settings().table_name,
                                        Key={"PK": {"S": f"CONSOLE#{session_id}"}, "SK": {"S": "SESSION"}},
                                        ProjectionExpression="merchant_id")
        item = response.get("Item")
        return item["merchant_id"]["S"] if item else None

    def delete_console_session(self, session_id: str) -> None:
        self.client.delete_item(TableName=get_settings().table_name,
                                Key={"PK": {"S": f"CONSOLE#{session_id}"}, "SK": {"S": "SESSION"}})

    def put_console_link(self, link_id: str, merchant_id: str, expires_s: int, now: datetime) -> None:
        """A one-time console sign-in link (row 105); the TTL removes an unused one after expiry."""
        self.client.put_item(TableName=get_settings().table_name, Item={
            "PK": {"S": f"CONSOLELINK#{link_id}"}, "SK": {"S": "LINK"}, "merchant_id": {"S": merchant_id},
            "created_at": {"S": now.isoformat()}, "expires_at": {"N": str(expires_s)}},
            ConditionExpression="attribute_not_exists(PK)")

    def use_console_link(self, link_id: str) -> str | None:
        """Delete the link if it is still there and answer its merchant: whoever deletes it first signs in,
        a second use (or an expired link the TTL removed) answers None."""
        try:
            response = self.client.delete_item(
                TableName=get_settings().table_name, Key={"PK": {"S": f"CONSOLELINK#{link_id}"}, "SK": {"S": "LINK"}},
                ConditionExpression="attribute_exists(PK)", ReturnValues="ALL_OLD")
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        item = response.get("Attributes")
        return item["merchant_id"]["S"] if item else None

    def merchant_settings(self, merchant_id: str, *, consistent: bool = False) -> str | None:
        """The merchant's settings JSON (None: never set, the defaults apply)."""
        item = _get(MerchantItem, merchant_pk(merchant_id), "MERCHANT", consistent=consistent)
        return item.settings if item else None

    def put_notification_settings(self, merchant_id: str, settings_json: str) -> None:
        MerchantItem(merchant_pk(merchant_id), "MERCHANT").update(
            actions=[MerchantItem.notifications.set(settings_json)], condition=MerchantItem.PK.exists())

    def put_merchant_settings(self, merchant_id: str, settings_json: str) -> None:
        MerchantItem(merchant_pk(merchant_id), "MERCHANT").update(
            actions=[MerchantItem.settings.set(settings_json)], condition=MerchantItem.PK.exists())

    def swap_merchant_settings(self, merchant_id: str, expected_json: str | None, settings_json: str) -> bool:
        """Write the settings only if they are still those read (`None`: never set): a PATCH merges into what it
        read, so two concurrent PATCHes never drop each other's fields. False when they changed meanwhile."""
        held = (MerchantItem.settings.does_not_exist() if expected_json is None
                else MerchantItem.settings == expected_json)
        try:
            MerchantItem(merchant_pk(merchant_id), "MERCHANT").update(
                actions=[MerchantItem.settings.set(settings_json)], condition=MerchantItem.PK.exists() & held)
        except UpdateError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    # --- zones -----------------------------------------------------------------

    def create_zone(self, zone: ZoneItem) -> None:
        """The zone and one index item per res-7 cell; written in chunks, the zone item last.

        A zone with thousands of cells exceeds one transaction, so the index items go
        first: until the zone item exists the zone is not listed, and a crash leaves
        index items that the pipeline ignores (it drops fences whose zone is gone).
        """
        cells = [ZoneCellItem(zone_cell_pk(zone.merchant_id, str(cell)), f"ZONE#{zone.zone_id}",
                              merchant_id=zone.merchant_id, zone_id=zone.zone_id, name=zone.name, fence=zone.fence)
                 for cell in zone.cells]
        _batch_write(ZoneCellItem, save=cells)
        _put_new(zone)

    def get_zone(self, merchant_id: str, zone_id: str) -> ZoneItem | None:
        return _get(ZoneItem, merchant_pk(merchant_id), f"ZONE#{zone_id}")

    def list_zones(self, merchant_id: str, limit: int, start: dict[str, Any] | None
                   ) -> tuple[list[ZoneItem], dict[str, Any] | None]:
        result = ZoneItem.query(merchant_pk(merchant_id), ZoneItem.SK.startswith("ZONE#"), limit=limit,
                                last_evaluated_key=start)
        return _page(result, limit)

    def delete_zone(self, zone: ZoneItem) -> None:
        """The zone item first (it stops being listed and found by id), then its index items."""
        zone.delete()
        _batch_write(ZoneCellItem, delete=[ZoneCellItem(zone_cell_pk(zone.merchant_id, str(cell)),
                                                        f"ZONE#{zone.zone_id}") for cell in zone.cells])

    def zones_in_cell(self, merchant_id: str, cell: str) -> list[ZoneCellItem]:
        return list(ZoneCellItem.query(zone_cell_pk(merchant_id, cell), ZoneCellItem.SK.startswith("ZONE#")))

    def put_zone_event_once(self, event: ZoneEventItem) -> bool:
        return _save_if(event, ZoneEventItem.PK.does_not_exist())

    def zone_events(self, driver_id: str, limit: int) -> list[ZoneEventItem]:
        """A driver's zone events, newest first."""
        return list(ZoneEventItem.query(driver_pk(driver_id), ZoneEventItem.SK.startswith("ZONEEVENT#"),
                                        scan_index_forward=False, limit=limit))

    # --- learned travel statistics ---------------------------------------------

    def add_to_counters(self, updates: Sequence[tuple[str, str, dict[str, float]]]) -> None:
        """ADD numbers to counter items [(PK, SK, {attribute: amount})]: commutative, so concurrent writers
        and any batch order give the same sums. Runs a few in parallel; one call per item."""
        table = get_settings().table_name

        def one(update: tuple[str, str, dict[str, float]]) -> None:
            pk, sk, amounts = update
            names = {f"#a{i}": name for i, name in enumerate(amounts)}
            values = {f":v{i}": {"N": _number(amount)} for i, amount in enumerate(amounts.values())}
            expression = "ADD " + ", ".join(f"#a{i} :v{i}" for i in range(len(amounts)))
            self.client.update_item(TableName=table, Key={"PK": {"S": pk}, "SK": {"S": sk}},
                                    UpdateExpression=expression, ExpressionAttributeNames=names,
                                    ExpressionAttributeValues=values)

        if len(updates) <= 2:
            for update in updates:
                one(update)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(updates))) as pool:
            list(pool.map(one, updates))

    def add_to_counters_once(self, marker: tuple[str, str], expires_at_s: int,
                             updates: Sequence[tuple[str, str, dict[str, float], dict[str, str]]]) -> bool:
        """ADD to counter items exactly once per marker key: one transaction puts the marker if absent and
        applies every update [(PK, SK, {attribute: amount}, {attribute: text to SET})]; False (nothing added)
        when the marker exists already, i.e. a redelivered record or a retried batch counted it before."""
        table = get_settings().table_name
        items: list[dict[str, Any]] = [{"Put": {
            "TableName": table, "Item": {"PK": {"S": marker[0]}, "SK": {"S": marker[1]},
                                         "expires_at": {"N": str(expires_at_s)}},
            "ConditionExpression": "attribute_not_exists(PK)"}}]
        for pk, sk, amounts, texts in updates:
            names = {f"#a{i}": name for i, name in enumerate(amounts)}
            values = {f":v{i}": {"N": _number(amount)} for i, amount in enumerate(amounts.values())}
            names.update({f"#t{i}": name for i, name in enumerate(texts)})
            values.update({f":t{i}": {"S": text} for i, text in enumerate(texts.values())})
            expression = "ADD " + ", ".join(f"#a{i} :v{i}" for i in range(len(amounts)))
            if texts:
                expression += " SET " + ", ".join(f"#t{i} = :t{i}" for i in range(len(texts)))
            items.append({"Update": {"TableName": table, "Key": {"PK": {"S": pk}, "SK": {"S": sk}},
                                     "UpdateExpression": expression, "ExpressionAttributeNames": names,
                                     "ExpressionAttributeValues": values}})
        try:
            self.client.transact_write_items(TransactItems=items, ClientRequestToken=transaction_token(items))
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def put_numbers(self, pk: str, sk: str, numbers: dict[str, float]) -> None:
        """Replace a small item of numbers (a calibration, read back with get_counters)."""
        item = {"PK": {"S": pk}, "SK": {"S": sk}, **{k: {"N": _number(v)} for k, v in numbers.items()}}
        self.client.put_item(TableName=get_settings().table_name, Item=item)

    def query_counter_range(self, pk: str, sk_low: str, sk_high: str) -> list[tuple[str, dict[str, float]]]:
        """(SK, numbers) of the counter items of one partition with SK between the two (inclusive), paged."""
        out: list[tuple[str, dict[str, float]]] = []
        for page in self.client.get_paginator("query").paginate(
                TableName=get_settings().table_name, KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
                ExpressionAttributeValues={":pk": {"S": pk}, ":lo": {"S": sk_low}, ":hi": {"S": sk_high}}):
            out.extend((item["SK"]["S"], {name: float(value["N"]) for name, value in item.items() if "N" in value})
                       for item in page.get("Items", []))
        return out

    def gsi1_sort_keys(self, gsi1_pk: str) -> list[str]:
        """The GSI1 sort keys under one GSI1 partition (a sparse index read: a Query, paged; never a scan)."""
        keys: list[str] = []
        for page in self.client.get_paginator("query").paginate(
                TableName=get_settings().table_name, IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk",
                ExpressionAttributeValues={":pk": {"S": gsi1_pk}}, ProjectionExpression="GSI1SK"):
            keys.extend(row["GSI1SK"]["S"] for row in page.get("Items", []))
        return keys

    def get_counters(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, float]]:
        """Counter items by key (BatchGetItem, 100 at a time); missing items are left out."""
        table = get_settings().table_name
        found: dict[tuple[str, str], dict[str, float]] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {table: {"Keys": [{"PK": {"S": pk}, "SK": {"S": sk}}
                                                        for pk, sk in wanted[start:start + 100]]}}
            for attempt in range(8):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(table, []):
                    key = (item["PK"]["S"], item["SK"]["S"])
                    found[key] = {name: float(value["N"]) for name, value in item.items() if "N" in value}
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                _backoff(attempt)
            else:
                raise StorageUnavailable("could not read counters")
        return found

    def query_counters(self, pk: str) -> list[dict[str, float]]:
        """All counter items under one partition (the sharded global sums)."""
        table = get_settings().table_name
        response = self.client.query(TableName=table, KeyConditionExpression="PK = :pk",
                                      ExpressionAttributeValues={":pk": {"S": pk}})
        return [{name: float(value["N"]) for name, value in item.items() if "N" in value}
                for item in response.get("Items", [])]

    # --- drivers ---------------------------------------------------------------

    def create_driver(self, driver: DriverItem) -> None:
        """The driver and its token item, at once. A retry of a committed attempt (its answer was lost) finds the
        driver stored as written and succeeds, whichever way DynamoDB answered it."""
        try:
            with self._transaction() as tx:
                tx.save(driver, condition=DriverItem.PK.does_not_exist())
                tx.save(DriverTokenItem(f"DRIVERTOKEN#{driver.token_hash}", "DRIVERTOKEN",
                                        merchant_id=driver.merchant_id, driver_id=driver.driver_id),
                        condition=DriverTokenItem.PK.does_not_exist())
        except TransactWriteError:
            if not _stored_as_written(driver):
                raise

    def driver_for_token(self, token_hash: str) -> tuple[str, str] | None:
        """(merchant id, driver id) of a driver token's hash, or None.

        Read through `hot_client`, as the ping it authenticates is stored: a cold container answers its first
        ping without creating pynamodb's client (the same eventually consistent GetItem, guarded the same way).
        """
        response = self.hot_client.get_item(
            TableName=get_settings().table_name,
            Key={"PK": {"S": f"DRIVERTOKEN#{token_hash}"}, "SK": {"S": "DRIVERTOKEN"}},
            ProjectionExpression="merchant_id, driver_id")
        item = response.get("Item")
        return (item["merchant_id"]["S"], item["driver_id"]["S"]) if item else None

    def driver_for_device(self, device_hash: str) -> tuple[str, str] | None:
        item = _get(DriverTokenItem, f"DEVICE#{device_hash}", "DEVICE")
        return (item.merchant_id, item.driver_id) if item else None

    def register_device(self, merchant_id: str, driver_id: str, device_hash: str) -> tuple[str, str] | None:
        """Map a tracker's device id to a driver. None when it is (now) this driver's, else the (merchant id,
        driver id) holding it. Registering it again for the same driver is a no-op, so a retry is harmless."""
        item = DriverTokenItem(f"DEVICE#{device_hash}", "DEVICE", merchant_id=merchant_id, driver_id=driver_id)
        if _save_if(item, DriverTokenItem.PK.does_not_exist() | (
                (DriverTokenItem.merchant_id == merchant_id) & (DriverTokenItem.driver_id == driver_id))):
            return None
        holder = _get(DriverTokenItem, item.PK, item.SK, consistent=True)
        if holder is None:  # removed meanwhile: there is no such operation today, so treat it as taken
            return ("", "")
        return holder.merchant_id, holder.driver_id

    def count_failure(self, pk: str, sk: str, limit: int, expires_at: int) -> bool:
        """Count one failed attempt on a fixed-window counter item (ADD, with a TTL); False once `limit` failures
        are counted: the item is then left alone, so a blocked source costs no more than a conditional write."""
        try:
            self.client.update_item(
                TableName=get_settings().table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}},
                UpdateExpression="ADD failures :one SET expires_at = if_not_exists(expires_at, :ttl)",
                ConditionExpression="attribute_not_exists(failures) OR failures < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":ttl": {"N": str(expires_at)},
                                           ":limit": {"N": str(limit)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get_driver(self, merchant_id: str, driver_id: str) -> DriverItem | None:
        return _get(DriverItem, merchant_pk(merchant_id), f"DRIVER#{driver_id}")

    def list_drivers(self, merchant_id: str, limit: int, start: dict[str, Any] | None
                     ) -> tuple[list[DriverItem], dict[str, Any] | None]:
        result = DriverItem.query(merchant_pk(merchant_id), DriverItem.SK.startswith("DRIVER#"),
                                  limit=limit, last_evaluated_key=start)
        return _page(result, limit)

    def replace_driver_token(self, driver: DriverItem, new_hash: str) -> None:
        """Swap the driver's token: conditional on the token read, so two rotations at once cannot both win
        (ConditionFailed for the loser); the new token's item witnesses a commit whose answer was lost."""
        old_hash = driver.token_hash
        new_item = DriverTokenItem(f"DRIVERTOKEN#{new_hash}", "DRIVERTOKEN", merchant_id=driver.merchant_id,
                                   driver_id=driver.driver_id)
        try:
            with self._transaction() as tx:
                tx.update(driver, actions=[DriverItem.token_hash.set(new_hash)],
                          condition=DriverItem.token_hash == old_hash)
                tx.delete(DriverTokenItem(f"DRIVERTOKEN#{old_hash}", "DRIVERTOKEN"))
                tx.save(new_item, condition=DriverTokenItem.PK.does_not_exist())
        except TransactWriteError as exc:
            if not _stored_as_written(new_item):
                raise ConditionFailed(str(exc)) from exc
        driver.token_hash = new_hash

    def bump_app_link_version(self, driver: DriverItem, expected: int) -> bool:
        """Revoke the driver's app links: version `expected` -> `expected + 1`, conditional on the version read
        (absent counts as 0). False when it changed meanwhile (or the driver is gone)."""
        held = DriverItem.app_link_version == expected
        if expected == 0:
            held = held | DriverItem.app_link_version.does_not_exist()
        try:
            driver.update(actions=[DriverItem.app_link_version.set(expected + 1)],
                          condition=DriverItem.PK.exists() & held)
        except UpdateError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    # --- shipments -------------------------------------------------------------

    def create_shipment(self, shipment: ShipmentItem, token_hash: str, event: EventItem,
                        idempotency: IdempotencyItem | None) -> bool:
        """Write a shipment, its tracking token, its first event and the claim of its external_ref at once.

        Returns False when the idempotency key was already used (nothing written); raises `ExternalRefTaken`
        when another shipment of the merchant holds the external_ref (nothing written).
        """
        ref = None
        if shipment.external_ref is not None:
            ref = ExternalRefItem(external_ref_pk(shipment.merchant_id, shipment.external_ref), EXTERNAL_REF_SK,
                                  merchant_id=shipment.merchant_id, shipment_id=shipment.shipment_id,
                                  external_ref=shipment.external_ref, created_at=shipment.created_at)
        try:
            with self._transaction() as tx:
                if idempotency is not None:
                    tx.save(idempotency, condition=IdempotencyItem.PK.does_not_exist())
                tx.save(shipment, condition=ShipmentItem.PK.does_not_exist())
                if ref is not None:
                    tx.save(ref, condition=ExternalRefItem.PK.does_not_exist())
                tx.save(TrackingTokenItem(tracking_pk(token_hash), "TRACK", merchant_id=shipment.merchant_id,
                                          shipment_id=shipment.shipment_id, token_version=shipment.token_version))
                tx.save(event)
                for contact in sorted(recipient_contacts(as_dict(shipment.recipient))):
                    tx.save(_contact_item(shipment, contact))
        except TransactWriteError as exc:
            if _stored_as_written(shipment):  # this very attempt committed; its answer was lost
                return True
            reasons = exc.cancellation_reasons or []

            def failed(index: int) -> bool:
                reason = reasons[index] if len(reasons) > index else None
                return reason is not None and reason.code == "ConditionalCheckFailed"

            if idempotency is not None and failed(0):  # a replay answers what the first request did
                return False
            if ref is not None and failed(2 if idempotency is not None else 1):
                holder = _get(ExternalRefItem, ref.PK, ref.SK, consistent=True)
                raise ExternalRefTaken(holder.shipment_id if holder is not None else "") from None
            raise
        return True

    def shipment_by_external_ref(self, merchant_id: str, external_ref: str) -> ShipmentItem | None:
        """The shipment holding a merchant's external_ref: two GetItems (the claim, then the shipment)."""
        ref = _get(ExternalRefItem, external_ref_pk(merchant_id, external_ref), EXTERNAL_REF_SK)
        if ref is None or ref.merchant_id != merchant_id:
            return None
        return self.get_shipment(merchant_id, ref.shipment_id)

    def shipment_ids_of_contact(self, merchant_id: str, contact: str, limit: int) -> list[str]:
        """The ids of a merchant's shipments whose recipient has this exact phone or email, newest first (ids
        are time-ordered): one Query of the contact's partition, `limit` at most."""
        return [item.shipment_id for item in ContactItem.query(contact_pk(merchant_id, contact),
                                                               scan_index_forward=False, limit=limit)][:limit]

    def get_idempotency(self, merchant_id: str, key_hash: str) -> IdempotencyItem | None:
        return _get(IdempotencyItem, merchant_pk(merchant_id), f"IDEMPOTENCY#{key_hash}")

    def get_shipment(self, merchant_id: str, shipment_id: str, *, consistent: bool = False) -> ShipmentItem | None:
        return _get(ShipmentItem, merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}", consistent=consistent)

    def get_shipments(self, merchant_id: str, shipment_ids: Sequence[str],
                      attributes: Sequence[str] | None = None) -> dict[str, ShipmentItem]:
        """By id (BatchGetItem); `attributes`: only these are read (the items are then not to be saved)."""
        keys = [(merchant_pk(merchant_id), f"SHIPMENT#{sid}") for sid in shipment_ids]
        return {item.shipment_id: item for item in ShipmentItem.batch_get(
            keys, attributes_to_get=list(attributes) if attributes is not None else None)}

    def list_shipments(self, merchant_id: str, *, status: str | None, date_from: str | None,
                       date_to: str | None, limit: int, start: dict[str, Any] | None
                       ) -> tuple[list[ShipmentItem], dict[str, Any] | None]:
        if status is not None:
            low, high = date_from or "0000-00-00", date_to or "9999-99-99"
            keys, last = _merged_page(lambda shard, position: ShipmentItem.by_status.query(
                status_gsi_shard_pk(merchant_id, status, shard), ShipmentItem.GSI1SK.between(f"{low}#", f"{high}#~"),
                limit=limit, last_evaluated_key=position, attributes_to_get=_INDEX_KEYS["GSI1"]), "GSI1", limit, start)
            return self._listed(merchant_id, keys, lambda item: item.status == status), last
        if date_from is not None and date_from == date_to:
            day = date_from
            keys, last = _merged_page(lambda shard, position: ShipmentItem.by_date.query(
                date_gsi_shard_pk(merchant_id, day, shard), limit=limit, last_evaluated_key=position,
                attributes_to_get=_INDEX_KEYS["GSI2"]), "GSI2", limit, start)
            return self._listed(merchant_id, keys, lambda item: item.delivery_date == day), last
        else:
            condition: Condition = ShipmentItem.SK.startswith("SHIPMENT#")
            filt = None
            if date_from is not None:
                filt = ShipmentItem.delivery_date >= date_from
            if date_to is not None:
                upper = ShipmentItem.delivery_date <= date_to
                filt = upper if filt is None else filt & upper
            result = ShipmentItem.query(merchant_pk(merchant_id), condition, filter_condition=filt,
                                        limit=limit, last_evaluated_key=start)
        return _page(result, limit)

    def _listed(self, merchant_id: str, keys: list[ShipmentItem], still: Callable[[ShipmentItem], bool]
                ) -> list[ShipmentItem]:
        """The shipments of a page of index keys (GSI1/GSI2 project only keys for shipments), in index order.

        One BatchGetItem per page: the index is eventually consistent, the items are not, so a shipment that
        has left the listing since (another status or date, or deleted) is left out rather than shown stale.
        """
        found = self.get_shipments(merchant_id, [key.SK.removeprefix("SHIPMENT#") for key in keys])
        items = (found.get(key.SK.removeprefix("SHIPMENT#")) for key in keys)
        return [item for item in items if item is not None and still(item)]

    def shipment_ids_of_day(self, merchant_id: str, day: str, status: str) -> Iterator[str]:
        """Ids of a merchant's shipments of one delivery date in one status (GSI2 keys of every shard, every page)."""
        for shard in range(SHIPMENT_INDEX_SHARDS):
            for key in ShipmentItem.by_date.query(date_gsi_shard_pk(merchant_id, day, shard),
                                                  ShipmentItem.GSI2SK.startswith(f"{status}#"),
                                                  attributes_to_get=_KEYS):
                yield key.SK.removeprefix("SHIPMENT#")

    def tracking_target(self, token_hash: str) -> TrackingTokenItem | None:
        return _get(TrackingTokenItem, tracking_pk(token_hash), "TRACK")

    def replace_tracking_token(self, shipment: ShipmentItem, old_hash: str, new_hash: str, event: EventItem) -> None:
        """Revoke the shipment's tracking link: bump its version, swap the token items, record the event.

        Conditional on the version that was read, so two revocations at once cannot both win.
        """
        old_version = int(shipment.token_version)
        try:
            with self._transaction() as tx:
                tx.update(shipment, actions=[ShipmentItem.token_version.set(old_version + 1),
                                             ShipmentItem.updated_at.set(event.recorded_at)],
                          condition=ShipmentItem.token_version == old_version)
                tx.delete(TrackingTokenItem(tracking_pk(old_hash), "TRACK"))
                tx.save(TrackingTokenItem(tracking_pk(new_hash), "TRACK", merchant_id=shipment.merchant_id,
                                          shipment_id=shipment.shipment_id, token_version=old_version + 1),
                        condition=TrackingTokenItem.PK.does_not_exist())
                tx.save(event)
        except TransactWriteError as exc:
            # The event (a fresh id) is stored only if this revocation committed: then it is ours, not a rival's.
            if not _stored_as_written(event):
                raise ConditionFailed(str(exc)) from exc
        shipment.token_version = old_version + 1

    def save_recipient_instructions(self, shipment: ShipmentItem, instructions: dict[str, Any],
                                    statuses: Iterable[str], event: EventItem) -> None:
        """Replace the recipient's instructions while the shipment is in one of `statuses`, with its event."""
        try:
            with self._transaction() as tx:
                tx.update(shipment, actions=[ShipmentItem.recipient_instructions.set(instructions),
                                             ShipmentItem.updated_at.set(event.recorded_at)],
                          condition=ShipmentItem.status.is_in(*statuses))
                tx.save(event)
        except TransactWriteError as exc:
            if not _stored_as_written(event):
                raise ConditionFailed(str(exc)) from exc

    def rate_once(self, shipment: ShipmentItem, rating: dict[str, Any], event: EventItem) -> bool:
        """Store the recipient's rating if the shipment is delivered and not rated yet; False otherwise."""
        try:
            with self._transaction() as tx:
                tx.update(shipment, actions=[ShipmentItem.rating.set(rating)],
                          condition=ShipmentItem.rating.does_not_exist()
                          & (ShipmentItem.status == str(ShipmentStatus.DELIVERED)))
                tx.save(event)
        except TransactWriteError as exc:
            if _stored_as_written(event):
                return True
            reasons = exc.cancellation_reasons or []
            if reasons and reasons[0] is not None and reasons[0].code == "ConditionalCheckFailed":
                return False
            raise
        return True

    def change_statuses(self, changes: Sequence[StatusChange], claim: IdempotencyItem | None = None,
                        also: Sequence[EventItem] = ()) -> bool:
        """Move shipments to new statuses, each conditional on its current status, with a timeline event each.

        `also`: more timeline events written with the first chunk (a failed attempt that also returns the parcel).

        Chunks stay within the transaction limit; each chunk is all-or-nothing.
        With `claim` (a single change only), the idempotency record is written in
        the same transaction; returns False if that key was already used.
        """
        per_chunk = TRANSACTION_LIMIT // 2
        for start in range(0, len(changes), per_chunk):
            chunk = changes[start:start + per_chunk]
            try:
                with self._transaction() as tx:
                    if claim is not None:
                        tx.save(claim, condition=IdempotencyItem.PK.does_not_exist())
                    for extra_event in also if start == 0 else ():
                        tx.save(extra_event)
                    for shipment, new_status, extra_actions, event in chunk:
                        actions = [*status_actions(shipment, new_status, event.recorded_at), *extra_actions]
                        tx.update(shipment, actions=actions, condition=ShipmentItem.status == shipment.status)
                        tx.save(event)
            except TransactWriteError as exc:
                if _stored_as_written(chunk[0][3]):  # the chunk's first event: this chunk committed
                    continue
                reasons = exc.cancellation_reasons or []
                if claim is not None and reasons and reasons[0] is not None \
                        and reasons[0].code == "ConditionalCheckFailed":
                    return False
                raise ConditionFailed(str(exc)) from exc
        return True

    def update_shipment(self, shipment: ShipmentItem, actions: list[Any], event: EventItem,
                        stops_changed_for: str | None = None,
                        contacts: tuple[set[str], set[str]] | None = None) -> None:
        """A merchant's edit: the actions, conditional on the status and `updated_at` read (every write of a
        shipment moves `updated_at`, so a change made meanwhile fails the condition: no lost update), with its
        timeline event, in one transaction. `stops_changed_for`: the driver whose route's cached stops must be
        reloaded by the pipeline (GeofenceStateItem.stops_version). ConditionFailed when it changed meanwhile."""
        try:
            with self._transaction() as tx:
                tx.update(shipment, actions=actions, condition=(ShipmentItem.status == shipment.status)
                          & (ShipmentItem.updated_at == shipment.updated_at))
                tx.save(event)
                if contacts is not None:  # (removed, added) recipient contacts: the search index follows
                    for contact in sorted(contacts[0]):
                        tx.delete(ContactItem(contact_pk(shipment.merchant_id, contact),
                                              f"SHIPMENT#{shipment.shipment_id}"))
                    for contact in sorted(contacts[1]):
                        tx.save(_contact_item(shipment, contact))
                if stops_changed_for is not None:
                    tx.update(GeofenceStateItem(driver_pk(stops_changed_for), "GEOFENCE"),
                              actions=[GeofenceStateItem.version.add(1), GeofenceStateItem.stops_version.add(1)])
        except TransactWriteError as exc:
            if _stored_as_written(event):  # an earlier attempt of this very call committed
                return
            raise ConditionFailed(str(exc)) from exc

    def get_driver_idempotency(self, driver_id: str, key_hash: str) -> IdempotencyItem | None:
        return _get(IdempotencyItem, driver_pk(driver_id), f"IDEMPOTENCY#{key_hash}")

    # --- routes ----------------------------------------------------------------

    def put_route(self, route: RouteItem) -> None:
        _put_new(route)

    def delete_route(self, route: RouteItem) -> None:
        route.delete()

    def get_route(self, merchant_id: str, route_id: str) -> RouteItem | None:
        return _get(RouteItem, merchant_pk(merchant_id), f"ROUTE#{route_id}")

    def set_route_status(self, route: RouteItem, status: str, expected: str, started_at: datetime | None) -> None:
        """Move the route from `expected` to `status` (ConditionFailed if it is no longer `expected`). A retry
        of a committed attempt finds the route as this call left it (same status and start time) and succeeds."""
        actions: list[Action] = [RouteItem.status.set(status)]
        if started_at is not None:
            actions.append(RouteItem.started_at.set(started_at))
        try:
            route.update(actions=actions, condition=RouteItem.status == expected)
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise
            now = _get(RouteItem, route.PK, route.SK, consistent=True)
            if now is None or now.status != status or started_at is None or now.started_at != started_at:
                raise ConditionFailed(str(exc)) from exc

    def list_routes(self, merchant_id: str, *, day: str | None, driver_id: str | None, status: str | None,
                    limit: int, start: dict[str, Any] | None) -> tuple[list[RouteItem], dict[str, Any] | None]:
        """A page of the merchant's routes (docs/data-model.md #72-#74): by driver (GSI1, whole items), by day
        (GSI2, keys only, then one BatchGetItem), or all (the merchant partition's ROUTE# items); `status`
        filters within the chosen Query."""
        filt = RouteItem.status == status if status is not None else None
        if driver_id is not None or day is not None:
            if driver_id is not None:  # GSI1 lacks what only this listing shows (version, completed_at)
                key = RouteItem.GSI1SK.startswith(f"{day}#") if day is not None else None
                keys, last = _page(RouteItem.by_driver.query(
                    driver_routes_pk(merchant_id, driver_id), key, filter_condition=filt, limit=limit,
                    last_evaluated_key=start, attributes_to_get=_INDEX_KEYS["GSI1"]), limit)
            else:
                assert day is not None
                by_status = RouteItem.GSI2SK.startswith(f"{status}#") if status is not None else None
                keys, last = _page(RouteItem.by_day.query(route_day_gsi_pk(merchant_id, day), by_status, limit=limit,
                                                          last_evaluated_key=start), limit)
            found = {r.SK: r for r in RouteItem.batch_get([(k.PK, k.SK) for k in keys])} if keys else {}
            items = [found[k.SK] for k in keys if k.SK in found]
            return [r for r in items if status is None or r.status == status], last
        return _page(RouteItem.query(merchant_pk(merchant_id), RouteItem.SK.startswith("ROUTE#"),
                                     filter_condition=filt, limit=limit, last_evaluated_key=start), limit)

    def active_route_claim(self, merchant_id: str, driver_id: str) -> ActiveRouteItem | None:
        return _get(ActiveRouteItem, active_route_pk(merchant_id, driver_id), ACTIVE_ROUTE_SK, consistent=True)

    def commit_route_edit(self, routes: Sequence[RouteWrite], shipments: Sequence[ShipmentWrite], *,
                          claim: tuple[str, str, str] | None = None,
                          release: Sequence[tuple[str, str, str]] = ()) -> None:
        """Apply an edit of one or two routes and their shipments in one transaction.

        `claim` (merchant, driver, route) takes the driver's active-route item unless another route holds it;
        `release` (merchant, driver, route) deletes such items if they are still that route's. Raises
        RouteVersionConflict when a route moved on, ActiveRouteTaken when the driver has another active route,
        ConditionFailed when a shipment changed meanwhile. Shipments beyond one transaction's room follow in
        further transactions (each all-or-nothing), after the routes' own.
        """
        head = len(routes) + (1 if claim else 0) + len(release)
        chunks = _write_chunks(shipments, TRANSACTION_LIMIT - head)
        first, rest = chunks[0], chunks[1:]
        try:
            with self._transaction() as tx:
                for write in routes:
                    version = RouteItem.version == write.expected_version
                    if write.expected_version == 0:
                        version = RouteItem.version.does_not_exist() | version
                    tx.update(write.route, actions=write.actions,
                              condition=version & RouteItem.status.is_in(*write.statuses))
                if claim is not None:
                    merchant_id, driver_id, route_id = claim
                    tx.save(ActiveRouteItem(active_route_pk(merchant_id, driver_id), ACTIVE_ROUTE_SK,
                                            merchant_id=merchant_id, driver_id=driver_id, route_id=route_id),
                            condition=ActiveRouteItem.PK.does_not_exist() | (ActiveRouteItem.route_id == route_id))
                for merchant_id, driver_id, route_id in release:
                    tx.delete(ActiveRouteItem(active_route_pk(merchant_id, driver_id), ACTIVE_ROUTE_SK),
                              condition=ActiveRouteItem.PK.does_not_exist() | (ActiveRouteItem.route_id == route_id))
                self._shipment_writes(tx, first)
        except TransactWriteError as exc:
            if not _first_event_stored(first):
                _raise_route_edit_failure(self, exc, routes, first, claim, release)
            # else this very transaction committed and botocore retried it (its answer was lost): an engine
            # that ignores the ClientRequestToken fails the retry on the versions the first attempt moved on.
        for chunk in rest:
            try:
                with self._transaction() as tx:
                    self._shipment_writes(tx, chunk)
            except TransactWriteError as exc:
                if chunk[0][2] and _stored_as_written(chunk[0][2][0]):  # this chunk committed (a lost answer)
                    continue
                raise ConditionFailed(str(exc)) from exc

    @staticmethod
    def _shipment_writes(tx: TransactWrite, writes: Sequence[ShipmentWrite]) -> None:
        for shipment, actions, events in writes:
            tx.update(shipment, actions=actions, condition=ShipmentItem.status == shipment.status)
            for event in events:
                tx.save(event)

    def complete_route(self, route: RouteItem, now: datetime) -> bool:
        """Mark an active route completed and release its driver's active-route item, once: False when the route
        is no longer active (completed already: a redelivered stream record, or the merchant ended it)."""
        version = int(route.version or 0)
        try:
            self.commit_route_edit([RouteWrite(route, [RouteItem.status.set("completed"),
                                                       RouteItem.completed_at.set(now),
                                                       RouteItem.GSI2SK.set(f"completed#{route.route_id}"),
                                                       RouteItem.version.set(version + 1)],
                                               version, ("active",))], [],
                                   release=[(route.merchant_id, route.driver_id, route.route_id)])
        except RouteVersionConflict:
            return False
        route.status, route.completed_at, route.version = "completed", now, version + 1
        return True

    def flag_route_edited(self, driver_id: str) -> None:
        """Tell the stream pipeline that the driver's route changed (its cached stops are stale); a driver
        without a geofence state yet has nothing cached."""
        try:
            GeofenceStateItem(driver_pk(driver_id), "GEOFENCE").update(
                actions=[GeofenceStateItem.version.add(1), GeofenceStateItem.stops_version.add(1)],
                condition=GeofenceStateItem.PK.exists())
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise

    def delete_route_eta(self, route_id: str) -> None:
        """Forget a route's ETA windows (aligned with its old stop order) until the next fix recomputes them."""
        RouteEtaItem(route_eta_pk(route_id), ROUTE_ETA_SK).delete()

    def routes_of_driver(self, merchant_id: str, driver_id: str, day: str) -> list[RouteItem]:
        return list(RouteItem.by_driver.query(driver_routes_pk(merchant_id, driver_id),
                                              RouteItem.GSI1SK.startswith(f"{day}#")))

    def active_route(self, merchant_id: str, driver_id: str, day: str,
                     attributes: Sequence[str] | None = None) -> RouteItem | None:
        """The driver's active route around `day` (a route may start the evening before in UTC). `attributes`:
        only these are read (with status, started_at and created_at, which choose the route)."""
        low = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        high = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        wanted = None if attributes is None else sorted({*attributes, "status", "started_at", "created_at"})
        routes = RouteItem.by_driver.query(driver_routes_pk(merchant_id, driver_id),
                                           RouteItem.GSI1SK.between(f"{low}#", f"{high}#~"), attributes_to_get=wanted)
        active = [r for r in routes if r.status == "active"]
        return max(active, key=lambda r: r.started_at or r.created_at, default=None)

    def driver_state(self, driver_id: str) -> DriverState:
        """The driver's pipeline state item as read: its state JSON, version, `stops_version` and whether the
        driver was declared offline since the last save (all empty/zero when nothing is stored yet)."""
        item = _get(GeofenceStateItem, driver_pk(driver_id), "GEOFENCE")
        if item is None:
            return DriverState(None, 0, 0, False)
        return DriverState(item.state, int(item.version), int(item.stops_version or 0), bool(item.presence_offline))

    def save_geofence_state(self, driver_id: str, state_json: str, expected_version: int,
                            stops_version: int = 0, presence_offline: bool = False) -> None:
        """Replace the state if its version is still the one read; `stops_version` as read is carried on, and
        `presence_offline` by a save that did not handle the driver's fixes (so their recovery still sees it)."""
        item = GeofenceStateItem(driver_pk(driver_id), "GEOFENCE", state=state_json, version=expected_version + 1,
                                 stops_version=stops_version or None, presence_offline=presence_offline or None)
        condition = (GeofenceStateItem.version == expected_version) if expected_version else \
            GeofenceStateItem.PK.does_not_exist()
        if not _save_if(item, condition):
            raise ConditionFailed("geofence state changed meanwhile")

    def set_eta(self, shipment: ShipmentItem, eta_ms: int, low_ms: int, high_ms: int) -> None:
        """Record the shipment's current ETA window (only while it is still on its way)."""
        try:
            shipment.update(actions=[ShipmentItem.eta_ms.set(eta_ms), ShipmentItem.eta_low_ms.set(low_ms),
                                     ShipmentItem.eta_high_ms.set(high_ms)],
                            condition=ShipmentItem.status.is_in("out_for_delivery", "approaching"))
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise

    # --- the stream pipeline's route ETA item (docs/data-model.md #59, #60) ---------------------------

    def route_eta(self, route_id: str) -> RouteEtaItem | None:
        return _get(RouteEtaItem, route_eta_pk(route_id), ROUTE_ETA_SK)

    def put_route_eta(self, item: RouteEtaItem) -> bool:
        """Replace the route's ETA item unless a newer fix's estimate is there; False when it was newer."""
        return _save_if(item, RouteEtaItem.PK.does_not_exist() | (RouteEtaItem.at_ms <= item.at_ms))

    def mark_stop_delayed(self, merchant_id: str, shipment_id: str, event: EventItem) -> bool:
        """The pipeline's 'delayed', by key (no read): flag and event once, only on an existing shipment."""
        shipment = ShipmentItem(merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}")
        try:
            with TransactWrite(connection=self.conn) as tx:
                tx.update(shipment, actions=[ShipmentItem.delayed_at.set(event.recorded_at)],
                          condition=ShipmentItem.PK.exists() & ShipmentItem.delayed_at.does_not_exist())
                tx.save(event)
        except TransactWriteError:
            return False
        return True

    def mark_delayed(self, shipment: ShipmentItem, event: EventItem) -> bool:
        """Flag the shipment delayed and write the event, once (False if it was already flagged)."""
        try:
            with self._transaction() as tx:
                tx.update(shipment, actions=[ShipmentItem.delayed_at.set(event.recorded_at)],
                          condition=ShipmentItem.delayed_at.does_not_exist())
                tx.save(event)
        except TransactWriteError:
            # Only a failed condition reaches here (storage faults raise StorageUnavailable, which the stream
            # retries): already flagged, unless it is this attempt that committed.
            return _stored_as_written(event)
        return True

    def put_event_once(self, event: EventItem) -> bool:
        """Write a timeline event whose id is deterministic; False if it was already there."""
        return _save_if(event, EventItem.PK.does_not_exist())

    # --- events ----------------------------------------------------------------

    def timeline(self, shipment_id: str, limit: int = 500) -> list[EventItem]:
        return list(EventItem.query(shipment_pk(shipment_id), EventItem.SK.startswith("EVENT#"), limit=limit))

    # --- pings and positions ---------------------------------------------------
    #
    # The ingest hot path speaks DynamoDB's wire format through its own client (`hot_client`): hand-built
    # items, one request per step, no pynamodb model per ping.

    @property
    def hot_client(self) -> Any:
        """The botocore client of the ping ingest path, created once per repository.

        Same endpoint, region, timeouts and bounded standard-mode retries as pynamodb's, guarded the same way
        (storage faults -> StorageUnavailable). Two settings differ, both about CPU: `parameter_validation` off
        (pynamodb's own clients run without it too; every request on this client is built by the methods
        below, tested against moto and DynamoDB Local, and DynamoDB still validates what it receives), and a
        fixed User-Agent, because botocore otherwise rebuilds the string from a dozen components twice per
        request (about 0.3 ms each time, more than the rest of a small request). Its endpoint is resolved once
        per operation (`session.pin_endpoint`), not on every request.
        """
        if self._hot is None:
            from botocore.config import Config

            s = get_settings()
            config = Config(parameter_validation=False, user_agent=HOT_USER_AGENT,
                            connect_timeout=s.ddb_connect_timeout_s, read_timeout=s.ddb_read_timeout_s,
                            retries={"mode": "standard", "total_max_attempts": s.ddb_max_attempts})
            # The process's one botocore session (`storage.session`), which pynamodb's client shares: the
            # DynamoDB service model is parsed once, whichever client a cold container makes first.
            client = create_client(region_name=s.aws_region, endpoint_url=s.ddb_endpoint_url, config=config)
            # Our requests name the table, never an ARN, so the endpoint is resolved once per operation.
            self._hot = guard(pin_endpoint(client) if not s.table_name.startswith("arn:") else client)
        return self._hot

    def ingest_reads(self, driver_id: str, fix_times: Iterable[int]) -> tuple[LastFix | None, set[int]]:
        """What a ping batch needs to read: the driver's latest position, and which of its fix times are stored.

        ONE Query, newest first, from `POSITION` down to `POINTS#<first fix>` (`fix_chunks`: nothing else sorts
        between them), at most `INGEST_READ_LIMIT` items: the position, then every chunk ending at or after
        the batch's first fix. That is usually nothing: a phone sends its fixes in order, so no chunk ends after
        a new batch starts. Only a batch older than what was already stored (a backlog sent late, a retry)
        can find more chunks than the page holds; then `stored_fix_times` reads the batch's own span as well.
        """
        wanted = set(fix_times)
        if not wanted:
            return self.last_fix(driver_id), set()
        low, _ = chunk_range(min(wanted), max(wanted))
        response = self.hot_client.query(
            TableName=get_settings().table_name, ScanIndexForward=False, Limit=INGEST_READ_LIMIT,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":pk": {"S": driver_pk(driver_id)}, ":lo": {"S": low},
                                       ":hi": {"S": POSITION_SK}},
            ProjectionExpression="SK, f, fix_ms, lat, lng")
        last: LastFix | None = None
        found: set[int] = set()
        for item in response.get("Items", []):
            if item["SK"]["S"] == POSITION_SK:
                last = LastFix(int(item["fix_ms"]["N"]), float(item["lat"]["N"]), float(item["lng"]["N"]))
            elif "f" in item:
                found.update(decode_fix_times(item["f"]["S"]))
        if response.get("LastEvaluatedKey"):
            found |= self.stored_fix_times(driver_id, wanted)
        return last, found & wanted

    def stored_fix_times(self, driver_id: str, fix_times: Iterable[int]) -> set[int]:
        """Which of these fix times are already stored for the driver: a Query of the chunks that may hold one
        (`fix_chunks.chunk_range`), projecting only the encoded fixes, whose times alone are decoded.

        One Query per run of fix times (gaps over `DEDUPE_GAP_MS` start a new run, at most `DEDUPE_QUERIES`
        runs, else one Query over the whole span), so a batch mixing an old fix with new ones does not read
        every chunk stored in between.
        """
        wanted = set(fix_times)
        if not wanted:
            return set()
        ordered = sorted(wanted)
        runs = clusters(ordered, DEDUPE_GAP_MS)
        if len(runs) > DEDUPE_QUERIES:
            runs = [(ordered[0], ordered[-1])]
        found: set[int] = set()
        for first, last in runs:
            low, high = chunk_range(first, last)
            for item in self._query_chunks(driver_id, low, high, "f"):
                found.update(decode_fix_times(item["f"]["S"]))
        return found & wanted

    def _query_chunks(self, driver_id: str, low: str, high: str, projection: str | None) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": get_settings().table_name,
            "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":pk": {"S": driver_pk(driver_id)}, ":lo": {"S": low}, ":hi": {"S": high}},
        }
        if projection:
            request["ProjectionExpression"] = projection
        while True:
            response = self.hot_client.query(**request)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def put_pings(self, pings: Sequence[Ping]) -> None:
        """Store accepted pings as fix chunks (`fix_chunks`): one item per driver and chunk of at most 50 fixes,
        BatchWriteItem of up to 25 chunks, retrying unprocessed items with jittered backoff.

        Raises StorageUnavailable if DynamoDB still refuses after the retries, so
        the caller answers 503 and the phone retries the (idempotent) batch.
        """
        table = get_settings().table_name
        ttl_s = get_settings().ping_retention_days * 86400
        items = [{"PutRequest": {"Item": item}} for item in fix_chunk_items(pings, ttl_s)]
        for start in range(0, len(items), 25):
            pending: list[dict[str, Any]] = items[start:start + 25]
            for attempt in range(8):
                response = self.hot_client.batch_write_item(RequestItems={table: pending})
                pending = response.get("UnprocessedItems", {}).get(table, [])
                if not pending:
                    break
                _backoff(attempt)
            else:
                raise StorageUnavailable(f"{len(pending)} fix chunks left unprocessed")

    def advance_position(self, ping: Ping, coarse: str) -> bool:
        """Set the latest position if this fix is newer than the stored one (a conditional put)."""
        item = position_wire_item(ping, coarse)
        try:
            self.hot_client.put_item(TableName=get_settings().table_name, Item=item,
                                     ConditionExpression="attribute_not_exists(fix_ms) OR fix_ms < :new",
                                     ExpressionAttributeValues={":new": item["fix_ms"]})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get_position(self, driver_id: str) -> PositionItem | None:
        return _get(PositionItem, driver_pk(driver_id), "POSITION")

    def last_fix(self, driver_id: str) -> LastFix | None:
        """The latest position's fix time and coordinates (one GetItem projecting only those)."""
        response = self.hot_client.get_item(TableName=get_settings().table_name,
                                            Key={"PK": {"S": driver_pk(driver_id)}, "SK": {"S": POSITION_SK}},
                                            ProjectionExpression="fix_ms, lat, lng")
        item = response.get("Item")
        if not item:
            return None
        return LastFix(int(item["fix_ms"]["N"]), float(item["lat"]["N"]), float(item["lng"]["N"]))

    def positions_in_cells(self, merchant_id: str, cells: Sequence[str]) -> list[PositionItem]:
        """The latest positions of the merchant's drivers indexed under these coarse cells.

        GSI3 projects keys only (a position write then touches it only when the driver changes cell), so the
        cells' Queries give driver ids and one BatchGetItem reads their positions, fresher than the index.
        """
        def one(cell: str) -> list[str]:
            keys = PositionItem.by_cell.query(cell_gsi_pk(merchant_id, cell), attributes_to_get=["PK"])
            return [key.PK for key in keys]

        with ThreadPoolExecutor(max_workers=8) as pool:
            pks = sorted({pk for found in pool.map(one, cells) for pk in found})
        # A driver's position may have moved to another merchant's cell key meanwhile: only this merchant's.
        return [item for item in PositionItem.batch_get([(pk, "POSITION") for pk in pks])
                if item.merchant_id == merchant_id]

    def ping_history(self, driver_id: str, since_ms: int, until_ms: int, limit: int) -> list[StoredFix]:
        """A driver's fixes in [since_ms, until_ms], fix time ascending, at most `limit`, one per fix time.

        Reads the chunks that may overlap the window (one key range, pages read only until the first `limit`
        fixes are certain: a later chunk ends more than CHUNK_MAX_SPAN_MS after the limit-th fix), and the
        PING# items written before chunks existed (until they expire, `ping_retention_days` after the
        change). Two chunks may share a fix (two overlapping requests racing past the duplicate check): the
        first read wins, as the pipeline keeps one fix per time.
        """
        pk = driver_pk(driver_id)
        found: dict[int, StoredFix] = {}
        low, high = chunk_range(since_ms, until_ms)
        for item in self._query_chunks(driver_id, low, high, None):
            if len(found) >= limit:
                cutoff = sorted(found)[limit - 1] + CHUNK_MAX_SPAN_MS
                if int(item["SK"]["S"][len(CHUNK_PREFIX):len(CHUNK_PREFIX) + 13]) > cutoff:
                    break
            received_ms, expires_at = int(item["received_ms"]["N"]), int(item["expires_at"]["N"])
            merchant_id = item["merchant_id"]["S"]
            for row in decode_fixes(item["f"]["S"]):
                if since_ms <= row[0] <= until_ms and row[0] not in found:
                    found[row[0]] = StoredFix(driver_id, merchant_id, row[0], row[1], row[2],
                                              fine_cell(row[1], row[2]), received_ms, expires_at, *row[3:])
        for legacy in PingItem.query(pk, PingItem.SK.between(ping_sk(since_ms), ping_sk(until_ms)), limit=limit):
            fix_ms = int(legacy.fix_ms)
            if fix_ms not in found:
                found[fix_ms] = StoredFix(
                    driver_id, legacy.merchant_id, fix_ms, float(legacy.lat), float(legacy.lng), legacy.cell,
                    int(legacy.received_ms), int(legacy.expires_at.timestamp()),
                    *(None if v is None else float(v) for v in (legacy.accuracy, legacy.speed, legacy.heading,
                                                               legacy.altitude, legacy.battery)))
        return [found[ms] for ms in sorted(found)[:limit]]


HOT_USER_AGENT = "doorstep-ingest"
POSITION_SK = "POSITION"
INGEST_READ_LIMIT = 16  # the position and 15 chunks: a page of ~6 KB at most (2 read units)
DEDUPE_GAP_MS = 30 * 60 * 1000
DEDUPE_QUERIES = 4


@dataclass(slots=True)
class StoredFix:
    """A fix as the history reader returns it (from a chunk, or a legacy PING# item)."""

    driver_id: str
    merchant_id: str
    fix_ms: int
    lat: float
    lng: float
    cell: str
    received_ms: int
    expires_at: int  # epoch seconds (TTL)
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None
    battery: float | None = None


def fix_chunk_items(pings: Sequence[Ping], ttl_s: int) -> list[dict[str, Any]]:
    """The wire items of accepted pings: per driver, fix time ascending, cut by `fix_chunks.split_chunks`.

    Built directly in DynamoDB's wire format: this is the ingest hot path. `received_ms` is the request's (one
    value per request; the first ping's is kept if a caller mixed several).
    """
    by_driver: dict[str, list[Ping]] = {}
    for p in pings:
        by_driver.setdefault(p.driver_id, []).append(p)
    items = []
    for driver_id, mine in by_driver.items():
        mine.sort(key=_fix_ms_of)
        times = [p.fix_ms for p in mine]
        for part in split_chunks(times):
            chunk = mine[part]
            first = chunk[0]
            items.append({
                "PK": {"S": "DRIVER#" + driver_id},
                "SK": {"S": chunk_sk(times[part])},
                "merchant_id": {"S": first.merchant_id},
                "driver_id": {"S": driver_id},
                "received_ms": {"N": str(first.received_ms)},
                "expires_at": {"N": str(chunk[-1].fix_ms // 1000 + ttl_s)},
                "f": {"S": encode_fixes([(p.fix_ms, p.lat, p.lng, p.accuracy, p.speed, p.heading, p.altitude,
                                          p.battery) for p in chunk])},
            })
    return items


def _fix_ms_of(p: Ping) -> int:
    return p.fix_ms


def position_wire_item(p: Ping, coarse: str) -> dict[str, Any]:
    """The latest position as a wire item (the attributes of `PositionItem`, absent optionals left out)."""
    item: dict[str, Any] = {
        "PK": {"S": "DRIVER#" + p.driver_id},
        "SK": {"S": "POSITION"},
        "GSI3PK": {"S": cell_gsi_pk(p.merchant_id, coarse)},
        "GSI3SK": {"S": "DRIVER#" + p.driver_id},
        "merchant_id": {"S": p.merchant_id},
        "driver_id": {"S": p.driver_id},
        "fix_ms": {"N": str(p.fix_ms)},
        "lat": {"N": repr(float(p.lat))},
        "lng": {"N": repr(float(p.lng))},
        "cell": {"S": p.cell},
        "received_ms": {"N": str(p.received_ms)},
    }
    for name in ("accuracy", "speed", "heading", "altitude", "battery"):
        value = getattr(p, name)
        if value is not None:
            item[name] = {"N": repr(float(value))}
    return item


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _error_code(exc: PynamoDBException) -> str | None:
    """The DynamoDB error code behind a pynamodb error, or None when its cause is not an error answer.

    Not `exc.cause_response_code`: that assumes the cause carries a response dict, and a botocore timeout's
    `response` is None (an AttributeError in an error path). Storage faults no longer reach here (the guarded
    clients raise StorageUnavailable), but a cause without an answer must still read as "no code".
    """
    response = getattr(exc.cause, "response", None)
    if not isinstance(response, dict):
        return None
    code = (response.get("Error") or {}).get("Code")
    return str(code) if code else None


def _condition_failed(exc: PynamoDBException) -> bool:
    return _error_code(exc) == "ConditionalCheckFailedException"


def _save_if(item: Model, condition: Condition) -> bool:
    """A conditional put; False when the condition did not hold (the exactly-once writes rely on this)."""
    try:
        item.save(condition=condition)
    except PutError as exc:
        if _condition_failed(exc):
            return False
        raise
    return True


def _put_new(item: TableItem) -> None:
    """Put an item under a fresh key (a new random id) that must not exist yet.

    A conditional failure can then only mean that this call's own earlier attempt committed (botocore retried
    a put whose answer was lost): read back, the item is there, and that is success.
    """
    if not _save_if(item, type(item).PK.does_not_exist()) and not _stored_as_written(item):
        raise ConditionFailed(f"{item.PK} {item.SK} exists")


def _stored_as_written(item: TableItem) -> bool:
    """Is this item, written under a fresh key (a new random id: an event, a driver, a shipment), stored?

    Asked after a conditional failure: nobody else can know a fresh key, so a yes proves that an earlier
    attempt of the very same call committed (its answer was lost and botocore retried), so the call succeeded.
    Read with strong consistency; the key alone decides (the item may have moved on since it was written).
    """
    return _get(type(item), item.PK, item.SK, consistent=True) is not None


def _first_event_stored(writes: Sequence[ShipmentWrite]) -> bool:
    """Did a route edit's first transaction commit? Its timeline events have fresh keys (`_stored_as_written`)."""
    event = next((e for _, _, events in writes for e in events), None)
    return event is not None and _stored_as_written(event)


def _raise_route_edit_failure(repo: Repository, exc: TransactWriteError, routes: Sequence[RouteWrite],
                              first: Sequence[ShipmentWrite], claim: tuple[str, str, str] | None,
                              release: Sequence[tuple[str, str, str]]) -> NoReturn:
    """A route edit's cancelled transaction as the domain's error: whose condition failed decides."""
    reasons = exc.cancellation_reasons or []
    failed = {i for i, r in enumerate(reasons) if r is not None and r.code == "ConditionalCheckFailed"}
    # pynamodb sends a transaction's deletes, then its puts, then its updates (each in call order).
    claim_at = len(release)
    routes_at = claim_at + (1 if claim else 0) + sum(len(events) for _, _, events in first)
    if failed & set(range(routes_at, routes_at + len(routes))):
        raise RouteVersionConflict(str(exc)) from exc
    if claim is not None and claim_at in failed:
        held = repo.active_route_claim(claim[0], claim[1])
        raise ActiveRouteTaken(held.route_id if held else None) from exc
    raise ConditionFailed(str(exc)) from exc


def _batch_write(model: type[Model], save: Sequence[Model] = (), delete: Sequence[Model] = ()) -> None:
    """pynamodb's batch writer; items DynamoDB still leaves unprocessed after its retries are a storage fault."""
    try:
        with model.batch_write() as batch:
            for item in save:
                batch.save(item)
            for item in delete:
                batch.delete(item)
    except PutError as exc:
        if _error_code(exc) is None:  # "max_retry_attempts exceeded": throttled, nothing else
            raise StorageUnavailable(f"batch write left items unprocessed: {exc}") from exc
        raise


def _get(model: type[ItemT], pk: str, sk: str, *, consistent: bool = False) -> ItemT | None:
    try:
        return model.get(pk, sk, consistent_read=consistent)
    except DoesNotExist:
        return None


_KEYS = ["PK", "SK"]  # a keys-only read of an index: the items come from the table
_INDEX_KEYS = {index: [*_KEYS, f"{index}PK", f"{index}SK"] for index in ("GSI1", "GSI2")}  # ...and a position
_SHARD_END = "end"


def _merged_page(query: Callable[[int, dict[str, Any] | None], Any], index: str, limit: int,
                 start: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any] | None]:
    """One page of a listing over the sharded shipment index keys: every shard queried from its own position
    (in parallel, at most `limit` keys each), merged by sort key, the first `limit` kept.

    The position (`start`, and the one returned for the next page) is `{"shards": [...]}`, one entry per
    shard: None (not started), the index key of the last item listed from it (its ExclusiveStartKey), or
    "end" once all of it has been listed. None is returned when every shard has ended.
    """
    positions: list[Any] = [None] * SHIPMENT_INDEX_SHARDS
    if start is not None:
        shards = start.get("shards")
        if not isinstance(shards, list) or len(shards) != SHIPMENT_INDEX_SHARDS:
            raise errors.bad_request("The cursor is not valid for this listing.", "cursor",
                                     "issued before the listing changed; start again without it")
        positions = shards

    def one(shard: int) -> tuple[list[Any], bool]:
        if positions[shard] == _SHARD_END:
            return [], False
        result = query(shard, positions[shard])
        items = list(result)
        return items, result.last_evaluated_key is not None

    with ThreadPoolExecutor(max_workers=SHIPMENT_INDEX_SHARDS) as pool:
        found = list(pool.map(one, range(SHIPMENT_INDEX_SHARDS)))
    sort_key = f"{index}SK"
    merged = heapq.merge(*[[(getattr(item, sort_key), shard, item) for item in items]
                           for shard, (items, _) in enumerate(found)])
    page = list(itertools.islice(merged, limit))
    taken = Counter(shard for _, shard, _ in page)
    last_taken = {shard: item for _, shard, item in page}  # the page is in order: the last one wins
    following: list[Any] = []
    for shard, (items, more) in enumerate(found):
        if positions[shard] == _SHARD_END or (taken[shard] == len(items) and not more):
            following.append(_SHARD_END)
        elif shard in last_taken:
            item = last_taken[shard]
            following.append({name: {"S": getattr(item, name)} for name in _INDEX_KEYS[index]})
        else:
            following.append(positions[shard])
    return [item for _, _, item in page], (None if all(p == _SHARD_END for p in following) else {"shards": following})


def _page(result: Any, limit: int) -> tuple[list[Any], dict[str, Any] | None]:
    items = list(result)
    # pynamodb stops after `limit` items (filters included) and reports where it stopped.
    last: dict[str, Any] | None = result.last_evaluated_key if items else None
    return items, last


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))


def idempotency_expiry(now: datetime) -> datetime:
    return now + timedelta(hours=24)
