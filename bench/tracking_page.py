"""Tracking page weight: what a recipient's phone downloads on the first visit, map tiles excluded.

* `tracking_page_kb`: gzip (level 6) bytes / 1024 of the rendered HTML plus every
  stylesheet and script it links: track.css, track.js, the merchant theme.css, the favicon and
  the vendored Leaflet (leaflet.css, leaflet.js). The page is the heaviest state:
  out for delivery with the live map, a driver, a long timeline, the instructions
  form and full branding. The delivered state (proof photo, rating form, no map,
  so no Leaflet) is reported as an extra field. Pure rendering, no network.

Nothing from chalicelib is imported at module level (see bench/common.py);
`run()` returns plain dicts whose keys are `bench.common.Result`'s fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import log

NAMES = ("tracking_page_kb",)
TARGET_KB = 150.0


def run() -> list[dict[str, Any]]:
    from chalicelib.recipient.page import (
        PageEvent,
        RescheduleOption,
        TrackingPage,
        first_load_sizes,
        render_theme_css,
        render_tracking_page,
    )
    from chalicelib.web.branding import Branding

    start = datetime(2025, 6, 3, 7, 0, tzinfo=UTC)
    branding = Branding("Example Outdoor Supplies GmbH", "#0b5394", "#b45309",
                        "https://cdn.example.com/brand/logo.png", "support@example.com", "+49 30 1234 5678")
    kinds = ("created", "assigned", "instructions_updated", "out_for_delivery", "approaching")
    live = TrackingPage(
        token="t" * 43, status="approaching", time_zone="Europe/Berlin", locale="en", first_name="Alexandra",
        city="Berlin", eta_low=start + timedelta(hours=6, minutes=10), eta_high=start + timedelta(hours=6, minutes=30),
        promised_start=start + timedelta(hours=5), promised_end=start + timedelta(hours=8), stops_before=3,
        driver_first_name="Max", driver_position=(52.5201, 13.4049), destination=(52.5301, 13.4149),
        timeline=tuple(PageEvent(k, start + timedelta(minutes=37 * i)) for i, k in enumerate(kinds)),
        reschedule_options=tuple(RescheduleOption(f"opt{i}", start + timedelta(days=i + 1),
                                                  start + timedelta(days=i + 1, hours=3)) for i in range(4)),
        instructions_saved=True,
    )
    delivered = TrackingPage(
        token="t" * 43, status="delivered", time_zone="Europe/Berlin", locale="en", first_name="Alexandra",
        city="Berlin", timeline=(*live.timeline, PageEvent("delivered", start + timedelta(hours=6, minutes=21))),
        can_rate=True, delivered_at=start + timedelta(hours=6, minutes=21),
        proof_photo_url="https://doorstep-proof.s3.amazonaws.com/pod/shp_1.jpg?X-Amz-Signature=" + "a" * 64,
    )
    kwargs: dict[str, Any] = {
        "tile_url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "csrf_token": "1748934000." + "c" * 24,
        "status_url": "/api/track/" + "t" * 43 + "/status", "action_base": "/api/track/" + "t" * 43,
        "theme_href": "/api/track/" + "t" * 43 + "/theme.css", "static_base": "/api/static",
        "tile_attribution": "© OpenStreetMap contributors",
    }
    theme = render_theme_css(branding)
    figures = {}
    for name, page in (("live", live), ("delivered", delivered)):
        html = render_tracking_page(page, branding, **kwargs)
        sizes = first_load_sizes(html, theme)
        if name == "delivered":  # no map on this page: the browser does not fetch Leaflet
            sizes = {k: v for k, v in sizes.items() if not k.startswith("leaflet")}
        figures[name] = sizes
        raw, gz = sum(r for r, _ in sizes.values()), sum(g for _, g in sizes.values())
        log(f"tracking_page: {name}: {raw / 1024:.1f} KiB raw, {gz / 1024:.1f} KiB gzip "
            + ", ".join(f"{k} {g / 1024:.1f}" for k, (_, g) in sizes.items()))

    live_kb = sum(g for _, g in figures["live"].values()) / 1024
    delivered_kb = sum(g for _, g in figures["delivered"].values()) / 1024
    return [
        {"name": "tracking_page_kb", "value": round(live_kb, 1), "unit": "KiB", "target": TARGET_KB,
         "extra": {"compression": "gzip -6", "state": "approaching, with map",
                   "raw_kb": round(sum(r for r, _ in figures["live"].values()) / 1024, 1),
                   "files_gzip_kb": {k: round(g / 1024, 1) for k, (_, g) in figures["live"].items()},
                   "delivered_state_kb": round(delivered_kb, 1)}},
    ]
