import math

import pytest
import torch

from difftrain.mechanism import features as F
from difftrain.core import geometry as G
from difftrain.mechanism.theory import affine_data


def _toy():
    # class x at (2, 0) and (3, 1); class y at (0, 0) and (-1, 1). The closest pair is (2,0)-(0,0),
    # and the max-margin separator is x1 = 1: optimal margin 1.
    phi = torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    return phi, labels


def test_svm_margin_on_a_hand_made_toy():
    phi, labels = _toy()
    svm = G.svm(phi, labels, C=1e6, max_iter=100_000)
    assert svm["converged"] and svm["separates"]
    assert svm["margin"] == pytest.approx(1.0, rel=1e-3)
    # The ratio is 1 for the SVM's own hyperplane.
    own = G.margins(phi, labels, svm["w"], svm["b"]).min()
    assert float(own) / svm["margin"] == pytest.approx(1.0)


def test_head_margin_on_a_hand_set_head():
    phi, labels = _toy()
    # w = (1, 1), b = -2: signed distances (0, 2, 2, 2) / sqrt(2)
    m = G.margins(phi, labels, torch.tensor([1.0, 1.0]), -2.0)
    assert m.tolist() == pytest.approx([0.0, 2 / math.sqrt(2), 2 / math.sqrt(2), 2 / math.sqrt(2)])
    # A misclassified point has a negative margin.
    m = G.margins(phi, labels, torch.tensor([1.0, 0.0]), -2.5)
    assert float(m.min()) == pytest.approx(-0.5)
    assert F.margin_summary(m)["min"] == pytest.approx(-0.5)


def test_svm_on_non_separable_features_is_reported_not_converged_or_not_separating():
    phi, labels = _toy()
    phi = torch.cat([phi, torch.tensor([[5.0, 0.0]], dtype=torch.float64)])  # a y-point deep in x
    labels = torch.cat([labels, torch.tensor([1])])
    svm = G.svm(phi, labels, C=1e5, max_iter=1000)
    assert not (svm["converged"] and svm["separates"])


def test_a_worse_head_has_a_ratio_below_one():
    phi, labels = _toy()
    best = G.svm(phi, labels, C=1e6, max_iter=100_000)["margin"]
    tilted = float(G.margins(phi, labels, torch.tensor([1.0, 0.5]), -1.2).min())
    assert 0 < tilted / best < 1


def test_augmented_svm_pays_for_the_bias_only_when_one_is_needed():
    # Separable points on a line through the origin: no bias needed, so no margin lost.
    phi = torch.tensor([[1.0, 1.0], [2.0, 2.0], [-1.0, -1.0], [-2.0, -2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    optimal = G.svm(phi, labels, C=1e6, max_iter=100_000)["margin"]
    limit = G.augmented_svm(phi, labels, C=1e6, max_iter=100_000)
    assert limit["converged"] and limit["separates"]
    assert limit["margin"] == pytest.approx(optimal, rel=1e-3)
    # A line moved 5 away from the origin in general position (the theory stage's Fig. 1): the
    # threshold needs a large bias, which the augmented problem penalises, so its margin falls
    # well below the optimum while still separating.
    points, labels = affine_data(20, 2, 1, 5.0, 1.0, seed=0)
    optimal = G.svm(points, labels, C=1e6, max_iter=100_000)["margin"]
    limit = G.augmented_svm(points, labels, C=1e6, max_iter=1_000_000)
    assert limit["converged"] and limit["separates"]
    assert 0 < limit["margin"] < 0.5 * optimal


def test_affine_fit_recovers_a_known_offset_subspace():
    g = torch.Generator().manual_seed(2)
    basis, _ = torch.linalg.qr(torch.randn(84, 3, generator=g, dtype=torch.float64))
    c = torch.randn(84, generator=g, dtype=torch.float64) * 4
    c -= basis @ (basis.T @ c)  # the subspace's point nearest the origin
    points = c + torch.randn(200, 3, generator=g, dtype=torch.float64) @ basis.T
    projected, fitted, offset = G.affine_fit(points, 3)
    assert torch.allclose(projected, points, atol=1e-10)
    assert torch.allclose(offset, c, atol=1e-10)
    assert torch.allclose(fitted @ fitted.T, basis @ basis.T, atol=1e-10)


def _offset_pair():
    # x at (1, 2), y at (-1, 2): the line x2 = 2, at distance 2 from the origin; optimal margin 1.
    points = torch.tensor([[1.0, 2.0], [-1.0, 2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    _, basis, c = G.affine_fit(points, 1)
    return points, labels, basis, c


def test_theorem1_bound_by_hand():
    points, labels, basis, c = _offset_pair()
    assert c.tolist() == pytest.approx([0.0, 2.0])
    # w = (1, 0.2), b = 0.1: the off-line weight is b c, as gradient descent on CE leaves it.
    # Scores 1.5 and -0.5, so rho = 0.5, B = 0.1 / 0.5 = 0.2, bound 1 / sqrt(1 + 0.2^2 * 2^2).
    t = G.theorem1(points, labels, torch.tensor([1.0, 0.2], dtype=torch.float64), 0.1, 1.0, basis, c)
    assert t["span_deviation"] == pytest.approx(0.0, abs=1e-12)
    assert t["B"] == pytest.approx(0.2)
    assert t["bound"] == pytest.approx(1 / math.sqrt(1.16))
    assert t["general_bound"] == pytest.approx(t["bound"])
    assert t["margin"] == pytest.approx(0.5 / math.sqrt(1.04)) and t["holds"]


def test_theorem1_paper_form_needs_the_span_condition():
    points, labels, basis, c = _offset_pair()
    # w = (1, 0), b = 0.5 has no weight off the line although it has a bias: margin 0.5 beats
    # the paper form's 1 / sqrt(1 + 1 * 4), but not the general bound (1).
    t = G.theorem1(points, labels, torch.tensor([1.0, 0.0]), 0.5, 1.0, basis, c)
    assert t["span_deviation"] == pytest.approx(1.0)
    assert t["margin"] == pytest.approx(0.5) and t["bound"] == pytest.approx(1 / math.sqrt(5))
    assert not t["holds"] and t["general_bound"] == pytest.approx(1.0)
    # A hyperplane that does not separate gets no bound.
    assert G.theorem1(points, labels, torch.tensor([-1.0, 0.0]), 0.0, 1.0, basis, c)["bound"] is None


def test_theorem1_on_fit_of_noisy_low_rank_features():
    points, labels = affine_data(40, 84, 3, 6.0, 1.0, seed=3)
    noisy = points + 1e-4 * torch.randn(points.shape, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64)
    head = G.svm(noisy, labels, C=1e6, max_iter=100_000)
    t = G.theorem1_on_fit(noisy, labels, head["w"], head["b"], 3, C=1e6, max_iter=1_000_000)
    assert t["subspace_dim"] == 3 and t["residual_rms"] < 1e-2
    assert t["svm_margin"] == pytest.approx(head["margin"], rel=1e-2)
    limit = t["ce_limit"]  # the augmented SVM lies in the span of the augmented points
    assert limit["span_deviation"] < 1e-6 and limit["holds"]
    assert limit["margin"] <= t["svm_margin"] * (1 + G.SOLVER_RTOL)
    # The SVM head has a free bias and no matching weight off the subspace: over the paper form.
    assert t["head"]["margin"] > t["head"]["bound"]

