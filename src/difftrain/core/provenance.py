"""Where a number came from: data source and code revision, recorded in every metrics file."""

from __future__ import annotations

from pathlib import Path

from difftrain.core.io import git_revision, read_json
from difftrain.core.params import Params

SOURCE_LABELS = {
    "batches": "CIFAR-10 (original, torchvision)",
    "image_folder": "CIFAR-10 (image-folder copy)",
}


def data_label(params: Params, source: str) -> str:
    """How plots and tables name the data; JPEG copies are said to be such (they are lossy)."""
    if source == "image_folder" and any(
        Path(params.data.root, "train", params.data.classes[0]).glob("*.jp*g")
    ):
        return "CIFAR-10 (JPEG copy)"
    return SOURCE_LABELS[source]


PREPARED = Path("data/prepared/provenance.json")


def data_provenance(params: Params, source: str, data_sha256: str) -> dict:
    """Written by prepare beside the splits: source, label, root and a hash of the prepared data.

    It holds no code revision, so a commit that leaves the data unchanged reruns nothing.
    """
    return {"data_source": source, "data_label": data_label(params, source),
            "data_root": params.data.root, "data_sha256": data_sha256}


def inherited(path: str | Path = PREPARED) -> dict:
    """What every metrics file records: the prepared data's provenance and the running code."""
    return {**read_json(path), "git_revision": git_revision()}
