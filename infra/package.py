"""Package the app for CloudFormation and lint the result.

    python -m infra.package --stage dev --out build/package

Runs `chalice package` with infra/resources.json merged in, adds what the merge
cannot express (the PublicOrigin default, the unknown-path gateway response
built from the app's own error shape; a log group per function, the alarm topic
on every alarm and the dashboard, from infra/operations.py), then cfn-lint on
the produced sam.json.
Exits non-zero if either step fails or cfn-lint reports an error; cfn-lint
warnings are printed but do not fail the build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

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
    bundle = out_dir / "deployment.zip"
    if bundle.exists():
        slim_bundle(bundle)
        add_bytecode(bundle)
    template = out_dir / TEMPLATE_NAME
    set_public_origin(template, stage_public_origin(project_dir, stage))
    add_unknown_path_response(template)
    add_operations_resources(template)
    return template


def add_operations_resources(template: Path) -> None:
    """Log retention for every function, the alarm topic on every alarm, the dashboard (infra/operations.py)."""
    from infra.operations import add_operations

    data: dict[str, Any] = json.loads(template.read_text(encoding="utf-8"))
    add_operations(data)
    template.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def unknown_path_gateway_response() -> dict[str, Any]:
    """API Gateway's answer for a path (or method) no resource has: our JSON 404, not its 403.

    API Gateway answers such a request with MISSING_AUTHENTICATION_TOKEN (403, "Missing Authentication Token")
    before any Lambda runs. The body is the app's own `unknown_path_error()` rendered once here, so the deployed
    404 and the local one (infra/local/api_server.py) are the same bytes.
    """
    from chalicelib.http.errors import unknown_path_error

    body = json.dumps(unknown_path_error().body())
    # The template is Velocity: `$` and `#` would be read as references or directives.
    assert "$" not in body and "#" not in body, body
    return {
        "statusCode": "404",
        "responseParameters": {"gatewayresponse.header.Content-Type": "'application/json'"},
        "responseTemplates": {"application/json": body},
    }


def add_unknown_path_response(template: Path) -> None:
    data: dict[str, Any] = json.loads(template.read_text(encoding="utf-8"))
    body = data["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    body.setdefault("x-amazon-apigateway-gateway-responses", {})["MISSING_AUTHENTICATION_TOKEN"] = (
        unknown_path_gateway_response())
    template.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1000 * 1000


def _dependency_test_file(name: str) -> bool:
    """A file of a dependency's own test suite (numpy's and pandas' alone are ~54 MB): never imported at run time."""
    parts = PurePosixPath(name).parts
    return len(parts) > 2 and parts[0] != "chalicelib" and "tests" in parts[1:-1]


def slim_bundle(bundle: Path) -> int:
    """Rewrite the deployment zip without the dependencies' test suites; returns how many files were left out.

    Every function shares this package and Lambda unpacks it on each cold start (limit 250 MB unpacked): the
    route solver's numpy and pandas ship their tests, which nothing here imports.
    """
    import tempfile
    import zipfile

    dropped = 0
    with tempfile.NamedTemporaryFile(dir=bundle.parent, suffix=".zip", delete=False) as handle:
        slim = Path(handle.name)
    try:
        with zipfile.ZipFile(bundle) as source, \
                zipfile.ZipFile(slim, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for info in source.infolist():
                if _dependency_test_file(info.filename):
                    dropped += 1
                    continue
                out.writestr(info, source.read(info.filename))
        slim.chmod(0o644)
        slim.replace(bundle)
    finally:
        slim.unlink(missing_ok=True)
    return dropped


def add_bytecode(bundle: Path) -> int:
    """Add compiled bytecode for every module in the deployment zip; returns how many were added.

    Lambda's /var/task is read-only, so without it Python compiles the app's modules (and the dependencies',
    which wheels ship as source) from scratch on every cold start. Unchecked-hash .pyc files are used whatever
    the files' times after unzipping; the tag is this interpreter's, which `chalice package` also uses for the
    function's runtime.
    """
    import py_compile
    import tempfile
    import zipfile

    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        sources = [n for n in names if n.endswith(".py")]
        with tempfile.TemporaryDirectory() as scratch:
            compiled: list[tuple[str, Path]] = []
            for name in sources:
                target = PurePosixPath(name)
                pyc = str(target.parent / "__pycache__" / f"{target.stem}.{tag}.pyc")
                if pyc in names:
                    continue
                source = Path(scratch, "src", name)
                source.parent.mkdir(parents=True, exist_ok=True)
                source.write_bytes(archive.read(name))
                out = Path(scratch, "pyc", pyc)
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    py_compile.compile(str(source), cfile=str(out), dfile=f"/var/task/{name}", doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                except py_compile.PyCompileError:
                    continue  # not Python 3 (a template or a vendored Python 2 file): it is never imported
                compiled.append((pyc, out))
            with zipfile.ZipFile(bundle, "a", compression=zipfile.ZIP_DEFLATED) as appended:
                for pyc, out in compiled:
                    appended.write(out, pyc)
    return len(compiled)


def stage_public_origin(project_dir: Path, stage: str) -> str | None:
    """`scheme://host[:port]` of the stage's DOORSTEP_PUBLIC_BASE_URL in .chalice/config.json (None if unset)."""
    config: dict[str, Any] = json.loads((project_dir / ".chalice" / "config.json").read_text(encoding="utf-8"))
    env = {**config.get("environment_variables", {}),
           **config.get("stages", {}).get(stage, {}).get("environment_variables", {})}
    url = env.get("DOORSTEP_PUBLIC_BASE_URL")
    if not url:
        return None
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}"


def set_public_origin(template: Path, origin: str | None) -> None:
    """Default the template's PublicOrigin parameter (the proof bucket's CORS origin for the driver web app)
    to the stage's public origin, so a plain `aws cloudformation deploy` needs no parameter overrides."""
    data: dict[str, Any] = json.loads(template.read_text(encoding="utf-8"))
    parameter = data.get("Parameters", {}).get("PublicOrigin")
    if parameter is None or origin is None:
        return
    parameter["Default"] = origin
    template.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


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
