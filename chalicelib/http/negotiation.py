"""Content negotiation shared by the routes that answer JSON or CSV (reports, analytics, exports)."""

from __future__ import annotations

from collections.abc import Mapping


def wants_csv(headers: Mapping[str, str]) -> bool:
    """CSV when the client lists text/csv before application/json, or without it; JSON otherwise.

    Order, not q-values: the clients that ask for CSV (spreadsheets, curl, the console's download link) send
    one type, and a client that lists both in some order prefers the first.
    """
    accept = headers.get("accept") or headers.get("Accept") or ""
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "text/csv" in kinds and ("application/json" not in kinds
                                    or kinds.index("text/csv") < kinds.index("application/json"))
