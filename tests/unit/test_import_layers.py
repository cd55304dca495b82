"""The import layers of ``vdc`` (the import-linter contract in pyproject.toml): nothing imports upward.

The contract is checked on the source tree the tests import, and shown to have teeth: a copy of that tree
with one upward import breaks it. Every top-level module of ``vdc`` is in a layer, so a new package cannot
slip past the contract unlayered.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import vdc

pytestmark = pytest.mark.unit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SOURCE = Path(vdc.__file__).resolve().parent.parent  # operator/: the tree under test
UNLAYERED = {"vdc.appliance"}
"""Top-level modules in no layer: an empty placeholder package."""

_LINT = (
    "import sys; from importlinter.cli import lint_imports;"
    " sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))"
)


def lint_imports(source: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` against the ``vdc`` package found in ``source`` (first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(source), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", _LINT, str(PYPROJECT)],
        env=env,
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def layers() -> list[str]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")]


def test_nothing_imports_upward() -> None:
    result = lint_imports(SOURCE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(SOURCE / "vdc", tmp_path / "vdc", ignore=shutil.ignore_patterns("__pycache__"))
    meta = tmp_path / "vdc" / "api" / "meta.py"
    meta.write_text(meta.read_text() + "\nfrom vdc.controllers import errors as _upward  # noqa: E402, F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "vdc.api.meta -> vdc.controllers.errors" in result.stdout, result.stdout


def test_every_top_level_module_is_in_a_layer() -> None:
    listed = set(layers())
    unlayered = set()
    for module in pkgutil.iter_modules(vdc.__path__, "vdc."):
        if module.name in listed or module.name in UNLAYERED:
            continue
        # A package may be layered by its modules (vdc.scheduler.placement above vdc.tenancy above
        # vdc.scheduler.selectors): then each of them must be.
        children = [
            m.name for m in pkgutil.iter_modules([str(SOURCE / module.name.replace(".", "/"))], f"{module.name}.")
        ]
        if not module.ispkg or not children or any(child not in listed for child in children):
            unlayered.add(module.name)
    assert not unlayered, f"not in any layer of pyproject's [tool.importlinter] contract: {sorted(unlayered)}"
    assert all(importlib.util.find_spec(name) for name in listed), "a layer names no module"
