"""Doorstep: the Chalice app. It only wires: one Blueprint per feature, the request middleware, the hooks the
HTTP edge needs from the features, the OpenAPI document and the health check.

Each feature's api.py imports its service (and so pynamodb and botocore) on first use, so a cold start pays
only for what the first request needs.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from chalice.app import Chalice, Response

from chalicelib.analytics import api as analytics_api
from chalicelib.console import api as console_api
from chalicelib.core.observability import flush_metrics, logger
from chalicelib.custody import api as custody_api
from chalicelib.driver_app import api as driver_app_api
from chalicelib.driver_reports import api as driver_reports_api
from chalicelib.exceptions import api as exceptions_api
from chalicelib.fleet import api as fleet_api
from chalicelib.http import routes as http_routes
from chalicelib.http.errors import normalize_chalice_error
from chalicelib.ingest import api as ingest_api
from chalicelib.lookup import api as lookup_api
from chalicelib.messaging import api as messaging_api
from chalicelib.notifications import api as notifications_api
from chalicelib.pipeline import api as pipeline_api
from chalicelib.recipient import api as recipient_api
from chalicelib.sequencing import api as sequencing_api
from chalicelib.shipments import api as shipments_api
from chalicelib.web import api as web_api
from chalicelib.webhooks import api as webhooks_api

# powertools Logger owns the "doorstep" logger (the same one as app.log), so Chalice must not configure it.
app = Chalice(app_name="doorstep", configure_logs=False)
# Every answer is text (JSON, HTML, CSS, JS as str bodies), so Chalice's default binary types stay as they are:
# no text type may be binary, or API Gateway would base64 it. API Gateway gzips answers of at least
# `minimum_compression_size` bytes (.chalice/config.json) for clients that accept it, Leaflet included.

for feature in (fleet_api, shipments_api, ingest_api, driver_app_api, recipient_api, notifications_api,
                webhooks_api, pipeline_api, web_api, console_api, exceptions_api, sequencing_api,
                lookup_api, driver_reports_api,
                messaging_api, analytics_api, custody_api):
    app.register_blueprint(feature.blueprint)

http_routes.configure(authenticate=fleet_api.authenticate, error_page=recipient_api.error_page)


@app.middleware("http")
def request_context(event: Any, get_response: Any) -> Response:
    started = time.perf_counter()
    logger.set_correlation_id((event.context or {}).get("requestId"))
    try:
        response = normalize_chalice_error(get_response(event))
    finally:
        flush_metrics()
    logger.info("request", extra={"method": event.method, "route": (event.context or {}).get("resourcePath"),
                                  "status": response.status_code,
                                  "latency_ms": round((time.perf_counter() - started) * 1000, 1)})
    return response


@app.route("/openapi.json", methods=["GET"])
def openapi_document() -> Response:
    from chalicelib.http.openapi import build_openapi

    return Response(body=build_openapi(http_routes.SPECS), headers={"Content-Type": "application/json",
                                                                    "Cache-Control": "public, max-age=300"})


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


# Everything imported so far lives as long as the container: moved out of the collector's generations, the
# first request's (and every later one's) garbage collections no longer traverse it.
gc.freeze()
