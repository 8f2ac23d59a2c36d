"""`python -m difftrain.study [EXP ...] [--all]`: the paper's claims against training length and seed.

Reads experiments through DVC (``dvc.api.exp_show``: names, parameters and the headline metrics in
``metrics/summary.json`` of every experiment derived from ``--rev``, HEAD by default), groups them
by loss, adversarial-training radius and epochs, averages over seeds (mean, min and max), and
draws one figure of panels against epochs: clean test accuracy; robust accuracy at the headline
epsilon on test and training images, the paper's attack dashed and the worst case over all
attacks solid; penultimate-feature components for 99% of the variance; the head's margin over the
SVM optimum; the median first-order input-space margin. The table is written beside the figure
(CSV), one row per group, and printed as the Markdown table the README shows.

    python -m difftrain.study --all --out docs/figures/study.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import dvc.api  # noqa: E402
from difftrain.errors import DataError  # noqa: E402
from difftrain.keys import eps_key  # noqa: E402
from difftrain.plots import save_figure  # noqa: E402

GROUP = ["loss", "adversarial_eps", "epochs"]
# study column -> summary.json key ({tag}: the headline epsilon's key suffix)
METRICS = {
    "clean_test_accuracy": "clean_test_accuracy",
    "clean_train_accuracy": "clean_train_accuracy",
    "paper_test": "pgd_test_accuracy_at_{tag}",
    "paper_train": "pgd_train_accuracy_at_{tag}",
    "worst_test": "robust_test_accuracy_at_{tag}",
    "worst_train": "robust_train_accuracy_at_{tag}",
    "components_99": "feature_components_99",
    "margin_ratio": "margin_ratio",
    "first_order_margin_test": "first_order_margin_test_median",
    "gradient_l1_test": "gradient_l1_test_median",
    "l2_test_median": "l2_test_median",
}
FLAGS = ["paper_attack_overstates", "blackbox_beats_whitebox", "not_converged",
         "suspect_gradient_masking"]


def _get(row: dict, name: str, path: str):
    """A column of dvc.api.exp_show's flat rows: bare when unique, 'path:name' when not."""
    return row.get(f"{path}:{name}", row.get(name))


def experiments(repo: str = ".", rev: str | None = None, names: list[str] | None = None
                ) -> pd.DataFrame:
    """One row per finished experiment: its name, grouping parameters and study metrics."""
    try:
        rows = dvc.api.exp_show(repo=repo, revs=rev)
    except Exception as exc:  # dvc raises many types for a bad repo or revision
        raise DataError(f"cannot list experiments of {repo} ({type(exc).__name__}: {exc})") from None
    out = []
    for row in rows:
        name = row.get("Experiment")
        if not name or row.get("State") not in (None, "Success") or (names and name not in names):
            continue
        eps = _get(row, "plot.headline_eps_255", "params.yaml")
        if eps is None:
            continue  # not a difftrain experiment, or one without metrics
        tag = eps_key(float(eps)).removeprefix("eps")
        record = {"experiment": name, "loss": _get(row, "loss", "params.yaml"),
                  "adversarial_eps": float(_get(row, "train.adversarial.eps", "params.yaml") or 0),
                  "epochs": int(_get(row, "train.epochs", "params.yaml")),
                  "seed": int(_get(row, "seed", "params.yaml")), "headline_eps_255": float(eps)}
        for column, key in METRICS.items():
            value = _get(row, key.format(tag=tag), "metrics/summary.json")
            record[column] = float(value) if isinstance(value, (int, float)) else math.nan
        for flag in FLAGS:  # exp_show gives booleans as the strings 'True' and 'False'
            record[flag] = str(_get(row, flag, "metrics/summary.json")) == "True"
        out.append(record)
    if names:
        missing = sorted(set(names) - {r["experiment"] for r in out})
        if missing:
            raise DataError(f"no finished difftrain experiment named {', '.join(missing)} "
                            f"(see `dvc exp show`)")
    if not out:
        raise DataError("no finished difftrain experiments found (run `dvc exp show`)")
    return pd.DataFrame(out)


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (loss, adversarial eps, epochs): seeds, and mean / min / max of each metric
    over them; a flag column counts the seeds that raised it."""
    groups = table.groupby(GROUP, sort=True)
    stats = groups[list(METRICS)].agg(["mean", "min", "max"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    return pd.concat([groups["seed"].agg(seeds=lambda s: " ".join(map(str, sorted(s)))),
                      groups["seed"].size().rename("n_seeds"), stats,
                      groups[FLAGS].sum()], axis=1).reset_index()


PANELS = [("clean_test_accuracy", "clean test accuracy", None),
          ("worst_test", "robust test accuracy at {eps}/255", "paper_test"),
          ("worst_train", "robust train accuracy at {eps}/255", "paper_train"),
          ("components_99", "PCA components for 99% (train)", None),
          ("margin_ratio", "head / SVM margin (train features)", None),
          ("first_order_margin_test", "median first-order margin (test, /255)", None)]


def draw(summary: pd.DataFrame, out: Path, headline_eps: float) -> None:
    """Panels against epochs, one colour per (loss, adversarial eps); bars span the seeds."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    runs = list(summary.groupby(["loss", "adversarial_eps"], sort=True))
    for ax, (metric, title, dashed) in zip(axes.flat, PANELS):
        for i, ((loss, eps), part) in enumerate(runs):
            label = loss + (f", adversarial {eps:g}/255" if eps else "")
            for column, style in ((metric, "-"), (dashed, "--")):
                if column is None:
                    continue
                mean, low, high = (part[f"{column}_{s}"].to_numpy(float)
                                   for s in ("mean", "min", "max"))
                ax.errorbar(part["epochs"].to_numpy(), mean, yerr=[mean - low, high - mean], fmt="o" + style, capsize=3,
                            color=colours[i % len(colours)],
                            label=label if style == "-" else None)
        ax.set(title=title.format(eps=f"{headline_eps:g}"), xlabel="epochs", xscale="log")
        ax.set_xticks(sorted(summary["epochs"].unique()), labels=sorted(summary["epochs"].unique()))
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("The study: solid = worst case over all attacks, dashed = the paper's attack; "
                 "bars span the seeds")
    save_figure(fig, out)


