"""Writing outputs so that a crash never leaves a file DVC could mistake for a finished one.

Every output is written to a temporary sibling and renamed into place only when the whole
stage has succeeded (:class:`Outputs`). A rename within one directory is atomic on POSIX.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch


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
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def dir(self, final: str | Path) -> Path:
        """A temporary directory standing in for the output directory ``final``."""
        final = _prepare_parent(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        self._pending.append((tmp, final))
        return tmp

    def save_torch(self, obj, final: str | Path) -> None:
        torch.save(obj, self.path(final))

    def save_json(self, obj, final: str | Path) -> None:
        self.path(final).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

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


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
