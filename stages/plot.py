"""plot: the paper's figures as PNGs, and metrics/summary.json with the headline numbers."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from pathlib import Path

from difftrain.report import plots as P
from difftrain.report.summary import headline
from difftrain.report.tables import read_tables, read_training_log
from difftrain.core.cli import run_stage
from difftrain.core.io import Outputs, ensure_writable, read_json
from difftrain.core.provenance import inherited

ACCURACY = ["attack", "split", "eps", "accuracy"]
OUTPUTS = ["plots/figures", "metrics/summary.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()
    data_label = provenance["data_label"]
    run = (f"{params.loss}, {params.train.optimizer}"
           f"{', batch norm' if params.model.batchnorm else ''}; {data_label}")
    splits = ("train", "test")
    linf = read_tables([f"plots/attack/{c}_{s}.csv" for c in ("worst", "paper_pgd")
                        for s in splits], ACCURACY)
    band = read_tables([f"plots/certify/{s}.csv" for s in splits],
                         ["split", "eps", "certified", "worst"])
    l2 = read_tables([f"plots/attack/{c}_{s}.csv" for c in ("l2_worst", "cw", "fab")
                        for s in splits], ACCURACY)
    pca = read_tables([f"plots/features/pca_{s}.csv" for s in splits],
                        ["component", "cumulative_explained_variance", "split"])
    margins = read_tables([f"plots/features/margins_{s}.csv" for s in splits], ["split", "margin"])
    log = read_training_log("dvclive/train/plots/metrics")
    summary = headline(read_json("metrics/train.json"), read_json("metrics/features.json"),
                       read_json("metrics/attack.json"), params.plot.headline_eps_255,
                       params.plot.headline_eps_l2, read_json("metrics/certify.json"))
    with Outputs() as out:
        folder = out.dir("plots/figures")
        P.accuracy_curves(linf, folder / "robust_linf.png", f"Linf (Fig. 4): {run}",
                          "epsilon (Linf, /255)", band)
        P.accuracy_curves(l2, folder / "robust_l2.png", f"Minimal L2 (Fig. 5): {run}",
                          "epsilon (L2, pixels in [0, 1])")
        P.pca_curve(pca, folder / "pca.png", f"Penultimate features: {run}")
        P.margin_histogram(margins, folder / "margins.png", f"Feature-space margins: {run}")
        P.training_curves(log, folder / "training.png", f"Training: {run}")
        out.save_json({**summary, "provenance": provenance}, "metrics/summary.json")
    print("figures in plots/figures:", ", ".join(sorted(p.name for p in Path("plots/figures").iterdir())))


if __name__ == "__main__":
    run_stage(main)
