"""theory: Theorems 1 and 2, Remark 1 and Fig. 3 on synthetic data, in well under a minute."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from difftrain.report import plots
from difftrain.mechanism import theory
from difftrain.core.cli import run_stage
from difftrain.core.io import Outputs, ensure_writable, git_revision

OUTPUTS = ["plots/theory", "plots/theory_figures", "metrics/theory.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    t = params.theory
    result = theory.run(t)
    linear, network = result.linear, result.network
    metrics = {**result.metrics(), "provenance": {
        "data_source": "synthetic", "data_label": "synthetic (theory.*)",
        "git_revision": git_revision()}}
    with Outputs() as out:
        out.save_csv(linear["angles"], "plots/theory/angles.csv")
        for k, part in result.sweep.groupby("subspace_dim"):
            out.save_csv(part, f"plots/theory/remark1_k{k}.csv")
        folder = out.dir("plots/theory_figures")
        plots.fig1_lines(folder / "fig1_linear.png", linear["points"], linear["labels"],
                         linear["lines"], f"Fig. 1: a line offset {t.offset:g} from the origin")
        plots.theorem2_angles(folder / "theorem2_angles.png", linear["angles"])
        plots.remark1_ratios(folder / "remark1.png", result.sweep, t.sweep_d)
        plots.fig3_regions(folder / "fig3_network.png", network["points"], network["labels"],
                           network["grids"], network["metrics"])
        out.save_json(metrics, "metrics/theory.json")
    m = linear["metrics"]
    print(f"Fig. 1: SVM margin {m['svm_margin']:.3f}, CE {m['ce_margin']:.3f} "
          f"(limit {m['ce_limit_margin']:.3f}), differential {m['differential_margin']:.3f}")


if __name__ == "__main__":
    run_stage(main)
