"""Which answer a client asked for: JSON unless it lists CSV first (or only CSV)."""

from __future__ import annotations

import pytest

from chalicelib.http.negotiation import wants_csv


@pytest.mark.parametrize(("accept", "csv"), [
    (None, False), ("", False), ("*/*", False), ("application/json", False),
    ("text/csv", True), ("text/csv; charset=utf-8", True), ("TEXT/CSV", True),
    ("text/csv, application/json", True), ("application/json, text/csv", False),
    ("text/html, text/csv;q=0.9", True), ("text/csvx", False),
])
def test_csv_only_when_listed_before_json(accept: str | None, csv: bool) -> None:
    headers = {} if accept is None else {"accept": accept}
    assert wants_csv(headers) is csv
