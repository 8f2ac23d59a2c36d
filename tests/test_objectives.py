import math

import pytest
import torch

from difftrain.train import objectives as losses
from difftrain.core.geometry import eq5_bias


def test_differential_matches_hand_computed_value():
    # w = (1, 2); phi(x) rows give scores 3, 1; phi(y) rows give scores 0, 2.
    w = torch.tensor([1.0, 2.0])
    sx = torch.tensor([[1.0, 1.0], [1.0, 0.0]]) @ w
    sy = torch.tensor([[0.0, 0.0], [0.0, 1.0]]) @ w
    # differences: 3-0=3, 3-2=1, 1-0=1, 1-2=-1 -> (d-1)^2 = 4, 0, 0, 4 -> mean 2
    assert losses.differential(sx, sy).item() == pytest.approx(2.0)


def test_differential_logistic_matches_hand_computed_value():
    sx, sy = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 2.0])
    expected = sum(math.log1p(math.exp(-d)) for d in (3.0, 1.0, 1.0, -1.0)) / 4
    assert losses.differential_logistic(sx, sy).item() == pytest.approx(expected)


def test_differential_logistic_is_stable_for_large_differences():
    value = losses.differential_logistic(torch.tensor([-500.0]), torch.tensor([500.0]))
    assert value.item() == pytest.approx(1000.0)


def test_cross_entropy_matches_hand_computed_value():
    scores, labels = torch.tensor([2.0, -1.0]), torch.tensor([0, 0])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert losses.cross_entropy(scores, labels).item() == pytest.approx(expected)


def test_differential_losses_ignore_a_common_feature_shift_cross_entropy_does_not():
    g = torch.Generator().manual_seed(0)
    phi_x, phi_y, w = torch.randn(5, 84, generator=g), torch.randn(7, 84, generator=g), torch.randn(84, generator=g)
    shift = 3 * torch.randn(84, generator=g)
    for loss in (losses.differential, losses.differential_logistic):
        assert loss((phi_x + shift) @ w, (phi_y + shift) @ w).item() == pytest.approx(
            loss(phi_x @ w, phi_y @ w).item(), rel=1e-5)
    labels = torch.tensor([0] * 5 + [1] * 7)
    before = losses.cross_entropy(torch.cat([phi_x, phi_y]) @ w, labels)
    after = losses.cross_entropy(torch.cat([phi_x, phi_y]).add(shift) @ w, labels)
    assert abs(before.item() - after.item()) > 1e-2


def test_eq5_bias_on_separable_scores():
    bias, separable, gap = eq5_bias(torch.tensor([2.0, 5.0]), torch.tensor([-3.0, 0.0]))
    assert separable and gap == pytest.approx(2.0)
    assert bias == pytest.approx(-1.0)  # threshold midway between 2 (lowest x) and 0 (highest y)


def test_eq5_bias_falls_back_to_best_training_accuracy():
    sx = torch.tensor([1.0, 5.0, 6.0, 7.0])
    sy = torch.tensor([0.0, 2.0, 3.0, 4.5])
    bias, separable, gap = eq5_bias(sx, sy)
    assert not separable and gap == pytest.approx(-3.5)
    # Threshold 4.75 (between 4.5 and 5) misclassifies only x=1: 7 of 8 right, the unique best.
    assert bias == pytest.approx(-4.75)
    correct = int((sx + bias > 0).sum() + (sy + bias <= 0).sum())
    assert correct == 7


def test_each_objective_is_defined_once_with_its_bias_rule():
    assert list(losses.OBJECTIVES) == ["cross_entropy", "differential", "differential_logistic"]
    ce, diff, logistic = losses.OBJECTIVES.values()
    assert not ce.pairwise and ce.trains_bias and ce.loss is losses.cross_entropy
    assert diff.pairwise and not diff.trains_bias and diff.loss is losses.differential
    assert logistic.pairwise and not logistic.trains_bias


class _Linear(torch.nn.Module):
    """w.x + b with the raw_score/forward protocol the objectives train."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.bias = torch.nn.Parameter(torch.tensor(b))

    def raw_score(self, x):
        return x @ self.w

    def forward(self, x):
        return self.raw_score(x) + self.bias


def test_batch_loss_splits_a_pair_block_by_label_and_settles_the_bias_by_eq5():
    # x-points (1, 1), (1, 0); y-points (0, 0), (0, 1); w = (1, 2): scores 3, 1 | 0, 2 (as above).
    inputs = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    model = _Linear([1.0, 2.0], 5.0)
    diff = losses.OBJECTIVES["differential"]
    assert diff.batch_loss(model, inputs, labels).item() == pytest.approx(2.0)  # bias ignored
    diff.freeze_bias(model)
    assert not model.bias.requires_grad
    facts = diff.settle_bias(model, model.raw_score(inputs).detach(), labels)
    # not separable (gap 1 - 2 = -1): the best threshold puts x=1 or y=2 wrong; bias written
    assert facts["separable"] is False and facts["score_gap"] == pytest.approx(-1.0)
    assert float(model.bias) == facts["bias"]
    ce = losses.OBJECTIVES["cross_entropy"]
    model = _Linear([1.0, 2.0], 0.5)
    expected = losses.cross_entropy(inputs @ torch.tensor([1.0, 2.0]) + 0.5, labels)
    assert ce.batch_loss(model, inputs, labels).item() == pytest.approx(expected.item())
    ce.settle_bias(model, model.raw_score(inputs).detach(), labels)
    assert float(model.bias.detach()) == 0.5  # cross-entropy keeps its trained bias
