"""Dispatch console weight: what a dispatcher's browser downloads on the console's first load, tiles excluded.

* `console_first_load_kb`: gzip (level 6) bytes / 1024 of the rendered console HTML (German, the longer
  catalogue, with a tile server configured) plus every stylesheet and script it links: console.css,
  console.js, the favicon and the vendored Leaflet (leaflet.css, leaflet.js). The API answers it polls are
  not part of the first load. Pure rendering, no network.

Nothing from chalicelib is imported at module level (see bench/common.py).
"""

from __future__ import annotations

from typing import Any

from bench.common import log

NAMES = ("console_first_load_kb",)
TARGET_KB = 200.0


def run() -> list[dict[str, Any]]:
    from chalicelib.console.page import CONSOLE_ASSETS, ConsoleShell, render_console
    from chalicelib.web.assets import gzip_size, static_asset

    shell = ConsoleShell(csrf_token="c" * 24, api_base="/api", console_base="/api/console", locale="de",
                         tile_url="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                         tile_attribution="© OpenStreetMap contributors")
    html = render_console(shell, static_base="/api/static").encode()
    sizes = {"html": (len(html), gzip_size(html))}
    for name in CONSOLE_ASSETS:
        found = static_asset(name)
        assert found is not None
        sizes[name] = (len(found[0]), gzip_size(found[0]))
    raw, gz = sum(r for r, _ in sizes.values()), sum(g for _, g in sizes.values())
    log(f"console_page: {raw / 1024:.1f} KiB raw, {gz / 1024:.1f} KiB gzip "
        + ", ".join(f"{k} {g / 1024:.1f}" for k, (_, g) in sizes.items()))
    return [
        {"name": "console_first_load_kb", "value": round(gz / 1024, 1), "unit": "KiB", "target": TARGET_KB,
         "extra": {"compression": "gzip -6", "raw_kb": round(raw / 1024, 1),
                   "files_gzip_kb": {k: round(g / 1024, 1) for k, (_, g) in sizes.items()}}},
    ]
