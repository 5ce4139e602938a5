"""Reading untrusted JSON: the one strict reader and value screen of every JSON edge.

Every JSON request body (the API's routes through `chalicelib.http.routes`, the OsmAnd JSON form and OwnTracks
messages through `chalicelib.ingest.protocols`) is read by `loads` and screened by `value_problems`, so a hostile
value is refused at the door, naming the field, instead of failing deep inside (a `RecursionError` in the parser,
an `OverflowError` in a float conversion, a `UnicodeEncodeError` or a DynamoDB `ValidationException` on write).

The rules are I-JSON (RFC 7493) plus what DynamoDB can store:

* **Structure** (`loads`, `ErrorKind.MALFORMED`, 400): UTF-8 without a byte order mark; valid JSON without the
  `NaN` / `Infinity` extensions; no member name twice in one object; nesting at most `MAX_DEPTH` levels.
* **Values** (`value_problems`, `ErrorKind.INVALID`, 422 naming the field, e.g. `pings.3.lat`):
  strings (member names too) without lone surrogates, Unicode noncharacters or control characters (tab,
  line feed and carriage return are allowed, so multi-line text works); integers within +-(2**53 - 1), the
  range every JSON implementation reads exactly; floats finite and, unless zero, of a magnitude DynamoDB can
  store (`DYNAMO_MIN_MAGNITUDE` to `DYNAMO_MAX_MAGNITUDE`). Such floats are refused, not rounded: `1e-200`
  is no plausible latitude, speed or radius, and refusing it names the field to the client that sent it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from chalicelib.core.errors import DomainError, ErrorKind, FieldProblem

MAX_DEPTH = 32  # a GeoJSON MultiPolygon zone needs 7; notification templates 4
MAX_SAFE_INTEGER = 2**53 - 1
DYNAMO_MIN_MAGNITUDE = 1e-130  # DynamoDB numbers: positive 1E-130 to 9.9999999999999999999999999999999999999E+125
DYNAMO_MAX_MAGNITUDE = 9.99e125
MAX_PROBLEMS = 20  # a refusal names at most this many fields

_BOM = b"\xef\xbb\xbf"
# C0 controls but tab, LF, CR; DEL; C1 controls; surrogates (only lone ones reach a str); noncharacters.
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


class _Refused(ValueError):
    """Raised from inside the parser's hooks; turned into a 400 naming the rule."""


def malformed(reason: str, field_name: str = "body") -> DomainError:
    return DomainError(ErrorKind.MALFORMED, "bad_request", f"The request body is not acceptable JSON: {reason}.",
                       [FieldProblem(field_name, reason)])


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the member name {json.dumps(key)[:80]} appears twice in one object")
        out[key] = value
    return out


def loads(raw: bytes | str) -> Any:
    """Parse a JSON body under the structural rules; raises `DomainError(MALFORMED)` (400) naming the rule."""
    if isinstance(raw, bytes | bytearray):
        if raw.startswith(_BOM):
            raise malformed("a UTF-8 byte order mark is not allowed (RFC 8259); send plain UTF-8")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise malformed(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        raise malformed("a byte order mark is not allowed (RFC 8259)")
    try:
        data = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_refuse_constant)
    except RecursionError:
        raise malformed(f"nested deeper than {MAX_DEPTH} levels") from None
    except _Refused as exc:
        raise malformed(str(exc)) from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing more than 4300 digits
        raise malformed(f"not valid JSON ({str(exc)[:160]})") from None
    if depth_exceeds(data, MAX_DEPTH):
        raise malformed(f"nested deeper than {MAX_DEPTH} levels")
    return data


