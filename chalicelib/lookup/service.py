"""Lookup use cases: the merchant's settings (slug claim, allowed origins) and one recipient's lookup.

A lookup does the same reads on every path, whether the order number exists, belongs to another merchant,
the second factor is wrong or the link has expired: the client's attempt counter, the order's miss counter,
the order's claim and a shipment (under a key that does not exist when there is no claim), then both factor
comparisons in constant time; every miss then counts on the order's miss counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.links import tracking_url
from chalicelib.fleet.models import MerchantSettings
from chalicelib.fleet.service import parse_merchant_settings
from chalicelib.lookup.models import LookupSettings, LookupSettingsOut
from chalicelib.lookup.rules import (
    CLIENT_LIMIT,
    ORDER_LOCK,
    factor_matches,
    hashed_client,
    hashed_order,
    normalize_order,
    shipment_factors,
    valid_slug,
)
from chalicelib.lookup.store import LookupChanged, LookupStore, SlugTaken, StoredLookup, client_pk
from chalicelib.recipient.rules import link_expired
from chalicelib.shipments.lifecycle import CLOSED, ShipmentStatus
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import as_dict
from chalicelib.web.branding import Branding

_NOBODY = "-"
LOOKUP_PATH = "/lookup"


def store(repo: Repository) -> LookupStore:
    return LookupStore(repo.client)


def page_url(base: str, slug: str) -> str:
    return f"{base}{LOOKUP_PATH}/{slug}"


# --- the merchant's settings ---


def _out(settings: Settings, stored: StoredLookup) -> LookupSettingsOut:
    base = page_url(settings.public_base_url, stored.slug) if stored.slug else None
    return LookupSettingsOut(slug=stored.slug, allowed_origins=list(stored.allowed_origins), page_url=base,
                             embed_script_url=f"{base}/embed.js" if base else None,
                             embed_frame_url=f"{base}/embed" if base else None)


def lookup_settings(repo: Repository, settings: Settings, merchant_id: str) -> LookupSettingsOut:
    return _out(settings, store(repo).settings(merchant_id))


def replace_lookup_settings(repo: Repository, settings: Settings, merchant_id: str, body: LookupSettings,
                            now: datetime) -> LookupSettingsOut:
    """Set the slug (claimed for this merchant alone: 409 when another holds it) and the allowed origins."""
    s = store(repo)
    new = StoredLookup(body.slug, tuple(dict.fromkeys(body.allowed_origins)))
    for _ in range(3):
        old = s.settings(merchant_id, consistent=True)
        try:
            s.replace_settings(merchant_id, old, new, now.astimezone(UTC).isoformat())
        except SlugTaken:
            raise errors.conflict("Another merchant uses this slug; choose another.", "slug", "taken",
                                  code="slug_taken") from None
        except LookupChanged:
            continue
        return _out(settings, new)
    raise errors.conflict("The lookup settings kept changing; send them again.", code="settings_changed")


# --- a recipient's lookup ---


@dataclass(frozen=True)
class LookupPage:
    """A merchant's lookup page: who it belongs to and how it looks."""

    slug: str
    merchant_id: str
    merchant_name: str
    settings: MerchantSettings
    allowed_origins: tuple[str, ...]

    @property
    def branding(self) -> Branding:
        return Branding.of(self.settings.branding, self.merchant_name)


def open_page(repo: Repository, slug: str) -> LookupPage:
    """The page of `slug`, or the one 404 (an unknown or malformed slug, or a merchant that gave it up)."""
    s = store(repo)
    merchant_id = s.merchant_of_slug(slug) if valid_slug(slug) else None
    merchant = repo.get_merchant(merchant_id) if merchant_id else None
    stored = s.settings(merchant_id) if merchant_id else StoredLookup(None, ())
    if merchant is None or merchant_id is None or stored.slug != slug:
        raise errors.not_found("Lookup page")
    return LookupPage(slug, merchant_id, merchant.name, parse_merchant_settings(merchant.settings),
                      stored.allowed_origins)


class Outcome(StrEnum):
    FOUND = "found"
    MISS = "miss"  # unknown order, wrong factor, another merchant's order, expired link: one answer
    LOCKED = "locked"  # this order number had too many misses lately
    TOO_MANY = "too_many"  # this client made too many attempts


@dataclass(frozen=True)
class LookupResult:
    outcome: Outcome
    tracking_url: str | None = None
    retry_after_s: int | None = None


def find(repo: Repository, settings: Settings, page: LookupPage, order_typed: str, factor: str,
         source_ip: str | None, now: datetime) -> LookupResult:
    s, now_s = store(repo), int(now.timestamp())
    start, end = CLIENT_LIMIT.window(now_s)
    client = hashed_client(settings.token_secret, source_ip)
    if not repo.count_failure(client_pk(client), f"WINDOW#{start}", CLIENT_LIMIT.attempts, end + 3600):
        return LookupResult(Outcome.TOO_MANY, retry_after_s=max(1, end - now_s))
    order = normalize_order(order_typed)
    order_hash = hashed_order(settings.token_secret, page.merchant_id, order)
    misses = s.misses(order_hash)
    shipment_id = s.shipment_id_of_order(page.merchant_id, order) if order else None
    shipment = repo.get_shipment(page.merchant_id, shipment_id or _NOBODY)
    postcode, phone = shipment_factors(as_dict(shipment.address) if shipment else None,
                                       as_dict(shipment.recipient) if shipment else None)
    matched = factor_matches(factor, postcode, phone)
    live = False
    if shipment is not None and shipment.merchant_id == page.merchant_id:
        status = ShipmentStatus(shipment.status)
        closed_at = shipment.final_at or (shipment.updated_at if status in CLOSED else None)
        live = not link_expired(status, closed_at, page.settings.link_expiry_days, now)
    if ORDER_LOCK.locked(misses.misses, misses.quiet_until, now_s):
        return LookupResult(Outcome.LOCKED, retry_after_s=max(1, misses.quiet_until - now_s))
    if matched and live and shipment is not None:
        return LookupResult(Outcome.FOUND, tracking_url(settings, shipment.shipment_id, int(shipment.token_version)))
    s.record_miss(order_hash, now_s, ORDER_LOCK.lock_s)
    return LookupResult(Outcome.MISS)
