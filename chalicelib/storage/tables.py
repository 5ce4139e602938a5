"""pynamodb models of the single Doorstep table (see docs/data-model.md)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection, TableConnection
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection, Projection
from pynamodb.models import Model

from chalicelib.core.config import get_settings
from chalicelib.storage.faults import guard
from chalicelib.storage.session import LOCK, botocore_session

_settings = get_settings()


class _Meta:
    """Where and how every model talks to DynamoDB.

    Retries: pynamodb gives botocore `retries={"mode": "standard", "total_max_attempts": max_retry_attempts + 1}`:
    timeouts, 5xx and throttling are retried with jittered exponential backoff, within a retry quota, so a paused
    storage answers 503 after about `DOORSTEP_DDB_MAX_ATTEMPTS` x `DOORSTEP_DDB_READ_TIMEOUT_S` (3 x 3 s), not
    after 30 s. (Adaptive mode would add client-side rate limiting, which on Lambda only delays answers.)
    """

    table_name = _settings.table_name
    region = _settings.aws_region
    host = _settings.ddb_endpoint_url
    connect_timeout_seconds = _settings.ddb_connect_timeout_s
    read_timeout_seconds = _settings.ddb_read_timeout_s
    max_retry_attempts = _settings.ddb_max_attempts - 1
    max_pool_connections = 16


# What each index carries besides the table's and its own keys (docs/data-model.md, "Table and indexes"):
# only what its readers use, so a write that changes nothing projected costs the index nothing. The same
# lists are in infra/resources.json (a test checks they agree). GSI1 is shared: an attribute named here is
# projected for every item type under GSI1 that has it (shipments carry their small merchant_id, status,
# created_at, route_id and driver_id along, all of which change with their status, i.e. their key, anyway).
GSI1_INCLUDE: tuple[str, ...] = (
    # routes (#13, #53, #60): everything the driver app and the pipeline read of a route
    "merchant_id", "route_id", "driver_id", "day", "planned_start", "stops", "status", "started_at", "created_at",
    # deferred notifications (#58): the event to decide again and when it is due
    "not_before", "due_event",
    # webhook deliveries due (#43): what a claim needs (the claim answers the whole item)
    "delivery_id", "endpoint_id", "attempts", "next_attempt_at",
)


def _index_meta(name: str, projection: Projection) -> type:
    return type("Meta", (), {"index_name": name, "projection": projection})


class GSI1(GlobalSecondaryIndex["Any"]):
    """Shipments by status (keys only for them: listings read the items), routes by driver and day, merchants,
    deferred notifications, webhook deliveries due or held."""

    Meta = _index_meta("GSI1", IncludeProjection(list(GSI1_INCLUDE)))
    GSI1PK = UnicodeAttribute(hash_key=True)
    GSI1SK = UnicodeAttribute(range_key=True)


class GSI2(GlobalSecondaryIndex["Any"]):
    """Shipments by delivery date: keys only (listings read the items; reminders need only the id)."""

    Meta = _index_meta("GSI2", KeysOnlyProjection())
    GSI2PK = UnicodeAttribute(hash_key=True)
    GSI2SK = UnicodeAttribute(range_key=True)


class GSI3(GlobalSecondaryIndex["Any"]):
    """Latest positions by coarse cell: keys only, so a position write touches it only when the cell changes."""

    Meta = _index_meta("GSI3", KeysOnlyProjection())
    GSI3PK = UnicodeAttribute(hash_key=True)
    GSI3SK = UnicodeAttribute(range_key=True)


# One botocore DynamoDB client per process (and configuration), shared by every model and the repository.
# pynamodb gives each model class its own Connection, botocore session and client, and every new session parses
# the DynamoDB service model again: three models on a driver's first ping cost ~0.3 s each on a cold start.
# botocore clients are thread-safe once created; they are made from the shared session (`storage.session`).
_CLIENTS: dict[tuple[Any, ...], Any] = {}


def share_client(connection: Connection) -> Connection:
    """Give `connection` the process's client for its settings (made through the first connection that asks)."""
    if connection._client is None:
        key = (connection.region, connection.host, connection._connect_timeout_seconds,
               connection._read_timeout_seconds, connection._max_retry_attempts_exception,
               repr(connection._retry_configuration), connection._max_pool_connections,
               repr(connection._extra_headers))
        with LOCK:
            shared = _CLIENTS.get(key)
            if shared is None:
                # pynamodb's own session would parse the service model again; the ping path's client may
                # have loaded it into the shared one already.
                connection._local.session = botocore_session()
                _CLIENTS[key] = connection.client
            else:
                connection._client = shared
    return connection


