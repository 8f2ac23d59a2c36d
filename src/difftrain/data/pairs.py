"""The pair index: which cross-class pairs (i, j) the differential loss sees, epoch by epoch.

Listing pairs explicitly does not scale (|I| x |J| = 25 million at paper scale) and wastes
compute: a block of B class-x and B class-y images yields all B^2 cross pairs from only 2B
forward passes. So the index is block-structured:

* each class is split once into K blocks (a seeded permutation cut into K near-equal parts;
  the same K for both classes, so blocks differ in size by at most one image),
* a *round* is a list of K block pairs (a, b) that uses every x-block and every y-block once,
  so one round costs exactly one pass over the training images, like one CE epoch,
* training epoch e uses round e. With the ``uniform`` strategy the rounds are "diagonals"
  {(a, (a + d) mod K)}: the K diagonals partition all K^2 block pairs, so choosing
  D = round(fraction * K) distinct diagonals covers ``fraction`` of all pairs exactly, and the
  epochs cycle through them.

Other strategies (e.g. hard pairs near the boundary) fit the same format: any partition and
any list of block pairs per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from difftrain.data.cifar import tensor_sha256
from difftrain.core.errors import DataError
from difftrain.core.io import read_tensors, tensor_bytes
from difftrain.core.labels import CLASS_X, is_x
from difftrain.core.params import PairsParams

FORMAT_VERSION = 2  # 2: safetensors with the strategy and labels hash as metadata
INDEX_PATH = "data/pairs/index.safetensors"
MAX_INDEX_BYTES = 2**30  # a larger index means an epoch count no one trains for (e.g. a typo)
FRACTION_RTOL = 0.1  # refuse a pairs.fraction whose achievable coverage is further off than this


@dataclass(frozen=True)
class PairIndex:
    x_order: torch.Tensor  # int64 (n_x,): positions (within the training split) of class-x images
    x_offsets: torch.Tensor  # int64 (K + 1,): block a of class x is x_order[x_offsets[a]:x_offsets[a+1]]
    y_order: torch.Tensor  # same for class y
    y_offsets: torch.Tensor
    rounds: torch.Tensor  # int64 (epochs, K, 2): block pairs (a, b) of each epoch
    strategy: str
    labels_sha256: str  # hash of the training labels the index was built for

    @property
    def n_blocks(self) -> int:
        return len(self.x_offsets) - 1

    @property
    def epochs(self) -> int:
        return len(self.rounds)

    def block(self, cls: int, b: int) -> torch.Tensor:
        order, offsets = (self.x_order, self.x_offsets) if cls == CLASS_X else (self.y_order, self.y_offsets)
        return order[offsets[b]:offsets[b + 1]]

    TENSORS = ("x_order", "x_offsets", "y_order", "y_offsets", "rounds")

    def to_bytes(self) -> bytes:
        """The index as a safetensors file (identical indices give identical bytes)."""
        return tensor_bytes({k: getattr(self, k) for k in self.TENSORS},
                            {"format_version": str(FORMAT_VERSION), "strategy": self.strategy,
                             "labels_sha256": self.labels_sha256})

    @classmethod
    def from_parts(cls, tensors: dict, metadata: dict, path: str | Path) -> "PairIndex":
        if metadata.get("format_version") != str(FORMAT_VERSION):
            raise DataError(f"{path}: pair index format {metadata.get('format_version')!r} is not "
                            f"{FORMAT_VERSION}; rebuild it with the pairs stage (dvc repro pairs)")
        missing = [k for k in cls.TENSORS if k not in tensors]
        if missing or "labels_sha256" not in metadata:
            raise DataError(f"{path}: not a pair index (missing {missing or 'labels_sha256'}); "
                            f"the pairs stage writes it (dvc repro pairs)")
        return cls(**{k: tensors[k] for k in cls.TENSORS}, strategy=metadata.get("strategy", ""),
                   labels_sha256=metadata["labels_sha256"])

    def coverage(self) -> dict:
        """Pairs covered over all epochs (distinct), and per-image coverage as a fraction."""
        kx = self.x_offsets.diff()
        ky = self.y_offsets.diff()
        seen = torch.zeros(self.n_blocks, self.n_blocks, dtype=torch.bool)
        seen[self.rounds[..., 0].flatten(), self.rounds[..., 1].flatten()] = True
        pairs = int((kx[:, None] * ky[None, :])[seen].sum())
        per_x = (seen.long() @ ky).double() / len(self.y_order)  # share of class y each x meets
        per_y = (kx @ seen.long()).double() / len(self.x_order)
        per_image = torch.cat([per_x, per_y])
        total = len(self.x_order) * len(self.y_order)
        return {"pairs_covered": pairs, "pairs_total": total, "fraction": pairs / total,
                "image_coverage_min": float(per_image.min()),
                "image_coverage_max": float(per_image.max()),
                "blocks_per_class": self.n_blocks, "epochs": self.epochs}


def _partition(members: torch.Tensor, k: int, generator: torch.Generator):
    order = members[torch.randperm(len(members), generator=generator)]
    sizes = torch.full((k,), len(members) // k, dtype=torch.int64)
    sizes[: len(members) % k] += 1
    return order, torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])


def n_blocks(n_x: int, n_y: int, block_size: int) -> int:
    """Blocks per class: about ``block_size`` images each, at least one image of each class."""
    return min(max(1, round((n_x + n_y) / 2 / block_size)), n_x, n_y)


def n_rounds_needed(fraction: float, blocks: int) -> int:
    """Distinct diagonals needed to cover ``fraction`` of all block pairs (at least one)."""
    return max(1, round(fraction * blocks))


def build(labels: torch.Tensor, params: PairsParams, epochs: int) -> PairIndex:
    """The pair index for training labels and ``epochs`` epochs; it records the labels' hash."""
    x = torch.nonzero(is_x(labels)).flatten()
    y = torch.nonzero(~is_x(labels)).flatten()
    if len(x) == 0 or len(y) == 0:
        raise DataError("the training split must hold images of both classes to build pairs")
    smaller = min(len(x), len(y))
    if params.block_size > smaller:
        raise DataError(f"pairs.block_size is {params.block_size}, but the smaller training class "
                        f"has only {smaller} images; lower pairs.block_size")
    k = n_blocks(len(x), len(y), params.block_size)
    size = 16 * epochs * k  # the rounds: (epochs, k, 2) int64
    if size > MAX_INDEX_BYTES:
        raise DataError(f"train.epochs={epochs} needs a pair index of about {size / 2**30:.3g} GiB "
                        f"({epochs} epochs x {k} block pairs x 16 bytes; at most "
                        f"{MAX_INDEX_BYTES / 2**30:g} GiB); lower train.epochs")
    diagonals = n_rounds_needed(params.fraction, k)
    achieved = diagonals / k
    if abs(achieved - params.fraction) > FRACTION_RTOL * params.fraction:
        lower = max(1, int(params.fraction * k)) / k
        raise DataError(
            f"pairs.fraction={params.fraction:g} cannot be met with {k} blocks per class "
            f"(pairs.block_size={params.block_size}): it would cover {achieved:.3g}; achievable "
            f"fractions are multiples of 1/{k}, the nearest {lower:.3g} and "
            f"{min(1.0, lower + 1 / k):.3g}; use one of those or change pairs.block_size")
    if diagonals > epochs:
        raise DataError(
            f"pairs.fraction={params.fraction} needs {diagonals} epochs (one block diagonal per "
            f"epoch, {k} blocks per class at pairs.block_size={params.block_size}), but "
            f"train.epochs is {epochs}; raise train.epochs to {diagonals}, lower pairs.fraction "
            f"to {epochs / k:.3g} or less, or raise pairs.block_size"
        )
    generator = torch.Generator().manual_seed(params.seed)
    x_order, x_offsets = _partition(x, k, generator)
    y_order, y_offsets = _partition(y, k, generator)
    chosen = torch.randperm(k, generator=generator)[:diagonals]
    rounds = []
    for epoch in range(epochs):
        d = chosen[epoch % diagonals]
        a = torch.randperm(k, generator=generator)  # block order within the epoch
        rounds.append(torch.stack([a, (a + d) % k], dim=1))
    return PairIndex(x_order, x_offsets, y_order, y_offsets, torch.stack(rounds),
                     params.strategy, tensor_sha256(labels))


