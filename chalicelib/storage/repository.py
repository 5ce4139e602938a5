"""The DynamoDB repository: one method per access pattern of docs/data-model.md."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PutError, PynamoDBException, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.core.config import get_settings
from chalicelib.ingest.rules import LastFix, Ping
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.storage.faults import StorageUnavailable, guard
from chalicelib.storage.tables import (
    MERCHANTS_GSI_PK,
    ROUTE_ETA_SK,
    ApiKeyItem,
    DriverItem,
    DriverTokenItem,
    EventItem,
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
    cell_gsi_pk,
    date_gsi_pk,
    driver_pk,
    driver_routes_pk,
    merchant_pk,
    ping_sk,
    route_eta_pk,
    share_client,
    shipment_pk,
    status_gsi_pk,
    tracking_pk,
    zone_cell_pk,
)

TRANSACTION_LIMIT = 100
ItemT = TypeVar("ItemT", bound=Model)


# (shipment as read, new status, extra update actions, timeline event)
StatusChange = tuple[ShipmentItem, ShipmentStatus, list[Any], EventItem]


__all__ = ["ConditionFailed", "Repository", "StatusChange", "StorageUnavailable", "now_utc"]


class ConditionFailed(RuntimeError):
    """A conditional write lost: the item changed since it was read."""


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


class Repository:
    def __init__(self) -> None:
        self._conn: Connection | None = None

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
        """Every merchant's id, from the sparse merchants index (a Query, paged; never a scan)."""
        for item in self.client.get_paginator("query").paginate(
                TableName=get_settings().table_name, IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk",
                ExpressionAttributeValues={":pk": {"S": MERCHANTS_GSI_PK}}, ProjectionExpression="merchant_id"):
            for row in item.get("Items", []):
                yield row["merchant_id"]["S"]

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

    def merchant_settings(self, merchant_id: str) -> str | None:
        """The merchant's settings JSON (None: never set, the defaults apply)."""
        item = self.get_merchant(merchant_id)
        return item.settings if item else None

    def put_notification_settings(self, merchant_id: str, settings_json: str) -> None:
        MerchantItem(merchant_pk(merchant_id), "MERCHANT").update(
            actions=[MerchantItem.notifications.set(settings_json)], condition=MerchantItem.PK.exists())

    def put_merchant_settings(self, merchant_id: str, settings_json: str) -> None:
        MerchantItem(merchant_pk(merchant_id), "MERCHANT").update(
            actions=[MerchantItem.settings.set(settings_json)], condition=MerchantItem.PK.exists())

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
        item = _get(DriverTokenItem, f"DRIVERTOKEN#{token_hash}", "DRIVERTOKEN")
        return (item.merchant_id, item.driver_id) if item else None

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
        """Write a shipment, its tracking token and its first event at once.

        Returns False when the idempotency key was already used (nothing written).
        """
        try:
            with self._transaction() as tx:
                if idempotency is not None:
                    tx.save(idempotency, condition=IdempotencyItem.PK.does_not_exist())
                tx.save(shipment, condition=ShipmentItem.PK.does_not_exist())
                tx.save(TrackingTokenItem(tracking_pk(token_hash), "TRACK", merchant_id=shipment.merchant_id,
                                          shipment_id=shipment.shipment_id, token_version=shipment.token_version))
                tx.save(event)
        except TransactWriteError as exc:
            if _stored_as_written(shipment):  # this very attempt committed; its answer was lost
                return True
            reasons = exc.cancellation_reasons or []
            if idempotency is not None and reasons and reasons[0] is not None \
                    and reasons[0].code == "ConditionalCheckFailed":
                return False
            raise
        return True

    def get_idempotency(self, merchant_id: str, key_hash: str) -> IdempotencyItem | None:
        return _get(IdempotencyItem, merchant_pk(merchant_id), f"IDEMPOTENCY#{key_hash}")

    def get_shipment(self, merchant_id: str, shipment_id: str) -> ShipmentItem | None:
        return _get(ShipmentItem, merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}")

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
            result = ShipmentItem.by_status.query(
                status_gsi_pk(merchant_id, status), ShipmentItem.GSI1SK.between(f"{low}#", f"{high}#~"),
                limit=limit, last_evaluated_key=start)
        elif date_from is not None and date_from == date_to:
            result = ShipmentItem.by_date.query(date_gsi_pk(merchant_id, date_from), limit=limit,
                                                last_evaluated_key=start)
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

    def shipments_of_day(self, merchant_id: str, day: str, status: str) -> Iterator[ShipmentItem]:
        """A merchant's shipments of one delivery date in one status (GSI2, every page)."""
        yield from ShipmentItem.by_date.query(date_gsi_pk(merchant_id, day),
                                              ShipmentItem.GSI2SK.startswith(f"{status}#"))

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

    def change_statuses(self, changes: Sequence[StatusChange], claim: IdempotencyItem | None = None) -> bool:
        """Move shipments to new statuses, each conditional on its current status, with a timeline event each.

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
                    for shipment, new_status, extra_actions, event in chunk:
                        actions = [
                            ShipmentItem.status.set(str(new_status)),
                            ShipmentItem.GSI1PK.set(status_gsi_pk(shipment.merchant_id, new_status)),
                            ShipmentItem.GSI2SK.set(f"{new_status}#{shipment.shipment_id}"),
                            ShipmentItem.updated_at.set(event.recorded_at),
                            *extra_actions,
                        ]
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

    def geofence_state(self, driver_id: str) -> tuple[str | None, int]:
        item = _get(GeofenceStateItem, driver_pk(driver_id), "GEOFENCE")
        return (item.state, int(item.version)) if item else (None, 0)

    def save_geofence_state(self, driver_id: str, state_json: str, expected_version: int) -> None:
        item = GeofenceStateItem(driver_pk(driver_id), "GEOFENCE", state=state_json, version=expected_version + 1)
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

    def shipment_eta(self, shipment: ShipmentItem) -> tuple[int, int, int] | None:
        """(low, expected, high) epoch ms of a shipment on a route, from its route's ETA item (one GetItem)."""
        if not shipment.route_id or shipment.stop_index is None:
            return None
        item = self.route_eta(shipment.route_id)
        return item.window(int(shipment.stop_index)) if item is not None else None

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

    def stored_fix_times(self, driver_id: str, fix_times: Iterable[int]) -> set[int]:
        """Which of these fix times are already stored for the driver (BatchGetItem, keys only)."""
        pk = driver_pk(driver_id)
        wanted = sorted(set(fix_times))
        found: set[int] = set()
        table = get_settings().table_name
        for start in range(0, len(wanted), 100):
            keys = [{"PK": {"S": pk}, "SK": {"S": ping_sk(ms)}} for ms in wanted[start:start + 100]]
            request: dict[str, Any] = {table: {"Keys": keys, "ProjectionExpression": "SK"}}
            for attempt in range(8):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(table, []):
                    found.add(int(item["SK"]["S"][5:]))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                _backoff(attempt)
            else:
                raise StorageUnavailable("could not read ping keys")
        return found

    def put_pings(self, pings: Sequence[Ping]) -> None:
        """BatchWriteItem in chunks of 25, retrying unprocessed items with jittered backoff.

        Raises StorageUnavailable if DynamoDB still refuses after the retries, so
        the caller answers 503 and the phone retries the (idempotent) batch.
        """
        table = get_settings().table_name
        ttl_s = get_settings().ping_retention_days * 86400
        items = [{"PutRequest": {"Item": ping_wire_item(p, ttl_s)}} for p in pings]
        for start in range(0, len(items), 25):
            pending: list[dict[str, Any]] = items[start:start + 25]
            for attempt in range(8):
                response = self.client.batch_write_item(RequestItems={table: pending})
                pending = response.get("UnprocessedItems", {}).get(table, [])
                if not pending:
                    break
                _backoff(attempt)
            else:
                raise StorageUnavailable(f"{len(pending)} pings left unprocessed")

    def advance_position(self, ping: Ping, coarse: str) -> bool:
        """Set the latest position if this fix is newer than the stored one."""
        item = PositionItem(driver_pk(ping.driver_id), "POSITION", GSI3PK=cell_gsi_pk(ping.merchant_id, coarse),
                            GSI3SK=f"DRIVER#{ping.driver_id}", **_fix_fields(ping))
        return _save_if(item, PositionItem.fix_ms.does_not_exist() | (PositionItem.fix_ms < ping.fix_ms))

    def get_position(self, driver_id: str) -> PositionItem | None:
        return _get(PositionItem, driver_pk(driver_id), "POSITION")

    def last_fix(self, driver_id: str) -> LastFix | None:
        item = self.get_position(driver_id)
        return LastFix(int(item.fix_ms), float(item.lat), float(item.lng)) if item else None

    def positions_in_cells(self, merchant_id: str, cells: Sequence[str]) -> list[PositionItem]:
        def one(cell: str) -> list[PositionItem]:
            return list(PositionItem.by_cell.query(cell_gsi_pk(merchant_id, cell)))

        with ThreadPoolExecutor(max_workers=8) as pool:
            return [item for items in pool.map(one, cells) for item in items]

    def ping_history(self, driver_id: str, since_ms: int, until_ms: int, limit: int) -> list[PingItem]:
        return list(PingItem.query(driver_pk(driver_id), PingItem.SK.between(ping_sk(since_ms), ping_sk(until_ms)),
                                   limit=limit))


