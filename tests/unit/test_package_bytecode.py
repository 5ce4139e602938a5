"""The deployment zip carries compiled bytecode, so a Lambda cold start does not compile the app's modules."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

from infra.package import add_bytecode


def test_every_module_gets_an_unchecked_hash_pyc_beside_it(tmp_path: Path) -> None:
    bundle = tmp_path / "deployment.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("app.py", "VALUE = 41 + 1\n")
        archive.writestr("chalicelib/core/config.py", "NAME = 'x'\n")
        archive.writestr("vendored/py2.py", "print 'python 2'\n")  # never imported: skipped, not fatal
        archive.writestr("chalicelib/locales/en.json", "{}")
    assert add_bytecode(bundle) == 2
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        pyc = archive.read(f"__pycache__/app.{tag}.pyc")
    assert f"chalicelib/core/__pycache__/config.{tag}.pyc" in names
    assert not any(n.startswith("vendored/__pycache__") for n in names)
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, not checked: valid whatever the mtimes
    assert add_bytecode(bundle) == 0  # a second pass adds nothing
