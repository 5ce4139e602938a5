"""DynamoDB Local, the engine AWS ships for local development: installed once, started per stack or test session.

The jar comes from the npm package `amplify-dynamodb-simulator` (pinned below), which bundles it as
`emulator/DynamoDBLocal.jar` with its native SQLite libraries in `emulator/DynamoDBLocal_lib/`. Only
that package's own tarball is fetched (`npm pack`, whose download npm checks against the registry's
integrity hash): its JavaScript wrapper and dependencies are not needed to run the jar.

`make dynamodb-local` (a prerequisite of `make run`, `make test` and `.ci/run`) calls
`python -m infra.local.dynamodb_local install`; it does nothing when the pinned version is already there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGE = "amplify-dynamodb-simulator"
PACKAGE_VERSION = "2.9.30"  # bundles DynamoDB Local 1.25.1
INSTALL_ROOT = PROJECT_DIR / ".local" / "dynamodb"
HOST = "127.0.0.1"
# A small heap and the serial collector: the in-memory tables live in SQLite's native memory, not on the
# Java heap, and the default heap (a quarter of the machine's RAM) would let the process grow for nothing.
JVM_OPTIONS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be installed or started (no npm, no Java, a download or start failure)."""


def install_dir(version: str = PACKAGE_VERSION, root: Path = INSTALL_ROOT) -> Path:
    """The emulator folder of one pinned version (a new pin installs beside the old one)."""
    return root / version / "emulator"


def jar_path(version: str = PACKAGE_VERSION, root: Path = INSTALL_ROOT) -> Path:
    return install_dir(version, root) / "DynamoDBLocal.jar"


def java_executable() -> str | None:
    """`java` on PATH (or under JAVA_HOME), if it is there at all."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def ensure_installed(version: str = PACKAGE_VERSION, root: Path = INSTALL_ROOT) -> Path:
    """Install the pinned DynamoDB Local unless it is there; returns the jar's path. Idempotent."""
    jar = jar_path(version, root)
    if jar.is_file():
        return jar
    npm = shutil.which("npm")
    if npm is None:
        raise DynamoDBLocalError("npm is needed once to fetch DynamoDB Local (Debian: apt-get install npm)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as scratch:
        done = subprocess.run([npm, "pack", f"{PACKAGE}@{version}", "--silent", "--pack-destination", scratch],
                              cwd=scratch, capture_output=True, text=True, timeout=600, check=False)
        tarballs = list(Path(scratch).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise DynamoDBLocalError(f"npm pack {PACKAGE}@{version} failed (exit {done.returncode}): "
                                     f"{done.stderr.strip()[-1000:]}")
        staging = Path(scratch) / "unpacked"
        with tarfile.open(tarballs[0]) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith("package/emulator/")]
            archive.extractall(staging, members=members, filter="data")
        if not (staging / "package" / "emulator" / "DynamoDBLocal.jar").is_file():
            raise DynamoDBLocalError(f"{PACKAGE}@{version} does not contain emulator/DynamoDBLocal.jar")
        target = install_dir(version, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Renamed into place in one step: an interrupted install never leaves a half-copied emulator behind.
        os.replace(staging / "package" / "emulator", target)
    return jar


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def command(port: int, java: str, version: str = PACKAGE_VERSION, root: Path = INSTALL_ROOT) -> list[str]:
    """The java command line (run it with cwd=install_dir()); in memory, so every start is an empty world."""
    return [java, *JVM_OPTIONS, "-Djava.library.path=DynamoDBLocal_lib", "-jar", str(jar_path(version, root)),
            "-inMemory",
            # One database whatever the access key and region (the app, tools and tests all reach the same
            # tables), and no usage reports sent anywhere.
            "-sharedDb", "-disableTelemetry",
            "-port", str(port)]


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when the process that started it dies, even by SIGKILL
    (an out-of-memory kill of a test run), so no JVM is left holding memory on a shared machine."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def is_answering(url: str, timeout: float = 1.0) -> bool:
    """DynamoDB Local answers any unsigned GET with an HTTP error (400): an answer is all we wait for."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


class DynamoDBLocal:
    """One DynamoDB Local process on 127.0.0.1 (port 0: a free one), in its own process group.

    Used by the local stack (which passes its own log file) and by the test fixture.
    """

    def __init__(self, port: int = 0, *, log: IO[bytes] | None = None, startup_timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log = log
        self.startup_timeout = startup_timeout
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (the stack starts its other children meanwhile)."""
        java = java_executable()
        if java is None:
            raise DynamoDBLocalError("Java 17 is needed to run DynamoDB Local (Debian: apt-get install "
                                     "openjdk-17-jre-headless)")
        jar = ensure_installed()
        self.port = self.port or free_port()
        self.process = subprocess.Popen(command(self.port, java), cwd=jar.parent, stdin=subprocess.DEVNULL,
                                        stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=self.env, preexec_fn=_die_with_parent)
        return self.process

    def wait_ready(self, deadline: float | None = None) -> None:
        deadline = deadline if deadline is not None else time.monotonic() + self.startup_timeout
        assert self.process is not None, "spawn() first"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise DynamoDBLocalError(f"DynamoDB Local exited with code {code} during startup")
            if is_answering(self.url):
                return
            time.sleep(0.1)
        raise DynamoDBLocalError(f"DynamoDB Local did not answer {self.url} in time")

    def start(self) -> DynamoDBLocal:
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.dynamodb_local",
                                     description="Install (once) the pinned DynamoDB Local, or print where it is.")
    parser.add_argument("action", choices=("install", "path"))
    args = parser.parse_args(argv)
    try:
        jar = ensure_installed() if args.action == "install" else jar_path()
    except DynamoDBLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(jar)
    if java_executable() is None:
        print("note: no java on PATH; DynamoDB Local needs Java 17 (Debian: openjdk-17-jre-headless)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