# README table: (study column, heading, scale, decimals); "{eps}" is the headline epsilon
TABLE = [("clean_test_accuracy", "clean test %", 100, 1),
         ("paper_test", "paper's PGD, test, {eps}/255 %", 100, 1),
         ("worst_test", "worst case, test, {eps}/255 %", 100, 1),
         ("paper_train", "paper's PGD, train, {eps}/255 %", 100, 1),
         ("worst_train", "worst case, train, {eps}/255 %", 100, 1),
         ("components_99", "PCA comps. 99%", 1, 0),
         ("margin_ratio", "head / SVM margin", 1, 2),
         ("first_order_margin_test", "first-order margin, test, /255", 1, 2),
         ("gradient_l1_test", "median grad L1, test", 1, 0)]


def markdown(summary: pd.DataFrame, headline_eps: float) -> str:
    """The study table as Markdown: mean over seeds, (min-max) where there are several, n/a where
    a metric is undefined (e.g. the margin ratio of non-separable features); the last column
    counts the seeds that raised each soundness flag."""
    def cell(row, column, scale, decimals):
        mean, low, high = (row[f"{column}_{s}"] * scale for s in ("mean", "min", "max"))
        if math.isnan(mean):
            return "n/a"
        text = f"{mean:.{decimals}f}"
        return text + (f" ({low:.{decimals}f}-{high:.{decimals}f})" if row["n_seeds"] > 1 else "")

    eps = f"{headline_eps:g}"
    head = ["loss", "adv. eps", "epochs", "seeds",
            *(title.format(eps=eps) for _, title, _, _ in TABLE), "flags (seeds)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in summary.iterrows():
        flags = ", ".join(f"{flag} {int(row[flag])}/{row['n_seeds']}" for flag in FLAGS
                          if row[flag]) or "none"
        cells = [row["loss"], f"{row['adversarial_eps']:g}", f"{row['epochs']:g}", row["seeds"],
                 *(cell(row, column, scale, decimals) for column, _, scale, decimals in TABLE), flags]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="experiment names (default: with --all)")
    parser.add_argument("--all", action="store_true", help="every finished experiment")
    parser.add_argument("--rev", default=None, help="baseline commit the experiments derive from")
    parser.add_argument("--repo", default=".")
    parser.add_argument("--out", default="study.png", help="PNG to write; the CSV goes beside it")
    args = parser.parse_args(argv)
    if not args.experiments and not args.all:
        parser.error("name experiments or pass --all")
    try:
        table = experiments(args.repo, args.rev, args.experiments or None)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    summary = aggregate(table)
    out = Path(args.out)
    draw(summary, out, float(table["headline_eps_255"].iloc[0]))
    summary.to_csv(out.with_suffix(".csv"), index=False)
    print(markdown(summary, float(table["headline_eps_255"].iloc[0])))
    table.sort_values(["loss", "adversarial_eps", "epochs", "seed"]).to_csv(
        out.with_name(out.stem + "_runs.csv"), index=False)
    print(f"wrote {out}, {out.with_suffix('.csv')} and {out.with_name(out.stem + '_runs.csv')} "
          f"({len(table)} experiments, {len(summary)} groups)")


if __name__ == "__main__":
    main()
