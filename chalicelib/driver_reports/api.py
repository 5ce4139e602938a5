"""Driver reports: trips, stops, behaviour events and day summaries per driver, the weekly scorecard, and
the report settings. Every report answers CSV with `Accept: text/csv` (the page's rows; the next page's
cursor in the `X-Next-Cursor` header)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.http.negotiation import wants_csv
from chalicelib.http.routes import Call, Routes
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from pydantic import BaseModel

    from chalicelib.driver_reports.models import (
        BehaviourEventPage,
        DriverSummary,
        ReportSettings,
        Scorecard,
        StopPage,
        TripPage,
    )

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.driver_reports.models")


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def csv_response(rows: list[BaseModel], columns_of: type[BaseModel], next_cursor: str | None,
                 filename: str) -> Response:
    """RFC 4180 CSV of the rows (nested objects flattened to `parent_child` columns), header row always."""
    import csv
    import io

    sample = columns_of.model_construct() if not rows else rows[0]
    columns = list(_flat(sample.model_dump(mode="json")).keys()) if rows else _columns(columns_of)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        flat = _flat(row.model_dump(mode="json"))
        writer.writerow(["" if flat.get(c) is None else _cell(flat.get(c)) for c in columns])
    headers: dict[str, str | list[str]] = {"Content-Type": "text/csv; charset=utf-8",
               "Content-Disposition": f'attachment; filename="{filename}.csv"'}
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    return Response(body=buffer.getvalue(), status_code=200, headers=headers)


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell starting with = + - @ as a formula: ids and text are quoted with a '
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _columns(model: type[BaseModel]) -> list[str]:
    columns: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            columns += [f"{name}_{sub}" for sub in annotation.model_fields]
        else:
            columns.append(name)
    return columns


@routes.route("/v1/drivers/{driver_id}/reports/trips", "GET", summary="The driver's trips, oldest first "
              "(CSV with Accept: text/csv)", tag="reports", query="ReportQuery", response="TripPage",
              errors_=(400, 401, 404, 422),
              extra_headers=("Accept",), text_media=("text/csv",))
def list_trips(call: Call, driver_id: str) -> TripPage | Response:
    from chalicelib.driver_reports import service
    from chalicelib.driver_reports.models import TripOut

    page = service.trips(get_repository(), get_settings(), call.merchant_id, driver_id, call.query)
    return csv_response(list(page.items), TripOut, page.next_cursor, "trips") if wants_csv(call.headers) else page


@routes.route("/v1/drivers/{driver_id}/reports/stops", "GET", summary="The driver's stops, oldest first "
              "(CSV with Accept: text/csv)", tag="reports", query="ReportQuery", response="StopPage",
              errors_=(400, 401, 404, 422),
              extra_headers=("Accept",), text_media=("text/csv",))
def list_stops(call: Call, driver_id: str) -> StopPage | Response:
    from chalicelib.driver_reports import service
    from chalicelib.driver_reports.models import StopOut

    page = service.stops(get_repository(), get_settings(), call.merchant_id, driver_id, call.query)
    return csv_response(list(page.items), StopOut, page.next_cursor, "stops") if wants_csv(call.headers) else page


@routes.route("/v1/drivers/{driver_id}/reports/summary", "GET", summary="The driver's days: distance, driving "
              "time, hours on duty, stops, behaviour counts (CSV with Accept: text/csv)", tag="reports",
              query="SummaryQuery", response="DriverSummary", errors_=(400, 401, 404, 422),
              extra_headers=("Accept",), text_media=("text/csv",))
def driver_summary(call: Call, driver_id: str) -> DriverSummary | Response:
    from chalicelib.driver_reports import service
    from chalicelib.driver_reports.models import DaySummaryOut

    summary = service.summary(get_repository(), call.merchant_id, driver_id, call.query)
    return csv_response(list(summary.days), DaySummaryOut, None, "summary") if wants_csv(call.headers) else summary


@routes.route("/v1/drivers/{driver_id}/behaviour-events", "GET", summary="The driver's speeding, harsh braking "
              "and acceleration, long idle events, oldest first (CSV with Accept: text/csv)", tag="reports",
              query="BehaviourQuery", response="BehaviourEventPage", errors_=(400, 401, 404, 422),
              extra_headers=("Accept",), text_media=("text/csv",))
def list_behaviour_events(call: Call, driver_id: str) -> BehaviourEventPage | Response:
    from chalicelib.driver_reports import service
    from chalicelib.driver_reports.models import BehaviourEventOut

    page = service.behaviour_events(get_repository(), get_settings(), call.merchant_id, driver_id, call.query)
    return csv_response(list(page.items), BehaviourEventOut, page.next_cursor, "behaviour-events") \
        if wants_csv(call.headers) else page


@routes.route("/v1/reports/scorecard", "GET", summary="The weekly scorecard: every driver's distance, hours, "
              "behaviour per 100 km and score (CSV with Accept: text/csv)", tag="reports", query="ScorecardQuery",
              response="Scorecard", errors_=(400, 401, 422),
              extra_headers=("Accept",), text_media=("text/csv",))
def weekly_scorecard(call: Call) -> Scorecard | Response:
    from chalicelib.driver_reports import service
    from chalicelib.driver_reports.models import ScorecardRow

    card = service.scorecard(get_repository(), get_settings(), call.merchant_id, call.query)
    return csv_response(list(card.items), ScorecardRow, card.next_cursor, f"scorecard-{card.week}") \
        if wants_csv(call.headers) else card


@routes.route("/v1/reports/settings", "GET", summary="The driver reports' thresholds", tag="reports",
              response="ReportSettings", errors_=(401,))
def get_report_settings(call: Call) -> ReportSettings:
    from chalicelib.driver_reports import service

    return service.get_settings_(get_repository(), call.merchant_id)


@routes.route("/v1/reports/settings", "PUT", summary="Replace the driver reports' thresholds (speeding km/h and "
              "seconds, harsh braking and acceleration in g, long idle minutes)", tag="reports",
              body="ReportSettings", response="ReportSettings", errors_=(400, 401, 413, 415, 422))
def put_report_settings(call: Call) -> ReportSettings:
    from chalicelib.driver_reports import service

    return service.put_settings(get_repository(), call.merchant_id, call.body)
