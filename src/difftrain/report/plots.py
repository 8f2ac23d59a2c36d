"""Seaborn figures of the paper from the stages' tables (read by ``tables.py``).

Every figure reads tidy tables (one row per point, a ``split`` column), checks the columns it
needs first, and draws one colour per split; on the robustness curves the worst case is solid and
the paper's attack dashed (``CURVE_STYLE``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from difftrain.core.errors import DataError, DifftrainError  # noqa: E402
from difftrain.core.io import writable_folder  # noqa: E402
from difftrain.core.labels import is_x  # noqa: E402

SPLIT_STYLE = {"train": "-", "test": "--"}


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_figure_out(out: Path) -> None:
    """Refuse a figure path the study or compare command cannot write, before any work."""
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise DataError(f"--out {out}: the figure's name must end in "
                        f"{', '.join(FIGURE_SUFFIXES)} (the tables are written beside it as CSV)")
    try:
        writable_folder(out)
    except DifftrainError as exc:
        raise DataError(str(exc)) from None


def save_figure(fig, path: Path) -> None:
    """Lay out, write (creating the folder) and close a figure."""
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# How each robustness curve is drawn: the worst case over every attack solid, the paper's own
# attacks dashed, the second minimum-norm attack dotted.
CURVE_STYLE = {"worst": "", "paper_pgd": (4, 2), "l2_worst": "", "cw": (4, 2), "fab": (1, 2)}
CURVE_LABEL = {"worst": "worst case, all attacks", "paper_pgd": "paper's attack (foolbox PGD)",
               "l2_worst": "worst case, CW and FAB", "cw": "paper's attack (CW)", "fab": "FAB"}


def symlog_eps(ax, eps: pd.Series) -> None:
    positive = eps[eps > 0]
    if len(positive):
        ax.set_xscale("symlog", linthresh=float(positive.min()))
        ax.set_xlim(0, float(positive.max()) * 1.1)


def accuracy_curves(table: pd.DataFrame, path: Path, title: str, xlabel: str,
                    band: pd.DataFrame | None = None) -> None:
    """Robust accuracy against epsilon, one colour per split, one line style per curve
    (``CURVE_STYLE``: worst case solid, the paper's attack dashed); ``band`` (split, eps,
    certified, worst) shades each split's interval between the certified and the worst-case
    accuracy: the robust accuracy lies in it, whatever attack comes next."""
    table = table.assign(curve=table["attack"].map(CURVE_LABEL))
    palette = dict(zip(sorted(table["split"].unique()), sns.color_palette()))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=table, x="eps", y="accuracy", hue="split", style="curve",
                 dashes={CURVE_LABEL[a]: CURVE_STYLE[a] for a in set(table["attack"])},
                 markers=True, palette=palette, ax=ax)
    for split, rows in (band.groupby("split") if band is not None else ()):
        rows = rows.sort_values("eps")
        ax.fill_between(rows["eps"], rows["certified"], rows["worst"], alpha=0.15,
                        color=palette.get(split), linewidth=0,
                        label=f"{split}: certified to worst case")
    ax.set(xlabel=xlabel, ylabel="robust accuracy", ylim=(-0.02, 1.02), title=title)
    symlog_eps(ax, table["eps"])
    ax.legend(fontsize=7)
    save_figure(fig, path)


def pca_curve(table: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=table, x="component", y="cumulative_explained_variance", style="split",
                 ax=ax)
    ax.set(xlabel="number of principal components of phi (of 84)",
           ylabel="cumulative explained variance", ylim=(0, 1.02), title=title)
    save_figure(fig, path)


def margin_histogram(table: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.histplot(data=table, x="margin", hue="split", stat="density", common_norm=False,
                 element="step", ax=ax)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel="feature-space margin y (w.phi + b) / ||w||  (negative: misclassified)",
           title=title)
    save_figure(fig, path)


def training_curves(table: pd.DataFrame, path: Path, title: str) -> None:
    """Loss and accuracies per epoch (from dvclive's TSVs, merged on step)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sns.lineplot(data=table, x="epoch", y="loss", ax=left)
    left.set(xlabel="epoch", ylabel="training loss (mean over steps)", yscale="log")
    long = table.melt(id_vars="epoch", value_vars=["train_accuracy", "test_accuracy"],
                      var_name="split", value_name="accuracy")
    long["split"] = long["split"].str.removesuffix("_accuracy")
    sns.lineplot(data=long, x="epoch", y="accuracy", style="split", ax=right)
    right.set(xlabel="epoch", ylabel="clean accuracy")
    fig.suptitle(title)
    save_figure(fig, path)


# --- The theory stage's figures (synthetic data) ---------------------------------------------

def fig1_lines(path: Path, points: torch.Tensor, labels: torch.Tensor, lines: dict,
               title: str) -> None:
    """Fig. 1: two classes in R^2 and the hyperplanes w.x + b = 0 of ``lines`` {name: (w, b)}."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(*points[is_x(labels)].T, marker="o", label="class x")
    ax.scatter(*points[~is_x(labels)].T, marker="s", label="class y")
    lo, hi = points.min(0).values - 1, points.max(0).values + 1
    grid = torch.linspace(float(lo[0]), float(hi[0]), 200, dtype=torch.float64)
    for (name, (w, b)), style in zip(lines.items(), ("-", "--", ":")):
        if abs(float(w[1])) > 1e-12:
            ax.plot(grid, -(w[0] * grid + b) / w[1], style, label=name)
        else:
            ax.axvline(-b / float(w[0]), linestyle=style, label=name)
    ax.set(xlim=(float(lo[0]), float(hi[0])), ylim=(float(lo[1]), float(hi[1])), aspect="equal",
           title=title, xlabel="x1", ylabel="x2")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def theorem2_angles(path: Path, angles: pd.DataFrame) -> None:
    """Angle of each gradient-descent iterate to its limit direction, log-log."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=angles, x="iteration", y="angle_degrees", hue="method", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="gradient-descent iteration",
           ylabel="angle to the limit direction (degrees)", title="Theorem 2")
    save_figure(fig, path)


