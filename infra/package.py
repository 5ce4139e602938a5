"""Package the app for CloudFormation and lint the result.

    python -m infra.package --stage dev --out build/package

Runs `chalice package` with infra/resources.json merged in, then cfn-lint on
the produced sam.json. Exits non-zero if either step fails or cfn-lint reports
an error; cfn-lint warnings are printed but do not fail the build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parent
PROJECT_DIR = INFRA_DIR.parent
MERGE_TEMPLATE = INFRA_DIR / "resources.json"
TEMPLATE_NAME = "sam.json"


def _tool(name: str) -> str:
    """Prefer the console script installed next to this interpreter (the venv)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found; install requirements-dev.txt")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # chalice package refuses to run without a region but never calls AWS,
    # so no credentials are needed.
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def package(stage: str, out_dir: Path, project_dir: Path = PROJECT_DIR) -> Path:
    """Run chalice package; return the path of the generated template."""
    out_dir = out_dir.resolve()
    cmd = [
        _tool("chalice"),
        "--project-dir",
        str(project_dir.resolve()),
        "package",
        "--stage",
        stage,
        "--merge-template",
        str(MERGE_TEMPLATE),
        str(out_dir),
    ]
    subprocess.run(cmd, check=True, env=_env())
    return out_dir / TEMPLATE_NAME


def lint(template: Path) -> int:
    """Run cfn-lint; return its exit code (non-zero only for errors)."""
    cmd = [_tool("cfn-lint"), "--non-zero-exit-code", "error", "--", str(template)]
    return subprocess.run(cmd, check=False, env=_env()).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="dev", choices=["dev", "prod"])
    parser.add_argument("--out", type=Path, default=Path("build/package"))
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    args = parser.parse_args(argv)

    try:
        template = package(args.stage, args.out, args.project_dir)
    except subprocess.CalledProcessError as exc:
        print(f"chalice package failed (exit {exc.returncode})", file=sys.stderr)
        return exc.returncode or 1
    rc = lint(template)
    print(f"cfn-lint {'found errors' if rc else 'passed'}: {template}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
