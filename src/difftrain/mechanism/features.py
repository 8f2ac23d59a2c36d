"""The paper's mechanism in numbers: rank of the penultimate features and margins in that layer.

* rank (paper Fig. 2): PCA spectrum of the 84-d features phi, numerical rank, components for
  90 / 95 / 99 / 99.9% of the variance, effective rank (``core/spectrum.py``);
* the trained head's margin in feature space, min_i y_i (w.phi_i + b) / ||w||, against the
  hard-margin linear SVM on the same training features: Theorem 1 predicts a ratio far below 1
  for cross-entropy, Theorem 2 close to 1 for differential training;
* how far the features sit from the origin relative to their spread, and Theorem 1's bound
  computed from an affine-subspace fit of the features (an affine subspace offset from the origin
  forces a poor CE margin); docs/theorem1.md derives the bound and states its assumptions.

The margins, SVMs and the bound are general linear-classifier geometry (``geometry.py``); this
module applies them to the CNN's features.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from difftrain.core import geometry as G
from difftrain.core.spectrum import components_for, rank_metrics, spectrum
from difftrain.data.cifar import Split
from difftrain.train.model import Net, extract_features
from difftrain.core.params import FeaturesParams

PERCENTILES = (1, 5, 25, 50)


def margin_summary(m: torch.Tensor) -> dict:
    out = {"min": float(m.min())}
    for q in PERCENTILES:
        out[f"p{q}"] = float(torch.quantile(m, q / 100))
    return out


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


def optimum(features: torch.Tensor, labels: torch.Tensor, head_margin: float,
            params: FeaturesParams) -> dict:
    """The head's margin against the optimal (SVM) margin and the CE limit on the same features.

    A ratio counts only where its margins do: the SVM's when libsvm converged and separates the
    features, the head's when it separates them (head_margin > 0), the CE limit's likewise.
    """
    svm = G.svm(features, labels, params.svm_C, params.svm_max_iter)
    limit = G.augmented_svm(features, labels, params.svm_C, params.svm_max_iter)
    return {
        "svm_margin": svm["margin"] if svm["valid"] else None,
        "svm_converged": svm["converged"], "svm_separates": svm["separates"],
        "svm_support_vectors": svm["support_vectors"],
        "head_margin": head_margin,
        "margin_ratio": head_margin / svm["margin"] if svm["valid"] and head_margin > 0 else None,
        # Theorem 1: where cross-entropy with a bias converges to, and what that costs.
        "ce_limit_margin": limit["margin"] if limit["valid"] else None,
        "ce_limit_ratio": limit["margin"] / svm["margin"] if svm["valid"] and limit["valid"]
        else None,
    }


def analyse(model: Net, splits: dict[str, Split], params: FeaturesParams
            ) -> tuple[dict, dict[str, pd.DataFrame]]:
    """(metrics, plot tables) of the features stage: rank and margins per split, then the
    optimum and Theorem 1 on the training features."""
    w, b = model.head.weight.detach()[0], float(model.bias.detach())
    metrics, tables, feats, cumulatives = {}, {}, {}, {}
    for name, split in splits.items():
        phi = feats[name] = extract_features(model, split.images)
        ranks, cumulatives[name] = rank_metrics(phi, params.rank_tol)
        m = G.margins(phi, split.labels, w, b)
        metrics[name] = {**ranks, **offset_metrics(phi), "head_margin": margin_summary(m)}
        # One file per split, so `dvc plots` can draw train and test as separate series.
        tables[f"pca_{name}"] = pd.DataFrame({
            "component": range(1, len(cumulatives[name]) + 1),
            "cumulative_explained_variance": cumulatives[name], "split": name})
        tables[f"margins_{name}"] = pd.DataFrame({"split": name, "margin": m.numpy()})
    labels = splits["train"].labels
    metrics["optimum"] = optimum(feats["train"], labels, metrics["train"]["head_margin"]["min"],
                                 params)
    dim = components_for(cumulatives["train"], params.subspace_variance)
    metrics["theorem1"] = G.theorem1_on_fit(feats["train"], labels, w, b, dim, params.svm_C,
                                            params.svm_max_iter)
    return metrics, tables
