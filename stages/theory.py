"""theory: Theorems 1 and 2, Remark 1 and Fig. 3 on synthetic data, in well under a minute."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from difftrain import theory as T  # noqa: E402
from difftrain.cli import run_stage  # noqa: E402
from difftrain.io import Outputs, git_revision  # noqa: E402


def linear_experiment(t):
    """Fig. 1 and Theorems 1, 2: a line (k = 1) in R^2, moved ``offset`` from the origin."""
    x, y = T.affine_data(t.n_per_class, 2, 1, t.offset, t.gap, t.seed)
    w_svm, b_svm, m_svm = T.svm(x, y)
    w_aug, b_aug, m_aug = T.augmented_svm(x, y)
    wb_aug = torch.cat([w_aug, torch.tensor([b_aug], dtype=torch.float64)])
    rows, ce, diff = [], None, None
    for step, w, b in T.gd_cross_entropy(x, y, t.steps, t.lr):
        wb = torch.cat([w, torch.tensor([b], dtype=torch.float64)])
        angle_ce = T.angle_degrees(wb, wb_aug)
        rows.append({"iteration": step, "method": "cross-entropy vs augmented SVM",
                     "angle_degrees": angle_ce})
        ce = (w, b)
    for step, w in T.gd_differential(x, y, t.steps, t.lr):
        angle_diff = T.angle_degrees(w, w_svm)
        rows.append({"iteration": step, "method": "differential (eq. 6) vs SVM",
                     "angle_degrees": angle_diff})
        diff = (w, T.eq5(x @ w, y))
    bound_ce = T.theorem1_bound(x, y, 1, *ce, m_svm)
    bound_limit = T.theorem1_bound(x, y, 1, w_aug, b_aug, m_svm)
    metrics = {
        "svm_margin": m_svm,
        "ce_limit_margin": m_aug,
        "ce_margin": T.margin(x, y, *ce),
        "differential_margin": T.margin(x, y, *diff),
        "ce_ratio": T.margin(x, y, *ce) / m_svm,
        "differential_ratio": T.margin(x, y, *diff) / m_svm,
        "final_angle_ce": angle_ce,
        "final_angle_differential": angle_diff,
        "theorem1": {"ce": bound_ce, "ce_limit": bound_limit},
    }
    lines = {"SVM (optimal)": (w_svm, b_svm), "cross-entropy (GD)": ce, "differential (GD)": diff}
    return x, y, lines, pd.DataFrame(rows), metrics


def remark1_sweep(t):
    """CE's limit margin over the optimum, as the offset grows, for each subspace dimension."""
    rows = []
    for k in t.sweep_dims:
        for offset in t.sweep_offsets:
            x, y = T.affine_data(3 * t.n_per_class, t.sweep_d, k, offset, t.gap, t.seed)
            _, _, optimal = T.svm(x, y)
            w, b, limit = T.augmented_svm(x, y)
            bound = T.theorem1_bound(x, y, k, w, b, optimal)["bound"]
            rows.append({"subspace_dim": k, "offset": offset, "ce_limit_ratio": limit / optimal,
                         "theorem1_bound_ratio": bound / optimal})
    return pd.DataFrame(rows)


def network_experiment(t):
    """Fig. 3: one hidden layer on two moons, cross-entropy against eq. (7)."""
    x, y = T.two_moons(5 * t.n_per_class, 0.1, t.seed)
    nets, metrics = {}, {}
    for loss in ("cross_entropy", "differential"):
        net = nets[loss] = T.train_mlp(x, y, loss, t.mlp_hidden, t.mlp_steps, t.mlp_lr, t.seed)
        m = T.input_margin(net, x, y)
        with torch.no_grad():
            accuracy = float(((net(x) < 0).long() == y).double().mean())
        metrics[loss] = {"train_accuracy": accuracy, "input_margin_min": float(m.min()),
                         "input_margin_median": float(m.median())}
    return x, y, nets, metrics


