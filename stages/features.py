"""features: penultimate-layer rank (Fig. 2) and feature-space margins against the SVM optimum."""

from difftrain import features
from difftrain.cli import run_stage
from difftrain.data import load_splits
from difftrain.io import Outputs
from difftrain.model import load_checkpoint, model_config
from difftrain.provenance import inherited


def main(params):
    model, _ = load_checkpoint("models/model.pt", model_config(params))
    metrics, tables = features.analyse(model, load_splits(), params.features)
    metrics["provenance"] = inherited()
    with Outputs() as out:
        for name, table in tables.items():
            table.to_csv(out.path(f"plots/features/{name}.csv"), index=False)
        out.save_json(metrics, "metrics/features.json")
    t, o = metrics["train"], metrics["optimum"]
    print(f"train features: rank {t['numerical_rank']}, 99% variance in {t['components_99']} "
          f"components, effective rank {t['effective_rank']:.1f}; head margin "
          f"{o['head_margin']:.4g}, SVM margin {o['svm_margin']}, ratio {o['margin_ratio']}")


if __name__ == "__main__":
    run_stage(main)