class TableItem(Model):
    Meta = _Meta  # type: ignore[assignment]  # pynamodb reads these class attributes
    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)

    @classmethod
    def _get_connection(cls) -> TableConnection:
        """pynamodb's connection of this model on the shared client, guarded (storage faults -> StorageUnavailable)."""
        connection = super()._get_connection()
        guard(share_client(connection.connection).client)
        return connection


class MerchantItem(TableItem):
    # Every merchant is in GSI1 under MERCHANTS: the scheduled reminder lists them without a scan.
    GSI1PK = UnicodeAttribute(null=True)
    GSI1SK = UnicodeAttribute(null=True)
    merchant_id = UnicodeAttribute()
    name = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    settings = UnicodeAttribute(null=True)  # JSON of models.MerchantSettings; absent means the defaults
    notifications = UnicodeAttribute(null=True)  # JSON {"policy", "templates"} (domain.notify / domain.templates)


class ApiKeyItem(TableItem):
    merchant_id = UnicodeAttribute()
    key_prefix = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class DriverItem(TableItem):
    merchant_id = UnicodeAttribute()
    driver_id = UnicodeAttribute()
    name = UnicodeAttribute()
    phone = UnicodeAttribute(null=True)
    external_ref = UnicodeAttribute(null=True)
    token_hash = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    # Driver app links carry this version; revoking bumps it (absent: 0, no link revoked yet).
    app_link_version = NumberAttribute(null=True)


class DriverTokenItem(TableItem):
    merchant_id = UnicodeAttribute()
    driver_id = UnicodeAttribute()


class ShipmentItem(TableItem):
    GSI1PK = UnicodeAttribute()
    GSI1SK = UnicodeAttribute()
    GSI2PK = UnicodeAttribute()
    GSI2SK = UnicodeAttribute()
    by_status = GSI1()
    by_date = GSI2()

    merchant_id = UnicodeAttribute()
    shipment_id = UnicodeAttribute()
    status = UnicodeAttribute()
    recipient: MapAttribute[str, Any] = MapAttribute()
    address: MapAttribute[str, Any] = MapAttribute()
    lat = NumberAttribute()
    lng = NumberAttribute()
    window_start = UTCDateTimeAttribute(null=True)
    window_end = UTCDateTimeAttribute(null=True)
    delivery_date = UnicodeAttribute()
    instructions = UnicodeAttribute(null=True)
    external_ref = UnicodeAttribute(null=True)
    route_id = UnicodeAttribute(null=True)
    stop_index = NumberAttribute(null=True)
    driver_id = UnicodeAttribute(null=True)
    geofence_radius_m = NumberAttribute(null=True)
    token_version = NumberAttribute(default=1)
    # Legacy: ETAs now live in the route's RouteEtaItem (written once per recompute); no longer written here.
    eta_ms = NumberAttribute(null=True)
    eta_low_ms = NumberAttribute(null=True)
    eta_high_ms = NumberAttribute(null=True)
    delayed_at = UTCDateTimeAttribute(null=True)
    # When it reached delivered / failed / returned / cancelled: the tracking link expires a set time later.
    final_at = UTCDateTimeAttribute(null=True)
    # From the tracking page: {gate_code?, leave_at_door, note?, updated_at (ISO)}; for the driver, never echoed.
    recipient_instructions: MapAttribute[str, Any] = MapAttribute(null=True)
    # {score 1-5, comment?, rated_at (ISO)}; written once (conditional on its absence).
    rating: MapAttribute[str, Any] = MapAttribute(null=True)
    proof: MapAttribute[str, Any] = MapAttribute(null=True)  # keys, recipient_name, contactless, distance
    # Failed delivery attempts so far, and the last one's {reason, note?, at (ISO)} (shipments.attempts).
    attempts = NumberAttribute(null=True)
    last_failure: MapAttribute[str, Any] = MapAttribute(null=True)
    # After a failure: {kind safe_place|neighbour, note?, neighbour_name?, source, at (ISO)}.
    redirect: MapAttribute[str, Any] = MapAttribute(null=True)
    # Once returned: {depot_zone_id?, depot_name?, depot_lat?, depot_lng?, from_lat, from_lng, driver_id?,
    # route_id?, started_at (ISO)}.
    return_leg: MapAttribute[str, Any] = MapAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class TrackingTokenItem(TableItem):
    merchant_id = UnicodeAttribute()
    shipment_id = UnicodeAttribute()
    token_version = NumberAttribute(null=True)  # absent on links issued before revocation existed: version 1


