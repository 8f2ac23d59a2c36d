"""The `difftrain` console script is the same call as `python -m difftrain.X`."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO

SCRIPT = Path(sys.executable).parent / "difftrain"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*argv], cwd=REPO, capture_output=True, text=True)


def test_a_subcommand_is_its_module():
    short = run(str(SCRIPT), "grid", "run", "grids/paper.yaml", "--dry-run")
    long = run(sys.executable, "-m", "difftrain.grid", "run", "grids/paper.yaml", "--dry-run")
    assert short.returncode == long.returncode == 0, short.stderr + long.stderr
    assert short.stdout == long.stdout
    assert "grids/paper.yaml: 16 runs at commit" in short.stdout


def test_its_errors_name_the_subcommand():
    result = run(str(SCRIPT), "study")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("difftrain study: error: name experiments or pass --all")
    result = run(str(SCRIPT), "nope")
    assert (result.returncode, result.stderr.strip()) == (
        2, "difftrain: unknown subcommand 'nope'; expected one of study, compare, grid, report")
    assert run(str(SCRIPT)).returncode == 2
