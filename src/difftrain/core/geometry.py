"""Linear-classifier geometry: margins, the two hard-margin SVMs, eq. (5), and Theorem 1.

Used on the CNN's penultimate features (``features.py``) and on the synthetic points of the
theory stage (``theory.py``) alike: a point set, labels (0 = class x, see ``labels.py``) and a
hyperplane ``w.x + b = 0``.

* ``svm``: the hard-margin SVM with a free bias, the optimal margin gamma (libsvm, C large).
* ``augmented_svm``: the hard-margin SVM of the augmented points (x, 1), whose bias is penalised
  like a weight. By Soudry et al. (2018) gradient descent on cross-entropy with a bias converges
  in direction to it (the paper's Lemma 1), so its margin is the one CE training tends to.
* ``eq5_bias``: the paper's eq. (5), the bias the differential losses get after training.
* ``affine_fit`` and ``theorem1``: Theorem 1's bound on points lying on an affine subspace
  (derivation and assumptions in docs/theorem1.md).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from difftrain.core.labels import sign

# scikit-learn (libsvm, liblinear) is imported inside the two SVM functions: every stage loads
# this module through params.py -> objectives.py (for eq. 5), and only two stages solve SVMs.

# libsvm's stopping tolerance on the KKT conditions: margins are accurate to about this, relatively.
SVM_TOL = 1e-4
# liblinear's dual coordinate descent stops on a projected-gradient tolerance; 1e-8 makes its
# margin as accurate as libsvm's on the problems here (it is fast, so the tight value is cheap).
AUGMENTED_SVM_TOL = 1e-8
# liblinear visits coordinates in random order: a fixed seed makes reruns repeat exactly.
LIBLINEAR_SEED = 0
# A bound built from gamma counts as holding when exceeded by less than the solver's accuracy.
SOLVER_RTOL = SVM_TOL


def margins(points: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, b: float) -> torch.Tensor:
    """Signed distance of each point to the hyperplane w.x + b = 0; negative if misclassified."""
    w = w.double().flatten()
    return sign(labels) * (points @ w + b) / w.norm()


def margin(points: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, b: float) -> float:
    """The hyperplane's margin: the smallest signed distance (negative: a point is misclassified)."""
    return float(margins(points, labels, w, b).min())


def _fit(solver, x: np.ndarray, y: np.ndarray) -> bool:
    """Fit ``solver``; whether it converged (no ConvergenceWarning)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        solver.fit(x, y)
    return not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def svm(points: torch.Tensor, labels: torch.Tensor, C: float, max_iter: int) -> dict:
    """The hard-margin linear SVM on ``points`` (approximated by C large), checked.

    Returns its margin, direction and offset, whether libsvm converged and whether the solution
    separates the data; the margin is meaningful only when both hold (``valid``). On separable
    points libsvm converges in well under a second; on non-separable ones a large C makes it
    crawl, so ``max_iter`` caps the work and the result is reported as not converged.
    """
    from sklearn.svm import SVC

    solver = SVC(kernel="linear", C=C, tol=SVM_TOL, cache_size=1000, max_iter=max_iter)
    converged = _fit(solver, points.numpy(), sign(labels).numpy()) and solver.fit_status_ == 0
    w = torch.from_numpy(solver.coef_[0].copy())
    b = float(solver.intercept_[0])
    m = margins(points, labels, w, b)
    separates = bool((m > 0).all())
    return {"margin": float(m.min()), "w": w, "b": b, "converged": bool(converged),
            "separates": separates, "valid": bool(converged) and separates,
            "support_vectors": int(solver.n_support_.sum())}


def augmented_svm(points: torch.Tensor, labels: torch.Tensor, C: float, max_iter: int) -> dict:
    """The hard-margin SVM of the augmented points (x, 1), whose bias is penalised like a weight.

    The limit direction of gradient descent on cross-entropy with a bias (Soudry et al., 2018);
    its margin in the original space is therefore the margin CE training tends to, and the gap to
    ``svm``'s margin is what penalising the bias costs. Solved by liblinear's dual coordinate
    descent (LinearSVC, hinge loss, no separate intercept).
    """
    from sklearn.svm import LinearSVC

    x = np.hstack([points.numpy(), np.ones((len(points), 1))])
    solver = LinearSVC(loss="hinge", fit_intercept=False, C=C, tol=AUGMENTED_SVM_TOL,
                       max_iter=max_iter, dual=True, random_state=LIBLINEAR_SEED)
    converged = _fit(solver, x, sign(labels).numpy())
    wb = torch.from_numpy(solver.coef_[0].copy())
    m = margins(points, labels, wb[:-1], float(wb[-1]))
    separates = bool((m > 0).all())
    return {"margin": float(m.min()), "w": wb[:-1], "b": float(wb[-1]),
            "converged": converged, "separates": separates, "valid": converged and separates}


def eq5_bias(scores_x: torch.Tensor, scores_y: torch.Tensor) -> tuple[float, bool, float]:
    """(bias, separable, gap) by eq. (5) from bias-free scores of class x and class y.

    gap = min_i s(x_i) - max_j s(y_j). If gap > 0 the classes are separated and the bias puts the
    threshold midway: b = -(min_i s(x_i) + max_j s(y_j)) / 2. Otherwise (fallback) the threshold
    maximising training accuracy, taken midway between the two neighbouring sorted scores.
    """
    lo, hi = scores_x.min(), scores_y.max()
    gap = float(lo - hi)
    if gap > 0:
        return float(-(lo + hi) / 2), True, gap
    scores = torch.cat([scores_x, scores_y]).double()
    x_side = torch.cat([torch.ones_like(scores_x), torch.zeros_like(scores_y)]).double()
    order = scores.argsort()
    scores, x_side = scores[order], x_side[order]
    # Threshold between sorted positions k-1 and k: y-points below it and x-points above are right.
    # It lies midway between neighbouring scores, so only tied scores can sit on it.
    correct = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - x_side).cumsum(0)]) + \
        torch.cat([x_side.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
    k = int(correct.argmax())
    padded = torch.cat([scores[:1] - 1, scores, scores[-1:] + 1])
    threshold = float((padded[k] + padded[k + 1]) / 2)
    return -threshold, False, gap


def affine_fit(points: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares affine subspace of dimension ``dim`` (PCA): (projected points, basis U, c).

    ``c`` is the point of the subspace nearest the origin (orthogonal to U); the projected points
    lie exactly on ``c + span(U)``, the setting of Theorem 1.
    """
    mean = points.mean(0)
    basis = torch.linalg.svd(points - mean, full_matrices=False).Vh[:dim].T
    projected = mean + (points - mean) @ basis @ basis.T
    return projected, basis, mean - basis @ (basis.T @ mean)


