"""The package's layers hold: each sub-package imports only from layers below it (import-linter,
contract in pyproject.toml), and the check itself fails on an upward or sideways import."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

LINT = Path(sys.executable).parent / "lint-imports"
CONTRACT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]


def lint(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under ``root``/src, with the contract of ``root``/pyproject.toml."""
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)


def test_the_package_keeps_its_layers():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_every_module_is_in_a_layer():
    """A module the contract does not name is checked by nothing: each entry of the package
    (module or sub-package) must be one of the layers."""
    named = {name.strip() for layer in CONTRACT["layers"] for name in layer.split("|")}
    here = {p.stem for p in (REPO / "src" / "difftrain").glob("*.py") if p.stem != "__init__"}
    here |= {p.parent.name for p in (REPO / "src" / "difftrain").glob("*/__init__.py")}
    assert here == named


@pytest.mark.parametrize("module, line, broken", [
    ("core/keys.py", "from difftrain.report import plots", "difftrain.core is not allowed to import difftrain.report"),
    ("data/pairs.py", "from difftrain.train import model", "difftrain.data is not allowed to import difftrain.train"),
    ("attacks/robustness.py", "from difftrain.mechanism import features",
     "difftrain.attacks is not allowed to import difftrain.mechanism"),  # siblings
])
def test_an_upward_or_sideways_import_breaks_the_contract(tmp_path, module, line, broken):
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "src" / "difftrain" / module, "a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout
