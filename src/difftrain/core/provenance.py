"""Where a number came from: data source and code revision, recorded in every metrics file."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

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

    It holds no code revision, so a commit that leaves the data unchanged reruns nothing. It
    names the classes and which is label 0 (the positive score), so every metrics file says what
    its numbers are about even where ``data.classes`` is not the default order.
    """
    return {"data_source": source, "data_label": data_label(params, source),
            "data_root": params.data.root, "data_sha256": data_sha256,
            "classes": list(params.data.classes), "label_0": params.data.classes[0]}


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What decides whether two runs of the same parameters give byte-identical models.

    torch picks its CPU kernels by instruction set (``cpu_capability``: AVX512, AVX2, ...) and
    splits reductions by thread count, so the same seed trains different models on different
    CPU kinds or thread counts (the headline numbers agree within their seed spread).
    """
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_model": _cpu_model(), "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__.split("+")[0]}


def inherited(path: str | Path = PREPARED) -> dict:
    """What every metrics file records: the prepared data's provenance, the code and the machine."""
    return {**read_json(path), "git_revision": git_revision(), **machine()}
