"""Soundness and exactness of the hand-written bounds (bounds.py): a certificate that is not
sound is worse than none, so every method is checked against values known by construction."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from difftrain.certify import bounds as B
from difftrain.train.model import Net

METHODS = B.METHODS


def dense(w, b):
    w = torch.as_tensor(w, dtype=B.DTYPE)
    return B.Affine(w, torch.as_tensor(b, dtype=B.DTYPE), (w.shape[1],), (w.shape[0],))


@pytest.mark.parametrize("method", METHODS)
def test_a_linear_model_is_certified_exactly(method):
    # s(x) = w.x + b: over an Linf ball inside [0, 1]^n the minimum is s(x) - eps ||w||_1, and
    # the certified radius is |s(x)| / ||w||_1: every method is exact without a ReLU
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(1, 6, generator=g, dtype=B.DTYPE), torch.tensor([0.1], dtype=B.DTYPE)
    layers = [dense(w, b)]
    x = 0.3 + 0.4 * torch.rand(5, 6, generator=g, dtype=B.DTYPE)  # eps below keeps the box inside
    s = x @ w[0] + b
    side = torch.where(s >= 0, 1.0, -1.0).to(B.DTYPE)
    eps = 0.05
    bound = B.lower_margin(layers, x, side, eps, method)
    torch.testing.assert_close(bound, side * s - eps * w.abs().sum(), rtol=0, atol=1e-12)
    radius = (s.abs() / w.abs().sum())
    at = B.lower_margin(layers, x, side, 0.0, method)
    assert torch.all(at > 0)
    # just inside the radius still certified, just outside not (where the box stays inside [0,1])
    inside = radius < 0.29
    for r, xi, si, ok in zip(radius, x, side, inside):
        if ok:
            assert B.lower_margin(layers, xi[None], si[None], float(r) * 0.999, method) > 0
            assert B.lower_margin(layers, xi[None], si[None], float(r) * 1.001, method) < 0


@pytest.mark.parametrize("method", METHODS)
def test_the_unit_box_clips_the_ball_as_the_attacks_do(method):
    # x at the corner 0 with w > 0: the ball below 0 is outside the domain, so the minimum is at x
    layers = [dense([[1.0, 2.0]], [0.5])]
    x = torch.zeros(1, 2, dtype=B.DTYPE)
    bound = B.lower_margin(layers, x, torch.ones(1, dtype=B.DTYPE), 0.1, method)
    assert bound.item() == pytest.approx(0.5)


def brute_minimum(layers, x, side, eps, points=41):
    """The minimum of side * s over a fine grid of the (2-d) box: an upper bound of the truth."""
    lower, upper = B.box(x, eps)
    axes = [torch.linspace(float(lo), float(up), points, dtype=B.DTYPE) for lo, up in zip(lower[0], upper[0])]
    grid = torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=B.DTYPE)
    return (side * B.forward(layers, grid)).min()


@pytest.mark.parametrize("seed", range(5))
def test_bounds_on_a_small_relu_network_never_exceed_the_true_minimum(seed):
    g = torch.Generator().manual_seed(seed)
    layers = [dense(torch.randn(8, 2, generator=g, dtype=B.DTYPE), torch.randn(8, generator=g, dtype=B.DTYPE)),
              dense(torch.randn(8, 8, generator=g, dtype=B.DTYPE), torch.randn(8, generator=g, dtype=B.DTYPE)),
              dense(torch.randn(1, 8, generator=g, dtype=B.DTYPE), torch.randn(1, generator=g, dtype=B.DTYPE))]
    x = torch.rand(1, 2, generator=g, dtype=B.DTYPE)
    side = torch.ones(1, dtype=B.DTYPE)
    found = {}
    for eps in (0.01, 0.05, 0.2):
        truth = brute_minimum(layers, x, side, eps)
        for method in METHODS:
            found[method] = B.lower_margin(layers, x, side, eps, method).item()
            assert found[method] <= truth + 1e-9, (method, eps)
        # CROWN's intermediate bounds intersect IBP's, so its backward bound is never looser
        # than pure intervals, nor than CROWN-IBP (IBP intermediates) on this shape
        assert found["crown"] >= found["ibp"] - 1e-9
        assert found["crown"] >= found["crown_ibp"] - 1e-9


def test_the_rewritten_network_computes_the_networks_score():
    torch.manual_seed(0)
    for batchnorm in (False, True):
        net = Net(batchnorm=batchnorm)
        if batchnorm:  # non-trivial running statistics, folded into the weights
            for m in net.modules():
                if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.data.uniform_(0.5, 1.5)
                    m.bias.data.uniform_(-0.2, 0.2)
        net.eval()
        x = torch.rand(8, 3, 32, 32)
        with torch.no_grad():
            expected = net(x.double().float()).double()
        got = B.forward(B.from_net(net), x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_linear_features_fold_into_the_head_and_tanh_is_refused():
    # Proposition 1's network: no ReLU on phi, so phi's last layer and the head are one affine map
    torch.manual_seed(3)
    net = Net(features_activation="linear").eval()
    layers = B.from_net(net)
    assert len(layers) == len(B.from_net(Net().eval())) - 1
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        expected = net(x).double()
    torch.testing.assert_close(B.forward(layers, x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="tanh"):
        B.from_net(Net(features_activation="linear", hidden_activation="tanh").eval())


def test_max_pool_as_two_relu_steps_is_exact_on_nonnegative_maps():
    h = torch.rand(3, 4, 6, 6, dtype=B.DTYPE)
    cols, rows = B._pool_steps(4, 6, 6)
    pooled = torch.relu(rows.forward(torch.relu(cols.forward(h))))
    summed = pooled[:, 0::2] + pooled[:, 1::2]
    torch.testing.assert_close(summed, F.max_pool2d(h, 2), rtol=0, atol=1e-12)


def test_transpose_is_the_adjoint_of_every_affine_map():
    # <A, op(x)> = <op^T(A), x> for the convolutions (strided, grouped) and dense maps backward uses
    torch.manual_seed(1)
    layers = B.from_net(Net().eval())
    for layer in layers:
        x = torch.randn(2, *layer.in_shape, dtype=B.DTYPE)
        a = torch.randn(2, *layer.out_shape, dtype=B.DTYPE)
        lhs = (a * layer.forward(x, bias=False)).flatten(1).sum(1)
        rhs = (layer.backward(a) * x).flatten(1).sum(1)
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_no_point_of_the_ball_scores_below_the_bound_on_the_papers_network(method):
    # random points and the corners a sign-gradient step reaches, on a random network with a
    # small radius: every score must stay above the certified lower bound
    torch.manual_seed(2)
    net = Net().eval()
    layers = B.from_net(net)
    x = torch.rand(4, 3, 32, 32, dtype=B.DTYPE)
    side = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=B.DTYPE)
    eps = 0.5 / 255
    bound = B.lower_margin(layers, x, side, eps, method)
    lower, upper = B.box(x, eps)
    probe = x.clone().requires_grad_(True)
    (side * B.forward(layers, probe)).sum().backward()
    corner = torch.where(probe.grad > 0, lower, upper)  # the linearised worst corner
    samples = lower + (upper - lower) * torch.rand(16, *x.shape, dtype=B.DTYPE)
    for point in (corner, *samples):
        assert torch.all(side * B.forward(layers, point) >= bound - 1e-9)


def test_a_window_of_a_map_gives_the_bound_of_the_whole_map_zero_outside_it():
    # CROWN's intermediate bounds propagate only the window a neuron reaches: the same bound as
    # the whole map with zeros outside the window, for every map layer, corner and image
    torch.manual_seed(3)
    layers = B.from_net(Net().eval())
    x = torch.rand(3, 3, 32, 32, dtype=B.DTYPE)
    lower, upper = B.box(x, 1 / 255)
    relax = [B._relaxation(*b) for b in B.ibp(layers, lower, upper)[:-1]]
    g = torch.Generator().manual_seed(0)
    for k, layer in enumerate(layers):
        if len(layer.out_shape) != 3:
            continue
        c, h, w = layer.out_shape
        for size in ((1, 1), (2, 3)):
            n = 5
            corner = torch.stack([torch.randint(0, h - size[0] + 1, (n,), generator=g),
                                  torch.randint(0, w - size[1] + 1, (n,), generator=g)], 1)
            rows = torch.randint(0, len(x), (n,), generator=g)
            a = torch.randn(n, c, *size, generator=g, dtype=B.DTYPE)
            whole = torch.zeros(n, c, h, w, dtype=B.DTYPE)
            for r in range(n):
                y0, x0 = corner[r].tolist()
                whole[r, :, y0:y0 + size[0], x0:x0 + size[1]] = a[r]
            windowed = B.backward_lower(layers, k, a, rows, relax, lower, upper, corner)
            expected = B.backward_lower(layers, k, whole, rows, relax, lower, upper)
            torch.testing.assert_close(windowed, expected, rtol=1e-10, atol=1e-9)


def test_crown_through_windows_equals_crown_through_whole_maps():
    torch.manual_seed(4)
    layers = B.from_net(Net().eval())
    x = torch.rand(2, 3, 32, 32, dtype=B.DTYPE)
    side = torch.tensor([1.0, -1.0], dtype=B.DTYPE)
    for eps in (0.5 / 255, 2 / 255):
        torch.testing.assert_close(B.lower_margin(layers, x, side, eps, "crown"),
                                   B.lower_margin(layers, x, side, eps, "crown", windows=False),
                                   rtol=1e-10, atol=1e-9)