def theorem1(points: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, b: float, gamma: float,
             basis: torch.Tensor, c: torch.Tensor) -> dict:
    """Theorem 1's bound for the hyperplane (w, b) on points lying on ``c + span(basis)``.

    ``bound`` is the paper's form with B = |b| / rho; it holds for every hyperplane whose
    off-subspace weight is b c (gradient descent on cross-entropy from zero, and its limit).
    ``general_bound`` uses the hyperplane's actual off-subspace weight and holds for any
    separating hyperplane; ``span_deviation`` = ||w_perp - b c|| / ||w|| says how far (w, b) is
    from the span condition (0 for CE gradient descent on fixed points). ``holds`` allows for
    the SVM solver's accuracy (SOLVER_RTOL). None where (w, b) does not separate the points
    (the bound assumes it does).
    """
    w = w.double().flatten()
    rho = float((sign(labels) * (points @ w + b)).min())
    w_perp = w - basis @ (basis.T @ w)
    out = {"margin": rho / float(w.norm()),
           "span_deviation": float((w_perp - b * c).norm() / w.norm())}
    if rho <= 0:
        return {**out, "B": None, "bound": None, "general_bound": None, "holds": None}
    B = abs(b) / rho
    bound = 1 / math.sqrt(1 / gamma ** 2 + B ** 2 * float(c @ c))
    return {**out, "B": B, "bound": bound,
            "general_bound": 1 / math.sqrt(1 / gamma ** 2 + float(w_perp @ w_perp) / rho ** 2),
            "holds": out["margin"] <= bound * (1 + SOLVER_RTOL)}


def theorem1_on_subspace(points: torch.Tensor, labels: torch.Tensor, dim: int, w: torch.Tensor,
                         b: float, gamma: float) -> dict:
    """Theorem 1 for (w, b) on points that lie on a ``dim``-dimensional affine subspace, with the
    subspace's distance from the origin (``offset``, sqrt(sum_k Delta_k^2))."""
    _, basis, c = affine_fit(points, dim)
    return {"offset": float(c.norm()), **theorem1(points, labels, w, b, gamma, basis, c)}


def theorem1_on_fit(points: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, b: float,
                    dim: int, C: float, max_iter: int) -> dict:
    """Theorem 1 on the ``dim``-dimensional affine-subspace fit of points that are only near one.

    The points are replaced by their projections onto the fit (which lie exactly on an affine
    subspace, as the theorem assumes); ``residual_rms`` says how far the real points are from
    them. Reports the fit's offset from the origin (sqrt(sum_k Delta_k^2)), its optimal margin
    gamma, and the bound for (w, b) and for the CE limit (the augmented SVM, which satisfies the
    span condition exactly). Margins and bounds are None where the projections are not separable.
    """
    projected, basis, c = affine_fit(points, dim)
    out = {"subspace_dim": dim,
           "residual_rms": float((points - projected).square().sum(1).mean().sqrt()),
           "offset": float(c.norm())}
    optimum = svm(projected, labels, C, max_iter)
    if not optimum["valid"]:
        return {**out, "svm_margin": None, "head": None, "ce_limit": None}
    limit = augmented_svm(projected, labels, C, max_iter)
    gamma = optimum["margin"]
    return {**out, "svm_margin": gamma,
            "head": theorem1(projected, labels, w, b, gamma, basis, c),
            "ce_limit": theorem1(projected, labels, limit["w"], limit["b"], gamma, basis, c)
            if limit["converged"] else None}
