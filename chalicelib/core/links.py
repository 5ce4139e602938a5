"""The one builder of the recipient's tracking link: `{DOORSTEP_PUBLIC_BASE_URL}/track/{token}`.

The token is derived from the shipment id and its link version (`security.tracking_token`), so the link
can be rebuilt for a later message while the table keeps only the token's hash.
"""

from __future__ import annotations

from chalicelib.core.config import Settings
from chalicelib.core.security import tracking_token

TRACK_PATH = "/track"


def tracking_page_url(base: str, token: str) -> str:
    """The tracking page of `token` under `base` (the public base URL, or the API's path prefix for a path)."""
    return f"{base}{TRACK_PATH}/{token}"


def tracking_url(settings: Settings, shipment_id: str, version: int) -> str:
    """The recipient's link to a shipment at link version `version` (a new version revokes the old link)."""
    return tracking_page_url(settings.public_base_url, tracking_token(settings.token_secret, shipment_id, version))
