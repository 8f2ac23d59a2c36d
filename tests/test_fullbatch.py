"""Full-batch gradient descent (``train.batch_size: full``) and Proposition 1 on the real CNN.

Proposition 1: when phi ends with a linear layer W (no ReLU) and W starts at 0, gradient descent
keeps the features {phi(x_i)} at rank <= 1: dL/dW = sum_i g_i w h_i^T has its columns along w,
and dw = W v stays along w, so phi = W h + c lies on the line of w(0) (c, phi's bias, too).
Momentum and weight decay combine such updates linearly, so they keep it; Adam scales each
coordinate separately, which breaks it. The rank is measured in float64 on the float32
network's features: singular values above RANK_TOL x the largest count (float32 rounding of
the rank-one updates leaves the others near 1e-7 of it).
"""

import copy

import pytest
import torch

from difftrain.core.params import parse_params
from difftrain.data.cifar import prepare, to_float
from difftrain.core.params import DataParams
from difftrain.train.model import Net, extract_features
from difftrain.train.objectives import OBJECTIVES
from difftrain.core import spectrum
from difftrain.train.trainer import fit, full_batch_step, make_optimizer, train_epoch

from conftest import make_image_folder

RANK_TOL = 1e-5
CE = OBJECTIVES["cross_entropy"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "raw", n_train=24, n_test=8)
    return prepare(DataParams(root=str(root)))[1]["train"]


def _grad(model, images, labels):
    """The full-batch gradient in one batch, every parameter."""
    model.zero_grad()
    CE.batch_loss(model, to_float(images), labels).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_one_full_batch_step_is_the_hand_computed_momentum_update(tiny):
    params = parse_params({"device": "cpu", "train": {"batch_size": "full", "chunk_size": 5,
                                                      "lr": 0.05, "momentum": 0.9}})
    torch.manual_seed(0)
    model = Net()
    hand = copy.deepcopy(model)
    optimizer = make_optimizer(model, params, CE)
    for _ in range(2):
        full_batch_step(model, optimizer, CE, tiny.images, tiny.labels, chunk_size=5)
    # by hand: v1 = g(p0), p1 = p0 - lr v1; v2 = 0.9 v1 + g(p1), p2 = p1 - lr v2
    g0 = _grad(hand, tiny.images, tiny.labels)
    with torch.no_grad():
        for p, g in zip(hand.parameters(), g0):
            p -= 0.05 * g
    g1 = _grad(hand, tiny.images, tiny.labels)
    with torch.no_grad():
        for p, a, b in zip(hand.parameters(), g0, g1):
            p -= 0.05 * (0.9 * a + b)
    for (name, p), q in zip(model.named_parameters(), hand.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name


def test_the_accumulated_gradient_is_the_one_batch_gradient(tiny):
    torch.manual_seed(0)
    model = Net()
    one_batch = _grad(model, tiny.images, tiny.labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves p.grad
    loss = full_batch_step(model, optimizer, CE, tiny.images, tiny.labels, chunk_size=7)
    for (name, p), g in zip(model.named_parameters(), one_batch):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7), name
    with torch.no_grad():
        one = float(CE.batch_loss(model, to_float(tiny.images), tiny.labels))
    assert float(loss) == pytest.approx(one, rel=1e-6)


def test_full_batch_is_refused_for_the_pairwise_losses():
    with pytest.raises(Exception, match="train.batch_size full is full-batch gradient descent"):
        parse_params({"loss": "differential", "train": {"batch_size": "full"}})


def _rank(model, images) -> int:
    s = torch.linalg.svdvals(extract_features(model, images))  # float64, uncentred
    return int((s > RANK_TOL * s[0]).sum()) if s[0] > 0 else 0


def _ranks(tiny, steps, **train):
    """The features' rank after every epoch of training the given way (CE)."""
    model_params = {"features_activation": "linear", "features_init": train.pop("init", "zero")}
    params = parse_params({"device": "cpu", "model": model_params,
                           "train": {"lr": 0.02, "epochs": steps, **train}})
    torch.manual_seed(0)
    model = Net(features_activation="linear", features_init=model_params["features_init"])
    optimizer = make_optimizer(model, params, CE)
    generator = torch.Generator().manual_seed(0)
    ranks = []
    for epoch in range(steps):
        train_epoch(model, optimizer, CE, params.train.batch_size, tiny.images, tiny.labels,
                    None, epoch, generator, chunk_size=10)
        ranks.append(_rank(model, tiny.images))
    return ranks, model


@pytest.mark.parametrize("train", [
    {"batch_size": "full", "momentum": 0.0},                    # gradient descent
    {"batch_size": "full", "momentum": 0.9},                    # ... with momentum
    {"batch_size": 8, "momentum": 0.9, "weight_decay": 1e-3},   # mini-batch SGD
], ids=["gd", "gd-momentum", "sgd"])
def test_proposition_1_zero_init_keeps_the_features_at_rank_one(tiny, train):
    ranks, model = _ranks(tiny, 6, **train)
    assert max(ranks) <= 1 and ranks[-1] == 1, ranks
    assert model.features_layer().bias.abs().max() > 0  # phi's bias moved too, along w


def test_proposition_1_fails_with_he_init_and_with_adam(tiny):
    he, _ = _ranks(tiny, 3, batch_size="full", init="he")
    assert min(he) > 1, he
    adam, _ = _ranks(tiny, 6, batch_size="full", optimizer="adam", lr=0.001)
    assert adam[-1] > 1, adam  # per-coordinate scaling: the rank-one structure breaks


def test_the_rank_curve_is_logged_every_k_epochs_and_at_the_end(tiny):
    """train.rank_every 2 over 5 epochs: the rank at epochs 2, 4 and 5 (the last), none between,
    and the last equals the features stage's computation on the trained model."""
    params = parse_params({"device": "cpu", "loss": "cross_entropy",
                           "train": {"batch_size": "full", "epochs": 5, "lr": 0.02, "rank_every": 2}})
    result = fit(params, tiny, tiny, progress=False)
    logged = [log.epoch for log in result.history if log.components_99 is not None]
    assert logged == [2, 4, 5]
    assert all(log.effective_rank is None for log in result.history if log.epoch not in logged)
    final, _ = spectrum.rank_metrics(extract_features(result.model, tiny.images), 1e-3)
    last = result.history[-1]
    assert (last.components_90, last.components_95, last.components_99) == (
        final["components_90"], final["components_95"], final["components_99"])
    assert last.effective_rank == pytest.approx(final["effective_rank"])
    assert last.components_90 <= last.components_95 <= last.components_99
