"""The driver web app's use cases: per-driver links (create, revoke, check) and the driver's route of today.

The rules are pure (chalicelib.domain.driver_app); this module reads and writes through the repository and
returns edge models. HTTP and HTML stay in app.py and chalicelib.web.driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.times import to_ms
from chalicelib.core.types import Location
from chalicelib.driver_app.models import (
    DriverAppLink,
    DriverAppLinkCreate,
    DriverRouteInfo,
    DriverRouteView,
    DriverStop,
    StopInstructions,
)
from chalicelib.driver_app.rules import (
    RouteCandidate,
    link_version,
    local_day,
    next_stop,
    pick_route,
    sign_link,
    verify_link,
)
from chalicelib.fleet.service import merchant_settings, parse_merchant_settings, require_driver
from chalicelib.geo.day_window import before_window, shown_window
from chalicelib.recipient.models import EtaWindow
from chalicelib.recipient.rules import first_name
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.models import Address, TimeWindow
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import DriverItem, RouteEtaItem, ShipmentItem, as_dict
from chalicelib.web.branding import Branding

S = ShipmentStatus
_ETA_STATUSES = frozenset({S.OUT_FOR_DELIVERY, S.APPROACHING})
_REVOKE_ATTEMPTS = 3


def app_url(settings: Settings, token: str) -> str:
    return f"{settings.public_base_url}/driver/{token}"


def create_app_link(repo: Repository, settings: Settings, merchant_id: str, driver_id: str,
                    body: DriverAppLinkCreate, now: datetime) -> DriverAppLink:
    """A signed link to the driver web app, valid `expires_in_hours`; nothing is stored (the answer is the only
    copy), and revoking the driver's links ends it."""
    driver = require_driver(repo, merchant_id, driver_id)
    expires = (now.astimezone(UTC) + timedelta(hours=body.expires_in_hours)).replace(microsecond=0)
    token = sign_link(settings.token_secret, merchant_id, driver_id, link_version(driver.app_link_version), expires)
    return DriverAppLink(driver_id=driver_id, url=app_url(settings, token), expires_at=expires)


def revoke_app_links(repo: Repository, merchant_id: str, driver_id: str) -> None:
    """End every link issued so far for this driver (its version moves on; links carry the old one)."""
    for _ in range(_REVOKE_ATTEMPTS):
        driver = require_driver(repo, merchant_id, driver_id)
        if repo.bump_app_link_version(driver, link_version(driver.app_link_version)):
            return
    # Only reached while other revocations keep winning, which already ended the same links.
    raise errors.conflict("The driver's links were revoked meanwhile; retry to be sure.")


def link_principal(repo: Repository, token_secret: str, token: str, now: datetime) -> DriverItem | None:
    """The driver a link stands for, if it is well signed, unexpired and of the driver's current version.

    A forged or tampered link is refused before any read; that tells an attacker only what they already know
    (they cannot sign), so unlike tracking links no dummy reads are needed to hide it.
    """
    claims = verify_link(token_secret, token, now)
    if claims is None:
        return None
    driver = repo.get_driver(claims.merchant_id, claims.driver_id)
    if driver is None or link_version(driver.app_link_version) != claims.version:
        return None
    return driver


def link_gone() -> errors.DomainError:
    return errors.not_found("Driver link")


@dataclass(frozen=True)
class DriverPageContext:
    """What the page shell shows before its script loads the route."""

    token: str
    driver: DriverItem
    branding: Branding
    merchant_locale: str = "en"

    def locale(self, accept_language: str | None) -> str:
        """The browser's language when a catalogue has it, else the merchant's default, else English."""
        from chalicelib.web.i18n import negotiate

        fallback = f"{self.merchant_locale};q=0.001"  # below anything the browser asks for
        return negotiate(None, f"{accept_language},{fallback}" if accept_language else fallback)


def resolve_page(repo: Repository, settings: Settings, token: str, now: datetime) -> DriverPageContext:
    """The page behind a link, or the one 404 for a malformed, tampered, expired, revoked or unknown link."""
    driver = link_principal(repo, settings.token_secret, token, now)
    merchant = repo.get_merchant(driver.merchant_id) if driver is not None else None
    if driver is None or merchant is None:
        raise link_gone()
    page_settings = parse_merchant_settings(merchant.settings)
    return DriverPageContext(token, driver, Branding.of(page_settings.branding, merchant.name),
                             page_settings.locale)


