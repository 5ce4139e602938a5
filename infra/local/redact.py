"""Secrets out of the local stack's logs.

`chalice local` prints an access-log line per request, with the whole request target. Several targets carry a
bearer secret: tracking links (`/track/<token>`, `/v1/track/<token>`), driver app links (`/driver/<token>`), and
the tracker apps' query strings (`/osmand?id=<driver token or device id>`, Traccar's `deviceid=`). Every line a
child writes to its log goes through `redact_line` first.
"""

from __future__ import annotations

import re

# A secret path segment: tracking links and driver app links (not the driver API under /v1/driver/).
_SECRET_PATH = re.compile(r"(/track/|(?<!/v1)/driver/)[^\s\"'?]+")
# The whole query string of a tracker path: every parameter of a position report is about one driver.
_TRACKER_QUERY = re.compile(r"(/(?:osmand|owntracks)/?)\?[^\s\"']*")
# Any credential-like parameter of any other path.
_SECRET_PARAM = re.compile(r"([?&;](?:id|deviceid|device_id|token|key|api_key|access_token)=)[^&;\s\"']*",
                           re.IGNORECASE)

REDACTED = "<redacted>"


def redact_line(line: str) -> str:
    """`line` with secret path segments, tracker query strings and credential parameters replaced."""
    line = _SECRET_PATH.sub(r"\1" + REDACTED, line)
    line = _TRACKER_QUERY.sub(r"\1?" + REDACTED, line)
    return _SECRET_PARAM.sub(r"\1" + REDACTED, line)
