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
    **{str(f.relative_to(REPO)): "package marker: a docstring (and the version), no code"
       for f in PACKAGE.rglob("__init__.py")},
    "src/difftrain/core/errors.py": "error types: only the wording of failures",
    "src/difftrain/core/io.py": "how outputs are stored (atomic, safetensors, strict JSON), not what they say",
    "src/difftrain/core/provenance.py": "records where data, code and machine came from, computes nothing",
    "src/difftrain/core/cli.py": "the stage entry point: load params, print errors",
}


def _module_files(name: str) -> set[Path]:
    """The files a difftrain module name runs when imported ('difftrain.data.cifar': the package
    markers difftrain/__init__.py and data/__init__.py, then data/cifar.py); empty if not one."""
    if name != "difftrain" and not name.startswith("difftrain."):
        return set()
    parts, files = name.split(".")[1:], {PACKAGE / "__init__.py"}
    for depth in range(1, len(parts) + 1):
        path = PACKAGE.joinpath(*parts[:depth])
        if (path / "__init__.py").is_file():
            files.add(path / "__init__.py")
        elif path.with_suffix(".py").is_file():
            files.add(path.with_suffix(".py"))
        else:
            break  # a name inside a module ("difftrain.core.io.read_json")
    return files


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
            out |= _module_files(name)
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
    spec["deps"].remove("src/difftrain/data/cifar.py")  # imported by the stage and by attacks/attack.py
    assert problems("attack", spec) == [
        "dvc.yaml stage attack imports but does not depend on ['src/difftrain/data/cifar.py']"]
    spec = copy.deepcopy(STAGES["plot"])
    spec["deps"].append("src/difftrain/train/trainer.py")
    assert "never imports: ['src/difftrain/train/trainer.py']" in problems("plot", spec)[0]


def test_the_follower_sees_a_removed_dependency(tmp_path):
    """The check itself: the train stage reaches the objectives through train.py and params.py."""
    assert {"src/difftrain/train/objectives.py", "src/difftrain/core/geometry.py", "src/difftrain/core/params.py",
            "src/difftrain/data/cifar.py"} <= reached(REPO / "stages" / "train.py")
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from difftrain.core.labels import predict\n")
    assert reached(script) == {"src/difftrain/__init__.py", "src/difftrain/core/__init__.py",
                               "src/difftrain/core/labels.py"}


def test_exempt_modules_exist_and_reach_no_computing_module():
    """An exempt module that imported one that computes (geometry, say) would hide that module
    from the stages' deps: each may reach only exempt modules and the params schema (itself a
    dependency of every stage)."""
    allowed = set(NOT_DEPENDENCIES) | {"src/difftrain/core/params.py"}
    for name in NOT_DEPENDENCIES:
        assert (REPO / name).is_file(), name
        reached_here = {str(f.relative_to(REPO)) for f in imported_files(REPO / name)}
        assert reached_here <= allowed, (name, reached_here - allowed)


def test_package_markers_hold_no_code():
    """The package markers are exempt above only because they compute nothing: a docstring and
    at most ``__version__``. An import or a function in one would change what every stage runs."""
    for marker in PACKAGE.rglob("__init__.py"):
        body = ast.parse(marker.read_text()).body
        assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), marker
        for node in body[1:]:
            assert isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__version__"], (
                f"{marker.relative_to(REPO)}: line {node.lineno} is code, not a docstring")
