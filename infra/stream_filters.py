"""Lambda event-source FilterCriteria, matched in process: the same patterns as infra/resources.json.

A pure module (no AWS SDK) so that tests check the patterns against sample records and the local stream
runner can apply exactly what Lambda applies in the cloud (`mapping_filters` reads a mapping's patterns,
`admits` decides one record). Lambda delivers a record when ANY filter of the mapping matches it; a pattern
matches when every key it names matches (nested objects recurse, a list is a set of alternatives).

The subset of the EventBridge pattern language implemented is the one Lambda documents for stream
filters: exact values (strings, numbers, booleans, null), `prefix`, `suffix`, `anything-but` (a value or a
list), `exists` (true/false), `equals-ignore-case` and `numeric` ranges. An operator outside it raises
ValueError, so a pattern this module cannot judge is never silently admitted or dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESOURCES = Path(__file__).resolve().parent / "resources.json"
_MISSING = object()


def mapping_filters(mapping_name: str, resources_path: Path = RESOURCES) -> list[dict[str, Any]]:
    """The parsed filter patterns of one event source mapping of infra/resources.json ([]: no filter)."""
    resources = json.loads(resources_path.read_text(encoding="utf-8"))["Resources"]
    criteria = resources[mapping_name]["Properties"].get("FilterCriteria") or {}
    return [json.loads(f["Pattern"]) for f in criteria.get("Filters", [])]


def admits(filters: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    """Would Lambda deliver `record` (a stream record in Lambda's shape) through these filters?"""
    return not filters or any(matches(pattern, record) for pattern in filters)


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    for key, rule in pattern.items():
        value = event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(rule, Mapping):
            if not isinstance(value, Mapping) or not matches(rule, value):
                return False
        elif isinstance(rule, list):
            if not any(_value_matches(option, value) for option in rule):
                return False
        else:
            raise ValueError(f"a filter rule must be an object or a list, not {rule!r}")
    return True


def _value_matches(option: Any, value: Any) -> bool:
    if not isinstance(option, Mapping):
        if value is _MISSING:
            return False
        if isinstance(value, list):  # an array in the record matches when any element does
            return any(_value_matches(option, v) for v in value)
        return bool(option == value) and type(option) is type(value)
    if len(option) != 1:
        raise ValueError(f"one operator per object: {option!r}")
    ((operator, operand),) = option.items()
    if operator == "exists":
        return (value is not _MISSING) is bool(operand)
    if value is _MISSING:
        return False
    if operator == "prefix":
        return isinstance(value, str) and value.startswith(str(operand))
    if operator == "suffix":
        return isinstance(value, str) and value.endswith(str(operand))
    if operator == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(operand).lower()
    if operator == "anything-but":
        excluded = operand if isinstance(operand, list) else [operand]
        if excluded and isinstance(excluded[0], Mapping):  # {"anything-but": {"prefix": ...}}
            return not _value_matches(excluded[0], value)
        return value not in excluded
    if operator == "numeric":
        return _numeric(operand, value)
    raise ValueError(f"filter operator {operator!r} is not implemented here")


def _numeric(operand: Sequence[Any], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    checks = {"<": float.__lt__, "<=": float.__le__, "=": float.__eq__, ">": float.__gt__, ">=": float.__ge__}
    return all(checks[operand[i]](float(value), float(operand[i + 1])) for i in range(0, len(operand), 2))
