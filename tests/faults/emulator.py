"""The DynamoDB endpoint the fault suite runs against, and the app under test in front of it.

Which engine:

1. `DOORSTEP_FAULT_DYNAMODB_URL=http://127.0.0.1:8001`: an endpoint already running (DynamoDB Local as the
   local stack runs it, or anything speaking DynamoDB); the table is created if it does not exist.
2. else DynamoDB Local from a jar: `DOORSTEP_DYNAMODB_LOCAL_JAR`, or the first
   `.local/dynamodb/*/emulator/DynamoDBLocal.jar` of the project (where the local stack keeps it), with `java`.
3. else the moto server of the venv (what tests/integration uses today, as a process).

The app is `chalice local --stage local` with `AWS_ENDPOINT_URL` at the fault proxy, so it runs with the
stage's own timeouts and retries, as `make run` does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@dataclass(frozen=True)
class Endpoint:
    url: str
    engine: str  # "moto", "dynamodb-local" or "external"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with opener.open(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def _dynamodb_local_jar() -> Path | None:
    configured = os.environ.get("DOORSTEP_DYNAMODB_LOCAL_JAR")
    if configured:
        return Path(configured)
    found = sorted(PROJECT_DIR.glob(".local/dynamodb/*/emulator/DynamoDBLocal.jar"))
    return found[-1] if found and shutil.which("java") else None


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def dynamodb_endpoint(log_dir: Path) -> Iterator[Endpoint]:
    external = os.environ.get("DOORSTEP_FAULT_DYNAMODB_URL")
    if external:
        yield Endpoint(external.rstrip("/"), "external")
        return
    port = free_port()
    jar = _dynamodb_local_jar()
    if jar is not None:
        command = ["java", f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar),
                   "-inMemory", "-port", str(port)]
        engine, cwd = "dynamodb-local", jar.parent
    else:
        command = [str(PROJECT_DIR / ".venv" / "bin" / "moto_server"), "-H", HOST, "-p", str(port)]
        engine, cwd = "moto", PROJECT_DIR
    with (log_dir / f"{engine}.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **FAKE_AWS}, start_new_session=True)
        try:
            _wait_for(f"http://{HOST}:{port}/", process)
            yield Endpoint(f"http://{HOST}:{port}", engine)
        finally:
            _stop(process)


def stage_environment(stage: str = "local") -> dict[str, str]:
    config: dict[str, Any] = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text(encoding="utf-8"))
    env = {k: str(v) for k, v in config.get("environment_variables", {}).items()}
    env.update({k: str(v) for k, v in config["stages"][stage].get("environment_variables", {}).items()})
    return env


def app_environment(endpoint_url: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOORSTEP_", "POWERTOOLS_"))}
    env.update({**stage_environment(), **FAKE_AWS, "AWS_ENDPOINT_URL": endpoint_url,
                "DOORSTEP_PUBLIC_BASE_URL": base_url, "PYTHONUNBUFFERED": "1"})
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def create_table(endpoint_url: str) -> None:
    """The project's table (infra/resources.json) unless it exists; TTL if the engine has it (point-in-time
    recovery, which DynamoDB Local does not implement, is left out: nothing here needs it)."""
    import boto3
    from botocore.exceptions import ClientError

    from infra.local.resources import load_table_definition, table_create_params

    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    name = stage_environment()["DOORSTEP_TABLE_NAME"]
    if name in client.list_tables().get("TableNames", []):
        return
    client.create_table(**table_create_params(name))
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ttl = load_table_definition().get("TimeToLiveSpecification")
    if ttl:
        with suppress(ClientError):
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def create_merchant(endpoint_url: str, name: str) -> dict[str, str]:
    """A merchant written straight to the storage (there is no API for it), in a fresh interpreter: this one
    bound chalicelib to the test settings at import."""
    done = subprocess.run([sys.executable, "-m", "chalicelib.cli", "create-merchant", "--name", name, "--json"],
                          cwd=PROJECT_DIR, env=app_environment(endpoint_url, "http://127.0.0.1"), capture_output=True,
                          text=True, timeout=120, check=True)
    merchant: dict[str, str] = json.loads(done.stdout)
    return merchant


def _pump(source: Any, sink: Any) -> None:
    """The child's output to its log, through the local stack's redaction (as infra/local/stack.py does)."""
    from infra.local.redact import redact_line

    for line in iter(source.readline, b""):
        sink.write(redact_line(line.decode("utf-8", "replace")).encode())
        sink.flush()


@contextmanager
def chalice_local(endpoint_url: str, log_path: Path) -> Iterator[str]:
    """`chalice local` against `endpoint_url`; yields its base URL. Its output (the access log included) goes
    to `log_path`, through the local stack's redaction."""
    import threading

    port = free_port()
    base = f"http://{HOST}:{port}"
    command = [str(PROJECT_DIR / ".venv" / "bin" / "chalice"), "local", "--no-autoreload", "--stage", "local",
               "--host", HOST, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=app_environment(endpoint_url, base), start_new_session=True)
        assert process.stdout is not None
        pump = threading.Thread(target=_pump, args=(process.stdout, log), daemon=True)
        pump.start()
        try:
            _wait_for(f"{base}/health", process)
            yield base
        finally:
            _stop(process)
            pump.join(timeout=5)
