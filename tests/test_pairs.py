import pytest
import torch

from difftrain.data import pairs
from difftrain.data.cifar import tensor_sha256
from difftrain.core.io import tensor_bytes
from difftrain.core.errors import DataError
from difftrain.core.params import PairsParams


def _labels(nx, ny, seed=0):
    labels = torch.cat([torch.zeros(nx, dtype=torch.int64), torch.ones(ny, dtype=torch.int64)])
    return labels[torch.randperm(nx + ny, generator=torch.Generator().manual_seed(seed))]


def _explicit_pairs(index: pairs.PairIndex) -> set[tuple[int, int]]:
    seen = set()
    for epoch_round in index.rounds:
        for a, b in epoch_round.tolist():
            seen.update((i, j) for i in index.block(0, a).tolist() for j in index.block(1, b).tolist())
    return seen


@pytest.mark.parametrize("nx, ny, block, fraction, epochs",
                         [(40, 40, 4, 0.5, 6), (37, 45, 5, 0.25, 4), (50, 30, 8, 1.0, 6)])
def test_only_cross_pairs_and_fraction_within_tolerance(nx, ny, block, fraction, epochs):
    labels = _labels(nx, ny)
    index = pairs.build(labels, PairsParams(fraction=fraction, block_size=block), epochs)
    seen = _explicit_pairs(index)
    assert all(labels[i] == 0 and labels[j] == 1 for i, j in seen)
    coverage = index.coverage()
    assert coverage["pairs_covered"] == len(seen)  # the compact count equals the explicit one
    assert coverage["fraction"] == pytest.approx(fraction, abs=0.5 / index.n_blocks + 0.02)
    assert coverage["image_coverage_min"] > 0  # every image is paired in every epoch
    covered = {i for i, _ in seen} | {j for _, j in seen}
    assert covered == set(range(nx + ny))


def test_each_epoch_uses_every_image_once():
    labels = _labels(30, 34)
    index = pairs.build(labels, PairsParams(fraction=0.5, block_size=4), 5)
    for epoch_round in index.rounds:
        xs = torch.cat([index.block(0, a) for a, _ in epoch_round.tolist()])
        ys = torch.cat([index.block(1, b) for _, b in epoch_round.tolist()])
        assert sorted(xs.tolist()) == torch.nonzero(labels == 0).flatten().tolist()
        assert sorted(ys.tolist()) == torch.nonzero(labels == 1).flatten().tolist()


def test_full_fraction_covers_every_pair():
    labels = _labels(12, 12)
    index = pairs.build(labels, PairsParams(fraction=1.0, block_size=3), 4)
    assert len(_explicit_pairs(index)) == 144
    assert index.coverage()["fraction"] == 1.0


def test_same_seed_same_index_other_seed_other_index():
    labels = _labels(40, 40)
    a = pairs.build(labels, PairsParams(seed=3, fraction=0.3, block_size=4), 5)
    b = pairs.build(labels, PairsParams(seed=3, fraction=0.3, block_size=4), 5)
    c = pairs.build(labels, PairsParams(seed=4, fraction=0.3, block_size=4), 5)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x_order", "rounds"))
    assert not torch.equal(a.x_order, c.x_order)


def test_too_few_epochs_for_the_fraction_is_explained():
    with pytest.raises(DataError, match=r"pairs.fraction=1.0 needs 10 epochs .* train.epochs is 3"):
        pairs.build(_labels(40, 40), PairsParams(fraction=1.0, block_size=4), 3)


def test_block_larger_than_a_class_is_explained():
    with pytest.raises(DataError, match="pairs.block_size is 64, but the smaller training class has only 10"):
        pairs.build(_labels(10, 40), PairsParams(block_size=64), 3)


def test_round_trip_identical_bytes_and_format_check(tmp_path):
    labels = _labels(20, 20)
    index = pairs.build(labels, PairsParams(fraction=0.4, block_size=4), 2)
    assert index.to_bytes() == pairs.build(labels, PairsParams(fraction=0.4, block_size=4), 2).to_bytes()
    (tmp_path / "index.safetensors").write_bytes(index.to_bytes())
    loaded = pairs.load(tmp_path / "index.safetensors")
    assert loaded.labels_sha256 == tensor_sha256(labels) and torch.equal(loaded.rounds, index.rounds)
    tensors = {k: getattr(index, k) for k in index.TENSORS}
    (tmp_path / "old.safetensors").write_bytes(tensor_bytes(tensors, {"format_version": "1"}))
    with pytest.raises(DataError, match="old.safetensors: pair index format '1' is not 2"):
        pairs.load(tmp_path / "old.safetensors")
    with pytest.raises(DataError, match="missing.safetensors: pair index not found"):
        pairs.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("fraction, blocks, message", [
    (1e-9, 6, r"pairs.fraction=1e-09 cannot be met with 6 blocks per class .* it would cover "
              r"0.167; achievable fractions are multiples of 1/6, the nearest 0.167 and 0.333"),
    (0.25, 6, r"pairs.fraction=0.25 cannot be met with 6 blocks .* cover 0.333"),
])
def test_a_fraction_that_cannot_be_met_is_refused_with_the_achievable_values(fraction, blocks, message):
    labels = _labels(6 * blocks, 6 * blocks)
    with pytest.raises(DataError, match=message):
        pairs.build(labels, PairsParams(fraction=fraction, block_size=6), 10)
    # within 10% of the request is accepted: 0.25 of 78 blocks is 20 diagonals, 0.256
    index = pairs.build(_labels(78, 78), PairsParams(fraction=0.25, block_size=1), 20)
    assert index.coverage()["fraction"] == pytest.approx(20 / 78)


def test_an_epoch_count_that_would_exhaust_memory_is_refused_with_the_estimate():
    with pytest.raises(DataError, match=r"train.epochs=100000000 needs a pair index of about 11.9 GiB "
                                        r"\(100000000 epochs x 8 block pairs x 16 bytes"):
        pairs.build(_labels(32, 32), PairsParams(block_size=4), 100_000_000)
