"""The verdict across runs: `python -m difftrain.study --all --by classes --out docs/pairs/pairs.png`.

One class pair is one test of the paper; many pairs, and the runs of both losses across them, test
its claims as claims *across models*. Three outputs, from the study's table of runs alone:

* ``pairs_table``: per class pair, cross-entropy and differential training (eq. 7) side by side
  (seeds averaged where there are several): clean test accuracy, the paper's PGD and the worst
  case over all attacks at 2, 4 and 8/255, PCA components for 99% of the feature variance, the
  head's margin over the SVM optimum and the median first-order input-space margin; and per pair
  whether each claim of the paper holds there (``CLAIMS``).
* ``paired_tests``: per radius, differential minus CE worst-case test accuracy across pairs, with
  the Wilcoxon signed-rank test (scipy; two-sided, zero differences dropped as Wilcoxon's original
  test does) and its p-value. Pairs, not runs, are the unit: the two losses see the same images.
* ``correlations``: across every run (pairs x losses, plus any other run passed in), Spearman's
  rho of the worst-case test accuracy at 4/255 with each mechanism the paper names, beside the
  sign the paper predicts (more components, a larger margin: more robust, so rho > 0) and
  whether the measurement agrees (the sign matches and p < 0.05).

Figures and tables go beside ``--out``: the scatter of robustness against each mechanism, and
``<stem>_pairs.csv``, ``<stem>_tests.csv``, ``<stem>_correlations.csv``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from difftrain.errors import DataError  # noqa: E402
from difftrain.plots import save_figure  # noqa: E402

RADII = (2, 4, 8)  # /255: the radii compared across runs (the study reads them per run)
CLASSES, LOSS = "data.classes", "loss"
CE, DIFF = "cross_entropy", "differential"
HEADLINE = 4  # the correlations' radius (/255): robust accuracies there are neither 0 nor clean
MEASURES = ["clean_test_accuracy", *[f"{kind}_test_eps{r}" for r in RADII
                                     for kind in ("paper", "worst")],
            "components_99", "margin_ratio", "first_order_margin_test"]
# mechanism -> (label, the sign of rho the paper predicts, and why)
MECHANISMS = {
    "components_99": ("PCA components for 99% of feature variance", +1,
                      "low-rank features -> adversarial examples (Fig. 2)"),
    "margin_ratio": ("head margin / SVM optimum", +1,
                     "a poor feature-space margin -> adversarial examples (Theorem 1)"),
    "first_order_margin_test": ("median first-order input margin (test)", +1,
                                "a small input-space margin is an adversarial example"),
}
# claim -> (what it says, a function of one pair's CE and differential rows saying if it holds)
CLAIMS = {
    "similar_clean_accuracy": ("differential training keeps clean test accuracy (within 2 points)",
                               lambda ce, df: abs(df["clean_test_accuracy"] - ce["clean_test_accuracy"]) <= 0.02),
    "ce_lower_rank": ("CE features need fewer PCA components for 99% than differential (Fig. 2)",
                      lambda ce, df: ce["components_99"] < df["components_99"]),
    "ce_poorer_margin": ("CE's head margin is further from the SVM optimum (Theorem 1)",
                         lambda ce, df: ce["margin_ratio"] < df["margin_ratio"]),
    **{f"differential_more_robust_eps{r}": (
        f"differential is more robust under the worst case at {r}/255 (Figs. 4, 5)",
        lambda ce, df, r=r: df[f"worst_test_eps{r}"] > ce[f"worst_test_eps{r}"]) for r in RADII},
}


def pairs_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per class pair that has both a CE and a differential run (means over seeds)."""
    for column in (CLASSES, LOSS):
        if column not in table:
            raise DataError(f"the experiments have no parameter {column!r}")
    runs = table[table[LOSS].isin([CE, DIFF])]
    means = runs.groupby([CLASSES, LOSS])[MEASURES].mean()
    seeds = runs.groupby([CLASSES, LOSS]).size()
    rows = []
    for pair in sorted(runs[CLASSES].unique()):
        if (pair, CE) not in means.index or (pair, DIFF) not in means.index:
            continue
        ce, df = means.loc[(pair, CE)], means.loc[(pair, DIFF)]
        row = {"classes": pair, "seeds": int(min(seeds[(pair, CE)], seeds[(pair, DIFF)]))}
        for measure in MEASURES:
            row[f"ce_{measure}"], row[f"diff_{measure}"] = ce[measure], df[measure]
        for claim, (_, holds) in CLAIMS.items():
            row[claim] = bool(holds(ce, df))
        rows.append(row)
    if not rows:
        raise DataError("no class pair has both a cross_entropy and a differential run: the "
                        "cross-run analysis compares the two losses per pair")
    return pd.DataFrame(rows)


