"""The paper's synthetic experiments, in float64: linear classifiers on low-rank affine data
(Fig. 1, Theorems 1 and 2, Remark 1) and a one-hidden-layer network in 2-D (Fig. 3).

What is computed and why:

* Cross-entropy with a bias is logistic regression on augmented points (x, 1) (the paper's
  Lemma 1). By Soudry et al. (2018), gradient descent on it converges in direction to the
  hard-margin SVM *of the augmented points*, which penalises the bias like any weight. When the
  data sit far from the origin, a separating hyperplane needs a large bias, so that solution
  trades margin for a smaller bias: its margin in the original space, ``ce_limit_margin``,
  falls below the optimal (unpenalised-bias) SVM margin. Weight on directions in which every
  point has the same coordinate acts as a cheap bias, so how much is lost depends on the
  subspace's dimension as well as its offset (the Remark 1 sweep measures both). We compute this
  limit exactly, by solving the augmented SVM, and beside it Theorem 1's upper bound
  1 / sqrt(1/gamma^2 + B^2 sum_k Delta_k^2) for the gradient-descent iterate and for the limit
  (``core.geometry.theorem1``; derivation in docs/theorem1.md). The bound captures the margin lost to
  weight off the subspace; the limit also loses margin to the bias penalty inside the subspace,
  which the bound does not see.
* The differential loss eq. (6) sees only differences x_i - y_j, which do not move with the
  offset; Theorem 2 says gradient descent on it converges in direction to the SVM direction.
  We track the angle between w(t) and the SVM's w along the iterations (it decays like
  1/log t, so slowly) and set the bias by eq. (5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from difftrain.core import geometry as G
from difftrain.core.labels import accuracy, is_x, sign
from difftrain.train.objectives import OBJECTIVES
from difftrain.core.params import TheoryParams


def affine_data(n: int, d: int, k: int, offset: float, gap: float, seed: int):
    """Two separable classes on a k-dim affine subspace of R^d, translated by ``offset``.

    In subspace coordinates z, class x has z_1 >= gap/2 and class y has z_1 <= -gap/2 (other
    coordinates standard normal): the optimal margin is about gap/2. The points are then moved by
    ``offset`` along a random unit vector in general position (partly inside the subspace, partly
    orthogonal to it), so a separating hyperplane needs a bias that grows with the offset.
    Returns (points (2n, d), labels (2n,) with 0 = x, 1 = y).
    """
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    z = torch.randn(2 * n, k, generator=g, dtype=torch.float64)
    z[:, 0] = z[:, 0].abs() + gap / 2
    z[n:, 0] *= -1
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    points = z @ basis.T + offset * direction / direction.norm()
    labels = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
    return points, labels


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = float(a @ b / (a.norm() * b.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def log_checkpoints(steps: int, per_decade: int = 8) -> set[int]:
    return {int(round(10 ** (i / per_decade))) for i in range(int(per_decade * math.log10(steps)) + 1)} | {steps}


def gd_cross_entropy(points, labels, steps: int, lr: float):
    """Plain gradient descent on cross-entropy (``objectives.cross_entropy``) of a linear
    classifier w.x + b, from zero, with its gradient in closed form (float64, no autograd).

    Yields (iteration, w, b) at log-spaced iterations."""
    y = sign(labels)
    aug = torch.cat([points, torch.ones(len(points), 1, dtype=points.dtype)], dim=1)
    wb = torch.zeros(aug.shape[1], dtype=points.dtype)
    marks = log_checkpoints(steps)
    for t in range(1, steps + 1):
        # d/dwb mean softplus(-y aug.wb) = -mean sigmoid(-y aug.wb) y aug
        wb -= lr * -(torch.sigmoid(-y * (aug @ wb)) * y) @ aug / len(y)
        if t in marks:
            yield t, wb[:-1].clone(), float(wb[-1])


def gd_differential(points, labels, steps: int, lr: float):
    """Plain gradient descent on eq. (6) (``objectives.differential_logistic``) of a linear
    classifier w.x, from zero, with its gradient in closed form (float64, no autograd).

    Yields (iteration, w) at log-spaced iterations; the bias is set afterwards by eq. (5)."""
    x, yy = points[is_x(labels)], points[~is_x(labels)]
    w = torch.zeros(points.shape[1], dtype=points.dtype)
    marks = log_checkpoints(steps)
    pairs = len(x) * len(yy)
    for t in range(1, steps + 1):
        p = torch.sigmoid(-((x @ w)[:, None] - (yy @ w)[None, :]))  # (n_x, n_y)
        grad = -(p.sum(1) @ x - p.sum(0) @ yy) / pairs
        w -= lr * grad
        if t in marks:
            yield t, w.clone()


class OneHidden(nn.Module):
    """Fig. 3's network: R^2 -> ReLU hidden layer phi -> linear head w (+ bias b)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(2, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.double()

    def raw_score(self, x):
        return self.head(self.phi(x)).squeeze(-1)

    def forward(self, x):
        return self.raw_score(x) + self.bias