def not_needed(loss: str) -> bytes:
    """The pairs stage's output for an objective that reads no index: a file that says so."""
    return tensor_bytes({}, {"format_version": str(FORMAT_VERSION), "not_needed_by": loss})


def load(path: str | Path = INDEX_PATH) -> PairIndex:
    tensors, metadata = read_tensors(path, "pair index")
    if "not_needed_by" in metadata:
        raise DataError(f"{path} was written for loss {metadata['not_needed_by']!r}, which needs "
                        f"no pair index; rerun the pairs stage (dvc repro pairs)")
    return PairIndex.from_parts(tensors, metadata, path)


def check(index: PairIndex | None, labels: torch.Tensor, epochs: int, loss: str) -> None:
    """Refuse a pair index that is missing or was built for other data or another epoch count."""
    if index is None:
        raise DataError(f"loss {loss!r} needs the pair index (data/pairs/index.safetensors); "
                        f"run the pairs stage")
    if index.labels_sha256 != tensor_sha256(labels):
        raise DataError("data/pairs/index.safetensors was built for other training data; rerun the "
                        "pairs stage (dvc repro)")
    if index.epochs != epochs:
        raise DataError(f"data/pairs/index.safetensors holds {index.epochs} epochs but train.epochs is "
                        f"{epochs}; rerun the pairs stage (dvc repro)")
    if len(index.x_order) + len(index.y_order) != len(labels):
        raise DataError("data/pairs/index.safetensors does not cover the training split; rerun pairs")
