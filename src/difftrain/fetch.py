"""`python -m difftrain.fetch`: make sure ``data.root`` holds CIFAR-10 before `dvc repro`.

DVC hashes the source folder as the prepare stage's dependency, so it must exist first, and the
prepare stage never downloads (a download would change its dependency while it runs). A folder
that already holds the python batches or an image-folder copy is left alone; a missing or empty
one gets the original CIFAR-10 through torchvision.
"""

from __future__ import annotations

from pathlib import Path

from difftrain.cli import run_stage
from difftrain.data import detect_source
from difftrain.errors import DataError


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


def main(params):
    source = detect_source(params.data.root)
    if source == "missing":
        print(f"downloading CIFAR-10 into {params.data.root} (torchvision)")
        download(params.data.root)
    else:
        print(f"{params.data.root}: {source} source in place")


if __name__ == "__main__":
    run_stage(main)