def depth_exceeds(data: Any, limit: int) -> bool:
    """True when arrays and objects nest deeper than `limit` (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def text_problem(value: str) -> str | None:
    """Why a string cannot be accepted as text, or None."""
    bad = _BAD_CHAR.search(value)
    if bad is None:
        return None
    char = bad.group()
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone surrogate (U+{ord(char):04X} at {bad.start()}): not valid Unicode text"
    if "\ufdd0" <= char <= "\ufdef" or char in "\ufffe\uffff":
        return f"contains a Unicode noncharacter (U+{ord(char):04X} at {bad.start()})"
    return f"contains a control character (U+{ord(char):04X} at {bad.start()})"


def number_problem(value: int | float) -> str | None:
    """Why a JSON number cannot be accepted (its range, not its meaning), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            return f"integer out of range: at most {MAX_SAFE_INTEGER} in magnitude"
        return None
    if not math.isfinite(value):
        return "number out of range: must be finite"
    magnitude = abs(value)
    if magnitude != 0 and not DYNAMO_MIN_MAGNITUDE <= magnitude <= DYNAMO_MAX_MAGNITUDE:
        return (f"number out of range: a non-zero number must be between {DYNAMO_MIN_MAGNITUDE:g} and "
                f"{DYNAMO_MAX_MAGNITUDE:g} in magnitude")
    return None


def value_problems(data: Any, prefix: str = "", *, numbers: bool = True) -> list[FieldProblem]:
    """Every value (and member name) that breaks a value rule, as problems naming the field (`a.0.b`).

    `numbers=False` screens text only (for the tracker protocols, whose numbers are judged fix by fix).
    """
    if type(data) is dict and _flat_and_clean(data, numbers):
        return []  # the common case of a ping: proven clean without building a path per value
    return walk_values(data, prefix, numbers=numbers)


def walk_values(data: Any, prefix: str = "", *, numbers: bool = True) -> list[FieldProblem]:
    """`value_problems` without its fast path: every node visited, every problem named."""
    problems: list[FieldProblem] = []
    stack: list[tuple[Any, str]] = [(data, prefix)]
    while stack and len(problems) < MAX_PROBLEMS:
        node, path = stack.pop()
        if isinstance(node, str):
            reason = text_problem(node)
        elif isinstance(node, int | float):
            reason = number_problem(node) if numbers else None
        elif isinstance(node, dict):
            children = []
            for key, child in node.items():
                child_path = f"{path}.{key}" if path else str(key)
                key_reason = text_problem(key)
                if key_reason is not None:
                    problems.append(FieldProblem(_printable(child_path), f"member name {key_reason}"))
                    continue
                children.append((child, child_path))
            stack.extend(reversed(children))
            continue
        elif isinstance(node, list):
            stack.extend(reversed([(child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(node)]))
            continue
        else:
            continue
        if reason is not None:
            problems.append(FieldProblem(path or "body", reason))
    return problems


def _flat_and_clean(data: dict[Any, Any], numbers: bool) -> bool:
    """True when `data` is an object of scalars that breaks no value rule (then it has no problem to name).

    False means "not proven": nested values or anything suspicious go through the full walker, which names
    the fields, so the answer for a bad value is exactly the walker's.
    """
    search = _BAD_CHAR.search
    for key, value in data.items():
        if type(key) is not str or search(key) is not None:
            return False
        kind = type(value)
        if kind is float:
            if numbers and not (value == 0.0 or DYNAMO_MIN_MAGNITUDE <= abs(value) <= DYNAMO_MAX_MAGNITUDE):
                return False  # NaN fails every comparison, so it lands here too
        elif kind is str:
            if search(value) is not None:
                return False
        elif kind is int:
            if numbers and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                return False
        elif value is not None and kind is not bool:
            return False  # a list, an object, or a subclass: the walker decides
    return True


def _printable(path: str) -> str:
    """A field path safe to echo back (a bad member name is shown escaped)."""
    return _BAD_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", path)


def refuse_values(data: Any, prefix: str = "", *, numbers: bool = True) -> None:
    """Raise `DomainError(INVALID)` (422) naming every field that breaks a value rule."""
    problems = value_problems(data, prefix, numbers=numbers)
    if problems:
        raise DomainError(ErrorKind.INVALID, "validation_failed", "The request has invalid fields.", problems)
