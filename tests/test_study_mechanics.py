"""Adversarial training and the mechanism diagnostics (the study's instruments)."""

import statistics

import pytest
import torch

from difftrain.train import adversarial
from difftrain.attacks import diagnostics
from difftrain.attacks import sweeps as R
from difftrain.data.cifar import Split, prepare, to_float
from difftrain.attacks.foolbox_attacks import PGD
from difftrain.train.model import TwoLogits
from difftrain.train.objectives import OBJECTIVES
from difftrain.core.params import AdversarialParams, DataParams, PGDParams, parse_params
from difftrain.train.trainer import fit, train_epoch

from conftest import make_image_folder


class Linear(torch.nn.Module):
    """s(x) = w.x + b on images, with the raw_score / forward protocol of the network."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = torch.nn.Parameter(w.flatten().clone())
        self.bias = torch.nn.Parameter(torch.tensor(float(b)))

    def raw_score(self, x):
        return x.flatten(1) @ self.w

    def forward(self, x):
        return self.raw_score(x) + self.bias


def test_first_order_margin_is_exact_on_a_linear_model():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 32, 32, generator=g)
    model = Linear(w, 0.3)
    images = torch.rand(6, 3, 32, 32, generator=g)
    labels = (model(images) < 0).long().detach()  # every image correctly classified
    scores, grad_l1 = diagnostics.input_gradients(model, images, 4)
    assert torch.allclose(grad_l1, w.abs().sum().double().expand(6), rtol=1e-5)
    margin = diagnostics.first_order_margin(scores, grad_l1)
    by_hand = 255 * (images.flatten(1) @ w.flatten() + 0.3).abs() / w.abs().sum()
    assert torch.allclose(margin, by_hand.double(), rtol=1e-5)
    # Exact: the step -s sign(w) / ||w||_1 of Linf size |s| / ||w||_1 lands on the boundary.
    s = model(images).detach()
    step = -(s / w.abs().sum())[:, None, None, None] * w.sign()
    assert torch.allclose(model(images + step).detach(), torch.zeros(6), atol=1e-3)
    assert torch.allclose(step.flatten(1).abs().amax(1) * 255, margin.float(), rtol=1e-5)
    metrics, per_image = diagnostics.mechanism(model, images, labels,
                                               torch.arange(1.0, 7.0, dtype=torch.float64), 4)
    assert metrics["first_order_margin_median_255"] == pytest.approx(statistics.median(margin.tolist()))
    assert metrics["gradient_l1_median"] == pytest.approx(float(w.abs().sum()), rel=1e-5)
    order = margin.argsort().argsort().double() + 1  # radii equal to the margins' ranks
    metrics, _ = diagnostics.mechanism(model, images, labels, order, 4)
    assert metrics["margin_radius_spearman"] == pytest.approx(1.0)


def _separable(n=64, seed=0):
    """Two classes of flat grey images, brightness 0.3 +- 0.1 (x) and 0.7 +- 0.1 (y)."""
    g = torch.Generator().manual_seed(seed)
    level = torch.cat([0.3 + 0.2 * (torch.rand(n, generator=g) - 0.5),
                       0.7 + 0.2 * (torch.rand(n, generator=g) - 0.5)])
    images = (level[:, None, None, None] * 255).round().to(torch.uint8).expand(-1, 3, 32, 32)
    labels = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    return Split(images.contiguous(), labels, torch.arange(2 * n))


def test_adversarial_perturbation_stays_in_the_ball_and_in_bounds_and_moves_towards_the_boundary():
    g = torch.Generator().manual_seed(1)
    model = Linear(torch.randn(3, 32, 32, generator=g), 0.0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    labels = (model(images) < 0).long().detach()
    params = AdversarialParams(eps=8, steps=5, step_size=2)
    torch.manual_seed(0)
    adv = adversarial.perturb(model, images, labels, params)
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    side = 1 - 2 * labels.float()
    assert (side * model(adv).detach() < side * model(images).detach()).all()
    assert model.training  # restored


def test_the_trainer_trains_on_the_perturbed_batch():
    split = _separable()
    seen = []

    class Spy(Linear):
        def forward(self, x):
            seen.append(x.detach().clone())
            return super().forward(x)

    model = Spy(torch.zeros(3, 32, 32), 0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ce = OBJECTIVES["cross_entropy"]
    images = split.images
    train_epoch(model, opt, ce, 128, images, split.labels, None, 0, torch.Generator().manual_seed(0),
                AdversarialParams(eps=16, steps=2, step_size=8))
    trained_on = seen[-1]  # the loss's own forward pass comes after the attack's
    clean = to_float(images)
    assert len(seen) == 3  # two attack steps and the training step
    # each image it trained on lies within 16/255 of a clean image (the batch is shuffled, so
    # the nearest one, not the one at the same index) and is none of them: a trainer that
    # stepped on the clean batch gives distance 0 here
    nearest = (trained_on[:, None] - clean[None]).flatten(2).abs().amax(2).min(1).values
    assert (nearest <= 16 / 255 + 1e-6).all()
    assert (nearest > 1 / 255).all(), nearest.min()


def test_adversarial_training_raises_pgd_accuracy_on_a_separable_problem(tmp_path):
    # noise images with a faint class colour cast: separable, but a plain CNN also leans on
    # non-robust noise features, so PGD at 16/255 fools a third of the training images
    splits = prepare(DataParams(root=str(make_image_folder(tmp_path / "raw", n_train=32))))[1]
    train = splits["train"]
    accuracy = {}
    for eps in (0, 16):
        params = parse_params({"device": "cpu", "train": {
            "epochs": 40, "batch_size": 16,
            "adversarial": {"eps": eps, "steps": 5, "step_size": 16 / 3}}})
        model = fit(params, train, splits["test"], progress=False).model
        attack = PGD(TwoLogits(model), PGDParams(steps=20, random_start=False), "margin")
        accuracy[eps] = R.budget_sweep(attack, to_float(train.images), train.labels,
                                       (0.0, 16.0), 128, 0, progress=False).accuracy
    assert accuracy[0][0] == accuracy[16][0] == 1.0
    assert accuracy[16][1] >= accuracy[0][1] + 0.15, accuracy