class ExternalRefItem(TableItem):
    """A merchant's external_ref, claimed by one shipment in the transaction that creates it (never freed)."""

    merchant_id = UnicodeAttribute()
    shipment_id = UnicodeAttribute()
    external_ref = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class ContactItem(TableItem):
    """One shipment of a recipient contact (`contact_pk`, `SK = SHIPMENT#<sid>`): the console's search by exact
    phone or email. Written with the shipment, moved by a PATCH that changes the contact."""

    merchant_id = UnicodeAttribute()
    shipment_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class IdempotencyItem(TableItem):
    request_hash = UnicodeAttribute()
    shipment_id = UnicodeAttribute()
    expires_at = TTLAttribute()


class RouteItem(TableItem):
    GSI1PK = UnicodeAttribute()
    GSI1SK = UnicodeAttribute()
    by_driver = GSI1()
    # The merchant's routes of a day (#72): absent on routes made before route listings existed.
    GSI2PK = UnicodeAttribute(null=True)
    GSI2SK = UnicodeAttribute(null=True)
    by_day = GSI2()

    merchant_id = UnicodeAttribute()
    route_id = UnicodeAttribute()
    driver_id = UnicodeAttribute()
    day = UnicodeAttribute()
    planned_start = UTCDateTimeAttribute()
    stops = ListAttribute(of=UnicodeAttribute)
    status = UnicodeAttribute()
    started_at = UTCDateTimeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    # Bumped by every edit (stops, driver, status): PATCH is conditional on the version the merchant read.
    version = NumberAttribute(null=True)  # absent: 0
    completed_at = UTCDateTimeAttribute(null=True)


class ActiveRouteItem(TableItem):
    """A driver's one active route (#75): claimed conditionally when a route starts, released when it ends."""

    merchant_id = UnicodeAttribute()
    driver_id = UnicodeAttribute()
    route_id = UnicodeAttribute()


class _FixAttributes(TableItem):
    merchant_id = UnicodeAttribute()
    driver_id = UnicodeAttribute()
    fix_ms = NumberAttribute()
    lat = NumberAttribute()
    lng = NumberAttribute()
    cell = UnicodeAttribute()
    received_ms = NumberAttribute()
    accuracy = NumberAttribute(null=True)
    speed = NumberAttribute(null=True)
    heading = NumberAttribute(null=True)
    altitude = NumberAttribute(null=True)
    battery = NumberAttribute(null=True)


class PingItem(_FixAttributes):
    expires_at = TTLAttribute()


class PositionItem(_FixAttributes):
    GSI3PK = UnicodeAttribute()
    GSI3SK = UnicodeAttribute()
    by_cell = GSI3()


class EventItem(TableItem):
    merchant_id = UnicodeAttribute()
    shipment_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    type = UnicodeAttribute()
    from_status = UnicodeAttribute(null=True)
    to_status = UnicodeAttribute(null=True)
    occurred_at = UTCDateTimeAttribute()
    recorded_at = UTCDateTimeAttribute()
    source = UnicodeAttribute()
    data: MapAttribute[str, Any] = MapAttribute(null=True)


