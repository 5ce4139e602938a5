"""Fleet rules (pure): tracker device ids and the limit on failed tracker attempts.

A tracker app (OsmAnd, Traccar Client) sends its device id in the clear on every request, and the id is its only
credential: it must be unguessable. The API generates one (`generate_device_id`, 100 random bits); an id the
merchant picks is accepted only if it plausibly carries at least 96 bits (`device_id_problem`). That check is an
estimate from the characters used (a string's entropy cannot be measured, only bounded): it refuses what is short
(an IMEI, Traccar's default 6-digit id) or repetitive, and accepts random strings of enough length.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

DEVICE_ID_MIN_BITS = 96
DEVICE_ID_MIN_CHARS = 16
DEVICE_ID_MIN_DISTINCT = 8
DEVICE_ID_REASON = (f"must be at least {DEVICE_ID_MIN_BITS} bits random: generate one with "
                    "POST /v1/drivers/{id}/device-id, or use 16+ random letters and digits that no one else uses")

# Crockford's base32 in lower case: no i, l, o, u, easy to read and to type on a phone.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_GENERATED_CHARS = 20  # x 5 bits = 100 bits
_SEPARATORS = frozenset("-_.: ")
_HEX = frozenset("0123456789abcdef")


def generate_device_id() -> str:
    """A fresh device id: 20 random base32 characters (100 bits) in groups of four, e.g. `k3f9-2xq7-...`.

    Drawn again in the rare case (about 1 in 1,800) the draw itself would fail `device_id_problem`, e.g. all
    letters, so that a generated id is always one the API accepts back."""
    while True:
        chars = "".join(secrets.choice(_ALPHABET) for _ in range(_GENERATED_CHARS))
        candidate = "-".join(chars[i:i + 4] for i in range(0, _GENERATED_CHARS, 4))
        if device_id_problem(candidate) is None:
            return candidate


def estimated_bits(device_id: str) -> float:
    """Length x log2(alphabet), the alphabet judged from the character classes the id uses (hex digits count
    16, digits 10, each letter case 26, other symbols 32); separators (`-_.: `) count nothing."""
    chars = [c for c in device_id if c not in _SEPARATORS]
    if not chars:
        return 0.0
    lowered = {c.lower() for c in chars}
    if lowered <= _HEX and (all(not c.isalpha() or c.islower() for c in chars)
                            or all(not c.isalpha() or c.isupper() for c in chars)):
        alphabet = 10 if all(c.isdigit() for c in chars) else 16
    else:
        alphabet = 0
        alphabet += 10 if any(c.isdigit() for c in chars) else 0
        alphabet += 26 if any(c.islower() for c in chars) else 0
        alphabet += 26 if any(c.isupper() for c in chars) else 0
        alphabet += 32 if any(not c.isalnum() for c in chars) else 0
    return len(chars) * math.log2(alphabet)


def device_id_problem(device_id: str) -> str | None:
    """Why this id may not stand for a driver (None: it may): too short, too few distinct characters (a
    pattern such as `abababab...`), or fewer than 96 estimated bits."""
    chars = [c for c in device_id if c not in _SEPARATORS]
    if len(chars) < DEVICE_ID_MIN_CHARS or len(set(chars)) < DEVICE_ID_MIN_DISTINCT:
        return DEVICE_ID_REASON
    if estimated_bits(device_id) < DEVICE_ID_MIN_BITS:
        return DEVICE_ID_REASON
    return None


# --- failed tracker attempts ------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureLimit:
    """At most `failures` failed tracker attempts (unknown device id, wrong OwnTracks credentials) per source
    address in a fixed window of `window_s` seconds; more answer 429 until the window ends."""

    failures: int = 20
    window_s: int = 600

    def window(self, now_s: int) -> tuple[int, int]:
        """(start, end) of the window `now_s` falls in, in epoch seconds."""
        start = now_s - now_s % self.window_s
        return start, start + self.window_s


TRACKER_FAILURES = FailureLimit()
