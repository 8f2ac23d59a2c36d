import pytest
import torch

from difftrain.attacks import sweeps as R
from difftrain.data.cifar import prepare, to_float
from difftrain.core.errors import ParamsError
from difftrain.attacks.foolbox_attacks import PGD, CarliniWagner, foolbox_model
from difftrain.core.labels import predict
from difftrain.train.model import TwoLogits
from difftrain.core.params import CWParams, DataParams, PGDParams, parse_params
from difftrain.train.trainer import fit

from conftest import make_image_folder

EPS = (0.0, 1.0, 4.0, 16.0, 64.0, 255.0)


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "raw", n_train=24, n_test=8)
    splits = prepare(DataParams(root=str(root)))[1]
    params = parse_params({"device": "cpu", "train": {"epochs": 8, "batch_size": 16}})
    model = fit(params, splits["train"], splits["test"], progress=False).model
    return model, splits


def _inputs(splits, name="train"):
    split = splits[name]
    return to_float(split.images), split.labels


def test_foolbox_model_predicts_what_the_library_predicts(tiny_ce):
    model, splits = tiny_ce
    fmodel = foolbox_model(TwoLogits(model))
    for name in ("train", "test"):
        x, _ = _inputs(splits, name)
        with torch.no_grad():
            assert torch.equal(fmodel(x).argmax(1), predict(model(x)))
    # ties (s = 0 exactly) go to class x in both
    assert predict(torch.tensor([0.0])).item() == 0


@pytest.mark.parametrize("loss", ["cross_entropy", "margin"])
def test_pgd_reaches_full_success_at_large_epsilon_and_starts_at_clean(tiny_ce, loss):
    model, splits = tiny_ce
    x, y = _inputs(splits)
    params = PGDParams(epsilons=EPS, steps=20, random_start=False)
    curve = R.budget_sweep(PGD(TwoLogits(model), params, loss), x, y, EPS, 64, 0,
                           progress=False).accuracy
    clean = float((predict(model(x).detach()) == y).double().mean())
    assert curve[0] == clean
    assert curve[-1] == 0.0
    assert all(a >= b for a, b in zip(curve, curve[1:]))


def test_survivor_pruning_equals_attacking_every_image_at_every_epsilon(tiny_ce):
    model, splits = tiny_ce
    x, y = _inputs(splits)
    counter = TwoLogits(model)
    attack = PGD(counter, PGDParams(steps=10, random_start=False), "margin")
    eps = (0.0, 2.0, 8.0, 32.0, 64.0, 128.0)
    pruned = R.budget_sweep(attack, x, y, eps, 64, 0, progress=False).accuracy
    pruned_cost = counter.images_evaluated
    counter.images_evaluated = 0
    success = R.unpruned_sweep(attack, x, y, eps, 64, 0)
    full_cost = counter.images_evaluated
    # Nested balls: "fooled at some epsilon <= e" is what the pruned sweep reports.
    cumulative = success.cummax(dim=0).values
    assert pruned == [float((~c).double().mean()) for c in cumulative]
    # and PGD is monotone here, so it equals the per-epsilon accuracies themselves
    assert pruned == pytest.approx([float(1 - s.double().mean()) for s in success], abs=1 / len(y))
    assert 0 < pruned[2] and pruned[-1] == 0  # some images fall early, so pruning saves work
    assert pruned_cost < full_cost


def test_margin_pgd_is_never_weaker_than_cross_entropy_pgd_on_a_saturated_model(tiny_ce):
    model, splits = tiny_ce
    saturated = type(model)(False)
    saturated.load_state_dict(model.state_dict())
    with torch.no_grad():  # scores x1e6: sigmoid saturates, CE gradients underflow in float32
        saturated.head.weight.mul_(1e6)
        saturated.bias.mul_(1e6)
    saturated.eval()
    x, y = _inputs(splits)
    eps = (0.0, 4.0, 16.0, 64.0)
    curves = {}
    for loss in ("cross_entropy", "margin"):
        attack = PGD(TwoLogits(saturated), PGDParams(steps=20, random_start=False), loss)
        curves[loss] = R.budget_sweep(attack, x, y, eps, 64, 0, progress=False).accuracy
    assert all(m <= c for m, c in zip(curves["margin"], curves["cross_entropy"]))
    assert curves["margin"][-1] < curves["cross_entropy"][-1]  # CE-PGD is stuck on saturation


def test_cw_distances_give_accuracy_curve_from_clean_to_zero(tiny_ce):
    model, splits = tiny_ce
    x, y = _inputs(splits, "test")
    attack = CarliniWagner(TwoLogits(model), CWParams(steps=50, binary_search_steps=4))
    dist = R.norm_sweep(attack, x, y, (0.0,), 64, progress=False).min_radius
    correct = predict(model(x).detach()) == y
    assert (dist[~correct] == 0).all() and (dist[correct] > 0).all()
    assert torch.isfinite(dist).all()
    curve = R.accuracy_at(dist, (0.0, float(dist.max()) + 1))
    assert curve == [float(correct.double().mean()), 0.0]


def test_stratified_choice_is_balanced_deterministic_and_checked(tiny_ce):
    _, splits = tiny_ce
    a = R.stratified(splits["train"], 10, 0, "attack.n_train")
    assert torch.equal(a, R.stratified(splits["train"], 10, 0, "attack.n_train"))
    assert int((splits["train"].labels[a] == 0).sum()) == 5
    with pytest.raises(ParamsError, match="attack.n_train is 99, but the split holds only 48"):
        R.stratified(splits["train"], 99, 0, "attack.n_train")


@pytest.mark.parametrize("raw, message", [
    ({"attack": {"pgd": {"epsilons": [0, -8]}}}, "attack.pgd.epsilons.1 must be >= 0"),
    ({"attack": {"pgd": {"epsilons": [0, 8, 4]}}}, "attack.pgd.epsilons must be strictly increasing"),
    ({"attack": {"l2_epsilons": [0.5, 1]}}, "attack.l2_epsilons must start at 0"),
    ({"attack": {"fgsm": {"steps": 1}}}, "attack.fgsm is not a known parameter"),
    ({"attack": {"pgd": {"losses": ["hinge"]}}}, "attack.pgd.losses.0 must be one of cross_entropy, margin"),
    ({"attack": {"n_test": 0}}, "attack.n_test must be > 0"),
])
def test_bad_attack_params_are_rejected(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)