class GeofenceStateItem(TableItem):
    """A driver's geofence state (JSON of domain.geofence.DriverState), versioned for conditional saves.

    `stops_version` counts changes to stops of the driver's route that the pipeline caches (a shipment's
    location, fence radius or window, by PATCH): a change adds one to it and to `version`, so the pipeline's
    next save (conditional on `version`) re-reads, sees it and reloads the stops. Every save carries it on.
    `state` is absent while only a change was recorded (the driver has sent no fix yet)."""

    state = UnicodeAttribute(null=True)
    version = NumberAttribute()
    stops_version = NumberAttribute(null=True)
    # Set (with `version` + 1) by the transaction that declares the driver offline (fleet.presence): the next
    # batch of fixes then recovers the driver at once, whether or not its due time moved by a minute. The
    # pipeline's next save (a whole put) drops it.
    presence_offline = BooleanAttribute(null=True)


class RouteEtaItem(TableItem):
    """The ETA windows of a route's remaining stops: ONE item per route (`ROUTE#<rid>` / `ETA`), replaced on
    each recompute by the stream pipeline and read by the tracking page, the driver app and the merchant API.

    `etas` is compact text aligned with the route's `stops` (see `encode_etas`), so a 100-stop route's item
    stays around 1.5 KB (2 write units) whatever the number of stops still to go. Written only forward in
    fix time (`at_ms`), so a late or replayed batch never puts an older estimate back.
    """

    merchant_id = UnicodeAttribute()
    route_id = UnicodeAttribute()
    at_ms = NumberAttribute()  # the fix time the ETAs were computed from
    base_ms = NumberAttribute()
    etas = UnicodeAttribute()
    expires_at = TTLAttribute()

    def window(self, stop_index: int | None) -> tuple[int, int, int] | None:
        """(low, expected, high) epoch ms for the stop at this index of the route, or None."""
        if stop_index is None:
            return None
        return decode_etas(int(self.base_ms), self.etas).get(int(stop_index))


