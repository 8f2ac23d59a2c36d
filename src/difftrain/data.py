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
from difftrain.io import read_tensors, tensor_bytes
from difftrain.params import CIFAR10_CLASSES, DataParams

SPLITS = ("train", "test")
PREPARED = "data/prepared"  # where the prepare stage writes {train,test}.safetensors
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

    def to_bytes(self) -> bytes:
        """The split as a safetensors file (identical splits give identical bytes)."""
        return tensor_bytes(self.to_dict())

    def counts(self, classes) -> dict[str, int]:
        return {name: int((self.labels == k).sum()) for k, name in enumerate(classes)}


def detect_source(root: str | Path) -> str:
    """'batches', 'image_folder' or 'missing' (root missing or empty)."""
    root = Path(root)
    if root.is_symlink() and not root.exists():
        raise DataError(f"data.root {str(root)!r} is a link to {str(root.readlink())!r}, which "
                        f"does not exist; point the link at a CIFAR-10 copy")
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


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds: dicts, lists, bytes, str, ints and numpy
    arrays. Any other global (a function a crafted file would call) is refused *before* it is
    looked up, so nothing in the file runs."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
                 for name in ("_reconstruct", "scalar")),
               *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core"))}

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"{self.path}: refused to load {module}.{name} (a CIFAR-10 batch holds "
                            f"only numpy arrays, lists, bytes, str, int and dicts); nothing from "
                            f"the file was run")
        return super().find_class(module, name)


def _read_batches(root: Path, split: str, classes) -> tuple[dict, dict]:
    """All images of ``classes`` in one split of the pickled batches, per class, in order, and
    each image's name (``<batch file>#<position>``)."""
    batches = root if root.name == BATCHES_DIR else root / BATCHES_DIR
    data, labels, names = [], [], []
    for name in _PICKLES[split]:
        path = batches / name
        if not path.is_file():
            raise DataError(f"{path}: missing CIFAR-10 batch file for split {split!r}")
        try:
            with open(path, "rb") as f:
                entry = _BatchUnpickler(f, path).load()
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry["labels"], dtype=np.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError,
                AttributeError, IndexError) as exc:
            raise DataError(f"{path}: not a CIFAR-10 batch file ({type(exc).__name__}: {exc})") from None
        names.extend(f"{path}#{i}" for i in range(len(data[-1])))
    data, labels, names = np.concatenate(data), np.concatenate(labels), np.array(names)
    if len(data) != len(labels):
        raise DataError(f"{batches}: {split} images and labels differ in count")
    keep = {name: labels == CIFAR10_CLASSES.index(name) for name in classes}
    return ({name: torch.from_numpy(data[mask].copy()) for name, mask in keep.items()},
            {name: names[mask].tolist() for name, mask in keep.items()})


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


def _read_image_folder(root: Path, split: str, classes) -> tuple[dict, dict]:
    """All images of ``classes`` in ``root/split/<class>/``, sorted by file name, and their paths."""
    images, names = {}, {}
    for name in classes:
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing folder for class {name!r} in split {split!r}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no images (expected files ending in "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        arrays = np.stack([_decode(p) for p in files])  # (N, 32, 32, 3); ~0.2 ms an image
        images[name] = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
        names[name] = [str(p) for p in files]
    return images, names


def read_source(root: str | Path, classes, split: str) -> tuple[str, dict, dict]:
    """(source format, {class name: uint8 images}, {class name: image names}) for one split."""
    source = detect_source(root)
    if source == "missing":
        raise DataError(f"data.root {str(root)!r} is missing or empty; put cifar-10-batches-py or "
                        f"an image-folder copy there, or run `python -m difftrain.fetch` "
                        f"(`make data`) to download CIFAR-10")
    reader = _read_batches if source == "batches" else _read_image_folder
    return source, *reader(Path(root), split, classes)


def _rows(per_class: dict[str, torch.Tensor]) -> np.ndarray:
    """Each image as one opaque value (its 3072 bytes), for exact comparisons in numpy."""
    flat = np.ascontiguousarray(torch.cat(list(per_class.values())).flatten(1).numpy())
    return flat.view(np.dtype((np.void, flat.shape[1]))).ravel()


def check_no_leak(train: dict, test: dict, train_names: dict, test_names: dict) -> None:
    """Refuse test images identical (byte for byte) to training images: test accuracy on them
    would be training accuracy. Catches a test/ folder that links to train/, too."""
    shared, i, j = np.intersect1d(_rows(train), _rows(test), return_indices=True)
    if len(shared):
        a = [n for names in train_names.values() for n in names][i[0]]
        b = [n for names in test_names.values() for n in names][j[0]]
        raise DataError(f"{len(shared)} test images are identical to training images, e.g. {b} "
                        f"and {a}; the splits must not share images (is test/ a link to train/?)")


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
    read = {split: read_source(params.root, params.classes, split) for split in SPLITS}
    source = read["train"][0]
    check_no_leak(read["train"][1], read["test"][1], read["train"][2], read["test"][2])
    splits = {}
    for split, n in (("train", params.n_train_per_class), ("test", params.n_test_per_class)):
        # The two splits draw from independent streams, so changing one n leaves the other alone.
        splits[split] = subsample(read[split][1], params.classes, n,
                                  params.seed + SPLITS.index(split), f"data.n_{split}_per_class")
    return source, splits


def load_split(path: str | Path) -> Split:
    tensors, _ = read_tensors(path, "prepared split")
    try:
        return Split(**tensors)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise DataError(f"{path}: not a prepared split ({exc})") from None


def load_splits(folder: str | Path = PREPARED) -> dict[str, Split]:
    """Both prepared splits, {'train': ..., 'test': ...}."""
    return {name: load_split(Path(folder) / f"{name}.safetensors") for name in SPLITS}


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """Content hash of tensors (dtype, shape and bytes), independent of how they were saved."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def splits_sha256(splits: dict[str, Split]) -> str:
    """Content hash of the prepared data (every split's images and labels): recorded in the
    provenance and in the checkpoint, so a model trained on other data is recognised."""
    return tensor_sha256(*(t for name in SPLITS for t in (splits[name].images, splits[name].labels)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to floats in [0, 1], the input space the attacks bound."""
    return images.float().div_(255)
