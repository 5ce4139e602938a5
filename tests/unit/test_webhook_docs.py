"""The README's signature check for receivers agrees with what Doorstep sends (chalicelib.domain.webhooks)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from chalicelib.webhooks.rules import encode_event, signed_headers

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verifier() -> Any:
    section = README.read_text(encoding="utf-8").split("## Merchant webhooks", 1)[1].split("\n## ", 1)[0]
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "hmac" in block]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["doorstep_signature_ok"]


def test_the_readme_sample_verifies_what_doorstep_signs_and_refuses_the_rest() -> None:
    from datetime import UTC, datetime

    check = readme_verifier()
    body = encode_event("evt_1", "delivered", datetime.now(UTC), {"shipment_id": "shp_1"}, merchant_id="mer_1")
    now = time.time()
    headers = signed_headers("whsec_current", body, now, "evt_1")
    assert check("whsec_current", headers, body)
    assert not check("whsec_other", headers, body)
    assert not check("whsec_current", headers, body.replace(b"delivered", b"failed"))
    old = signed_headers("whsec_current", body, now - 3600, "evt_1")
    assert not check("whsec_current", old, body)  # a captured request replayed an hour later
    rotating = signed_headers(["whsec_new", "whsec_current"], body, now, "evt_1")  # both sign for 24 h
    assert check("whsec_current", rotating, body) and check("whsec_new", rotating, body)
    assert not check("whsec_current", {**headers, "Doorstep-Timestamp": "soon"}, body)