def encode_etas(base_ms: int, windows: dict[int, tuple[int, int, int]], stops: int) -> str:
    """`low,expected,high` per stop index in seconds after `base_ms`, `;`-separated, empty where none."""
    parts = []
    for index in range(stops):
        w = windows.get(index)
        parts.append("" if w is None else ",".join(str((v - base_ms) // 1000) for v in w))
    return ";".join(parts).rstrip(";")


def decode_etas(base_ms: int, text: str) -> dict[int, tuple[int, int, int]]:
    found: dict[int, tuple[int, int, int]] = {}
    for index, part in enumerate(text.split(";") if text else []):
        if part:
            low, expected, high = (base_ms + int(v) * 1000 for v in part.split(","))
            found[index] = (low, expected, high)
    return found


class ZoneItem(TableItem):
    """A merchant's polygon zone; `cells` lists the res-7 cells it is indexed under (to delete them)."""

    merchant_id = UnicodeAttribute()
    zone_id = UnicodeAttribute()
    name = UnicodeAttribute()
    kind = UnicodeAttribute()
    fence = UnicodeAttribute()  # JSON of domain.geofence.PolygonFence.to_dict()
    cells = ListAttribute(of=UnicodeAttribute)
    created_at = UTCDateTimeAttribute()


class ZoneCellItem(TableItem):
    """One (res-7 cell, zone) pair of the zone index: a fix's cell finds its candidate zones with one Query."""

    merchant_id = UnicodeAttribute()
    zone_id = UnicodeAttribute()
    name = UnicodeAttribute()
    fence = UnicodeAttribute()


class ZoneEventItem(TableItem):
    """A driver's enter/exit/dwell of a zone, keyed by time; the id is deterministic (written once)."""

    merchant_id = UnicodeAttribute()
    driver_id = UnicodeAttribute()
    zone_id = UnicodeAttribute()
    zone_name = UnicodeAttribute()
    event_id = UnicodeAttribute()
    type = UnicodeAttribute()
    occurred_at = UTCDateTimeAttribute()
    lat = NumberAttribute()
    lng = NumberAttribute()
    expires_at = TTLAttribute()


ALL_MODELS: tuple[type[TableItem], ...] = (
    MerchantItem, ApiKeyItem, DriverItem, DriverTokenItem, ShipmentItem, TrackingTokenItem,
    IdempotencyItem, RouteItem, ActiveRouteItem, PingItem, PositionItem, EventItem, GeofenceStateItem,
    RouteEtaItem, ZoneItem, ZoneCellItem, ZoneEventItem, ContactItem,
)


def as_dict(value: Any) -> dict[str, Any]:
    """A MapAttribute (or a plain mapping, or None) as a plain dict."""
    if value is None:
        return {}
    return dict(value.as_dict()) if hasattr(value, "as_dict") else dict(value)


def _stamp(moment: datetime) -> str:
    """Millisecond UTC time in a sort key: keys sort in the order things happened."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


ZONE_EVENT_RETENTION_DAYS = 90


def zone_event_item(merchant_id: str, driver_id: str, event_id: str, kind: str, zone_id: str, zone_name: str,
                    occurred: datetime, lat: float, lng: float) -> ZoneEventItem:
    """A driver's zone event (the pipeline's, or one the driver's own app reported), ordered by time."""
    return ZoneEventItem(driver_pk(driver_id), f"ZONEEVENT#{_stamp(occurred)}#{event_id}", merchant_id=merchant_id,
                         driver_id=driver_id, zone_id=zone_id, zone_name=zone_name, event_id=event_id, type=kind,
                         occurred_at=occurred, lat=lat, lng=lng,
                         expires_at=occurred + timedelta(days=ZONE_EVENT_RETENTION_DAYS))


def event_item(merchant_id: str, shipment_id: str, event_id: str, kind: str, source: str, occurred: datetime,
               recorded: datetime, from_status: str | None = None, to_status: str | None = None,
               data: dict[str, Any] | None = None) -> EventItem:
    """A timeline event; its sort key orders the timeline by when it happened."""
    return EventItem(shipment_pk(shipment_id), f"EVENT#{_stamp(occurred)}#{event_id}", merchant_id=merchant_id,
                     shipment_id=shipment_id, event_id=event_id, type=kind, from_status=from_status,
                     to_status=to_status, occurred_at=occurred, recorded_at=recorded, source=source, data=data)


# Key builders: the one place key formats are spelled out.
def merchant_pk(merchant_id: str) -> str:
    return f"MERCHANT#{merchant_id}"


def driver_pk(driver_id: str) -> str:
    return f"DRIVER#{driver_id}"


def shipment_pk(shipment_id: str) -> str:
    return f"SHIPMENT#{shipment_id}"


def ping_sk(fix_ms: int) -> str:
    return f"PING#{fix_ms:013d}"


# A merchant's shipments of one status (GSI1) or one delivery date (GSI2) are spread over this many key
# values, the shard a hash of the shipment id: a 100k-shipment morning import or a busy day's transitions
# write SHIPMENT_INDEX_SHARDS x 1,000 units/s before one key value throttles. Readers query every shard and
# merge by sort key (repository.list_shipments; docs/data-model.md, "Sharded shipment index keys").
SHIPMENT_INDEX_SHARDS = 4


def shipment_index_shard(shipment_id: str) -> int:
    return int(hashlib.sha256(shipment_id.encode()).hexdigest()[:8], 16) % SHIPMENT_INDEX_SHARDS


def status_gsi_pk(merchant_id: str, status: str, shipment_id: str) -> str:
    """The shipment's GSI1 key value for its status (its shard's)."""
    return status_gsi_shard_pk(merchant_id, status, shipment_index_shard(shipment_id))


def status_gsi_shard_pk(merchant_id: str, status: str, shard: int) -> str:
    return f"MERCHANT#{merchant_id}#STATUS#{status}#{shard}"


def date_gsi_pk(merchant_id: str, day: str, shipment_id: str) -> str:
    """The shipment's GSI2 key value for its delivery date (its shard's)."""
    return date_gsi_shard_pk(merchant_id, day, shipment_index_shard(shipment_id))


def date_gsi_shard_pk(merchant_id: str, day: str, shard: int) -> str:
    return f"MERCHANT#{merchant_id}#DATE#{day}#{shard}"


EXTERNAL_REF_SK = "EXTREF"


def external_ref_pk(merchant_id: str, external_ref: str) -> str:
    """Its own partition per (merchant, ref), apart from the busy merchant partition; hashed, so any text is a
    key of fixed length."""
    return f"EXTREF#{merchant_id}#{hashlib.sha256(external_ref.encode()).hexdigest()}"


def contact_pk(merchant_id: str, contact: str) -> str:
    """The recipient-search partition of one exact phone or email of a merchant's recipients (docs/data-model.md
    rows 102-103): hashed, so no contact appears in a key, and one partition per (merchant, contact)."""
    return f"CONTACT#{merchant_id}#{hashlib.sha256(contact.encode()).hexdigest()}"


def recipient_contacts(recipient: dict[str, Any]) -> set[str]:
    """What a recipient can be searched by: the exact E.164 phone, and the email in lower case."""
    found: set[str] = set()
    if isinstance(phone := recipient.get("phone"), str) and phone:
        found.add(phone.strip())
    if isinstance(email := recipient.get("email"), str) and email:
        found.add(email.strip().lower())
    return found


def tracking_pk(token_hash: str) -> str:
    return f"TRACK#{token_hash}"


def driver_routes_pk(merchant_id: str, driver_id: str) -> str:
    return f"MERCHANT#{merchant_id}#DRIVER#{driver_id}#ROUTES"


def route_day_gsi_pk(merchant_id: str, day: str) -> str:
    """GSI2 partition of a merchant's routes of one day (keys only, like the shipments' GSI2 entries)."""
    return f"MERCHANT#{merchant_id}#ROUTEDAY#{day}"


def active_route_pk(merchant_id: str, driver_id: str) -> str:
    return f"ACTIVEROUTE#{merchant_id}#{driver_id}"


ACTIVE_ROUTE_SK = "ACTIVEROUTE"


def cell_gsi_pk(merchant_id: str, cell: str) -> str:
    return f"MERCHANT#{merchant_id}#CELL6#{cell}"


def route_eta_pk(route_id: str) -> str:
    """A route's ETA item: its own partition, apart from the merchant's."""
    return f"ROUTE#{route_id}"


ROUTE_ETA_SK = "ETA"
ROUTE_ETA_RETENTION_DAYS = 7


def zone_cell_pk(merchant_id: str, cell: str) -> str:
    return f"ZONECELL#{merchant_id}#{cell}"


def speed_pk(cell: str) -> str:
    """Observed travel sums of an H3 cell (res 8, or its res-6 parent), shared by all merchants' drivers."""
    return f"SPEED#{cell}"


MERCHANTS_GSI_PK = "MERCHANTS"


def reminders_sk(day: str) -> str:
    """A merchant's marker that the day-before reminders for `day` have all been handled."""
    return f"REMINDERS#{day}"


SPEED_GLOBAL_PK = "SPEED#*"
SERVICE_TIME_SK = "STATS#SERVICE"


# Merchant webhooks (chalicelib/storage/webhooks.py): the endpoint and its delivery log share a partition.
WEBHOOK_ENDPOINT_SK = "ENDPOINT"
WEBHOOK_DUE_SHARDS = 4


def webhooks_pk(merchant_id: str) -> str:
    return f"WEBHOOKS#{merchant_id}"


def webhook_delivery_sk(delivery_id: str) -> str:
    return f"DELIVERY#{delivery_id}"


def webhook_due_gsi_pk(shard: int) -> str:
    """GSI1 partition of deliveries waiting for an attempt (sparse; spread over WEBHOOK_DUE_SHARDS)."""
    return f"WEBHOOK_DUE#{shard}"


def webhook_held_gsi_pk(merchant_id: str) -> str:
    """GSI1 partition of a merchant's deliveries held while its endpoint is paused."""
    return f"WEBHOOK_HELD#{merchant_id}"
