"""Learned travel statistics in DynamoDB: observed speeds per H3 cell and hour, service time per merchant.

Both are stored as plain counters that workers ADD to (see Repository.add_to_counters),
so a batch processed by two workers in any order gives the same sums. Items:

- `SPEED#<res-8 cell>` / `SPEED`: seconds `s`, metres `m`, segments `n` in total and
  per hour of week (`s37`, `m37`, `n37`);
- `SPEED#<res-6 cell>` / `SPEED`: the same totals for the district (the fallback);
- `SPEED#*` / `SHARD#<k>`: all segments, spread over a few shards so one hot item
  does not throttle a large fleet; read back with one Query;
- `MERCHANT#<mid>` / `STATS#SERVICE`: `n` dwells at stops and `logsum` of their log.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import h3

from chalicelib.geo.eta import PARENT_RES, SpeedTable, learned_service_s
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import SERVICE_TIME_SK, SPEED_GLOBAL_PK, merchant_pk, speed_pk

GLOBAL_SHARDS = 8
_ROW_SK = "SPEED"

Counter = tuple[str, str, dict[str, float]]


def speed_counters(delta: SpeedTable, shard: int | None = None) -> list[Counter]:
    """The counter additions for the sums of a batch's SpeedTable (one update per stored item)."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, seconds, metres, segments in delta.sums():
        if key == "*":
            item = (SPEED_GLOBAL_PK, f"SHARD#{random.randrange(GLOBAL_SHARDS) if shard is None else shard}")
            suffix = ""
        elif "@" in key:
            cell, hour = key.split("@", 1)
            item, suffix = (speed_pk(cell), _ROW_SK), hour
        else:
            item, suffix = (speed_pk(key), _ROW_SK), ""
        amounts = rows.setdefault(item, {})
        amounts[f"s{suffix}"] = amounts.get(f"s{suffix}", 0.0) + round(seconds, 3)
        amounts[f"m{suffix}"] = amounts.get(f"m{suffix}", 0.0) + round(metres, 3)
        amounts[f"n{suffix}"] = amounts.get(f"n{suffix}", 0.0) + segments
    return [(pk, sk, amounts) for (pk, sk), amounts in rows.items()]


def load_speed_table(repo: Repository, cells: Iterable[str], hours: Iterable[int]) -> SpeedTable:
    """A SpeedTable holding what is stored for these res-8 cells (only the given hours of week), their
    districts and the global sums: enough for the ETA of a route through these cells."""
    wanted = set(cells)
    parents = {str(h3.cell_to_parent(c, PARENT_RES)) for c in wanted}
    hour_set = set(hours)
    rows = repo.get_counters([(speed_pk(c), _ROW_SK) for c in sorted(wanted | parents)])
    sums: list[tuple[str, float, float, float]] = []
    for (pk, _), row in rows.items():
        cell = pk.removeprefix("SPEED#")
        if "s" in row:
            sums.append((cell, row["s"], row.get("m", 0.0), row.get("n", 0.0)))
        if cell in wanted:
            sums.extend((f"{cell}@{h}", row[f"s{h}"], row.get(f"m{h}", 0.0), row.get(f"n{h}", 0.0))
                        for h in hour_set if f"s{h}" in row)
    shards = repo.query_counters(SPEED_GLOBAL_PK)
    if shards:
        sums.append(("*", sum(r.get("s", 0.0) for r in shards), sum(r.get("m", 0.0) for r in shards),
                     sum(r.get("n", 0.0) for r in shards)))
    return SpeedTable.from_sums(sums)


def service_time_counter(merchant_id: str, log_dwell: float) -> Counter:
    return (merchant_pk(merchant_id), SERVICE_TIME_SK, {"n": 1.0, "logsum": log_dwell})


def load_service_time_s(repo: Repository, merchant_id: str, prior_s: float) -> float:
    row = repo.get_counters([(merchant_pk(merchant_id), SERVICE_TIME_SK)]).get(
        (merchant_pk(merchant_id), SERVICE_TIME_SK), {})
    return learned_service_s(row.get("n", 0.0), row.get("logsum", 0.0), prior_s=prior_s)
