"""The speed-ups change no number: each is checked bit for bit against the path it replaced."""

import copy

import pytest
import torch
from pyautoattack.fab_pt import FABAttack_PT
from torch import nn

from difftrain.attacks import sweeps as R
from difftrain.attacks.attack import attack_split, attack_splits
from difftrain.attacks.autoattack_attacks import _BinaryFAB
from difftrain.data.cifar import prepare, to_float
from difftrain.attacks.foolbox_attacks import PGD, SATURATION
from difftrain.train.model import MaxPool2x2, Net, TwoLogits
from difftrain.core.params import DataParams, PGDParams, parse_params
from difftrain.core.runtime import side_by_side
from difftrain.train.trainer import fit, raw_scores

from conftest import make_image_folder

SMALL_ATTACKS = {"n_train": 8, "n_test": 8, "pgd": {"steps": 5, "epsilons": [0, 2, 8, 255]},
                 "cw": {"steps": 10, "binary_search_steps": 2}, "apgd": {"restarts": 1, "steps": 10},
                 "square": {"queries": 50}, "fab": {"steps": 10}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "raw", n_train=24, n_test=8)
    splits = prepare(DataParams(root=str(root)))[1]
    params = parse_params({"device": "cpu", "train": {"epochs": 6, "batch_size": 16},
                           "attack": SMALL_ATTACKS})
    return fit(params, splits["train"], splits["test"], progress=False).model, splits, params


def _with_builtin_pool(net: Net) -> Net:
    old = copy.deepcopy(net)
    for i, module in enumerate(old.phi):
        if isinstance(module, MaxPool2x2):
            old.phi[i] = nn.MaxPool2d(2)
    return old


@pytest.mark.parametrize("shape", [(7, 6, 28, 28), (5, 16, 10, 10), (3, 2, 5, 7)])
def test_max_pool_equals_the_builtin_bit_for_bit_with_and_without_gradients(shape):
    torch.manual_seed(0)
    # rounded ReLU outputs: many exact ties, where the gradient must go to the first maximum
    h = torch.relu(torch.randn(shape)).round(decimals=1)
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(h), nn.MaxPool2d(2)(h))
    mine, builtin = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
    out_mine, out_builtin = MaxPool2x2()(mine), nn.MaxPool2d(2)(builtin)
    g = torch.randn_like(out_builtin)
    out_mine.backward(g)
    out_builtin.backward(g)
    assert torch.equal(out_mine, out_builtin) and torch.equal(mine.grad, builtin.grad)


def test_network_scores_and_input_gradients_match_the_builtin_pool(tiny):
    net, splits, _ = tiny
    old = _with_builtin_pool(net)
    x = to_float(splits["test"].images)
    assert torch.equal(raw_scores(net, splits["train"].images), raw_scores(old, splits["train"].images))
    grads = []
    for model in (net, old):
        xx = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(model(xx).sum(), xx)[0])
    assert torch.equal(*grads)


def test_frozen_weights_give_the_same_input_gradient_and_accumulate_nothing(tiny):
    net, splits, _ = tiny
    trainable = copy.deepcopy(net).requires_grad_(True)
    frozen = TwoLogits(copy.deepcopy(net))
    assert not any(p.requires_grad for p in frozen.parameters())
    x = to_float(splits["test"].images)
    grads = []
    for model in (TwoLogits(trainable), frozen):
        model.net.requires_grad_(model is not frozen)
        xx = x.clone().requires_grad_(True)
        model(xx)[:, 1].sum().backward()  # the way eagerpy and FAB ask: loss.backward()
        grads.append(xx.grad)
    assert torch.equal(*grads)
    assert trainable.head.weight.grad is not None and frozen.net.head.weight.grad is None


