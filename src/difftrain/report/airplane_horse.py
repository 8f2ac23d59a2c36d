"""The airplane/horse study's tables and findings for docs/results.md, written from what the
study and compare commands committed (``docs/figures/study.csv``, ``study_runs.csv``,
``compare.csv``), so that page quotes no number by hand.

Each finding states the rule behind its word: a difference between losses counts where the
seed ranges do not overlap (``verdict.above``), the same rule as the README's verdict.
"""

from __future__ import annotations

import math

import pandas as pd

from difftrain.core.errors import DataError
from difftrain.report import study as study_mod
from difftrain.report.verdict import PAPER_CLEAN, PAPER_CE_COMPONENTS, above

BY = ["loss", "adversarial_eps", "epochs"]  # how the study grouped the airplane/horse runs
RUN_RADII = (4, 8, 16)  # the per-run table's columns
NAMES = {"cross_entropy": "CE", "differential": "differential eq. (7)",
         "differential_logistic": "logistic eq. (6)"}


def study_table(summary: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The study table (mean over seeds, range), as ``difftrain study`` prints it."""
    eps = study_mod.headline_label(runs)
    return study_mod.markdown(summary, BY, eps) + "\n"


def _curve(compare: pd.DataFrame, experiment: str, attack: str, split: str) -> pd.Series:
    rows = compare[(compare["experiment"].str.split(" ").str[0] == experiment)
                   & (compare["attack"] == attack) & (compare["split"] == split)]
    return rows.set_index("eps")["accuracy"]


def runs_table(compare: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Per compared run: clean accuracy, the paper's PGD / the worst case at 4, 8 and 16/255 on
    both splits, and its flags with the paper's PGD's largest lead over the worst case."""
    names = list(dict.fromkeys(compare["experiment"]))
    head = ["run", "clean train / test", *(f"{r}/255 {s}" for s in ("test", "train") for r in RUN_RADII),
            "flags (largest lead of the paper's PGD over the worst case)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label in names:
        name = label.split(" ")[0]
        run = runs[runs["experiment"] == name]
        if run.empty:
            raise DataError(f"docs/figures/study_runs.csv: no run {name!r} of compare.csv")
        run = run.iloc[0]
        cells = [f"{label}", f"{100 * run['clean_train_accuracy']:.1f} / {100 * run['clean_test_accuracy']:.2f}"]
        leads = []
        for split in ("test", "train"):
            paper, worst = (_curve(compare, name, a, split) for a in ("paper_pgd", "worst"))
            cells += [f"{100 * paper[r]:.1f} / {100 * worst[r]:.1f}" for r in RUN_RADII]
            gap = (paper - worst).dropna()
            leads.append(f"{100 * gap.max():.1f} {split} at {gap.idxmax():g}/255")
        flags = [f for f in study_mod.FLAGS if str(run[f]) == "True"]
        cells.append(", ".join(f"`{f}`" for f in flags) + f" ({'; '.join(leads)})" if flags else "none")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _group(summary: pd.DataFrame, loss: str, epochs: int, adversarial: float = 0.0):
    rows = summary[(summary["loss"] == loss) & (summary["epochs"] == epochs)
                   & (summary["adversarial_eps"] == adversarial)]
    return None if rows.empty else rows.iloc[0]


def _v(row, column: str, scale: float = 100, decimals: int = 1, unit: str = "%") -> str:
    """Mean over seeds with its range where there are several, as the study table writes it."""
    if row is None:
        return "not run"
    text = study_mod.cell(row, column, scale, decimals)
    if text == "n/a":
        return text
    mean, _, spread = text.partition(" (")  # "mean" or "mean (low-high)"
    return f"{mean}{unit}" + (f" ({spread}" if spread else "")


def _seeds(runs: pd.DataFrame, loss: str, epochs: int, column: str, adversarial: float = 0.0):
    return runs[(runs["loss"] == loss) & (runs["epochs"] == epochs)
                & (runs["adversarial_eps"] == adversarial)][column]


def findings(summary: pd.DataFrame, runs: pd.DataFrame, compare: pd.DataFrame) -> str:
    """The page's bullets: each claim's numbers from the study, and the word the rule gives."""
    eps = study_mod.headline_label(runs)
    ce, df, lg = (_group(summary, loss, 30) for loss in ("cross_entropy", "differential",
                                                          "differential_logistic"))
    if ce is None or df is None:
        raise DataError("docs/figures/study.csv: no CE or differential group at 30 epochs")
    control = _group(summary, "cross_entropy", 30, 8.0)
    epochs = sorted(summary[(summary["loss"] == "differential") & (summary["adversarial_eps"] == 0)]["epochs"])
    ce_epochs = sorted(summary[(summary["loss"] == "cross_entropy") & (summary["adversarial_eps"] == 0)]["epochs"])
    out = []

    gap = abs(df["clean_test_accuracy_mean"] - ce["clean_test_accuracy_mean"])
    out.append(f"* **Clean accuracy: {'reproduced' if gap <= 0.02 else 'not reproduced'}.** CE "
               f"{_v(ce, 'clean_test_accuracy')}, differential {_v(df, 'clean_test_accuracy')}, "
               f"logistic {_v(lg, 'clean_test_accuracy')} on test at 30 epochs, against the paper's "
               f"{PAPER_CLEAN['cross_entropy']}% (CE) and {PAPER_CLEAN['differential']}% "
               f"(differential). Training accuracy at 30 epochs: CE {_v(ce, 'clean_train_accuracy')}, "
               f"differential {_v(df, 'clean_train_accuracy')}"
               + "".join(f"; differential at {e} epochs {_v(_group(summary, 'differential', e), 'clean_train_accuracy')}"
                         for e in epochs if e > 30) + ".")

    comps = "; ".join(f"{e} epochs {_v(_group(summary, 'cross_entropy', e), 'components_99', 1, 0, '')}"
                      for e in ce_epochs)
    lower = above(_seeds(runs, "cross_entropy", 30, "components_99"),
                   _seeds(runs, "differential", 30, "components_99"))
    out.append(f"* **Low rank (Fig. 2), mini-batch SGD: "
               f"{'reproduced' if ce['components_99_mean'] <= 2 * PAPER_CE_COMPONENTS else 'not reproduced'}.** "
               f"CE features need, of 84 principal components, for 99% of the variance: {comps} "
               f"(paper: {PAPER_CE_COMPONENTS}). Differential's need "
               f"{_v(df, 'components_99', 1, 0, '')} at 30 epochs"
               + (", fewer than CE's beyond the seed ranges" if lower else "")
               + (f"; the positive control's {_v(control, 'components_99', 1, 0, '')}" if control is not None else "")
               + ". The paper's own optimiser (full-batch gradient descent with momentum) and "
               "Proposition 1 are in [fig2.md](fig2.md).")

    margins = "; ".join(f"{e} epochs {_v(_group(summary, 'cross_entropy', e), 'margin_ratio', 1, 2, '')}"
                        for e in ce_epochs)
    diff_na = all(math.isnan(_group(summary, "differential", e)["margin_ratio_mean"]) for e in epochs)
    out.append(f"* **Margin (Theorem 1).** The CE head reaches, of the optimal feature-space margin: "
               f"{margins}. "
               + ("The differential features are not linearly separable at any length run "
                  f"({', '.join(map(str, epochs))} epochs), so their margin ratio is undefined (n/a): "
                  "the claim that differential training approaches the optimal margin cannot be "
                  "checked here. " if diff_na else
                  f"Differential: {_v(df, 'margin_ratio', 1, 2, '')} at 30 epochs. ")
               + "Why CE falls short on these features (finite training, not the theorem's "
               "mechanism) is in [theorem1.md](theorem1.md).")

    for split, title in (("train", "Robustness on training images (Fig. 4)"),
                         ("test", "Robustness on test images (Fig. 4)")):
        paper = above(_seeds(runs, "differential", 30, f"paper_{split}"),
                       _seeds(runs, "cross_entropy", 30, f"paper_{split}"))
        worst = above(_seeds(runs, "differential", 30, f"worst_{split}"),
                       _seeds(runs, "cross_entropy", 30, f"worst_{split}"))
        word = ("reproduced under both attacks" if paper and worst else
                "reproduced under the paper's PGD; does not survive the worst case" if paper else
                "not reproduced under either attack" if not worst else "reproduced under the worst case only")
        by_len = lambda loss, col, es: ", ".join(  # noqa: E731
            f"{_v(_group(summary, loss, e), col)} at {e}" for e in es)
        out.append(f"* **{title}: {word}** (at {eps}/255, differential vs CE; epochs after each "
                   f"number). The paper's PGD: differential {by_len('differential', f'paper_{split}', epochs)}; "
                   f"CE {by_len('cross_entropy', f'paper_{split}', ce_epochs)}. The worst case over all "
                   f"attacks: differential {by_len('differential', f'worst_{split}', epochs)}; CE "
                   f"{by_len('cross_entropy', f'worst_{split}', ce_epochs)}.")
    if lg is not None:
        out.append(f"* **The logistic form eq. (6)** at 30 epochs: worst case on test at {eps}/255 "
                   f"{_v(lg, 'worst_test')}, against CE's {_v(ce, 'worst_test')} and "
                   f"differential's {_v(df, 'worst_test')}.")

    l2 = ", ".join(f"{NAMES.get(r.loss, r.loss)} at {r.epochs} epochs{' adversarial' if r.adversarial_eps else ''} "
                   f"{_v(r, 'l2_test_median', 1, 3, '')}" for _, r in summary.iterrows()
                   if not math.isnan(r["l2_test_median_mean"]))
    cw = []
    for label in dict.fromkeys(compare["experiment"]):
        name = label.split(" ")[0]
        a, b = (_curve(compare, name, k, "test") for k in ("cw", "l2_worst"))
        if 0.5 in a.index and 0.5 in b.index:
            cw.append(f"{name} {100 * a[0.5]:.1f}% vs {100 * b[0.5]:.1f}%")
    out.append(f"* **Minimal L2 (Fig. 5).** Median minimal L2 on test (the smaller of CW's and "
               f"FAB's, mean over seeds): {l2}. Accuracy at L2 0.5, CW alone vs the worst of CW "
               f"and FAB (seed 0): {'; '.join(cw)}. Where the two differ, CW alone overstates the "
               f"robustness (`cw_overstates_l2`).")

    if control is not None:
        lead = max(abs(control["paper_test_mean"] - control["worst_test_mean"]),
                   abs(control["paper_train_mean"] - control["worst_train_mean"]))
        sees = control["worst_test_min"] > ce["worst_test_max"]
        out.append(f"* **The positive control** (PGD adversarial training at 8/255, 30 epochs) "
                   f"{'sees' if sees else 'does not see'} real robustness: worst case on test at "
                   f"{eps}/255 {_v(control, 'worst_test')} against plain CE's {_v(ce, 'worst_test')}, "
                   f"at clean accuracy {_v(control, 'clean_test_accuracy')}; the paper's PGD agrees "
                   f"with the worst case there to within {100 * lead:.1f} points (seed means, both "
                   f"splits). Its flags far outside the training radius are examined by "
                   f"`python benchmarks/pgd_budget_check.py` ([benchmarks.md](benchmarks.md)).")

    grads = ", ".join(f"{NAMES.get(r.loss, r.loss)} {r.epochs} epochs{' adversarial' if r.adversarial_eps else ''} "
                      f"{_v(r, 'gradient_l1_test', 1, 0, '')} / {_v(r, 'first_order_margin_test', 1, 2, '')}"
                      for _, r in summary.iterrows())
    out.append(f"* **Mechanism (input space).** Median `||grad_x s||_1` on test / median first-order "
               f"margin `|s| / ||grad_x s||_1` in /255: {grads}. At 30 epochs differential training "
               + ("shrinks the input gradient, as the paper's Lipschitz argument predicts, but "
                  if above(_seeds(runs, "cross_entropy", 30, "gradient_l1_test"),
                           _seeds(runs, "differential", 30, "gradient_l1_test")) else
                  "does not shrink the input gradient beyond the seed ranges; ")
               + "the score's scale moves with the gradient (eq. (7) targets score differences "
               "of 1), so the scale-free first-order margin is the quantity to compare with the "
               "attack radius.")
    return "\n".join(out) + "\n"
