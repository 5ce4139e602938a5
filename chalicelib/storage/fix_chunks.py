"""The compact encoding of a fix chunk: the fixes one accepted request stored for a driver, as ONE item.

Pure (no AWS): the repository builds and reads the items, the stream pipeline decodes the chunks it receives.

A chunk item is `PK = DRIVER#<did>`, `SK = POINTS#<last fix ms, 13 digits>#<digest of its fix times>` with the
fixes in one string attribute `f`. Keyed by the LAST fix time so that "the chunks that may hold a fix in
[t1, t2]" is one key range, `POINTS#<t1>` to `POINTS#<t2 + CHUNK_MAX_SPAN_MS>~`: a chunk overlapping the window
ends at or after t1 and, spanning at most `CHUNK_MAX_SPAN_MS`, ends before t2 plus that span. For a driver
posting live, the batch's range holds no chunk at all, so the duplicate check reads nothing. The digest makes
the key deterministic in the fix set: a retried request that still missed its first attempt's chunk (an
eventually consistent read) overwrites the same item (a MODIFY, which the stream filter drops) instead of
adding one. `POINTS#` sorts right before `POSITION` (the latest position item) and after every other sort key
under `DRIVER#<did>` (`GEOFENCE`, the old `PING#` items), so for a live batch ONE Query from `POINTS#<first
fix>` to `POSITION` reads both the chunks it may repeat and the position the screening needs.

`f` is one record per fix in fix-time order, `;`-separated; a record is `,`-separated fields:
`fix ms, lat, lng, accuracy, speed, heading, altitude, battery` (trailing absent fields left out, an absent
one in the middle empty). The first fix time is absolute, the next ones are deltas from the previous fix.
Each number is a scaled integer (lat/lng in 1e-7 degrees, speed in cm/s, the others in tenths) written as
the delta from the same field's previous scaled value, when the scaled integer gives back exactly the float
that was sent (anything of at most 7 decimals for lat/lng, 2 for speed, 1 for the others); otherwise the
float's `repr` after a `~` (and the delta base stays). So decoding returns the very floats that were stored,
and 10 fixes of a phone at 1 Hz take about 350 bytes instead of ten ~0.3 KB items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

CHUNK_PREFIX = "POINTS#"
CHUNK_MAX_FIXES = 50  # bounds the item (~1.5 KB at 1 Hz, 2 write units) and a stream record's work
_LAST_KEY_MS = 10**13 - 1  # the largest fix time a 13-digit key holds (the year 2286)
CHUNK_MAX_SPAN_MS = 5 * 60 * 1000  # bounds how far past a window a reader must look (see the module doc)

# lat, lng, accuracy, speed, heading, altitude, battery
SCALES = (10_000_000, 10_000_000, 10, 100, 10, 10, 10)
_MAX_VALUE = 1e8  # scaled by at most 1e7, well inside the integers a float holds exactly (2**53)

# (fix_ms, lat, lng, accuracy, speed, heading, altitude, battery)
FixRow = tuple[int, float, float, float | None, float | None, float | None, float | None, float | None]


def chunk_sk(fix_times: Sequence[int]) -> str:
    """The sort key of the chunk holding exactly these fix times (sorted ascending)."""
    digest = hashlib.blake2b(",".join(map(str, fix_times)).encode(), digest_size=4).hexdigest()
    return f"{CHUNK_PREFIX}{fix_times[-1]:013d}#{digest}"


def chunk_range(since_ms: int, until_ms: int) -> tuple[str, str]:
    """The sort-key range (inclusive) of every chunk that may hold a fix in [since_ms, until_ms]."""
    # Clamped to 13 digits: a 14-digit bound would sort before every 13-digit key and miss the window.
    high = min(until_ms + CHUNK_MAX_SPAN_MS, _LAST_KEY_MS)
    return f"{CHUNK_PREFIX}{max(since_ms, 0):013d}", f"{CHUNK_PREFIX}{high:013d}#~"


def clusters(fix_times: Sequence[int], gap_ms: int) -> list[tuple[int, int]]:
    """(first, last) of each run of sorted fix times whose neighbours are at most `gap_ms` apart."""
    out: list[tuple[int, int]] = []
    for ms in fix_times:
        if out and ms - out[-1][1] <= gap_ms:
            out[-1] = (out[-1][0], ms)
        else:
            out.append((ms, ms))
    return out


def split_chunks(fix_times: Sequence[int]) -> list[slice]:
    """Cut fix times sorted ascending into chunks of at most CHUNK_MAX_FIXES spanning at most CHUNK_MAX_SPAN_MS."""
    out: list[slice] = []
    start = 0
    for i, ms in enumerate(fix_times):
        if i - start >= CHUNK_MAX_FIXES or ms - fix_times[start] > CHUNK_MAX_SPAN_MS:
            out.append(slice(start, i))
            start = i
    if fix_times:
        out.append(slice(start, len(fix_times)))
    return out


def encode_fixes(rows: Iterable[FixRow]) -> str:
    """The `f` attribute of fixes sorted by fix time (see the module doc)."""
    records = []
    previous_ms = 0
    bases = [0, 0, 0, 0, 0, 0, 0]
    scales = SCALES
    for row in rows:
        fields = [str(row[0] - previous_ms)]
        previous_ms = row[0]
        for k, value in enumerate(row[1:]):
            if value is None:
                fields.append("")
            elif -_MAX_VALUE < value < _MAX_VALUE:  # (NaN and infinities fail it, and never reach here)
                scale = scales[k]
                scaled = round(value * scale)
                if scaled / scale == value:
                    fields.append(str(scaled - bases[k]))
                    bases[k] = scaled
                else:
                    fields.append("~" + repr(float(value)))
            else:
                fields.append("~" + repr(float(value)))
        while fields[-1] == "":
            fields.pop()
        records.append(",".join(fields))
    return ";".join(records)


def decode_fixes(text: str) -> list[FixRow]:
    """The fixes of an `f` attribute, in the order stored (fix time ascending)."""
    out: list[FixRow] = []
    if not text:
        return out
    fix_ms = 0
    bases = [0, 0, 0, 0, 0, 0, 0]
    for record in text.split(";"):
        fields = record.split(",")
        fix_ms += int(fields[0])
        values: list[float | None] = [None] * 7
        for k in range(min(len(fields) - 1, 7)):
            token = fields[k + 1]
            if not token:
                continue
            if token[0] == "~":
                values[k] = float(token[1:])
            else:
                bases[k] += int(token)
                values[k] = bases[k] / SCALES[k]
        lat, lng = values[0], values[1]
        if lat is None or lng is None:
            raise ValueError("a fix without coordinates")
        out.append((fix_ms, lat, lng, values[2], values[3], values[4], values[5], values[6]))
    return out


def decode_fix_times(text: str) -> list[int]:
    """Only the fix times of an `f` attribute (the duplicate check needs nothing else)."""
    times: list[int] = []
    fix_ms = 0
    if not text:
        return times
    for record in text.split(";"):
        comma = record.find(",")
        fix_ms += int(record if comma < 0 else record[:comma])
        times.append(fix_ms)
    return times
