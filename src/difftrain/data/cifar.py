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
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from difftrain.core.errors import DataError
from difftrain.core.io import read_tensors, tensor_bytes
from difftrain.core.params import CIFAR10_CLASSES, DataParams

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
        if self.labels.dtype != torch.int64 or self.index.dtype != torch.int64:
            raise DataError(f"labels and index must be int64; got {self.labels.dtype} and "
                            f"{self.index.dtype}")
        bad = (self.labels != 0) & (self.labels != 1)
        if bad.any():
            raise DataError(f"labels must be 0 (class x) or 1 (class y); got "
                            f"{sorted(set(self.labels[bad].tolist()))[:5]} at "
                            f"{int(bad.sum())} positions")

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


def _regular_file(path: Path, what: str) -> None:
    """Refuse what is not a regular file (after links) before opening it: reading a FIFO or a
    device would block or never end."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"{path}: missing {what} ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode)
                or stat.S_ISBLK(mode) else "not a regular file")
        raise DataError(f"{path}: is {kind}, where a regular file ({what}) was expected; it "
                        f"was not read")


def _batch_arrays(entry, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3, 32, 32) uint8, labels (N,) int64) of one batch, checked field by field: a
    wrong dtype or layout would otherwise be read as scrambled images (floats cast to 0 or 1, an
    (N, 32, 32, 3) array reshaped as channels first) and bad labels would vanish or be truncated."""
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise DataError(f"{path}: not a CIFAR-10 batch file (expected a dict with 'data' and "
                        f"'labels'; got {type(entry).__name__}"
                        f"{' with keys ' + ', '.join(map(repr, entry)) if isinstance(entry, dict) else ''})")
    data = entry["data"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32):
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise DataError(f"{path}: field 'data' must be a uint8 array of shape (N, 3072), each row "
                        f"1024 red, then green, then blue values; got {got}")
    labels = entry["labels"]
    array = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    if array is None or array.ndim != 1 or array.dtype.kind not in "iu":
        got = (f"{array.dtype} values" if array is not None and array.ndim == 1
               else type(labels).__name__)
        raise DataError(f"{path}: field 'labels' must be a list of integer class indices 0-9; "
                        f"got {got}")
    bad = np.flatnonzero((array < 0) | (array > 9))
    if len(bad):
        raise DataError(f"{path}: field 'labels' holds {len(bad)} values outside 0-9, e.g. "
                        f"{array[bad[0]]} at position {bad[0]}")
    if len(array) != len(data):
        raise DataError(f"{path}: field 'labels' holds {len(array)} labels for {len(data)} images "
                        f"in 'data'")
    return data.reshape(-1, 3, 32, 32), array.astype(np.int64)


def _read_batches(root: Path, split: str, classes) -> tuple[dict, dict]:
    """All images of ``classes`` in one split of the pickled batches, per class, in order, and
    each image's name (``<batch file>#<position>``)."""
    batches = root if root.name == BATCHES_DIR else root / BATCHES_DIR
    data, labels, names = [], [], []
    for name in _PICKLES[split]:
        path = batches / name
        if not path.exists():
            raise DataError(f"{path}: missing CIFAR-10 batch file for split {split!r}")
        _regular_file(path, "CIFAR-10 batch file")
        try:
            with open(path, "rb") as f:
                entry = _BatchUnpickler(f, path).load()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError,
                AttributeError, IndexError) as exc:
            raise DataError(f"{path}: not a CIFAR-10 batch file ({type(exc).__name__}: {exc})") from None
        batch_data, batch_labels = _batch_arrays(entry, path)
        data.append(batch_data)
        labels.append(batch_labels)
        names.extend(f"{path}#{i}" for i in range(len(batch_data)))
    data, labels, names = np.concatenate(data), np.concatenate(labels), np.array(names)
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


def _class_files(root: Path, split: str, classes) -> tuple[dict[str, list[Path]], dict[str, int]]:
    """({class: its image files, sorted by name}, {class folder: files skipped}) for one split.

    Checked before any image is decoded: each class has its own folder (two class names that
    resolve to one folder would train the same images under both labels), every image is a
    regular file (a FIFO would block the read forever). Files of another type are skipped and
    counted, so the prepare stage reports them instead of dropping them silently."""
    files, skipped, resolved = {}, {}, {}
    for name in classes:
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing folder for class {name!r} in split {split!r}")
        target = folder.resolve()
        for other, other_target in resolved.items():
            if target == other_target:
                raise DataError(f"{folder}: resolves to the same folder as class {other!r} "
                                f"({target}); each class needs its own images")
        resolved[name] = target
        entries = sorted(folder.iterdir())
        files[name] = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        for path in files[name]:
            _regular_file(path, "image")
        if not files[name]:
            raise DataError(f"{folder}: no images (expected files ending in "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        others = len(entries) - len(files[name])
        if others:
            skipped[f"{split}/{name}"] = others
    return files, skipped


def _read_image_folder(root: Path, split: str, classes) -> tuple[dict, dict]:
    """All images of ``classes`` in ``root/split/<class>/``, sorted by file name, and their paths."""
    files, _ = _class_files(root, split, classes)
    images, names = {}, {}
    for name, paths in files.items():
        arrays = np.stack([_decode(p) for p in paths])  # (N, 32, 32, 3); ~0.2 ms an image
        images[name] = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
        names[name] = [str(p) for p in paths]
    return images, names


def skipped_files(root: str | Path, classes) -> dict[str, int]:
    """{'<split>/<class>': files there that are not images of a supported type}, image folders
    only (a pickled-batch source has no other files to skip)."""
    if detect_source(root) != "image_folder":
        return {}
    return {k: v for split in SPLITS for k, v in _class_files(Path(root), split, classes)[1].items()}


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


def check_classes_differ(per_class: dict[str, torch.Tensor], names: dict[str, list[str]],
                         split: str) -> None:
    """Refuse images that appear, byte for byte, in both classes of a split: they would be
    trained (and tested) under both labels (e.g. one class folder copied from the other)."""
    x, y = list(per_class)
    shared, i, j = np.intersect1d(_rows({x: per_class[x]}), _rows({y: per_class[y]}),
                                  return_indices=True)
    if len(shared):
        raise DataError(f"{len(shared)} {split} images of class {x!r} are identical to images of "
                        f"class {y!r}, e.g. {names[x][i[0]]} and {names[y][j[0]]}; each image "
                        f"must belong to one class")


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
    for split in SPLITS:
        check_classes_differ(read[split][1], read[split][2], split)
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
