"""Fig. 2, Proposition 1 and the causal claim, read from experiments (issue 31).

* ``--by fig2`` (grids/fig2.yaml): each optimisation scheme's rank curve (components for
  90/95/99% of the training features' variance against optimiser steps, beside the training
  loss), read from each run's dvclive series through DVC, and one verdict line per scheme
  against the paper's claim (rank 2 under the gradient method with momentum, about 20 of 84
  under Adam or batch norm), at each threshold.
* ``--by intervention`` (grids/intervention.yaml): the rank-one CE model (Proposition 1's linear
  features from W = 0) against the standard one of the same pair and seed, under the paper's PGD
  and the worst case at every radius: the paper's causal claim tested by intervention.

The CSVs written here are the record ``difftrain report`` reads (committed, so the verdict stays
when the experiments are gone).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402

from difftrain.core.errors import DataError  # noqa: E402
from difftrain.core.io import GZIP  # noqa: E402
from difftrain.report.crossrun import RADII  # noqa: E402
from difftrain.report.plots import save_figure  # noqa: E402

SERIES = ("components_90", "components_95", "components_99", "loss")
THRESHOLDS = (90, 95, 99)
PAPER = {"full-batch GD with momentum": 2, "Adam": 20, "SGD with batch norm": 20}
RUN_COLUMNS = ["experiment", "scheme", "n_train", "steps_per_epoch", "steps", "final_loss", "train_accuracy",
               "clean_test_accuracy", *(f"components_{t}" for t in THRESHOLDS), "numerical_rank",
               "effective_rank", "first_step", "components_99_first", "cpu_capability",
               "torch_threads"]


def scheme(row) -> str:
    """A run's training scheme, in the paper's words where it has them."""
    full = str(row.get("train.batch_size")) == "full"
    how = "full-batch GD with momentum" if full else (
        "Adam" if row.get("train.optimizer") == "adam" else
        "SGD with batch norm" if str(row.get("model.batchnorm")) in ("True", "true", "1") else
        "mini-batch SGD")
    if row.get("model.hidden_activation") == "tanh":
        return f"Appendix B (tanh ends h, linear phi), {how}"
    if row.get("model.features_activation") == "linear":
        init = "W = 0" if row.get("model.features_init") == "zero" else "He"
        return f"Proposition 1 (linear phi, {init}), {how}"
    return how


def steps_per_epoch(row) -> int:
    n = int(row["n_train"])
    return 1 if str(row.get("train.batch_size")) == "full" else math.ceil(n / int(row["train.batch_size"]))


def runs_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per fig2 run (``RUN_COLUMNS``)."""
    out = table.copy()
    per_class = pd.to_numeric(out.get("data.n_train_per_class"), errors="coerce")
    out["n_train"] = (2 * per_class).fillna(10_000).astype(int)  # None: the whole split
    out["scheme"] = [scheme(r) for r in out.to_dict("records")]
    out["steps_per_epoch"] = [steps_per_epoch(r) for r in out.to_dict("records")]
    out["steps"] = out["train.epochs"].astype(int) * out["steps_per_epoch"]
    out["train_accuracy"] = out.get("clean_train_accuracy")
    return out.reindex(columns=RUN_COLUMNS).sort_values("scheme").reset_index(drop=True)


def curves(read, table: pd.DataFrame) -> pd.DataFrame:
    """Each run's rank and loss series against optimiser steps (long form), from ``runs_table``'s
    rows (dvclive's step is the epoch index). ``read(name, file)`` returns a dvclive TSV of the
    experiment as a DataFrame."""
    frames = []
    for row in table.to_dict("records"):
        factor = int(row["steps_per_epoch"])
        for series in SERIES:
            tsv = read(row["experiment"], f"dvclive/train/plots/metrics/{series}.tsv")
            frames.append(pd.DataFrame({"experiment": row["experiment"], "scheme": row["scheme"],
                                        "step": (tsv["step"].to_numpy() + 1) * factor,
                                        "series": series, "value": tsv[series].to_numpy()}))
    if not frames:
        return pd.DataFrame(columns=["experiment", "scheme", "step", "series", "value"])
    return pd.concat(frames, ignore_index=True)


