"""CIFAR-10 sources and the prepared two-class splits every later stage reads.

Two sources, detected from ``data.root``:

* ``cifar-10-batches-py`` (torchvision's pickled batches, the original CIFAR-10),
* an image-folder tree ``{train,test}/<class name>/*`` (PNG or JPEG; e.g. the offline JPEG copy).

A missing or empty ``data.root`` is an error here: ``python -m difftrain.fetch`` (``make data``)
downloads CIFAR-10 there before ``dvc repro``, since DVC hashes the folder as prepare's dependency
and a download during the stage would change a dependency while it runs.

A prepared split is a dict of tensors: ``images`` uint8 (N, 3, 32, 32), ``labels`` int64 (0 for
class x, the first of ``data.classes``; 1 for class y) and ``index`` int64, the image's position
within its class in the source (so a result can be traced back to the source file).
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from difftrain.errors import DataError
from difftrain.params import CIFAR10_CLASSES, DataParams

SPLITS = ("train", "test")
PREPARED = "data/prepared"  # where the prepare stage writes {train,test}.pt
BATCHES_DIR = "cifar-10-batches-py"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm"}
_PICKLES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,), 0 = class x, 1 = class y
    index: torch.Tensor  # int64 (N,), position within its class in the source

    def __post_init__(self):
        n = len(self.labels)
        if self.images.dtype != torch.uint8 or tuple(self.images.shape[1:]) != (3, 32, 32):
            raise DataError(f"images must be uint8 (N, 3, 32, 32); got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if len(self.images) != n or len(self.index) != n:
            raise DataError("images, labels and index must have the same length")

    def to_dict(self) -> dict:
        return {"images": self.images, "labels": self.labels, "index": self.index}

    def counts(self, classes) -> dict[str, int]:
        return {name: int((self.labels == k).sum()) for k, name in enumerate(classes)}


def detect_source(root: str | Path) -> str:
    """'batches', 'image_folder' or 'missing' (root missing or empty)."""
    root = Path(root)
    if (root / BATCHES_DIR).is_dir() or root.name == BATCHES_DIR:
        return "batches"
    if root.is_dir() and any((root / split).is_dir() for split in SPLITS):
        return "image_folder"
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return "missing"
    raise DataError(
        f"data.root {str(root)!r} holds neither {BATCHES_DIR}/ nor an image-folder tree "
        f"(train/<class>/*, test/<class>/*); point data.root at one, or at a missing or empty "
        f"folder and run `python -m difftrain.fetch` to download CIFAR-10 there"
    )


def _read_batches(root: Path, split: str, classes) -> dict[str, torch.Tensor]:
    """All images of ``classes`` in one split of the pickled batches, per class, in order."""
    batches = root if root.name == BATCHES_DIR else root / BATCHES_DIR
    data, labels = [], []
    for name in _PICKLES[split]:
        path = batches / name
        if not path.is_file():
            raise DataError(f"{path}: missing CIFAR-10 batch file for split {split!r}")
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry["labels"], dtype=np.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a CIFAR-10 batch file ({type(exc).__name__}: {exc})") from None
    data, labels = np.concatenate(data), np.concatenate(labels)
    if len(data) != len(labels):
        raise DataError(f"{batches}: {split} images and labels differ in count")
    return {name: torch.from_numpy(data[labels == CIFAR10_CLASSES.index(name)].copy())
            for name in classes}


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            mode, size = image.mode, image.size
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot be decoded as an image ({exc})") from None
    if mode != "RGB" or size != (32, 32):
        raise DataError(f"{path}: expected a 32x32 RGB image; got {size[0]}x{size[1]} {mode}")
    return array


def _read_image_folder(root: Path, split: str, classes) -> dict[str, torch.Tensor]:
    """All images of ``classes`` in ``root/split/<class>/``, sorted by file name."""
    out = {}
    for name in classes:
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing folder for class {name!r} in split {split!r}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no images (expected files ending in "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        arrays = np.stack([_decode(p) for p in files])  # (N, 32, 32, 3); ~0.2 ms an image
        out[name] = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    return out


def read_source(root: str | Path, classes, split: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(source format, {class name: uint8 images}) for one split."""
    source = detect_source(root)
    if source == "missing":
        raise DataError(f"data.root {str(root)!r} is missing or empty; put cifar-10-batches-py or "
                        f"an image-folder copy there, or run `python -m difftrain.fetch` "
                        f"(`make data`) to download CIFAR-10")
    reader = _read_batches if source == "batches" else _read_image_folder
    return source, reader(Path(root), split, classes)


def subsample(per_class: dict[str, torch.Tensor], classes, n: int | None, seed: int,
              what: str) -> Split:
    """Keep ``n`` images per class (all if None), chosen by ``seed``, in source order."""
    generator = torch.Generator().manual_seed(seed)
    images, labels, index = [], [], []
    for k, name in enumerate(classes):
        available = len(per_class[name])
        if n is None:
            keep = torch.arange(available)
        elif n > available:
            raise DataError(f"{what} is {n}, but class {name!r} has only {available} images")
        else:
            keep = torch.randperm(available, generator=generator)[:n].sort().values
        images.append(per_class[name][keep])
        labels.append(torch.full((len(keep),), k, dtype=torch.int64))
        index.append(keep)
    return Split(torch.cat(images), torch.cat(labels), torch.cat(index))


def prepare(params: DataParams) -> tuple[str, dict[str, Split]]:
    """Read, check and subsample both splits: (source format, {split: Split})."""
    splits, source = {}, None
    for split, n in (("train", params.n_train_per_class), ("test", params.n_test_per_class)):
        # The two splits draw from independent streams, so changing one n leaves the other alone.
        source, per_class = read_source(params.root, params.classes, split)
        splits[split] = subsample(per_class, params.classes, n, params.seed + SPLITS.index(split),
                                  f"data.n_{split}_per_class")
    return source, splits


def load_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prepared split not found; run the prepare stage (dvc repro)")
    try:
        return Split(**torch.load(path, weights_only=True))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a prepared split ({exc})") from None


def load_splits(folder: str | Path = PREPARED) -> dict[str, Split]:
    """Both prepared splits, {'train': ..., 'test': ...}."""
    return {name: load_split(Path(folder) / f"{name}.pt") for name in SPLITS}


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """Content hash of tensors (dtype, shape and bytes), independent of how they were saved."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to floats in [0, 1], the input space the attacks bound."""
    return images.float().div_(255)
