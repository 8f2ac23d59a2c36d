"""The exact MILP (milp.py, HiGHS): its minimum lies between CROWN's bound and what sampling
finds, its verdicts follow the threshold, and in the cascade it finds an adversarial example the
attacks missed and lowers the worst case."""

import math

import pytest
import torch

from difftrain.certify import bounds as B, milp as M
from difftrain.certify.cascade import certify_split
from difftrain.core.params import CertifyParams
from difftrain.train.model import Net


def small_network(seed=0):
    """A 4-8-6-1 ReLU network as bounds.py's affine maps."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 4), (6, 8), (1, 6)]
    return [B.Affine(torch.randn(o, i, generator=g, dtype=B.DTYPE),
                     torch.randn(o, generator=g, dtype=B.DTYPE) * 0.3, (i,), (o,))
            for o, i in shapes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_milp_minimum_lies_between_crown_and_sampling(seed):
    layers = small_network(seed)
    x = torch.full((1, 4), 0.5, dtype=B.DTYPE)
    lower, upper = B.box(x, 0.3)
    bounds = B.crown_bounds(layers, lower, upper)
    assert B.unstable_counts(bounds)[0] > 0  # binaries to branch on
    side = torch.ones(1, dtype=B.DTYPE)
    crown = float(B.final_bound(layers, bounds, side, lower, upper))
    grid = torch.stack(torch.meshgrid(*[torch.linspace(0.2, 0.8, 13, dtype=B.DTYPE)] * 4,
                                      indexing="ij"), -1).reshape(-1, 4)
    sampled = float(B.forward(layers, grid).min())
    errors = [None] * len(layers)
    encoder = M.Encoder(layers)
    best = encoder.solve(lower, upper, bounds, errors, 1.0, math.inf, 10_000, first=False)
    assert best.status == "optimal"
    assert crown - 1e-6 <= best.objective <= sampled + 1e-6
    # the solution is a real point whose score is the minimum
    assert float(B.forward(layers, best.point)) == pytest.approx(best.objective, abs=1e-6)
    # verdicts against a threshold: below the minimum nothing exists (certified); above it a
    # point does (a candidate the cascade re-scores)
    below = encoder.solve(lower, upper, bounds, errors, 1.0, best.objective - 0.05, 10_000)
    assert below.status == "certified"
    above = encoder.solve(lower, upper, bounds, errors, 1.0, best.objective + 0.05, 10_000)
    assert above.status == "candidate" and above.objective < best.objective + 0.05


def test_the_milp_finds_what_the_attacks_missed_and_lowers_the_worst_case():
    # an image 0.002 from the boundary: a tiny ball crosses it, CROWN and alpha-CROWN cannot
    # certify it, and the "attacks" (worst = inf) claimed nothing: the MILP's point, re-scored
    # on the float32 network, fools it, and the worst case drops to that radius
    torch.manual_seed(0)
    net = Net().eval()
    images = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    with torch.no_grad():
        net.bias.sub_(net(images.float() / 255)[0] - 0.002)
    grid = (0.0, 0.05)
    params = CertifyParams(methods=["crown", "alpha_crown", "milp"], milp_attempts=1,
                           milp_nodes=50, check_steps=5, check_restarts=1)
    result = certify_split(net, "test", images, torch.tensor([0]), torch.arange(1),
                           torch.full((1,), math.inf, dtype=torch.float64), grid, params,
                           progress=False)
    metrics = result.metrics()
    assert metrics["decided"] == {"crown": 0, "alpha_crown": 0, "milp": 0}
    assert metrics["milp"]["adversarial"] == 1 and metrics["worst_lowered_by_milp"] == 1
    assert float(result.worst[0]) == 0.05 and result.worst_accuracy() == [1.0, 0.0]
    assert result.accuracy() == [1.0, 0.0] and metrics["certified_but_fooled"] == 0
