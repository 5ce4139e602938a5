"""(f) Starting and stopping the stack leaves nothing behind; a busy port is a clear error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from infra.local.stack import PROJECT_DIR, LocalStack, PortBusyError, http_json, tracking_json_url

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to list processes")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields after "(comm)": state, ppid, pgrp, ...


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited; only its exit status remains


def _group(pgid: int) -> set[int]:
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None and int(fields[2]) == pgid:
            members.add(int(entry))
    return members


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@needs_proc
def test_stop_leaves_no_child_process_alive(tmp_path: Path) -> None:
    stack = LocalStack(port=0, moto_port=0, log_dir=tmp_path / "logs").start()
    try:
        # DynamoDB Local, moto, chalice local, the stream runner, the scheduler, the webhook receiver
        assert len(stack.pids) == 6
        processes = set(stack.pids).union(*(_group(pid) for pid in stack.pids))
        assert all(_alive(pid) for pid in processes)
        assert http_json("GET", f"{stack.base_url}/health").status == 200
    finally:
        stack.stop()
    assert [pid for pid in processes if _alive(pid)] == []
    with pytest.raises((urllib.error.URLError, OSError)):
        http_json("GET", f"{stack.base_url}/health", timeout=1)
    stack.stop()  # idempotent


@pytest.mark.parametrize("which", ["port", "moto_port", "dynamodb_port"])
def test_a_busy_port_fails_clearly_and_starts_nothing(tmp_path: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = LocalStack(port=port if which == "port" else 0, moto_port=port if which == "moto_port" else 0,
                           dynamodb_port=port if which == "dynamodb_port" else 0, log_dir=tmp_path / "logs")
        with pytest.raises(PortBusyError, match=f"port {port} on 127.0.0.1 is already in use"):
            stack.start()
    assert stack.pids == []
    assert not (tmp_path / "logs").exists()  # failed before anything was started


@needs_proc
def test_make_run_entry_point_stops_on_a_signal_and_starts_again_on_the_same_ports(tmp_path: Path) -> None:
    port, moto_port, dynamodb_port = _free_port(), _free_port(), _free_port()
    for attempt, signum in enumerate([signal.SIGTERM, signal.SIGINT]):
        demo_path = tmp_path / f"demo-{attempt}.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra.local.stack", "--port", str(port), "--moto-port", str(moto_port),
             "--dynamodb-port", str(dynamodb_port), "--demo", str(demo_path), "--log-dir", str(tmp_path / "logs"),
             "--stops", "3"],
            cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not demo_path.exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the stack did not write demo.json within 30 s"
                time.sleep(0.1)
            demo = json.loads(demo_path.read_text(encoding="utf-8"))
            assert demo["base_url"] == f"http://127.0.0.1:{port}"
            assert http_json("GET", tracking_json_url(demo["tracking_urls"][0])).body["status"] == "out_for_delivery"
            children = demo["stack_pids"]
            assert all(_alive(pid) for pid in children)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Doorstep local stack is up" in out
        assert [pid for pid in children if _alive(pid)] == []


def test_make_run_refused_for_a_busy_port_keeps_the_running_stacks_demo_json(tmp_path: Path) -> None:
    demo_path = tmp_path / "demo.json"
    demo_path.write_text('{"base_url": "http://127.0.0.1:1"}', encoding="utf-8")  # the other stack's file
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "infra.local.stack", "--port", str(port), "--moto-port", "0",
             "--dynamodb-port", "0", "--demo", str(demo_path), "--log-dir", str(tmp_path / "logs")],
            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert demo_path.exists()
