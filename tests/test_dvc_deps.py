"""dvc.yaml's deps are true: every difftrain module a stage's script reaches is a dependency.

A stage whose code is not among its deps is not rerun when that code changes, so a cached result
could silently come from old code. This test follows each stage script's imports inside
``difftrain`` (transitively, with ``ast``, including imports inside functions) and compares the
modules reached with the stage's deps, both ways.
"""

import ast
import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = REPO / "src" / "difftrain"

# Modules that cannot change a result, so editing them need not rerun a stage. Everything that
# computes, validates or defaults a value must be a dependency.
NOT_DEPENDENCIES = {
    "src/difftrain/__init__.py": "package marker and version string",
    "src/difftrain/errors.py": "error types: only the wording of failures",
    "src/difftrain/io.py": "how outputs are stored (atomic, safetensors, strict JSON), not what they say",
    "src/difftrain/provenance.py": "records where data and code came from, computes nothing",
    "src/difftrain/cli.py": "the stage entry point: load params, print errors",
}


def _module_file(name: str) -> Path | None:
    """The file of a difftrain module name ('difftrain.data'), or None if not one."""
    if name != "difftrain" and not name.startswith("difftrain."):
        return None
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    path = PACKAGE.joinpath(*parts)
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_files(path: Path) -> set[Path]:
    """difftrain module files that ``path`` imports directly."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from difftrain import pairs" imports a module; "from difftrain.x import y" a name
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("difftrain"):
                out.add(PACKAGE / "__init__.py")  # importing any submodule runs the package
            file = _module_file(name)
            if file is not None:
                out.add(file)
    return out


def reached(script: Path) -> set[str]:
    """Every difftrain module file reachable from ``script``, relative to the repository."""
    seen, todo = set(), [script]
    while todo:
        for file in imported_files(todo.pop()):
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return {str(f.relative_to(REPO)) for f in seen}


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def problems(stage: str, spec: dict) -> list[str]:
    """What is wrong with one stage's code deps: modules reached but not listed, and listed but
    never reached."""
    script = spec["cmd"].split()[-1]
    if spec["cmd"] != f"python {script}" or not script.startswith("stages/"):
        return [f"{stage}: command {spec['cmd']!r} is not `python stages/<name>.py`"]
    deps = set(spec["deps"])
    out = [] if script in deps else [f"{stage}: its own script {script} is not a dependency"]
    needed = reached(REPO / script) - set(NOT_DEPENDENCIES)
    missing = sorted(needed - deps)
    if missing:
        out.append(f"dvc.yaml stage {stage} imports but does not depend on {missing}")
    stale = sorted({d for d in deps if d.startswith("src/difftrain/")} - needed)
    if stale:
        out.append(f"dvc.yaml stage {stage} depends on modules it never imports: {stale}")
    return out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_reaches_is_a_dependency(stage):
    assert problems(stage, STAGES[stage]) == []


def test_a_removed_dependency_is_caught():
    spec = copy.deepcopy(STAGES["attack"])
    spec["deps"].remove("src/difftrain/data.py")  # imported by the stage and by attack.py
    assert problems("attack", spec) == [
        "dvc.yaml stage attack imports but does not depend on ['src/difftrain/data.py']"]
    spec = copy.deepcopy(STAGES["plot"])
    spec["deps"].append("src/difftrain/train.py")
    assert "never imports: ['src/difftrain/train.py']" in problems("plot", spec)[0]


def test_the_follower_sees_a_removed_dependency(tmp_path):
    """The check itself: the train stage reaches the objectives through train.py and params.py."""
    assert {"src/difftrain/objectives.py", "src/difftrain/geometry.py", "src/difftrain/params.py",
            "src/difftrain/data.py"} <= reached(REPO / "stages" / "train.py")
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from difftrain.labels import predict\n")
    assert reached(script) == {"src/difftrain/__init__.py", "src/difftrain/labels.py"}


def test_exempt_modules_exist_and_compute_nothing_a_stage_reports():
    for name in NOT_DEPENDENCIES:
        assert (REPO / name).is_file(), name
