"""The sound evaluation: AutoAttack beside the paper's PGD, the worst case, and the flags that
must fire on a model whose gradients are masked."""

import math

import pytest
import torch

from difftrain.attacks import sweeps as R
from difftrain.attacks.split_attack import SplitAttack
from difftrain.attacks.attack import attack_split
from difftrain.attacks.autoattack_attacks import APGD, FAB, Square
from difftrain.data.cifar import prepare, to_float
from difftrain.core.errors import ParamsError
from difftrain.attacks.foolbox_attacks import CarliniWagner
from difftrain.train.model import Net, TwoLogits
from difftrain.core.params import APGDParams, CWParams, DataParams, FABParams, SquareParams, parse_params
from difftrain.train.trainer import fit

from conftest import make_image_folder

GRID = (0.0, 2.0, 8.0, 16.0, 32.0, 64.0)
FAST = {"n_train": 16, "n_test": 16, "batch_size": 64,
        "pgd": {"epsilons": list(GRID), "steps": 10},
        "cw": {"steps": 30, "binary_search_steps": 3},
        "apgd": {"restarts": 2, "steps": 20}, "square": {"queries": 300}, "fab": {"steps": 30}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "raw", n_train=24, n_test=8)
    splits = prepare(DataParams(root=str(root)))[1]
    params = parse_params({"device": "cpu", "train": {"epochs": 8, "batch_size": 16},
                           "attack": FAST, "plot": {"headline_eps_255": 8}})
    model = fit(params, splits["train"], splits["test"], progress=False).model
    return model, splits, params


class Masked(torch.nn.Module):
    """The honest network's scores with their gradients cut: forward values (and so every
    decision and every margin a black-box attack queries) are unchanged, gradients are zero."""

    def __init__(self, net: Net):
        super().__init__()
        self.net = net
        self.bias = net.bias

    def forward(self, x):
        s = self.net(x)
        return s.detach() + 0 * s


class Oracle:
    """A perfectly monotone attack: image i is fooled exactly at radii >= radius[i]."""

    def __init__(self, radius, model):
        self.radius, self.model, self.calls = radius, model, []

    def __call__(self, images, labels, eps, seed):
        index = images[:, 0, 0, 0].long()  # the tests store each image's index in one pixel
        success = self.radius[index] <= eps
        self.calls.append((eps, len(index), int((~success).sum())))
        return success


class AlwaysRight(torch.nn.Module):
    def forward(self, x):
        return torch.tensor([[1.0, -1.0]]).repeat(len(x), 1)  # predicts class x (label 0)


