"""The paper's mechanism in numbers: rank of the penultimate features and margins in that layer.

* rank (paper Fig. 2): PCA spectrum of the 84-d features phi, numerical rank, components for
  99% / 99.9% of the variance, effective rank (Roy & Vetterli, 2007);
* the trained head's margin in feature space, min_i y_i (w.phi_i + b) / ||w||, against the
  hard-margin linear SVM on the same training features (scikit-learn's libsvm solver): Theorem 1
  predicts a ratio far below 1 for cross-entropy, Theorem 2 close to 1 for differential training;
* how far the features sit from the origin relative to their spread, and Theorem 1's bound
  computed from an affine-subspace fit of the features (an affine subspace offset from the origin
  forces a poor CE margin); docs/theorem1.md derives the bound and states its assumptions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import SVC, LinearSVC

from difftrain.data import to_float
from difftrain.model import Net

PERCENTILES = (1, 5, 25, 50)
# Relative accuracy of the SVM margins (libsvm's tol=1e-4 on the KKT conditions): a bound built
# from gamma counts as holding when exceeded by less than this.
SOLVER_RTOL = 1e-4


@torch.no_grad()
def extract(model: Net, images: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """phi(x) for uint8 images, batched on the model's device; float64 on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.features(to_float(images[i:i + batch].to(device))).double().cpu()
                      for i in range(0, len(images), batch)])


def spectrum(features: torch.Tensor) -> torch.Tensor:
    """Singular values of the centred features (PCA), largest first."""
    return torch.linalg.svdvals(features - features.mean(0))


def rank_metrics(features: torch.Tensor, rank_tol: float) -> tuple[dict, np.ndarray]:
    """(rank metrics, cumulative explained variance per component) of one feature matrix."""
    s = spectrum(features)
    variance = s.square()
    total = float(variance.sum())
    if total == 0:
        cumulative = np.ones(len(s))
        return {"numerical_rank": 0, "components_99": 0, "components_999": 0,
                "effective_rank": 0.0}, cumulative
    cumulative = (variance.cumsum(0) / total).numpy()
    p = s / s.sum()
    p = p[p > 0]
    return {
        "numerical_rank": int((s > rank_tol * s[0]).sum()),
        "components_99": components_for(cumulative, 0.99),
        "components_999": components_for(cumulative, 0.999),
        "effective_rank": float(torch.exp(-(p * p.log()).sum())),
    }, cumulative


def components_for(cumulative: np.ndarray, fraction: float) -> int:
    """How many leading principal components hold ``fraction`` of the variance."""
    return min(int(np.searchsorted(cumulative, fraction - 1e-12) + 1), len(cumulative))


def signs(labels: torch.Tensor) -> torch.Tensor:
    """+1 for class x (label 0), -1 for class y."""
    return 1.0 - 2.0 * labels.double()


def margins(features: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, b: float) -> torch.Tensor:
    """Signed distance of each point to the hyperplane w.phi + b = 0; negative if misclassified."""
    w = w.double().flatten()
    return signs(labels) * (features @ w + b) / w.norm()


def margin_summary(m: torch.Tensor) -> dict:
    out = {"min": float(m.min())}
    for q in PERCENTILES:
        out[f"p{q}"] = float(torch.quantile(m, q / 100))
    return out


