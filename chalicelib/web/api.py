"""The pages' static assets (a fixed whitelist), shared by the tracking page and the driver app."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib.core import errors
from chalicelib.core.config import get_settings
from chalicelib.http.routes import Routes, WebCall, html_response
from chalicelib.web.assets import static_asset, static_headers

blueprint = Blueprint(__name__)
routes = Routes(blueprint)


def static_base() -> str:
    """Where the pages' assets are served, under the path of the public base URL (e.g. the API stage)."""
    return f"{get_settings().public_path}/static"


@routes.web("/static/{name}")
def static_file(call: WebCall, name: str) -> Response:
    """Scripts and stylesheets, cached for a year: links carry ?v=<hash>."""
    found = static_asset(name)
    if found is None:
        raise errors.not_found("File")
    body, content_type = found
    return html_response(body.decode("utf-8"), 200, static_headers(content_type))
