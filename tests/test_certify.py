"""The certify stage's evaluation (certify.py): sound against attacks, its flag fires when a
certificate and an attack disagree, and its budget is kept and reported."""

import math

import pytest
import torch

from difftrain.certify import bounds as B, rounding as R
from difftrain.certify.cascade import certify_split
from difftrain.core.labels import predict, sign
from difftrain.train.model import Net
from difftrain.core.params import CertifyParams, parse_params

GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def biased_net(bias=10_000.0):
    """A random network whose head bias dwarfs how far the cheap bounds are from the truth on it
    (about 2,000 at 0.5/255 for CROWN-IBP, doubling with the radius), so IBP and CROWN-IBP
    certify every image at the small radii and none at the large ones: the plumbing is tested
    where certificates exist and where they stop."""
    torch.manual_seed(3)
    net = Net().eval()
    with torch.no_grad():
        net.bias.fill_(bias)
    return net


def data(n=12):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return images, torch.zeros(n, dtype=torch.int64)  # label 0: s >= 0, as the bias makes it


def pgd_fools(net, x, labels, eps, steps=40):
    """A plain sign-gradient PGD on sign(y) s, from the centre and a random start."""
    side = sign(labels, torch.float32)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for start in (torch.zeros_like(x), (torch.rand_like(x) * 2 - 1) * eps):
        adv = (x + start).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            margin = side * net(adv)
            grad, = torch.autograd.grad(margin.sum(), adv)
            adv = torch.min(torch.max(adv.detach() - eps / 4 * grad.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            fooled |= side * net(adv) <= 0
    return fooled


def certify(net, images, labels, worst=None, **params):
    """certify_split on every image; ``worst`` inf (never fooled) unless given; CROWN off by
    default (it costs seconds an image; its soundness is test_bounds.py's)."""
    if worst is None:
        worst = torch.full((len(labels),), math.inf, dtype=torch.float64)
    return certify_split(net, "test", images, labels, torch.arange(len(labels)), worst, GRID,
                         CertifyParams(**{"crown_attempts": 0, **params}), progress=False)


def test_no_image_certified_at_a_radius_where_pgd_fools_it():
    net = biased_net()
    images, labels = data()
    result = certify(net, images, labels)
    x = images.float() / 255
    assert (result.radius >= 0.5).all() and (result.radius < 8).all(), result.radius
    for eps in GRID[1:]:
        certified = result.radius >= eps
        if certified.any():
            assert not pgd_fools(net, x[certified], labels[certified], eps / 255).any()
    # each image's radius is the largest grid radius below which every step certified, image by
    # image and radius by radius, recomputed here directly from the bounds and the margin
    layers, xd = B.from_net(net), x.double()
    ones = torch.ones(len(labels), dtype=B.DTYPE)
    expected, climbing = torch.zeros(len(labels), dtype=torch.float64), torch.ones(len(labels), dtype=torch.bool)
    for eps in GRID[1:]:
        lower, upper = B.box(xd, eps / 255)
        errors = R.layer_errors(net, layers, lower, upper)
        margin = R.float64_error(layers, lower, upper, B.ibp(layers, lower, upper, errors), errors)
        best = torch.maximum(*(B.lower_margin(layers, xd, ones, eps / 255, m, errors=errors)
                               for m in ("ibp", "crown_ibp")))
        climbing &= best > margin
        expected[climbing] = eps
    assert torch.equal(result.radius, expected), (result.radius, expected)
    # certified accuracy can only fall with the radius, and stays within the attacks' bound
    acc = result.accuracy()
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    assert result.certified_but_fooled == 0


def test_certified_but_fooled_fires_when_an_attack_claims_a_certified_image():
    net = biased_net()
    images, labels = data()
    honest = certify(net, images, labels)
    target = int(torch.argmax(honest.radius))
    assert honest.radius[target] >= 0.5
    lying = torch.full((len(labels),), math.inf, dtype=torch.float64)
    lying[target] = 0.5  # an "attack" that says it fooled a certified image at 0.5/255
    result = certify(net, images, labels, lying)
    assert result.certified_but_fooled == 1
    assert result.metrics()["certified_but_fooled"] == 1


def test_crown_certifies_only_where_pgd_cannot_fool_and_keeps_its_budget():
    """A net whose scores (about 2 to 5) sit between what CROWN loses at 0.5/255 (1.4 to 2.0)
    and what PGD takes at 8/255 (6 to 9): CROWN certifies small radii, PGD fools the large ones,
    so the soundness check has images on both sides. A bound claiming too much fails it."""
    net = biased_net(bias=-0.2)
    images, labels = data(4)
    x = images.float() / 255
    assert pgd_fools(net, x, labels, 8 / 255).all()  # the attack can flip every image here
    result = certify(net, images, labels, crown_attempts=40)
    assert (result.radius >= 0.5).any(), result.radius
    for eps in GRID[1:]:
        certified = result.radius >= eps
        if certified.any():
            assert not pgd_fools(net, x[certified], labels[certified], eps / 255).any(), eps
    assert result.metrics()["decided"]["crown"] > 0
    # with a budget of 3 attempts CROWN tries exactly 3 and reports the rest as skipped
    capped = certify(net, images, labels, crown_attempts=3).metrics()
    assert capped["tried"]["crown"] == 3 and capped["crown_skipped"] > 0
    assert capped["decided"]["crown"] <= 3


def test_crown_off_reports_what_it_skipped():
    net = biased_net()
    images, labels = data(6)
    result = certify(net, images, labels)
    metrics = result.metrics()
    assert metrics["decided"]["crown"] == 0 and metrics["crown_skipped"] > 0
    assert metrics["tried"]["crown"] == 0
    # at radius 0 the certificate is the float32 network's own prediction
    with torch.no_grad():
        correct = (predict(net(images.float() / 255)) == labels).double().mean()
    assert metrics["certified"]["eps0"]["accuracy"] == pytest.approx(float(correct))
    widths = metrics["interval_width"].values()
    assert all(w >= 0 for w in widths)


def test_the_cascade_must_run_cheap_to_tight():
    with pytest.raises(Exception, match="cheap to tight"):
        parse_params({"certify": {"methods": ["crown", "ibp"]}})
    assert parse_params({"certify": {"methods": ["crown_ibp"]}}).certify.methods == ("crown_ibp",)


def test_a_linear_score_is_certified_up_to_its_exact_radius():
    # the cascade's radius on a linear model is the largest grid radius below |s| / ||w||_1
    w = torch.tensor([[0.5, -1.0, 2.0]], dtype=B.DTYPE)
    layers = [B.Affine(w, torch.tensor([0.1], dtype=B.DTYPE), (3,), (1,))]
    x = torch.tensor([[0.5, 0.5, 0.5]], dtype=B.DTYPE)
    s = float(x @ w[0] + 0.1)  # 0.85; exact radius 0.85 / 3.5 = 0.2429 (inside [0, 1])
    for eps, expected in ((0.24, True), (0.245, False)):
        ok = B.lower_margin(layers, x, torch.ones(1, dtype=B.DTYPE), eps, "crown") > 0
        assert bool(ok) is expected, (eps, s)


def test_the_stages_own_attack_fires_on_a_deliberately_wrong_bound(monkeypatch):
    """A CROWN that claims every image is 5 score units from the boundary certifies images PGD
    fools at 8/255 (the attacks' worst case says inf, as if they had missed): the stage's own
    attack finds them, so certified_but_fooled and bound_violations fire. The honest CROWN
    (slow at large radii, so at 0.5/255 only) raises neither."""
    net = biased_net(bias=-0.2)
    images, labels = data(2)
    honest = certify(net, images, labels, methods=["crown"], crown_attempts=40,
                     crown_max_eps=0.5, check_steps=20, check_restarts=2)
    assert honest.metrics()["tried"]["crown"] > 0
    assert honest.certified_but_fooled == 0 and honest.bound_violations == 0
    assert honest.metrics()["bound_gap_median"] >= 0
    monkeypatch.setattr(B, "crown_bounds", lambda layers, lower, upper, **k: B.ibp(layers, lower, upper))
    monkeypatch.setattr(B, "final_bound", lambda layers, bounds, side, *a, **k: torch.full(
        (len(side),), 5.0, dtype=B.DTYPE))
    lying = certify(net, images, labels, methods=["crown"], crown_attempts=40, crown_max_eps=8,
                    check_steps=20, check_restarts=2)
    assert (lying.radius >= 8).all()  # it certified everything
    assert lying.certified_but_fooled == 2 and lying.bound_violations > 0


def test_alpha_crown_is_never_looser_than_crown_and_decides_what_crown_left():
    net = biased_net(bias=-0.2)
    images, labels = data(3)
    result = certify(net, images, labels, methods=["crown", "alpha_crown"], crown_attempts=40,
                     alpha_steps=10, check_steps=0)
    table = result.attempts
    crown = table[table["method"] == "crown"].set_index(["image", "eps"])["bound"]
    alpha = table[table["method"] == "alpha_crown"].set_index(["image", "eps"])["bound"]
    assert len(alpha) and (alpha >= crown.loc[alpha.index] - 1e-9).all()
    # alpha-CROWN runs only on what CROWN left
    assert not table[table["method"] == "crown"].set_index(["image", "eps"]).loc[
        alpha.index, "certified"].any()
    assert result.metrics()["unstable_after_crown"]  # reported per radius