def _oracle_case(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
    radius = torch.tensor(grid[1:] + (math.inf,))[torch.randint(0, 6, (n,), generator=g)]
    images = torch.zeros(n, 3, 32, 32)
    images[:, 0, 0, 0] = torch.arange(n).float()
    return grid, radius, images, torch.zeros(n, dtype=torch.long)


def test_downward_refinement_equals_the_ascending_sweep_for_a_monotone_attack_and_costs_less():
    grid, radius, images, labels = _oracle_case()
    up = Oracle(radius, AlwaysRight())
    ascending = R.budget_sweep(up, images, labels, grid, 8, 0, progress=False).min_radius
    truth = torch.tensor([min((e for e in grid[1:] if e >= r), default=math.inf) for r in radius])
    assert torch.equal(ascending, truth.double())
    down = Oracle(radius, AlwaysRight())
    known = torch.full((len(labels),), math.inf, dtype=torch.float64)
    found = R.refine_down(down, images, labels, grid, known, 8, 0, progress=False)
    assert torch.equal(found, truth.double())
    # Failed attempts cost an attack's whole budget (every restart); downward there is at most
    # one per image, upward one per radius an image survives.
    failures = {name: sum(f for *_, f in o.calls) for name, o in (("up", up), ("down", down))}
    assert failures["down"] <= len(labels) < failures["up"]
    # Given what an earlier attack found, it starts just below it and only ever lowers it.
    known = torch.where(torch.isinf(truth), torch.tensor(16.0), truth).double()
    found = R.refine_down(Oracle(radius, AlwaysRight()), images, labels, grid, known, 8, 0,
                          progress=False)
    assert torch.isinf(found[truth >= known]).all()
    # Images at or below `above` are left alone.
    found = R.refine_down(Oracle(radius, AlwaysRight()), images, labels, grid,
                          torch.full_like(known, math.inf), 8, 0, above=math.inf, progress=False)
    assert torch.isinf(found).all()


def test_apgd_and_square_reach_full_success_at_a_large_radius(tiny):
    model, splits, _ = tiny
    x, y = to_float(splits["train"].images), splits["train"].labels
    two = TwoLogits(model)
    for attack in (APGD(two, APGDParams(restarts=1, steps=20)), Square(two, SquareParams(queries=500))):
        assert bool(attack(x, y, 128.0, 0).all()), type(attack).__name__
        assert not attack(x, y, 0.5, 0).all()  # and not by construction


def test_fab_and_cw_bound_the_same_minimal_distance(tiny):
    model, splits, _ = tiny
    x, y = to_float(splits["test"].images), splits["test"].labels
    two = TwoLogits(model)
    fab = R.norm_sweep(FAB(two, FABParams(steps=50), 0), x, y, (0.0, 1.0), 64, progress=False)
    cw = R.norm_sweep(CarliniWagner(two, CWParams(steps=50, binary_search_steps=4)), x, y,
                      (0.0, 1.0), 64, progress=False)
    correct = cw.min_radius > 0
    both = torch.isfinite(fab.min_radius) & torch.isfinite(cw.min_radius) & correct
    assert torch.equal(fab.min_radius == 0, ~correct)  # clean errors are not attacked
    assert int(both.sum()) >= 0.8 * int(correct.sum())
    # two upper bounds on the same minimal distance: within a factor of each other
    ratio = fab.min_radius[both] / cw.min_radius[both]
    assert float(ratio.median()) == pytest.approx(1.0, rel=0.5)


def test_worst_case_is_the_minimum_over_attacks_and_never_above_the_paper_attack(tiny):
    model, splits, params = tiny
    r = attack_split(model, splits["test"], torch.arange(16), params.attack, 8.0, "test",
                     progress=False)
    # every Linf attack that ran (named by its cost record) enters the worst case
    linf = {k for k in r.metrics(0.02, 0.01, 0.1)["gradient_evaluations"] if k not in ("cw", "fab")}
    assert {"pgd_cross_entropy", "pgd_margin"} | set(r.refined) == linf
    radii = torch.stack([r.paper.min_radius, *r.refined.values()])
    assert torch.equal(r.worst.min_radius, radii.amin(0))
    # accuracy at eps, by hand: the share of images whose smallest fooling radius exceeds eps
    # (a clean error has radius 0; an image fooled exactly at eps is not robust there)
    grid = params.attack.pgd.epsilons
    assert r.worst.accuracy == [sum(float(m) > e for m in r.worst.min_radius) / 16 for e in grid]
    assert r.worst.accuracy[0] == r.clean_accuracy and r.worst.accuracy[-1] == 0.0
    m = r.metrics(0.02, 0.01, 0.1)
    assert m["worst"]["eps8"]["accuracy"] == r.worst.accuracy[2]
    assert set(m["gradient_evaluations"]) == {"pgd_cross_entropy", "pgd_margin", "apgd", "square",
                                             "apgd_second_pass", "cw", "fab"}
    table = r.per_image()
    # the per-image table (what certify and the study read) carries, image by image, the same
    # worst cases as the metrics: Linf over every attack, L2 the smaller of CW's and FAB's
    assert table["worst_min_eps_255"].tolist() == r.worst.min_radius.tolist()
    l2 = torch.minimum(r.minimum_norm["cw"].min_radius, r.minimum_norm["fab"].min_radius)
    assert table["worst_min_l2"].tolist() == l2.tolist()
    assert table["position"].tolist() == list(range(16))


def test_flags_fire_and_square_lowers_the_worst_case_on_a_gradient_masked_model(tiny):
    model, splits, params = tiny
    honest = attack_split(model, splits["train"], torch.arange(48), params.attack, 8.0, "train",
                          progress=False)
    assert not honest.soundness(0.02, 0.01, 0.1)["blackbox_beats_whitebox"]

    masked = Masked(model)
    r = attack_split(masked, splits["train"], torch.arange(48), params.attack, 8.0, "train",
                     progress=False)
    # PGD sees zero gradients: the paper's attack certifies the model far beyond the honest one
    assert r.paper.accuracy[-1] > honest.paper.accuracy[-1] + 0.5
    assert int(torch.isfinite(r.refined["square"]).sum()) > 0
    assert any(w < p for w, p in zip(r.worst.accuracy, r.paper.accuracy))
    flags = r.soundness(0.02, 0.01, 0.1)
    assert flags["blackbox_beats_whitebox"] and flags["paper_attack_overstates"]
    assert flags["paper_attack_gap"] > 0.02 and flags["paper_attack_gap_eps"] in GRID


def test_not_converged_fires_when_the_second_pass_still_finds_adversarials():
    grid, radius, images, labels = _oracle_case()
    pgd = R.Sweep(grid, torch.full((len(labels),), math.inf, dtype=torch.float64))
    second = torch.full((len(labels),), math.inf, dtype=torch.float64)
    second[:2] = 8.0  # 2 of 40 images: 0.05 > 0.01
    r = SplitAttack("train", torch.arange(len(labels)), labels, 1.0, {"margin": pgd},
                      {"apgd_second_pass": second}, {}, 8.0, {})
    r.minimum_norm["cw"] = R.Sweep((0.0, 1.0), torch.ones(len(labels), dtype=torch.float64))
    flags = r.soundness(0.02, 0.01, 0.1)
    assert flags["not_converged"] and flags["second_pass_drop"] == pytest.approx(0.05)
    assert not r.soundness(0.02, 0.06, 0.1)["not_converged"]
    r.minimum_norm["fab"] = R.Sweep((0.0, 1.0), torch.full((len(labels),), 0.5, dtype=torch.float64))
    assert r.soundness(0.02, 0.01, 0.1)["cw_overstates_l2"]  # CW median 1.0 > 1.1 x 0.5


@pytest.mark.parametrize("raw, message", [
    ({"attack": {"apgd": {"restarts": 0}}}, "attack.apgd.restarts must be > 0"),
    ({"attack": {"square": {"queries": -5}}}, "attack.square.queries must be > 0"),
    ({"attack": {"overstatement_tol": 1.5}}, "attack.overstatement_tol must be <= 1"),
    ({"attack": {"fab": {"steps": 2.5}}}, "attack.fab.steps"),
    ({"plot": {"headline_eps_255": 3}}, "plot.headline_eps_255 is 3, which is not on attack.pgd.epsilons"),
    ({"plot": {"headline_eps_l2": 0.3}}, "plot.headline_eps_l2 is 0.3, which is not on attack.l2_epsilons"),
])
def test_bad_evaluation_params_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)
