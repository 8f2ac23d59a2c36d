"""features: penultimate-layer rank (Fig. 2) and feature-space margins against the SVM optimum."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from difftrain.mechanism import features
from difftrain.core.cli import run_stage
from difftrain.data.cifar import load_splits, splits_sha256
from difftrain.core.io import Outputs, ensure_writable
from difftrain.train.model import load_checkpoint, model_config
from difftrain.core.provenance import inherited

OUTPUTS = ["plots/features", "metrics/features.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()  # read first: a missing input fails before any work
    splits = load_splits()
    model, _ = load_checkpoint(expected_config=model_config(params),
                               data_sha256=splits_sha256(splits),
                               sample=splits["train"].images)
    metrics, tables = features.analyse(model, splits, params.features)
    metrics["provenance"] = provenance
    with Outputs() as out:
        for name, table in tables.items():
            out.save_csv(table, f"plots/features/{name}.csv")
        out.save_json(metrics, "metrics/features.json")
    t, o = metrics["train"], metrics["optimum"]
    print(f"train features: rank {t['numerical_rank']}, 99% variance in {t['components_99']} "
          f"components, effective rank {t['effective_rank']:.1f}; head margin "
          f"{o['head_margin']:.4g}, SVM margin {o['svm_margin']}, ratio {o['margin_ratio']}")


if __name__ == "__main__":
    run_stage(main)