def test_binary_fab_gives_the_reference_logit_differences_and_gradients_bit_for_bit(tiny):
    net, splits, _ = tiny
    model = TwoLogits(copy.deepcopy(net))
    x = to_float(splits["test"].images)
    y = splits["test"].labels
    kwargs = dict(norm="L2", n_restarts=1, n_iter=5, eps=55.0, seed=0, device=x.device)
    ours = _BinaryFAB(model, **kwargs).get_diff_logits_grads_batch(x, y)
    reference = FABAttack_PT(model, **kwargs).get_diff_logits_grads_batch(x, y)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))


def _saturated(net: Net, factor: float) -> Net:
    scaled = copy.deepcopy(net)
    with torch.no_grad():
        scaled.head.weight.mul_(factor)
        scaled.bias.mul_(factor)
    return scaled


def test_both_pgd_losses_give_the_same_sweep_below_saturation_and_the_second_is_inferred(tiny):
    net, splits, params = tiny
    x, y = to_float(splits["train"].images), splits["train"].labels
    grid = (0.0, 1.0, 4.0, 16.0)
    sweeps, attacks = {}, {}
    for loss in ("cross_entropy", "margin"):
        attacks[loss] = PGD(TwoLogits(copy.deepcopy(net)), PGDParams(steps=10), loss)
        sweeps[loss] = R.budget_sweep(attacks[loss], x, y, grid, 16, 0, progress=False)
    assert torch.equal(sweeps["cross_entropy"].min_radius, sweeps["margin"].min_radius)
    assert not attacks["cross_entropy"].saturated
    assert attacks["cross_entropy"].peak == pytest.approx(attacks["margin"].peak)

    result = attack_split(copy.deepcopy(net), splits["train"],
                          torch.arange(len(y))[:8], params.attack, 8.0, "train", progress=False)
    assert result.pgd_inferred == {"cross_entropy": False, "margin": True}
    assert result.evaluations["pgd_margin"] == 0 and result.evaluations["pgd_cross_entropy"] > 0
    metrics = result.metrics(0.02, 0.01, 0.1)
    assert metrics["pgd_inferred"]["margin"] is True


def test_a_model_that_saturates_runs_the_second_loss(tiny):
    net, splits, params = tiny
    x, y = to_float(splits["train"].images), splits["train"].labels
    # scores x1e4: y*s far above SATURATION on every correctly classified image
    saturated = _saturated(net, 1e4)
    with torch.no_grad():
        assert float((saturated(x) * (1 - 2 * y)).max()) > SATURATION
    result = attack_split(saturated, splits["train"], torch.arange(8), params.attack, 8.0, "train",
                          progress=False)
    assert result.pgd_inferred == {"cross_entropy": False, "margin": False}
    assert result.pgd_peak_margin >= SATURATION and result.evaluations["pgd_margin"] > 0


def _square(n: int) -> int:
    return n * n


def test_side_by_side_runs_jobs_in_processes_and_returns_results_in_order():
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: jobs run one after the other")
    assert side_by_side(_square, [(2,), (3,), (4,)]) == [4, 9, 16]
    assert side_by_side(_square, [(5,)], worth_it=False) == [25]


@pytest.mark.slow
def test_splits_attacked_side_by_side_give_the_numbers_of_one_after_the_other(tiny, monkeypatch):
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: splits run one after the other")
    net, splits, params = tiny
    chosen = {name: torch.arange(8) for name in splits}
    monkeypatch.setattr("difftrain.attacks.attack.SIDE_BY_SIDE_MIN_IMAGES", 1)
    parallel = attack_splits(copy.deepcopy(net), splits, chosen, params.attack, 8.0,
                             torch.device("cpu"), progress=False)
    monkeypatch.setattr("difftrain.attacks.attack.SIDE_BY_SIDE_MIN_IMAGES", 10**9)
    serial = attack_splits(copy.deepcopy(net), splits, chosen, params.attack, 8.0,
                           torch.device("cpu"), progress=False)
    for a, b in zip(parallel, serial):
        assert a.name == b.name
        assert torch.equal(a.worst.min_radius, b.worst.min_radius)
        assert torch.equal(a.l2.min_radius, b.l2.min_radius)
        assert a.per_image().equals(b.per_image())
