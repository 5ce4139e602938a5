"""Who is calling: a merchant's API key or a driver's token or app link, as (merchant id, driver id).

Apart from `fleet.service` so that answering a cold container's first ping does not build the fleet's
models and caches, which authentication never uses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.security import hash_secret

if TYPE_CHECKING:
    from chalicelib.storage.repository import Repository


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise errors.unauthorized("The Authorization header is missing.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def authenticate_merchant(repo: Repository, authorization: str | None) -> str:
    token = bearer_token(authorization)
    merchant_id = repo.merchant_for_key(hash_secret(token)) if len(token) <= 200 else None
    if merchant_id is None:
        raise errors.unauthorized("The API key is not valid.")
    return merchant_id


def authenticate_driver(repo: Repository, authorization: str | None,
                        settings: Settings | None = None) -> tuple[str, str]:
    """(merchant id, driver id) for the driver's own token or a driver app link (the web app's credential)."""
    from chalicelib.driver_app.rules import looks_like_link

    token = bearer_token(authorization)
    if looks_like_link(token):
        from chalicelib.core.config import get_settings
        from chalicelib.driver_app.service import link_principal

        secret = (settings or get_settings()).token_secret
        driver = link_principal(repo, secret, token, datetime.now(UTC))
        found = (driver.merchant_id, driver.driver_id) if driver is not None else None
        if found is None:
            raise errors.unauthorized("The driver link is not valid (expired or revoked); ask for a new one.")
        return found
    found = repo.driver_for_token(hash_secret(token)) if len(token) <= 200 else None
    if found is None:
        raise errors.unauthorized("The driver token is not valid.")
    return found
