"""features: penultimate-layer rank (Fig. 2) and feature-space margins against the SVM optimum."""

import pandas as pd

from difftrain import features as F
from difftrain.cli import run_stage
from difftrain.data import load_split
from difftrain.io import Outputs
from difftrain.provenance import inherited
from difftrain.model import load_checkpoint
from difftrain.train import model_config


def main(params):
    model, _ = load_checkpoint("models/model.pt", model_config(params))
    splits = {name: load_split(f"data/prepared/{name}.pt") for name in ("train", "test")}
    w, b = model.head.weight.detach()[0], float(model.bias.detach())
    metrics, tables, feats, cumulatives = {}, {}, {}, {}
    for name, split in splits.items():
        phi = feats[name] = F.extract(model, split.images)
        ranks, cumulative = F.rank_metrics(phi, params.features.rank_tol)
        cumulatives[name] = cumulative
        m = F.margins(phi, split.labels, w, b)
        metrics[name] = {**ranks, **F.offset_metrics(phi),
                         "head_margin": F.margin_summary(m)}
        # One file per split, so `dvc plots` can draw train and test as separate series.
        tables[f"pca_{name}"] = pd.DataFrame({
            "component": range(1, len(cumulative) + 1),
            "cumulative_explained_variance": cumulative, "split": name})
        tables[f"margins_{name}"] = pd.DataFrame({"split": name, "margin": m.numpy()})

    head = metrics["train"]["head_margin"]["min"]
    svm = F.svm_margin(feats["train"], splits["train"].labels, params.features.svm_C,
                       params.features.svm_max_iter)
    valid = svm["converged"] and svm["separates"]
    limit = F.augmented_svm_margin(feats["train"], splits["train"].labels, params.features.svm_C,
                                   params.features.svm_max_iter)
    limit_valid = limit["converged"] and limit["separates"]
    metrics["optimum"] = {
        "svm_margin": svm["margin"] if valid else None,
        "svm_converged": svm["converged"], "svm_separates": svm["separates"],
        "svm_support_vectors": svm["support_vectors"],
        "head_margin": head,
        # Meaningful only when the head separates the training features (head > 0).
        "margin_ratio": head / svm["margin"] if valid and head > 0 else None,
        # Theorem 1: where cross-entropy with a bias converges to, and what that costs.
        "ce_limit_margin": limit["margin"] if limit_valid else None,
        "ce_limit_ratio": limit["margin"] / svm["margin"] if valid and limit_valid else None,
    }
    dim = F.components_for(cumulatives["train"], params.features.subspace_variance)
    metrics["theorem1"] = F.theorem1_on_fit(feats["train"], splits["train"].labels, w, b, dim,
                                            params.features.svm_C, params.features.svm_max_iter)
    metrics["provenance"] = inherited()
    with Outputs() as out:
        for name, table in tables.items():
            table.to_csv(out.path(f"plots/features/{name}.csv"), index=False)
        out.save_json(metrics, "metrics/features.json")
    t = metrics["train"]
    print(f"train features: rank {t['numerical_rank']}, 99% variance in {t['components_99']} "
          f"components, effective rank {t['effective_rank']:.1f}; head margin {head:.4g}, "
          f"SVM margin {metrics['optimum']['svm_margin']}, ratio {metrics['optimum']['margin_ratio']}")


if __name__ == "__main__":
    run_stage(main)