def ping_wire_item(p: Ping, ttl_s: int) -> dict[str, Any]:
    """A ping as a DynamoDB wire-format item, built directly: this is the ingest hot path."""
    item: dict[str, Any] = {
        "PK": {"S": "DRIVER#" + p.driver_id},
        "SK": {"S": ping_sk(p.fix_ms)},
        "merchant_id": {"S": p.merchant_id},
        "driver_id": {"S": p.driver_id},
        "fix_ms": {"N": str(p.fix_ms)},
        "lat": {"N": repr(p.lat)},
        "lng": {"N": repr(p.lng)},
        "cell": {"S": p.cell},
        "received_ms": {"N": str(p.received_ms)},
        "expires_at": {"N": str(p.fix_ms // 1000 + ttl_s)},
    }
    for name in ("accuracy", "speed", "heading", "altitude", "battery"):
        value = getattr(p, name)
        if value is not None:
            item[name] = {"N": repr(float(value))}
    return item


def _fix_fields(p: Ping) -> dict[str, Any]:
    return {
        "merchant_id": p.merchant_id, "driver_id": p.driver_id, "fix_ms": p.fix_ms, "lat": p.lat, "lng": p.lng,
        "cell": p.cell, "received_ms": p.received_ms, "accuracy": p.accuracy, "speed": p.speed,
        "heading": p.heading, "altitude": p.altitude, "battery": p.battery,
    }


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


def _page(result: Any, limit: int) -> tuple[list[Any], dict[str, Any] | None]:
    items = list(result)
    # pynamodb stops after `limit` items (filters included) and reports where it stopped.
    last: dict[str, Any] | None = result.last_evaluated_key if items else None
    return items, last


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))


def idempotency_expiry(now: datetime) -> datetime:
    return now + timedelta(hours=24)