def train_mlp(points, labels, loss: str, hidden: int, steps: int, lr: float, seed: int) -> OneHidden:
    """Full-batch Adam on one of the training objectives (the bias as that objective says)."""
    objective = OBJECTIVES[loss]
    torch.manual_seed(seed)
    net = OneHidden(hidden)
    objective.freeze_bias(net)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        value = objective.batch_loss(net, points, labels)
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        objective.settle_bias(net, net.raw_score(points), labels)
    return net


@torch.no_grad()
def decision_grid(net: nn.Module, lo, hi, resolution: int = 600):
    """(xs, ys, scores) of the network on a resolution x resolution grid over [lo, hi]^2."""
    xs = torch.linspace(lo[0], hi[0], resolution, dtype=torch.float64)
    ys = torch.linspace(lo[1], hi[1], resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    scores = net(torch.stack([gx.flatten(), gy.flatten()], 1)).reshape(resolution, resolution)
    return xs, ys, scores


@torch.no_grad()
def input_margin(net: nn.Module, points, labels, resolution: int = 600, pad: float = 1.0):
    """Each point's distance to the decision boundary, measured on a fine grid.

    The boundary is located as the midpoints between horizontally or vertically adjacent grid
    nodes whose scores differ in sign; a point's margin is its distance to the nearest such
    midpoint (error below one grid spacing), 0 if the point is misclassified.
    """
    lo, hi = points.min(0).values - pad, points.max(0).values + pad
    xs, ys, scores = decision_grid(net, lo, hi, resolution)
    positive = scores >= 0
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    h = positive[:, 1:] != positive[:, :-1]
    v = positive[1:, :] != positive[:-1, :]
    boundary = torch.cat([
        torch.stack([(gx[:, 1:] + gx[:, :-1])[h] / 2, gy[:, 1:][h]], 1),
        torch.stack([gx[1:, :][v], (gy[1:, :] + gy[:-1, :])[v] / 2], 1)])
    if len(boundary) == 0:
        return torch.full((len(points),), float("inf"), dtype=torch.float64)
    distance = torch.cdist(points, boundary).min(1).values
    correct = sign(labels) * net(points) > 0
    return torch.where(correct, distance, torch.zeros_like(distance))


def two_moons(n: int, noise: float, seed: int):
    """Fig. 3-style 2-D data: two interleaved half circles, labels 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    upper = torch.stack([t.cos(), t.sin()], 1)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
    points = torch.cat([upper, lower]) + noise * torch.randn(2 * n, 2, generator=g, dtype=torch.float64)
    labels = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
    return points, labels


# --- The stage's three experiments ----------------------------------------------------------

def linear_experiment(t: TheoryParams) -> dict:
    """Fig. 1 and Theorems 1, 2: a line (k = 1) in R^2, moved ``offset`` from the origin.

    Returns the points, the three hyperplanes (SVM, CE by gradient descent, eq. (6) by gradient
    descent with the eq. (5) bias), the angle of each iterate to its limit direction, and the
    metrics."""
    x, y = affine_data(t.n_per_class, 2, 1, t.offset, t.gap, t.seed)
    svm = G.svm(x, y, t.svm_C, t.svm_max_iter)
    limit = G.augmented_svm(x, y, t.svm_C, t.svm_max_iter)
    wb_limit = torch.cat([limit["w"], torch.tensor([limit["b"]], dtype=torch.float64)])
    rows, ce, diff = [], None, None
    for step, w, b in gd_cross_entropy(x, y, t.steps, t.lr):
        angle_ce = angle_degrees(torch.cat([w, torch.tensor([b], dtype=torch.float64)]), wb_limit)
        rows.append({"iteration": step, "method": "cross-entropy vs augmented SVM",
                     "angle_degrees": angle_ce})
        ce = (w, b)
    for step, w in gd_differential(x, y, t.steps, t.lr):
        angle_diff = angle_degrees(w, svm["w"])
        rows.append({"iteration": step, "method": "differential (eq. 6) vs SVM",
                     "angle_degrees": angle_diff})
        scores = x @ w
        diff = (w, G.eq5_bias(scores[is_x(y)], scores[~is_x(y)])[0])
    gamma = svm["margin"]
    metrics = {
        "svm_margin": gamma,
        "ce_limit_margin": limit["margin"],
        "ce_margin": G.margin(x, y, *ce),
        "differential_margin": G.margin(x, y, *diff),
        "ce_ratio": G.margin(x, y, *ce) / gamma,
        "differential_ratio": G.margin(x, y, *diff) / gamma,
        "final_angle_ce": angle_ce,
        "final_angle_differential": angle_diff,
        "theorem1": {"ce": G.theorem1_on_subspace(x, y, 1, *ce, gamma),
                     "ce_limit": G.theorem1_on_subspace(x, y, 1, limit["w"], limit["b"], gamma)},
    }
    lines = {"SVM (optimal)": (svm["w"], svm["b"]), "cross-entropy (GD)": ce,
             "differential (GD)": diff}
    return {"points": x, "labels": y, "lines": lines, "angles": pd.DataFrame(rows),
            "metrics": metrics}


def remark1_sweep(t: TheoryParams) -> pd.DataFrame:
    """CE's limit margin and Theorem 1's bound over the optimum, as the offset grows, for each
    subspace dimension."""
    rows = []
    for k in t.sweep_dims:
        for offset in t.sweep_offsets:
            x, y = affine_data(3 * t.n_per_class, t.sweep_d, k, offset, t.gap, t.seed)
            optimal = G.svm(x, y, t.svm_C, t.svm_max_iter)["margin"]
            limit = G.augmented_svm(x, y, t.svm_C, t.svm_max_iter)
            bound = G.theorem1_on_subspace(x, y, k, limit["w"], limit["b"], optimal)["bound"]
            rows.append({"subspace_dim": k, "offset": offset,
                         "ce_limit_ratio": limit["margin"] / optimal,
                         "theorem1_bound_ratio": bound / optimal})
    return pd.DataFrame(rows)


def network_experiment(t: TheoryParams) -> dict:
    """Fig. 3: one hidden layer on two moons, cross-entropy against eq. (7); the decision grid
    of each network (for the figure) and its input-space margins."""
    x, y = two_moons(5 * t.n_per_class, 0.1, t.seed)
    lo, hi = x.min(0).values - 1, x.max(0).values + 1
    grids, metrics = {}, {}
    for loss in ("cross_entropy", "differential"):
        net = train_mlp(x, y, loss, t.mlp_hidden, t.mlp_steps, t.mlp_lr, t.seed)
        m = input_margin(net, x, y)
        with torch.no_grad():
            metrics[loss] = {"train_accuracy": accuracy(net(x), y),
                             "input_margin_min": float(m.min()),
                             "input_margin_median": float(m.median())}
        grids[loss] = decision_grid(net, lo, hi, FIGURE_GRID)
    return {"points": x, "labels": y, "grids": grids, "metrics": metrics}


FIGURE_GRID = 300  # nodes per side of the decision-region figure (the margins use a finer grid)


@dataclass
class TheoryResult:
    linear: dict
    sweep: pd.DataFrame
    network: dict

    def metrics(self) -> dict:
        return {"linear": self.linear["metrics"], "network": self.network["metrics"]}


def run(t: TheoryParams) -> TheoryResult:
    """The theory stage's three experiments at ``theory.*``."""
    torch.manual_seed(t.seed)
    return TheoryResult(linear_experiment(t), remark1_sweep(t), network_experiment(t))