def draw_lines(path, x, y, lines, title):
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(*x[y == 0].T, marker="o", label="class x")
    ax.scatter(*x[y == 1].T, marker="s", label="class y")
    lo, hi = x.min(0).values - 1, x.max(0).values + 1
    grid = torch.linspace(float(lo[0]), float(hi[0]), 200, dtype=torch.float64)
    for (name, (w, b)), style in zip(lines.items(), ("-", "--", ":")):
        if abs(float(w[1])) > 1e-12:
            ax.plot(grid, -(w[0] * grid + b) / w[1], style, label=name)
        else:
            ax.axvline(-b / float(w[0]), linestyle=style, label=name)
    ax.set(xlim=(float(lo[0]), float(hi[0])), ylim=(float(lo[1]), float(hi[1])), aspect="equal",
           title=title, xlabel="x1", ylabel="x2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_regions(path, x, y, nets, metrics):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    lo, hi = x.min(0).values - 1, x.max(0).values + 1
    for ax, (loss, net) in zip(axes, nets.items()):
        xs, ys, scores = T.decision_grid(net, lo, hi, 300)
        ax.contourf(xs, ys, (scores >= 0).double(), levels=[-0.5, 0.5, 1.5], alpha=0.25)
        ax.contour(xs, ys, scores, levels=[0], colors="black", linewidths=1)
        ax.scatter(*x[y == 0].T, s=10, marker="o")
        ax.scatter(*x[y == 1].T, s=10, marker="s")
        ax.set(title=f"{loss}: min input margin {metrics[loss]['input_margin_min']:.3f}",
               xlabel="x1", ylabel="x2")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(params):
    t = params.theory
    torch.manual_seed(t.seed)
    x, y, lines, angles, linear = linear_experiment(t)
    sweep = remark1_sweep(t)
    mx, my, nets, network = network_experiment(t)
    metrics = {"linear": linear, "network": network, "provenance": {
        "data_source": "synthetic", "data_label": "synthetic (theory.*)",
        "git_revision": git_revision()}}
    with Outputs() as out:
        angles.to_csv(out.path("plots/theory/angles.csv"), index=False)
        for k, part in sweep.groupby("subspace_dim"):
            part.to_csv(out.path(f"plots/theory/remark1_k{k}.csv"), index=False)
        folder = out.dir("plots/theory_figures")
        draw_lines(folder / "fig1_linear.png", x, y, lines,
                   f"Fig. 1: a line offset {t.offset:g} from the origin")
        fig, ax = plt.subplots(figsize=(6, 4))
        sns.lineplot(data=angles, x="iteration", y="angle_degrees", hue="method", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="gradient-descent iteration",
               ylabel="angle to the limit direction (degrees)", title="Theorem 2")
        fig.tight_layout()
        fig.savefig(folder / "theorem2_angles.png", dpi=120)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        long = sweep.melt(["subspace_dim", "offset"], var_name="quantity", value_name="ratio")
        long["quantity"] = long["quantity"].map({"ce_limit_ratio": "CE limit",
                                                 "theorem1_bound_ratio": "Theorem 1 bound"})
        sns.lineplot(data=long, x="offset", y="ratio", hue="subspace_dim", style="quantity",
                     marker="o", ax=ax, palette="viridis")
        ax.set(xscale="symlog", xlabel=f"offset from the origin (d = {t.sweep_d})",
               ylabel="margin / optimal margin", title="Remark 1")
        fig.tight_layout()
        fig.savefig(folder / "remark1.png", dpi=120)
        plt.close(fig)
        draw_regions(folder / "fig3_network.png", mx, my, nets, network)
        out.save_json(metrics, "metrics/theory.json")
    print(f"Fig. 1: SVM margin {linear['svm_margin']:.3f}, CE {linear['ce_margin']:.3f} "
          f"(limit {linear['ce_limit_margin']:.3f}), differential {linear['differential_margin']:.3f}")


if __name__ == "__main__":
    run_stage(main)
