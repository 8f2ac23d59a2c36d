"""`python -m difftrain.fetch`: make sure ``data.root`` holds CIFAR-10 before `dvc repro`.

DVC hashes the source folder as the prepare stage's dependency, so it must exist first, and the
prepare stage never downloads (a download would change its dependency while it runs). A folder
that already holds the python batches or an image-folder copy is left alone, once checked for
files DVC could not hash (a FIFO would hang `dvc status`); a missing or empty one gets the
original CIFAR-10 through torchvision.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from difftrain.core.cli import run_stage
from difftrain.data.cifar import detect_source
from difftrain.core.errors import DataError


def download(root: str | Path) -> Path:
    """Download the original CIFAR-10 (python batches) through torchvision into ``root``."""
    from torchvision.datasets import CIFAR10

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"data.root {str(root)!r} is empty and downloading CIFAR-10 failed ({exc}); "
            f"put cifar-10-batches-py or an image-folder copy there"
        ) from exc
    return root


def special_files(root: str | Path) -> list[Path]:
    """Entries under ``root`` that are neither regular files nor folders (after links): FIFOs,
    sockets, devices. DVC hashes ``data.root`` as the prepare stage's dependency before any
    stage runs, and reading a FIFO never ends: `dvc status` and `dvc repro` would hang."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        for name in (*dirs, *files):
            path = Path(folder, name)
            try:
                mode = path.stat().st_mode
            except OSError:
                continue  # a dangling link: the prepare stage names it if it is an image
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                found.append(path)
    return found


def main(params):
    source = detect_source(params.data.root)
    if source == "missing":
        print(f"downloading CIFAR-10 into {params.data.root} (torchvision)")
        download(params.data.root)
        return
    special = special_files(params.data.root)
    if special:
        raise DataError(f"{special[0]}: not a regular file (a FIFO, socket or device; "
                        f"{len(special)} such under data.root); DVC would hang reading it as "
                        f"part of the prepare stage's dependency: remove it")
    print(f"{params.data.root}: {source} source in place")


if __name__ == "__main__":
    run_stage(main)