def with_first_rank(runs: pd.DataFrame, curve: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each run's first logged step and its components for 99% there, so that a
    verdict can say whether the rank fell during training (Appendix B's claim)."""
    first = (curve[curve["series"] == "components_99"].sort_values("step")
             .groupby("experiment").first())
    out = runs.copy()
    out["first_step"] = out["experiment"].map(first["step"])
    out["components_99_first"] = out["experiment"].map(first["value"])
    return out


def verdict_lines(runs: pd.DataFrame) -> list[str]:
    """One line per scheme: the rank at each threshold against the paper's number."""
    lines = []
    for row in runs.itertuples():
        counts = "/".join(str(int(getattr(row, f"components_{t}"))) for t in THRESHOLDS)
        where = f"{row.n_train:,} training images, {row.steps:,} steps, final loss {row.final_loss:.2g}, train accuracy {100 * row.train_accuracy:.1f}%"
        paper = PAPER.get(row.scheme)
        if row.scheme.startswith("Proposition 1"):
            said = (f"numerical rank {int(row.numerical_rank)} (Proposition 1: at most 1): "
                    + ("holds" if row.numerical_rank <= 1 else "does not hold"))
        elif row.scheme.startswith("Appendix B"):
            trend = ("" if pd.isna(row.components_99_first) else
                     f"; components for 99% {int(row.components_99_first)} at step "
                     f"{int(row.first_step):,}, {int(row.components_99)} at the end: "
                     + ("falling" if row.components_99 < row.components_99_first else "not falling")
                     + " towards 1 within this budget")
            said = (f"numerical rank {int(row.numerical_rank)}, effective rank "
                    f"{row.effective_rank:.1f} (Appendix B: towards 1 if run long){trend}")
        elif paper is None:
            said = "not one of the paper's schemes (this project's default, for comparison)"
        else:
            met = [t for t in THRESHOLDS if getattr(row, f"components_{t}") <= paper]
            said = (f"paper: {'rank 2' if paper == 2 else 'about 20 of 84'}; "
                    + (f"reproduced at {', '.join(f'{t}%' for t in met)} of the variance"
                       if met else "not reproduced at any of 90, 95, 99%"))
        lines.append(f"- {row.scheme}: components for 90/95/99% of the variance {counts} "
                     f"({where}); {said}.")
    return lines


def draw(curve: pd.DataFrame, out: Path) -> None:
    fig, (rank, loss) = plt.subplots(1, 2, figsize=(13, 4.8))
    styles = {"components_90": ":", "components_95": "--", "components_99": "-"}
    for i, (name, group) in enumerate(curve.groupby("scheme", sort=True)):
        colour = f"C{i}"
        for series, style in styles.items():
            part = group[group["series"] == series]
            rank.plot(part["step"], part["value"], style, color=colour,
                      label=name if series == "components_99" else None)
        part = group[group["series"] == "loss"]
        loss.plot(part["step"], part["value"], color=colour, label=name)
    rank.axhline(2, color="black", lw=0.8)
    rank.text(1, 2.5, "paper, GD with momentum: 2", fontsize=8)
    rank.axhline(20, color="grey", lw=0.8)
    rank.text(1, 21, "paper, Adam / batch norm: about 20", fontsize=8, color="grey")
    rank.set(xscale="log", xlabel="optimiser steps", ylabel="principal components",
             title="Components for 99% (solid), 95% (dashed), 90% (dotted)", ylim=(0, 85))
    loss.set(xscale="log", yscale="log", xlabel="optimiser steps",
             ylabel="training loss (epoch mean)", title="Training loss")
    rank.legend(fontsize=7)
    save_figure(fig, out)


# --- the intervention --------------------------------------------------------------------------

def variant(row) -> str:
    if row.get("model.hidden_activation") == "tanh":
        return "tanh"
    if row.get("model.features_activation") == "linear" and row.get("model.features_init") == "zero":
        return "rank_one"
    return "standard"


MATCH = 0.02  # clean accuracy within 2 points counts as matched, as the verdict's other rows
MEASURES = ["clean_test_accuracy", "components_99", "numerical_rank", "margin_ratio",
            *(f"{kind}_test_eps{r}" for kind in ("paper", "worst") for r in RADII),
            "certified_test_eps0.5"]


def intervention_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: pair, seed, variant and what is compared."""
    out = table.copy()
    out["variant"] = [variant(r) for r in out.to_dict("records")]
    return out.reindex(columns=["experiment", "data.classes", "seed", "variant", *MEASURES,
                                "cpu_capability", "torch_threads"])


def intervention_tests(runs: pd.DataFrame) -> pd.DataFrame:
    """Rank-one minus standard, paired by pair and seed, on the pair-seeds of matched clean
    accuracy (within ``MATCH``: the claim is about models of the same accuracy): per radius and
    attack, the median difference, the mean with its 95% t-interval (unadjusted: the size of an
    effect the data leave possible), how many pairs each way, Wilcoxon's p (ties: zero
    differences, dropped) and Holm over the six tests."""
    wide = runs[runs["variant"].isin(["standard", "rank_one"])].pivot_table(
        index=["data.classes", "seed"], columns="variant",
        values=[c for c in MEASURES if c in runs], aggfunc="first")
    if ("clean_test_accuracy", "rank_one") in wide and ("clean_test_accuracy", "standard") in wide:
        gap = (wide[("clean_test_accuracy", "rank_one")] - wide[("clean_test_accuracy", "standard")]).abs()
        wide = wide[gap.round(9) <= MATCH]
    rows = []
    for kind in ("paper", "worst"):
        for r in RADII:
            column = f"{kind}_test_eps{r}"
            if (column, "rank_one") not in wide or (column, "standard") not in wide:
                continue
            d = (wide[(column, "rank_one")] - wide[(column, "standard")]).dropna().round(9)
            nonzero = d[d != 0]
            p = (float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else math.nan)
            low, high = (stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
                         if len(d) >= 2 and d.std() > 1e-12 else (math.nan, math.nan))
            rows.append({"attack": kind, "eps_255": r, "pairs": len(d),
                         "median_difference": float(d.median()) if len(d) else math.nan,
                         "mean_difference": float(d.mean()) if len(d) else math.nan,
                         "ci_low": float(low), "ci_high": float(high),
                         "rank_one_higher": int((d > 0).sum()), "standard_higher": int((d < 0).sum()),
                         "ties": int((d == 0).sum()), "p_value": p,
                         "smallest_possible_p": 2 * 0.5 ** len(nonzero) if len(nonzero) else math.nan})
    tests = pd.DataFrame(rows)
    if len(tests):
        ok = tests["p_value"].notna()
        tests["holm_p"] = math.nan
        if ok.any():
            tests.loc[ok, "holm_p"] = multipletests(tests.loc[ok, "p_value"], method="holm")[1]
    return tests


def intervention_summary(runs: pd.DataFrame, tests: pd.DataFrame) -> tuple[str, str]:
    """(verdict, numbers) of the causal claim, for the verdict table and the docs."""
    std, one = (runs[runs["variant"] == v] for v in ("standard", "rank_one"))
    if std.empty or one.empty:
        return "not run yet", "grids/intervention.yaml has not run"
    merged = std.merge(one, on=["data.classes", "seed"], suffixes=("_std", "_one"))
    gap = (merged["clean_test_accuracy_one"] - merged["clean_test_accuracy_std"]).abs()
    matched = int((gap.round(9) <= MATCH).sum())
    parts, significant = [], []
    for kind, label in (("paper", "paper's PGD"), ("worst", "worst case")):
        rows = tests[tests["attack"] == kind]
        cells = []
        for row in rows.itertuples():
            interval = ("" if math.isnan(row.ci_low) else
                        f", mean {100 * row.mean_difference:+.1f} [{100 * row.ci_low:+.1f}, "
                        f"{100 * row.ci_high:+.1f}]")
            cells.append(f"{row.eps_255}/255 {100 * row.median_difference:+.1f} points "
                         f"(rank one higher on {row.rank_one_higher} of {row.pairs}{interval}, Holm p "
                         f"{'n/a' if math.isnan(row.holm_p) else f'{row.holm_p:.2g}'})")
            if not math.isnan(row.holm_p) and row.holm_p < 0.05:
                significant.append(row.median_difference)
        parts.append(f"{label}: " + ", ".join(cells))
    rank_one = one["numerical_rank"].dropna()
    numbers = (f"{len(merged)} pair-seeds ({merged['data.classes'].nunique()} pairs); rank-one "
               f"features (numerical rank {int(rank_one.max()) if len(rank_one) else 'n/a'}) against "
               f"the standard model's {std['components_99'].median():.0f} components for 99%; clean "
               f"accuracy within {100 * MATCH:.0f} points on {matched} of {len(merged)}, the tests' "
               f"pair-seeds; rank one minus standard in points of robust accuracy, median over "
               f"those pair-seeds (and the mean with its 95% interval): " + "; ".join(parts))
    if significant and all(d < 0 for d in significant):
        verdict = "supported: the rank-one model is less robust"
    elif significant and all(d > 0 for d in significant):
        verdict = "refuted: the rank-one model is more robust"
    elif significant:
        verdict = "mixed: significant differences of both signs"
    elif (len(tests) and tests["smallest_possible_p"].notna().any()
          and (tests["smallest_possible_p"].dropna() * len(tests) > 0.05).all()):
        # Holm multiplies the smallest p by the number of tests: with this few pair-seeds no
        # outcome, however one-sided, could reach 5%, so "no difference" would say nothing
        verdict = "undecided: too few pair-seeds for any test to reach 5% after Holm"
    elif len(tests) and tests["ci_low"].notna().any():
        # say how large a difference the data still allow, so "none detected" is not read as none
        verdict = (f"no difference detected (every mean difference's 95% interval within "
                   f"[{100 * tests['ci_low'].min():+.1f}, {100 * tests['ci_high'].max():+.1f}] points)")
    else:
        verdict = "no difference detected"
    return verdict, numbers


def tanh_line(runs: pd.DataFrame) -> str:
    """Appendix B's tanh variant beside the standard model of the same pair and seed: whether
    its features are low-rank at all (the comparison needs them to be) and its robustness."""
    tanh, std = runs[runs["variant"] == "tanh"], runs[runs["variant"] == "standard"]
    both = tanh.merge(std, on=["data.classes", "seed"], suffixes=("_tanh", "_std")).sort_values(
        ["data.classes", "seed"])
    if both.empty:
        return "The tanh variant (Appendix B) has no standard model of the same pair and seed yet."
    cells = [f"{r['data.classes']} seed {r['seed']}: {r['components_99_tanh']:.0f} components for "
             f"99% (numerical rank {r['numerical_rank_tanh']:.0f}) against {r['components_99_std']:.0f}; "
             f"clean {100 * r['clean_test_accuracy_tanh']:.1f}% against "
             f"{100 * r['clean_test_accuracy_std']:.1f}%; worst case at 2/255 "
             f"{100 * r['worst_test_eps2_tanh']:.1f}% against {100 * r['worst_test_eps2_std']:.1f}%"
             for r in both.to_dict("records")]
    low = (both["components_99_tanh"] < both["components_99_std"] / 2).any()
    return ("Appendix B's tanh variant, trained as the standard model (30 epochs of mini-batch "
            "SGD): " + "; ".join(cells) + ". "
            + ("Its features are low-rank on some pairs, so it is a second intervention."
               if low else "Its features are not low-rank at this training length (fewer than half "
               "the standard model's components on no pair), so it tests no rank and enters no test."))


SAME_MACHINE = ["data.classes", "seed", "cpu_capability", "torch_threads"]


def default_unchanged(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """Whether the new model options moved the default CE model: the standard runs of the
    intervention record (``after``) against the class-pair record's CE runs (``before``) of the
    same pair and seed on the same CPU kind and thread count, where alone the same parameters
    give the same model. Every measure both records hold is compared exactly (nan equals nan)."""
    old = before[before["loss"] == "cross_entropy"].dropna(subset=["cpu_capability", "torch_threads"])
    new = after[after["variant"] == "standard"].dropna(subset=["cpu_capability", "torch_threads"])
    measures = [c for c in MEASURES if c in old and c in new]
    both = new.merge(old, on=SAME_MACHINE, suffixes=("_after", "_before"))
    if both.empty:
        return ("No pair and seed ran in both records on the same CPU kind and thread count, so "
                "they cannot show whether the default CE model moved.")
    moved = []
    for row in both.to_dict("records"):
        changed = [c for c in measures if not (row[f"{c}_after"] == row[f"{c}_before"]
                                               or (pd.isna(row[f"{c}_after"]) and pd.isna(row[f"{c}_before"])))]
        if changed:
            moved.append(f"{row['data.classes']} seed {row['seed']} ({', '.join(changed)})")
    machines = sorted({f"{c} {int(t)} thread" + ("s" if t != 1 else "")
                       for c, t in zip(both["cpu_capability"], both["torch_threads"])})
    where = (f"{len(both)} pair-seeds ran in both records on the same CPU kind and thread count "
             f"({', '.join(machines)})")
    if not moved:
        return (f"No measure of the default CE model moved: {where}, and every measure both hold "
                f"agrees exactly on all {len(both)} ({', '.join(measures)}).")
    return f"The default CE model moved: {where}; {len(moved)} differ: {'; '.join(moved)}."


def main(table: pd.DataFrame, out: Path, written: list, by: str, read=None) -> None:
    """Write the record and figure of ``--by fig2`` or ``--by intervention`` beside ``out``."""
    if table.empty:
        raise DataError(f"--by {by}: no experiment to read")
    if by == "fig2":
        runs = runs_table(table)
        curve = curves(read, runs)
        runs = with_first_rank(runs, curve)
        runs.to_csv(out.with_name(f"{out.stem}_runs.csv"), index=False)
        curve.to_csv(out.with_name(f"{out.stem}_curves.csv.gz"), index=False, compression=GZIP)
        draw(curve, out)
        written += [out.with_name(f"{out.stem}_runs.csv"), out.with_name(f"{out.stem}_curves.csv.gz"), out]
        print("\n".join(verdict_lines(runs)))
        return
    runs = intervention_table(table)
    tests = intervention_tests(runs)
    runs.to_csv(out.with_name(f"{out.stem}_runs.csv"), index=False)
    tests.to_csv(out.with_name(f"{out.stem}_tests.csv"), index=False)
    draw_intervention(runs, out)
    written += [out.with_name(f"{out.stem}_runs.csv"), out.with_name(f"{out.stem}_tests.csv"), out]
    print(" — ".join(intervention_summary(runs, tests)))


def draw_intervention(runs: pd.DataFrame, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind, title in zip(axes, ("paper", "worst"), ("the paper's PGD", "worst case")):
        for i, (v, group) in enumerate(runs.groupby("variant")):
            means = [group[f"{kind}_test_eps{r}"].mean() for r in RADII]
            spread = np.array([[group[f"{kind}_test_eps{r}"].min(), group[f"{kind}_test_eps{r}"].max()]
                               for r in RADII]).T
            ax.errorbar(np.array(RADII) * (1 + 0.04 * i), means,
                        yerr=[np.subtract(means, spread[0]), np.subtract(spread[1], means)],
                        marker="o", capsize=3, label=v)
        ax.set(xscale="log", xlabel="epsilon (Linf, /255)", title=f"Robust test accuracy, {title}")
    axes[0].set_ylabel("robust accuracy (mean over pairs and seeds, range)")
    axes[0].legend()
    save_figure(fig, out)