def remark1_ratios(path: Path, sweep: pd.DataFrame, ambient_dim: int) -> None:
    """CE limit margin and Theorem 1's bound over the optimum against offset, per subspace dim."""
    fig, ax = plt.subplots(figsize=(6, 4))
    long = sweep.melt(["subspace_dim", "offset"], var_name="quantity", value_name="ratio")
    long["quantity"] = long["quantity"].map({"ce_limit_ratio": "CE limit",
                                             "theorem1_bound_ratio": "Theorem 1 bound"})
    sns.lineplot(data=long, x="offset", y="ratio", hue="subspace_dim", style="quantity",
                 marker="o", ax=ax, palette="viridis")
    ax.set(xscale="symlog", xlabel=f"offset from the origin (d = {ambient_dim})",
           ylabel="margin / optimal margin", title="Remark 1")
    save_figure(fig, path)


def fig3_regions(path: Path, points: torch.Tensor, labels: torch.Tensor, grids: dict,
                 metrics: dict) -> None:
    """Fig. 3: decision regions of each network {loss: (xs, ys, scores)} over the training points."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, (loss, (xs, ys, scores)) in zip(axes, grids.items()):
        ax.contourf(xs, ys, (scores >= 0).double(), levels=[-0.5, 0.5, 1.5], alpha=0.25)
        ax.contour(xs, ys, scores, levels=[0], colors="black", linewidths=1)
        ax.scatter(*points[is_x(labels)].T, s=10, marker="o")
        ax.scatter(*points[~is_x(labels)].T, s=10, marker="s")
        ax.set(title=f"{loss}: min input margin {metrics[loss]['input_margin_min']:.3f}",
               xlabel="x1", ylabel="x2")
    save_figure(fig, path)
