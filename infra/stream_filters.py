"""The FilterCriteria of infra/resources.json's event source mappings, read and applied in process.

A thin reading of the deployed patterns over the one filter engine, `infra.local.event_filter` (Lambda's
semantics: a record is delivered when ANY filter matches; an operator the engine does not implement raises),
so tests, benchmarks and the local stream runner judge records exactly alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.local.event_filter import EventFilter, compile_pattern

RESOURCES = Path(__file__).resolve().parent / "resources.json"


def mapping_filters(mapping_name: str, resources_path: Path = RESOURCES) -> list[dict[str, Any]]:
    """The parsed filter patterns of one event source mapping of infra/resources.json ([]: no filter)."""
    resources = json.loads(resources_path.read_text(encoding="utf-8"))["Resources"]
    criteria = resources[mapping_name]["Properties"].get("FilterCriteria") or {}
    return [json.loads(f["Pattern"]) for f in criteria.get("Filters", [])]


def admits(filters: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    """Would Lambda deliver `record` (a stream record in Lambda's shape) through these filters?"""
    return EventFilter(filters).matches(record)


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Does one pattern match the event? Raises ValueError for a rule outside the implemented language."""
    return compile_pattern(pattern)(event)
