"""A grid of experiments as a file: its runs, named and validated before anything starts.

A grid file (``grids/*.yaml``) names the grid, the overrides every run gets, and blocks of axes:
each block crosses its axes (``-S`` overrides, one list of values per parameter) and the grid is
the union of the blocks, so a study that is not a full cross product (more seeds for some
settings, the positive control) is still one file::

    name: paper
    fixed: {}
    grid:
      - {loss: [cross_entropy, differential], seed: [0, 1, 2]}
      - {loss: [cross_entropy], train.adversarial.eps: [8], seed: [0, 1]}

Each run is one DVC experiment named ``<name>-<hash>``, the hash of every parameter the run
uses (params.yaml at the grid's commit with the overrides applied), so a rerun of the same grid
at the same commit finds its runs by name. Every run is validated like params.yaml before
anything starts: an unknown key or a value the params model refuses is one line naming the run
and the key. ``grid_engine.py`` runs them (Ray tasks), ``grid_worker.py`` is one run, ``grid.py``
is the command.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from difftrain.core.errors import ParamsError
from difftrain.core.params import parse_params, read_yaml

GRID_KEYS = {"name", "description", "fixed", "grid"}
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class Run:
    """One experiment of a grid: its name and its overrides (``-S key=value``)."""

    name: str
    overrides: dict  # dotted key -> value, fixed ones first

    def cli(self) -> list[str]:
        """The overrides as ``dvc exp run`` takes them: ``-S key=value``, values as YAML."""
        return [arg for key, value in self.overrides.items()
                for arg in ("-S", f"{key}={json.dumps(value)}")]

    def params(self, base: dict) -> dict:
        """params.yaml (``base``) with this run's overrides: what the run reads."""
        return effective(base, self.overrides)

    def describe(self) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in self.overrides.items()) or "defaults"


@dataclass
class Grid:
    name: str
    path: Path
    runs: list[Run] = field(default_factory=list)
    description: str = ""


def _short(value) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else f"{value}"


def set_dotted(tree: dict, key: str, value) -> None:
    """``tree`` with ``key`` (``a.b.c``) set to ``value``, as ``dvc exp run -S`` sets it."""
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def effective(base: dict, overrides: dict) -> dict:
    """params.yaml (``base``) with the overrides applied: what the run reads."""
    tree = json.loads(json.dumps(base))
    for key, value in overrides.items():
        set_dotted(tree, key, value)
    return tree


def run_name(grid: str, params: dict) -> str:
    """``<grid>-<first 8 hex digits of the hash of every parameter the run uses>``."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return f"{grid}-{digest[:8]}"


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ParamsError(f"{where} must be a mapping of parameter: value; got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise ParamsError(f"{where}: key {key!r} must be a parameter name (a.b.c)")
    return value


def load(path: str | Path, base_params: dict) -> Grid:
    """The grid file, expanded and validated against ``base_params`` (params.yaml's content at
    the grid's commit). Raises ParamsError naming the file, the run and the key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: grid file not found")
    spec = read_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(spec, dict):
        raise ParamsError(f"{path}: expected a mapping with name, fixed and grid; got {spec!r}")
    unknown = sorted(set(spec) - GRID_KEYS)
    if unknown:
        raise ParamsError(f"{path}: {', '.join(unknown)} is not a grid key (allowed: "
                          f"{', '.join(sorted(GRID_KEYS))})")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ParamsError(f"{path}: name must be lowercase letters, digits and dashes (it starts "
                          f"every experiment's name); got {name!r}")
    fixed = _mapping(spec.get("fixed") or {}, f"{path}: fixed")
    blocks = spec.get("grid")
    if not isinstance(blocks, list) or not blocks:
        raise ParamsError(f"{path}: grid must be a non-empty list of blocks of axes")
    grid = Grid(name, path, description=str(spec.get("description", "")))
    seen = set()
    for b, block in enumerate(blocks):
        block = _mapping(block, f"{path}: grid block {b + 1}")
        for key, values in block.items():
            if not isinstance(values, list) or not values:
                raise ParamsError(f"{path}: grid block {b + 1}: {key} must be a non-empty list "
                                  f"of values; got {values!r}")
        for combo in itertools.product(*block.values()):
            overrides = {**fixed, **dict(zip(block, combo))}
            params = effective(base_params, overrides)
            run = Run(run_name(name, params), overrides)
            try:
                parse_params(params, f"{path}: run {run.name} ({run.describe()})")
            except ParamsError as exc:
                raise ParamsError(str(exc).splitlines()[0]) from None
            if run.name not in seen:  # the same run from two blocks is one experiment
                seen.add(run.name)
                grid.runs.append(run)
    return grid
