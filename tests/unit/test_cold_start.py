"""What a cold start loads: route models on first use, and a driver's first ping without pynamodb's client.

The figures are in bench/cold_start.py and bench/cold_ping.py; these tests keep the mechanisms from regressing
silently (a model imported at a blueprint's top again, a token lookup back on a pynamodb model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

PROJECT = Path(__file__).resolve().parents[2]


def _run(code: str, stdin: str = "") -> str:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, input=stdin, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_every_route_model_name_resolves_to_a_model() -> None:
    import app  # noqa: F401  (registers every blueprint, filling SPECS)
    from chalicelib.http.routes import SPECS

    named = 0
    for spec in SPECS:
        for ref, model in ((spec.body_ref, spec.body), (spec.query_ref, spec.query),
                           (spec.response_ref, spec.response), (spec.body_doc_ref, spec.body_doc)):
            if ref is None:
                assert model is None
                continue
            assert isinstance(model, type) and issubclass(model, BaseModel), (spec.method, spec.path, ref)
            if isinstance(ref, str):
                named += 1
                assert model.__name__ == ref, (spec.method, spec.path, ref)
    assert named > 40  # the blueprints name their models (lazily) rather than importing them


def test_importing_the_app_loads_only_the_ping_routes_models_and_no_storage() -> None:
    out = _run("import sys, app; print(sorted(m for m in sys.modules if m.endswith('.models') "
               "or m.split('.')[0] in ('pynamodb', 'boto3') or m.startswith('chalicelib.storage.')))")
    assert out == "['chalicelib.ingest.models']"


def test_a_cold_first_ping_creates_one_client_and_no_pynamodb_connection() -> None:
    from bench.common import driver_trace, now_ms

    body = json.dumps({"pings": [p.raw for p in driver_trace(10, start_ms=now_ms() - 600_000)]})
    out = _run("import json, bench.cold_ping as c, sys\n"
               "c.child()\n"
               "from chalicelib.storage import tables\n"
               "print(json.dumps({'pynamodb_clients': len(tables._CLIENTS)}))", stdin=body)
    # the child fails unless the answer is 200 with 10 accepted and the pings were written
    assert json.loads(out) == {"pynamodb_clients": 0}
