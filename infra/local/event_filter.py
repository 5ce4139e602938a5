"""Lambda event filtering (an event source mapping's FilterCriteria), for the local stream runner.

Lambda keeps a record when ANY filter's pattern matches it; a pattern matches when EVERY key it names
matches the record. A key whose pattern value is an object descends into the record's object of the
same name; a key whose value is a list is a leaf: the record's value there must equal one of the
list's plain values or satisfy one of its operator objects. A record value that is a list matches
when any of its elements does. A key missing from the record matches only `{"exists": false}`.

Operators implemented: plain values (string, number, boolean, null), `prefix`, `suffix`,
`equals-ignore-case`, `anything-but` (a value, a list, or `{"prefix": ...}`), `exists` and `numeric`
(`=`, `<`, `<=`, `>`, `>=`, in pairs for a range). Anything else raises FilterError when the pattern
is compiled, so a new operator in infra/resources.json cannot be ignored silently.
Reference: https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Matcher = Callable[[Any], bool]
_MISSING = object()
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


class FilterError(ValueError):
    """A pattern this module cannot evaluate exactly as Lambda would."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(expected: Any) -> Matcher:
    if _is_number(expected):
        # JSON numbers compare by value (5 and 5.0 are the same number); strings never equal numbers.
        return lambda actual: _is_number(actual) and float(actual) == float(expected)
    return lambda actual: type(actual) is type(expected) and actual == expected


def _text_op(test: Callable[[str, str], bool], argument: Any, name: str) -> Matcher:
    if not isinstance(argument, str):
        raise FilterError(f"{name} takes a string, got {argument!r}")
    return lambda actual: isinstance(actual, str) and test(actual, argument)


def _anything_but(argument: Any) -> Matcher:
    if isinstance(argument, dict):
        if set(argument) != {"prefix"}:
            raise FilterError(f"anything-but supports a value, a list or {{'prefix': ...}}, got {argument!r}")
        prefix = _operator({"prefix": argument["prefix"]})
        return lambda actual: actual is not _MISSING and not prefix(actual)
    excluded = [_plain(v) for v in (argument if isinstance(argument, list) else [argument])]
    return lambda actual: actual is not _MISSING and not any(m(actual) for m in excluded)


def _numeric(argument: Any) -> Matcher:
    if not isinstance(argument, list) or len(argument) not in (2, 4) or len(argument) % 2:
        raise FilterError(f"numeric takes [op, n] or [op, n, op, n], got {argument!r}")
    tests: list[tuple[Callable[[float, float], bool], float]] = []
    for op, bound in zip(argument[::2], argument[1::2], strict=True):
        if op not in _NUMERIC_OPS or not _is_number(bound):
            raise FilterError(f"numeric: unknown comparison {op!r} or non-number {bound!r}")
        tests.append((_NUMERIC_OPS[op], float(bound)))
    return lambda actual: _is_number(actual) and all(test(float(actual), bound) for test, bound in tests)


def _operator(spec: Mapping[str, Any]) -> Matcher:
    if len(spec) != 1:
        raise FilterError(f"an operator object has exactly one key, got {dict(spec)!r}")
    (name, argument), = spec.items()
    if name == "prefix":
        return _text_op(str.startswith, argument, name)
    if name == "suffix":
        return _text_op(str.endswith, argument, name)
    if name == "equals-ignore-case":
        return _text_op(lambda actual, wanted: actual.casefold() == wanted.casefold(), argument, name)
    if name == "anything-but":
        return _anything_but(argument)
    if name == "numeric":
        return _numeric(argument)
    if name == "exists":
        if not isinstance(argument, bool):
            raise FilterError(f"exists takes true or false, got {argument!r}")
        return (lambda actual: actual is not _MISSING) if argument else (lambda actual: actual is _MISSING)
    raise FilterError(f"filter operator {name!r} is not implemented by the local runner")


def _leaf(choices: Sequence[Any]) -> Matcher:
    matchers = [_operator(c) if isinstance(c, dict) else _plain(c) for c in choices]
    if not matchers:
        raise FilterError("an empty list matches nothing; Lambda refuses such a pattern")

    def match(actual: Any) -> bool:
        if isinstance(actual, list):  # an array in the record matches when one of its elements does
            return any(m(element) for element in actual for m in matchers)
        # Only exists/anything-but look at a missing key; every other matcher fails on it.
        return any(m(actual) for m in matchers)

    return match


def _compile_object(pattern: Mapping[str, Any], path: str) -> Matcher:
    if not pattern:
        raise FilterError(f"empty pattern object at {path or 'the top'}")
    fields: list[tuple[str, Matcher]] = []
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            fields.append((key, _compile_object(value, where)))
        elif isinstance(value, list):
            fields.append((key, _leaf(value)))
        else:
            raise FilterError(f"{where}: a pattern value must be an object or a list, got {value!r}")

    def match(record: Any) -> bool:
        if not isinstance(record, dict):
            return False
        return all(matcher(record.get(key, _MISSING)) for key, matcher in fields)

    return match


def compile_pattern(pattern: str | Mapping[str, Any]) -> Matcher:
    """One filter's `Pattern` (the JSON string CloudFormation holds, or its parsed object) as a predicate."""
    parsed = json.loads(pattern) if isinstance(pattern, str) else pattern
    if not isinstance(parsed, dict):
        raise FilterError(f"a pattern is a JSON object, got {parsed!r}")
    return _compile_object(parsed, "")


class EventFilter:
    """FilterCriteria.Filters as Lambda applies them: a record is kept when any pattern matches."""

    def __init__(self, patterns: Iterable[str | Mapping[str, Any]]) -> None:
        self._matchers = [compile_pattern(p) for p in patterns]

    def __bool__(self) -> bool:
        return bool(self._matchers)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """No filters at all keep every record, as a mapping without FilterCriteria does."""
        return not self._matchers or any(m(record) for m in self._matchers)

    @classmethod
    def from_criteria(cls, criteria: Mapping[str, Any] | None) -> EventFilter:
        """From an event source mapping's FilterCriteria property (None or {} = no filtering)."""
        return cls(f["Pattern"] for f in (criteria or {}).get("Filters", []))