def paired_tests(pairs: pd.DataFrame) -> pd.DataFrame:
    """Differential minus CE worst-case test accuracy across pairs, per radius: the median and
    mean difference, how many pairs went each way, and Wilcoxon's signed-rank p-value (NaN with
    fewer than two non-zero differences, where the test says nothing)."""
    rows = []
    for r in RADII:
        diff = (pairs[f"diff_worst_test_eps{r}"] - pairs[f"ce_worst_test_eps{r}"]).dropna()
        nonzero = diff[diff != 0]
        if len(nonzero) >= 2:
            test = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
            statistic, p = float(test.statistic), float(test.pvalue)
        else:
            statistic = p = math.nan
        rows.append({"eps_255": r, "pairs": len(diff), "median_difference": diff.median(),
                     "mean_difference": diff.mean(), "differential_higher": int((diff > 0).sum()),
                     "ce_higher": int((diff < 0).sum()), "ties": int((diff == 0).sum()),
                     "wilcoxon_statistic": statistic, "p_value": p})
    return pd.DataFrame(rows)


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho of worst-case test accuracy at 4/255 with each mechanism, over every run
    with both values, beside the paper's predicted sign."""
    target = f"worst_test_eps{HEADLINE}"
    rows = []
    for column, (label, predicted, why) in MECHANISMS.items():
        both = table[[target, column]].dropna()
        if len(both) >= 3 and both[target].nunique() > 1 and both[column].nunique() > 1:
            rho, p = (float(v) for v in stats.spearmanr(both[column], both[target]))
        else:
            rho = p = math.nan
        agrees = bool(not math.isnan(rho) and math.copysign(1, rho) == predicted and p < 0.05)
        rows.append({"mechanism": column, "label": label, "runs": len(both), "spearman_rho": rho,
                     "p_value": p, "predicted_sign": "+" if predicted > 0 else "-",
                     "prediction": why, "agrees": agrees})
    return pd.DataFrame(rows)


def draw(table: pd.DataFrame, out: Path) -> None:
    """Worst-case test accuracy at 4/255 against each mechanism, one point per run, by loss."""
    target = f"worst_test_eps{HEADLINE}"
    fig, axes = plt.subplots(1, len(MECHANISMS), figsize=(4.2 * len(MECHANISMS), 3.6),
                             squeeze=False)
    for ax, (column, (label, _, _)) in zip(axes[0], MECHANISMS.items()):
        for loss, runs in table.groupby(LOSS):
            ax.scatter(runs[column], 100 * runs[target], s=18, alpha=0.8, label=loss)
        ax.set_xlabel(label)
        ax.set_ylabel(f"worst-case test accuracy at {HEADLINE}/255 (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("robustness against the paper's mechanisms, one point per run "
                 "(CIFAR-10, JPEG copy where so labelled)", fontsize=9)
    save_figure(fig, out)


def _md(frame: pd.DataFrame, digits: int = 3) -> str:
    def fmt(value):
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(table: pd.DataFrame, out: Path, written: list) -> None:
    """Write the figure and the three tables beside ``out``, print them as Markdown."""
    pairs = pairs_table(table)
    tests = paired_tests(pairs)
    corr = correlations(table)
    draw(table, out)
    written.append(out)
    for suffix, frame in (("pairs", pairs), ("tests", tests), ("correlations", corr)):
        path = out.with_name(f"{out.stem}_{suffix}.csv")
        frame.to_csv(path, index=False)
        written.append(path)
    holds = pd.DataFrame([{"claim": text, "holds on": f"{int(pairs[claim].sum())}/{len(pairs)} pairs"}
                          for claim, (text, _) in CLAIMS.items()])
    print(_md(holds), _md(tests), _md(corr.drop(columns=["label"])), sep="\n\n")
    print(f"wrote {', '.join(map(str, written))} ({len(table)} runs, {len(pairs)} pairs)")
