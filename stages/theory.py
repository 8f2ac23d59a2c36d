"""theory: Theorems 1 and 2, Remark 1 and Fig. 3 on synthetic data, in well under a minute."""

from difftrain import plots, theory
from difftrain.cli import run_stage
from difftrain.io import Outputs, git_revision


def main(params):
    t = params.theory
    result = theory.run(t)
    linear, network = result.linear, result.network
    metrics = {**result.metrics(), "provenance": {
        "data_source": "synthetic", "data_label": "synthetic (theory.*)",
        "git_revision": git_revision()}}
    with Outputs() as out:
        linear["angles"].to_csv(out.path("plots/theory/angles.csv"), index=False)
        for k, part in result.sweep.groupby("subspace_dim"):
            part.to_csv(out.path(f"plots/theory/remark1_k{k}.csv"), index=False)
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