def svm_margin(features: torch.Tensor, labels: torch.Tensor, C: float,
               max_iter: int = 100_000) -> dict:
    """The hard-margin linear SVM on ``features`` (approximated by C large), checked.

    Returns its margin, direction and offset, whether libsvm converged and whether the solution
    separates the data; the margin is meaningful only when both hold. On separable features
    libsvm converges in well under a second; on non-separable ones a large C makes it crawl, so
    ``max_iter`` caps the work and the result is reported as not converged.
    """
    x, y = features.numpy(), signs(labels).numpy()
    svm = SVC(kernel="linear", C=C, tol=1e-4, cache_size=1000, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(x, y)
    converged = svm.fit_status_ == 0 and not any(
        issubclass(w.category, ConvergenceWarning) for w in caught)
    w = torch.from_numpy(svm.coef_[0].copy())
    b = float(svm.intercept_[0])
    m = margins(features, labels, w, b)
    return {"margin": float(m.min()), "w": w, "b": b, "converged": bool(converged),
            "separates": bool((m > 0).all()), "support_vectors": int(svm.n_support_.sum())}


def augmented_svm_margin(features: torch.Tensor, labels: torch.Tensor, C: float,
                         max_iter: int = 100_000) -> dict:
    """The hard-margin SVM of the augmented points (phi, 1), whose bias is penalised like a weight.

    By Soudry et al. (2018), gradient descent on cross-entropy with a bias converges in direction
    to this solution (the paper's Lemma 1 and Theorem 1 setting). Its margin in feature space is
    therefore the margin CE training tends to; the gap to ``svm_margin`` is what penalising the
    bias costs on these features. Solved by liblinear's dual coordinate descent (LinearSVC, hinge
    loss, no separate intercept).
    """
    x = np.hstack([features.numpy(), np.ones((len(features), 1))])
    # liblinear visits coordinates in random order: fix the seed so reruns repeat exactly.
    svm = LinearSVC(loss="hinge", fit_intercept=False, C=C, tol=1e-8, max_iter=max_iter,
                    dual=True, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(x, signs(labels).numpy())
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    wb = torch.from_numpy(svm.coef_[0].copy())
    m = margins(features, labels, wb[:-1], float(wb[-1]))
    return {"margin": float(m.min()), "w": wb[:-1], "b": float(wb[-1]),
            "converged": converged, "separates": bool((m > 0).all())}


def affine_fit(features: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares affine subspace of dimension ``dim`` (PCA): (projected points, basis U, c).

    ``c`` is the point of the subspace nearest the origin (orthogonal to U); the projected points
    lie exactly on ``c + span(U)``, the setting of Theorem 1.
    """
    mean = features.mean(0)
    basis = torch.linalg.svd(features - mean, full_matrices=False).Vh[:dim].T
    projected = mean + (features - mean) @ basis @ basis.T
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
    rho = float((signs(labels) * (points @ w + b)).min())
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


def theorem1_on_fit(features: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, b: float,
                    dim: int, C: float, max_iter: int = 100_000) -> dict:
    """Theorem 1 on the ``dim``-dimensional affine-subspace fit of the features.

    The features are replaced by their projections onto the fit (which lie exactly on an affine
    subspace, as the theorem assumes); ``residual_rms`` says how far the real features are from
    them. Reports the fit's offset from the origin (sqrt(sum_k Delta_k^2)), its optimal margin
    gamma, and the bound for the trained head and for the CE limit (the augmented SVM, which
    satisfies the span condition exactly). Margins and bounds are None where the projected
    features are not separable.
    """
    projected, basis, c = affine_fit(features, dim)
    out = {"subspace_dim": dim,
           "residual_rms": float((features - projected).square().sum(1).mean().sqrt()),
           "offset": float(c.norm())}
    svm = svm_margin(projected, labels, C, max_iter)
    if not (svm["converged"] and svm["separates"]):
        return {**out, "svm_margin": None, "head": None, "ce_limit": None}
    limit = augmented_svm_margin(projected, labels, C, max_iter)
    gamma = svm["margin"]
    return {**out, "svm_margin": gamma,
            "head": theorem1(projected, labels, w, b, gamma, basis, c),
            "ce_limit": theorem1(projected, labels, limit["w"], limit["b"], gamma, basis, c)
            if limit["converged"] else None}


def offset_metrics(features: torch.Tensor) -> dict:
    """How far the feature cloud sits from the origin compared with its spread.

    ``offset_ratio`` = ||mean phi|| / sigma_1, where sigma_1 = s_1 / sqrt(N) is the RMS spread
    along the top principal axis. Theorem 1's setting is a large ratio: data on a low-dimensional
    affine subspace far from the origin.
    """
    s = spectrum(features)
    sigma = s / math.sqrt(len(features))
    mean_norm = float(features.mean(0).norm())
    return {"mean_norm": mean_norm, "sigma_1": float(sigma[0]), "sigma_2": float(sigma[1]),
            "offset_ratio": mean_norm / float(sigma[0]) if sigma[0] > 0 else math.inf}
