"""Reading inputs and writing outputs so that DVC can trust and reuse them.

* Atomic: every output is written to a temporary sibling and renamed into place only when the
  whole stage has succeeded (:class:`Outputs`), so a crash never leaves a file DVC could mistake
  for a finished one. A rename within one directory is atomic on POSIX.
* Deterministic: tensors are stored as safetensors (a format made for this: a JSON header and
  raw bytes, no code), so identical content gives identical bytes and identical DVC hashes, and
  a rerun upstream reruns nothing downstream. ``torch.save`` embeds a random id per call.
* Strict JSON: metrics hold no NaN or Infinity (not JSON); a non-finite value is written as
  ``null`` and named, with its value, under ``non_finite``.
* Checked early: output folders must be writable before a stage starts its work; a full disk is
  reported with the path and the space needed; a missing or corrupt input names its file and the
  stage that writes it (``WRITERS``).
* Shared: outputs get the permissions the user's umask gives, as files ``dvc checkout`` restores.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from difftrain.core.errors import DataError, DifftrainError

# Which stage writes which output (path prefixes as in dvc.yaml), for error messages that say
# how to get a missing input back. tests/test_io.py keeps it in step with dvc.yaml.
WRITERS = {
    "data/prepared": "prepare", "metrics/prepare.json": "prepare",
    "data/pairs": "pairs", "metrics/pairs.json": "pairs",
    "models": "train", "dvclive/train": "train", "metrics/train.json": "train",
    "plots/features": "features", "metrics/features.json": "features",
    "plots/attack": "attack", "data/attack": "attack", "metrics/attack.json": "attack",
    "plots/certify": "certify", "data/certify": "certify", "metrics/certify.json": "certify",
    "plots/figures": "plot", "metrics/summary.json": "plot",
    "plots/theory": "theory", "plots/theory_figures": "theory", "metrics/theory.json": "theory",
}


def written_by(path: str | Path) -> str:
    """'; the train stage writes it (dvc repro train)' for a known output, else ''."""
    text = f"/{Path(path).as_posix()}/"
    for prefix, stage in WRITERS.items():
        if f"/{prefix}/" in text:
            return f"; the {stage} stage writes it (dvc repro {stage})"
    return ""


def git_revision(cwd: str | Path = ".") -> str | None:
    """The commit the code came from (with '-dirty' when the tree has changes), or None."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def inside_project(final: str | Path, root: str | Path = ".") -> None:
    """Refuse an output whose path passes through a link to somewhere outside the project
    (``root``, where DVC runs the stage): the stage would write through it, and DVC would then
    cache the outside folder's other files as the output."""
    root = Path(root).resolve()
    path = Path(final)
    parts = [] if path.is_absolute() else list(path.parts)
    for i in range(len(parts)):
        current = Path(*parts[:i + 1])
        if current.is_symlink():
            target = (root / current).resolve()
            if target != root and root not in target.parents:
                raise DifftrainError(f"{current}: is a link to {target}, outside the project; the "
                                     f"stage will not write {final} through it (remove the link, "
                                     f"`dvc repro` recreates the output)")


def writable_folder(final: str | Path) -> None:
    """Fail now, naming the folder, if ``final`` could not be written."""
    folder = Path(final).parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DifftrainError(f"{existing}: cannot write there (needed for {final}); make it a "
                             f"writable folder first")


def ensure_writable(*finals: str | Path) -> None:
    """Fail now, naming the folder, if a stage's output could not be written at its end, or
    would be written outside the project through a link (``inside_project``)."""
    for final in finals:
        inside_project(final)
        writable_folder(final)


def strict_json(obj, where: str = "", found: list | None = None):
    """``obj`` with every non-finite float replaced by None, its path and value added to
    ``found``."""
    if isinstance(obj, dict):
        return {k: strict_json(v, f"{where}.{k}" if where else str(k), found)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v, f"{where}.{i}", found) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found.append(f"{where}: {obj}")
        return None
    return obj


