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
from difftrain.core.params import parse_params, read_utf8, read_yaml

GRID_KEYS = {"name", "description", "fixed", "grid"}
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class Run:
    """One experiment of a grid: its name and its overrides (``-S key=value``)."""

    name: str
    overrides: dict  # dotted key -> value, fixed ones first

    def cli(self) -> list[str]:
        """The overrides as ``dvc exp run`` takes them: ``-S key=value`` in the grammar DVC
        parses them with (Hydra's), so that params.yaml reads back the value validated."""
        return [arg for key, value in self.overrides.items()
                for arg in ("-S", f"{key}={override_value(value)}")]

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


def override_value(value) -> str:
    """A plain value in Hydra's override grammar. A string is double-quoted, with ``"`` escaped
    and the backslashes before a quote or the end doubled (elsewhere Hydra keeps a backslash
    as it is, and JSON's ``\\u00e9`` or ``\\n`` would arrive as those characters)."""
    if isinstance(value, str):
        out, run = [], 0
        for char in value:
            if char == "\\":
                run += 1
                continue
            out.append("\\" * (run * 2 if char == '"' else run))
            run = 0
            out.append('\\"' if char == '"' else char)
        out.append("\\" * (run * 2))
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    return json.dumps(value)  # numbers, booleans, null


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


PLAIN = (str, int, float, bool, type(None))
INTERPOLATION = re.compile(r"\$\{")


def _no_aliases(text: str, path: Path) -> None:
    """Refuse YAML aliases before anything is built: an alias bomb (nested aliases) of a few
    hundred bytes expands to gigabytes, and a grid needs none (DVC's -S takes no alias)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.events import AliasEvent

    try:
        for event in YAML(typ="safe").parse(text):
            if isinstance(event, AliasEvent):
                raise ParamsError(f"{path}: line {event.start_mark.line + 1}: aliases "
                                  f"(*{event.anchor}) are not allowed in a grid file; write the "
                                  f"value out")
    except YAMLError:
        return  # read_yaml names the syntax error


def _plain(value, where: str):
    """Plain data only (strings, numbers, booleans, null, lists, mappings with string keys):
    what params.yaml holds and ``dvc exp run -S`` can set. A ``${...}`` would be resolved by DVC
    in the worker's environment, so the run would use another value than the one validated."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParamsError(f"{where}: key {key!r} must be a string")
            _plain(item, f"{where}: {key}")
    elif isinstance(value, list):
        for item in value:
            _plain(item, where)
    elif not isinstance(value, PLAIN):
        raise ParamsError(f"{where}: must be plain data (a string, number, boolean, list or "
                          f"mapping); got a {type(value).__name__}")
    elif isinstance(value, str) and INTERPOLATION.search(value):
        raise ParamsError(f"{where}: ${{...}} interpolation is not allowed in a grid value (DVC "
                          f"would resolve it on the worker, after validation); got {value!r}")
    elif isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ParamsError(f"{where}: a control character (newline, tab, ...) cannot be passed to "
                          f"dvc exp run -S; got {value!r}")


def _leaf(key: str, base: dict, where: str) -> None:
    """A grid key names one parameter: a whole section as a value would replace the section."""
    node = base
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        raise ParamsError(f"{where}: {key} is a section of params.yaml; name its parameters "
                          f"({', '.join(f'{key}.{k}' for k in list(node)[:3])}, ...)")


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
    text = read_utf8(path)
    _no_aliases(text, path)
    spec = read_yaml(text, str(path))
    if not isinstance(spec, dict):
        raise ParamsError(f"{path}: expected a mapping with name, fixed and grid; got {spec!r}")
    unknown = sorted(set(spec) - GRID_KEYS)
    if unknown:
        raise ParamsError(f"{path}: {', '.join(unknown)} is not a grid key (allowed: "
                          f"{', '.join(sorted(GRID_KEYS))})")
    _plain(spec, str(path))
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ParamsError(f"{path}: name must be lowercase letters, digits and dashes (it starts "
                          f"every experiment's name); got {name!r}")
    fixed = _mapping(spec.get("fixed") or {}, f"{path}: fixed")
    for key in fixed:
        _leaf(key, base_params, f"{path}: fixed")
    blocks = spec.get("grid")
    if not isinstance(blocks, list) or not blocks:
        raise ParamsError(f"{path}: grid must be a non-empty list of blocks of axes")
    grid = Grid(name, path, description=str(spec.get("description", "")))
    seen = set()
    for b, block in enumerate(blocks):
        block = _mapping(block, f"{path}: grid block {b + 1}")
        for key, values in block.items():
            _leaf(key, base_params, f"{path}: grid block {b + 1}")
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
