"""The tracking page's static files: a fixed whitelist, content hashes for cache busting.

Public names are flat (`/static/{name}` is one path segment, which is all a Chalice
path parameter can match); each maps to one file under `static/`. Anything not in
the whitelist is `None`, so no request can reach another file.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_STATIC_BASE = "/static"

_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_SVG = "image/svg+xml"  # text: not one of Chalice's binary types, so it is served as a str body

# public name -> (file under static/, Content-Type)
ASSETS: dict[str, tuple[str, str]] = {
    "track.js": ("track.js", _JS),
    "track.css": ("track.css", _CSS),
    "leaflet.js": ("vendor/leaflet/leaflet.js", _JS),
    "leaflet.css": ("vendor/leaflet/leaflet.css", _CSS),
    # The driver web app (chalicelib.web.driver).
    "driver.js": ("driver.js", _JS),
    "driver.css": ("driver.css", _CSS),
    # The dispatcher console (chalicelib.console).
    "console.js": ("console.js", _JS),
    "console.css": ("console.css", _CSS),
    # Messaging: the tracking page's conversation and the driver app's messages (chalicelib.messaging).
    "messages.js": ("messages.js", _JS),
    "driver_messages.js": ("driver_messages.js", _JS),
    "console_messages.js": ("console_messages.js", _JS),
    # Its Performance section: uPlot (vendored from npm) and the script that draws the figures with it.
    "uplot.js": ("vendor/uplot/uplot.js", _JS),
    "uplot.css": ("vendor/uplot/uplot.css", _CSS),
    "performance.js": ("performance.js", _JS),
    # Linked from every page, so browsers do not ask for /favicon.ico (outside the API's routes).
    "favicon.svg": ("favicon.svg", _SVG),
}

# What a browser fetches on the first load of a tracking page with a map (besides the HTML).
FIRST_LOAD_ASSETS = ("track.css", "track.js", "leaflet.css", "leaflet.js", "favicon.svg")

# For the route layer: the files never change under a given ?v= hash.
STATIC_CACHE_CONTROL = "public, max-age=31536000, immutable"


@lru_cache(maxsize=len(ASSETS))
def _read(name: str) -> bytes:
    return (STATIC_DIR / ASSETS[name][0]).read_bytes()


def static_asset(name: str) -> tuple[bytes, str] | None:
    """(body, Content-Type) of a whitelisted asset, or None for any other name."""
    entry = ASSETS.get(name)
    if entry is None:
        return None
    return _read(name), entry[1]


@lru_cache(maxsize=len(ASSETS))
def asset_hash(name: str) -> str:
    """The first 12 hex digits of the asset's SHA-256 (KeyError for a name not whitelisted)."""
    return hashlib.sha256(_read(name)).hexdigest()[:12]


def asset_url(name: str, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """`{static_base}/{name}?v={hash}`: a new URL whenever the file changes, so it may be cached for a year."""
    return f"{static_base.rstrip('/')}/{name}?v={asset_hash(name)}"


def gzip_size(data: bytes) -> int:
    """Size after gzip at level 6 (what API Gateway, CloudFront and most servers send)."""
    return len(gzip.compress(data, compresslevel=6, mtime=0))


def static_headers(content_type: str) -> dict[str, str]:
    """Headers for a static asset answer: cache for a year (the page links it with ?v=<hash>)."""
    return {"Content-Type": content_type, "Cache-Control": STATIC_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