def json_text(obj: dict) -> str:
    """Strict JSON: non-finite floats become null and are named under ``non_finite``."""
    found: list[str] = []
    clean = strict_json(obj, found=found)
    if found:
        clean["non_finite"] = found
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes: the same tensors and metadata always give the same bytes.

    safetensors keeps its metadata in a hash map whose order varies between calls, so the
    metadata travels as one entry, ``difftrain``, holding it as JSON with sorted keys."""
    from safetensors.torch import save

    header = {"difftrain": json.dumps(metadata, sort_keys=True)} if metadata else None
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)


def read_tensors(path: str | Path, what: str, error: type[DifftrainError] = DataError
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing or unreadable one is ``error``
    naming the file and the stage that writes it. Reading runs no code from the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found{written_by(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            return ({k: f.get_tensor(k) for k in f.keys()},
                    json.loads(header["difftrain"]) if "difftrain" in header else {})
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise error(f"{path}: not a {what} ({type(exc).__name__}: {exc}){written_by(path)}") from None


def read_json(path: str | Path) -> dict:
    """A JSON object from an input file; missing, empty or damaged ones name the file and the
    stage that writes it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found{written_by(path)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}){written_by(path)}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}{written_by(path)}")
    return data


def field(doc: dict, dotted: str, source: str | Path):
    """``doc["a"]["b"]`` for ``"a.b"``; a missing section or key names the file and the key."""
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"{source}: has no {dotted}{written_by(source)}")
        node = node[part]
    return node


def is_accuracy(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= 1)


def accuracy_field(doc: dict, dotted: str, source: str | Path) -> float:
    """``field`` for an accuracy: a share of images, so a number in [0, 1], or an error naming
    the file and the key (a value outside it is a damaged or hand-edited file)."""
    value = field(doc, dotted, source)
    if not is_accuracy(value):
        raise DataError(f"{source}: {dotted} must be an accuracy in [0, 1]; got {value!r}"
                        f"{written_by(source)}")
    return float(value)


def write_bytes(path: Path, data: bytes, final: Path) -> None:
    """Write ``data`` to ``path``; a full disk names ``final`` and the space it needed."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(path.parent).free
        raise DifftrainError(f"{final}: no space left on the device (needs {len(data):,} bytes, "
                             f"{free:,} free in {path.parent})") from None


class Outputs:
    """Collects a stage's outputs in temporary files and moves them into place together.

    Use as a context manager: on an exception nothing is moved and the temporaries are removed,
    so the stage's declared outputs either all appear, complete, or none of them do.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | Path) -> Path:
        """A temporary path to write ``final`` to; it is renamed into place on success."""
        final = _prepare_parent(final)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are shared like checkouts
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def dir(self, final: str | Path) -> Path:
        """A temporary directory standing in for the output directory ``final``."""
        final = _prepare_parent(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        self._pending.append((tmp, final))
        return tmp

    def save_bytes(self, data: bytes, final: str | Path) -> None:
        write_bytes(self.path(final), data, Path(final))

    def save_tensors(self, tensors: dict[str, torch.Tensor], final: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
        self.save_bytes(tensor_bytes(tensors, metadata), final)

    def save_json(self, obj: dict, final: str | Path) -> None:
        self.save_bytes(json_text(obj).encode(), final)

    def save_csv(self, table, final: str | Path) -> None:
        self.save_bytes(table.to_csv(index=False).encode(), final)

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for tmp, _ in self._pending:
                _remove(tmp)
            return
        for tmp, final in self._pending:
            _remove(final)
            os.replace(tmp, final)


def _prepare_parent(final: str | Path) -> Path:
    """Create the parent folder and clear temporaries a killed run of this stage left there."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        _remove(stale)
    return final


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# gzip with a fixed header time, so the same table gives the same bytes (records committed to git)
GZIP = {"method": "gzip", "mtime": 0}
