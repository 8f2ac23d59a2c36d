"""The PCA spectrum of a feature matrix: how many directions the features use (paper Fig. 2).

Here, below the trainer and the features stage, because both measure it: the features stage on
the trained model, the trainer during training (``train.rank_every``), so a rank curve and the
final rank are the same computation. Fig. 2 plots the cumulative explained variance and says
"almost all"; no one threshold is the paper's, so several are reported (``THRESHOLDS``).
"""

from __future__ import annotations

import numpy as np
import torch

THRESHOLDS = {"components_90": 0.90, "components_95": 0.95, "components_99": 0.99,
              "components_999": 0.999}


def spectrum(features: torch.Tensor) -> torch.Tensor:
    """Singular values of the centred features (PCA), largest first."""
    return torch.linalg.svdvals(features - features.mean(0))


def components_for(cumulative: np.ndarray, fraction: float) -> int:
    """How many leading principal components hold ``fraction`` of the variance."""
    return min(int(np.searchsorted(cumulative, fraction - 1e-12) + 1), len(cumulative))


def rank_metrics(features: torch.Tensor, rank_tol: float) -> tuple[dict, np.ndarray]:
    """(rank metrics, cumulative explained variance per component) of one feature matrix:
    the numerical rank (singular values above ``rank_tol`` x the largest), the components for
    each of ``THRESHOLDS`` and the effective rank (Roy & Vetterli, 2007)."""
    s = spectrum(features)
    variance = s.square()
    total = float(variance.sum())
    if total == 0:
        return ({"numerical_rank": 0, **{k: 0 for k in THRESHOLDS}, "effective_rank": 0.0},
                np.ones(len(s)))
    cumulative = (variance.cumsum(0) / total).numpy()
    p = s / s.sum()
    p = p[p > 0]
    return {
        "numerical_rank": int((s > rank_tol * s[0]).sum()),
        **{k: components_for(cumulative, f) for k, f in THRESHOLDS.items()},
        "effective_rank": float(torch.exp(-(p * p.log()).sum())),
    }, cumulative