# --- the route of today ------------------------------------------------------------------




def _stop(sequence: int, item: ShipmentItem, is_next: bool, etas: RouteEtaItem | None, zone: ZoneInfo,
          now_ms: int) -> DriverStop:
    status = ShipmentStatus(item.status)
    eta = None
    found = etas.window(sequence) if etas is not None and status in _ETA_STATUSES else None
    # The same rule as the recipient's page (geo/day_window.py): bounded, same local day or "later today".
    shown = shown_window(found, int(etas.at_ms), (None, None), zone, now_ms) if etas is not None and found else None
    if shown is not None and shown.kind != "promised":
        eta = EtaWindow(earliest=shown.earliest, expected=shown.expected, latest=shown.latest,
                        later_today=shown.kind == "later_today", time_zone=zone.key, zone_label=shown.zone_label,
                        early=before_window(shown, item.window_start))
    window = None
    if item.window_start is not None and item.window_end is not None:
        window = TimeWindow(start=item.window_start, end=item.window_end)
    given = as_dict(item.recipient_instructions)
    return DriverStop(
        sequence=sequence, shipment_id=item.shipment_id, status=status, is_next=is_next,
        recipient_first_name=first_name(as_dict(item.recipient).get("name")),
        address=Address(**as_dict(item.address)), location=Location(lat=float(item.lat), lng=float(item.lng)),
        time_window=window, eta=eta, instructions=item.instructions,
        recipient_instructions=StopInstructions(gate_code=given.get("gate_code"),
                                                leave_at_door=bool(given.get("leave_at_door")),
                                                note=given.get("note")) if given else None,
    )


def driver_route(repo: Repository, merchant_id: str, driver_id: str, now: datetime) -> DriverRouteView:
    """Today's route (in the merchant's time zone) with its stops in order and which one is next.

    One GetItem (the merchant's settings), one Query (the driver's routes of the day, GSI1), one
    BatchGetItem (the stops), one GetItem (the route's ETA item) and one BatchGetItem (the stops' custody
    requirements and parcels, docs/data-model.md #145); a shipment that left the route
    (rescheduled) is not listed.
    """
    tz_name = merchant_settings(repo, merchant_id).time_zone
    day = local_day(now, ZoneInfo(tz_name))
    routes = {r.route_id: r for r in repo.routes_of_driver(merchant_id, driver_id, day.isoformat())}
    chosen_id = pick_route(RouteCandidate(r.route_id, r.status, r.created_at) for r in routes.values())
    if chosen_id is None:
        return DriverRouteView(day=day, time_zone=tz_name, driver_id=driver_id, route=None, stops=[])
    route = routes[chosen_id]
    order = [str(s) for s in route.stops]
    found = repo.get_shipments(merchant_id, order) if order else {}
    on_route = [found[sid] for sid in order if sid in found and found[sid].route_id == route.route_id]
    upcoming = next_stop([s.shipment_id for s in on_route], {s.shipment_id: s.status for s in on_route})
    etas = repo.route_eta(route.route_id) if on_route else None  # one item per route holds every stop's ETA
    stops = [_stop(int(s.stop_index) if s.stop_index is not None else i, s, s.shipment_id == upcoming, etas,
                   ZoneInfo(tz_name), to_ms(now)) for i, s in enumerate(on_route)]
    from chalicelib.custody.service import stop_requirements

    needs = stop_requirements(repo, merchant_id, [s.shipment_id for s in stops])
    for stop in stops:
        stop.requirements, stop.parcels = needs.get(stop.shipment_id, ([], []))
    info = DriverRouteInfo(id=route.route_id, status=route.status,  # type: ignore[arg-type]
                           planned_start=route.planned_start, started_at=route.started_at)
    return DriverRouteView(day=day, time_zone=tz_name, driver_id=driver_id, route=info, next_shipment_id=upcoming,
                           stops=stops)
