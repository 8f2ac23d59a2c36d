"""The verdict across runs: `difftrain study --all --by classes --out docs/classpairs/classpairs.png`.

One class pair is one test of the paper; many pairs, and the runs of both losses across them, test
its claims as claims *across models*. From the study's table of runs alone:

* ``class_pairs_table``: per class pair, cross-entropy and differential training (eq. 7) side by side
  (seeds averaged where there are several): clean test accuracy, the paper's PGD and the worst
  case over all attacks at 2, 4 and 8/255, PCA components for 99% of the feature variance, the
  head's margin over the SVM optimum and the median first-order input-space margin; and per pair
  whether each claim of the paper holds there (``CLAIMS``).
* ``paired_tests``: per attack (the paper's PGD, the worst case) and radius, differential minus CE
  test accuracy across pairs, with the Wilcoxon signed-rank test (scipy; two-sided, zero
  differences dropped as Wilcoxon's original test does), its p-value, the smallest p its number
  of non-zero differences allows, and Holm's correction over the family (statsmodels). Pairs,
  not runs, are the unit: the two losses see the same images.
* ``correlations``: across every run (pairs x losses, plus any other run passed in), Spearman's
  rho of the worst-case test accuracy at 4/255 with each mechanism the paper names, beside the
  sign the paper predicts (more components, a larger margin: more robust, so rho > 0) and
  whether the measurement agrees (the sign matches and p < 0.05). A model attacked at two
  budgets counts once (its larger budget).
* ``budget_check``: runs that differ only in the attack budget (``attack.n_train``,
  ``attack.n_test``: how many images are attacked) side by side. The reduced run attacks fewer
  images, so its differences mix the attack with the sample: no tolerance is judged here. The
  check that the reduced budget moves the worst case by at most a point on the same images is
  ``benchmarks/attack_budget_check.py`` (docs/classpairs.md).

The per-pair table and tests use the runs of one setting: where the CE and differential runs
differ in more than the class pair, the loss and the seeds (another budget, training length,
adversarial training), the setting with the most class pairs is used and the rest is named.

Figures and tables go beside ``--out``: the scatter of robustness against each mechanism,
``<stem>_by_pair.png`` (both losses per pair, pairs ordered by CE clean accuracy), the CSVs
``<stem>_per_pair.csv``, ``<stem>_tests.csv``, ``<stem>_correlations.csv``, ``<stem>_budget.csv``
and all of them as Markdown in ``<stem>.md``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402

from difftrain.core.errors import DataError
from difftrain.core.io import GZIP
from difftrain.core.params import CIFAR10_CLASSES  # noqa: E402
from difftrain.report import paired  # noqa: E402
from difftrain.report.plots import save_figure  # noqa: E402

RADII = (2, 4, 8)  # /255: the radii compared across runs (the study reads them per run)
CLASSES, LOSS = "data.classes", "loss"
CE, DIFF = "cross_entropy", "differential"
CORRELATION_EPS_255 = 4  # the correlations' radius (/255): robust accuracies there are neither 0 nor clean
BUDGET = ("attack.n_train", "attack.n_test")  # how many images are attacked, not the model
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
DIGITS = 9  # accuracies are k/n: differences are compared rounded to 9 digits, so equal ones rank
TIE = 10.0 ** -DIGITS  # as ties and float noise (0.015 vs 0.015000000000000001) is no difference


def _greater(a, b) -> bool | None:
    """a > b beyond float noise; None, not checkable, where either side is NaN (a margin ratio of
    features that are not linearly separable), so a NaN is never counted as the claim failing."""
    if pd.isna(a) or pd.isna(b):
        return None
    return bool(a > b + TIE)


def _within(a, b, tolerance: float) -> bool | None:
    if pd.isna(a) or pd.isna(b):
        return None
    return bool(abs(a - b) <= tolerance + TIE)


# claim -> (what it says, a function of one pair's CE and differential rows: True where it holds,
# False where it does not, None where the pair cannot check it)
CLAIMS = {
    "similar_clean_accuracy": ("differential training keeps clean test accuracy (within 2 points)",
                               lambda ce, df: _within(df["clean_test_accuracy"], ce["clean_test_accuracy"], 0.02)),
    "ce_lower_rank": ("CE features need fewer PCA components for 99% than differential (Fig. 2)",
                      lambda ce, df: _greater(df["components_99"], ce["components_99"])),
    "ce_poorer_margin": ("CE's head margin is further from the SVM optimum (Theorem 1)",
                         lambda ce, df: _greater(df["margin_ratio"], ce["margin_ratio"])),
    **{f"differential_more_robust_paper_eps{r}": (
        f"differential is more robust under the paper's PGD at {r}/255 (Figs. 4, 5)",
        lambda ce, df, r=r: _greater(df[f"paper_test_eps{r}"], ce[f"paper_test_eps{r}"])) for r in RADII},
    **{f"differential_more_robust_eps{r}": (
        f"differential is more robust under the worst case at {r}/255 (Figs. 4, 5)",
        lambda ce, df, r=r: _greater(df[f"worst_test_eps{r}"], ce[f"worst_test_eps{r}"])) for r in RADII},
}


def claim_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """On how many class pairs each claim holds, of those that can check it, recomputed from the
    per-pair measures (``ce_*``, ``diff_*``: the per-pair CSV is enough); provisional pairs
    are left out (``counted``)."""
    pairs = counted(pairs)
    rows = []
    for claim, (text, holds) in CLAIMS.items():
        results = [holds(row.filter(regex="^ce_").rename(lambda c: c.removeprefix("ce_")),
                         row.filter(regex="^diff_").rename(lambda c: c.removeprefix("diff_")))
                   for _, row in pairs.iterrows()]
        checkable = [r for r in results if r is not None]
        rows.append({"claim": text, "holds on": f"{sum(checkable)}/{len(checkable)} pairs",
                     "not checkable on": len(results) - len(checkable)})
    return pd.DataFrame(rows)


def provisional_line(pairs: pd.DataFrame) -> str:
    """Which pairs the counts and tests leave out, and why, and how many runs recorded no flags."""
    left = pairs[~pairs.index.isin(counted(pairs).index)]
    flags = ", ".join(WORST_CASE_FLAGS)
    text = (f"All {len(pairs)} pairs count: no recorded run's worst case raised {flags}."
            if left.empty else
            f"{len(left)} of {len(pairs)} pairs are provisional, left out of the counts and tests "
            f"(a run's worst case raised {flags}): {', '.join(left['classes'])}.")
    unknown = int(pairs["runs_without_flags"].sum()) if "runs_without_flags" in pairs else 0
    return text + (f" {unknown} runs recorded no flags (made before the record kept them); they "
                   "count as unflagged." if unknown else "")


def coverage_line(pairs: pd.DataFrame) -> str:
    """How many of CIFAR-10's 45 class pairs the record covers, and which remain."""
    every = ["/".join(p) for p in itertools.combinations(CIFAR10_CLASSES, 2)]
    have = set(pairs["classes"]) if "classes" in pairs else set()
    missing = [p for p in every if p not in have]
    return (f"The record covers {len(have)} of the {len(every)} class pairs"
            + (f"; not yet measured: {', '.join(missing)}." if missing else " (all of them)."))


def claims_section(pairs: pd.DataFrame) -> str:
    """The page's claim table, from the per-pair measures: a test holds the committed page to it."""
    return (CLAIMS_HEADING + "\n\n" + coverage_line(pairs) + " " + provisional_line(pairs)
            + "\n\n" + _md(claim_counts(pairs)))


CLAIMS_HEADING = "## Each claim, on how many pairs (of those that can check it)"


# a run whose worst case may be too weak: its pair is provisional (left out of counts and tests)
WORST_CASE_FLAGS = ["not_converged", "blackbox_beats_whitebox", "suspect_gradient_masking"]
FLAGS = ["paper_attack_overstates", *WORST_CASE_FLAGS]
SPREAD = [f"{kind}_test_eps{r}" for kind in ("paper", "worst") for r in RADII]  # min/max kept
# the record of one run (``<stem>_runs.csv``); runs with equal RUN_KEY are one setting's seed
RUN_KEY = [CLASSES, LOSS, "seed", "attack.n_train", "attack.n_test", "train.epochs"]
MACHINE = ["cpu_capability", "torch_threads"]
RUN_COLUMNS = ["experiment", *RUN_KEY, "pairs.seed", *MEASURES, *FLAGS, *MACHINE]


def run_records(table: pd.DataFrame, recorded: pd.DataFrame | None = None) -> pd.DataFrame:
    """The study's runs as the committed record (``RUN_COLUMNS``), with every run of
    ``recorded`` (the record read back) that the experiments here do not repeat: results made
    on another machine, whose experiments are gone, stay in the verdict."""
    runs = table.reindex(columns=RUN_COLUMNS)
    if recorded is None or recorded.empty:
        return runs.reset_index(drop=True)
    recorded = recorded.reindex(columns=RUN_COLUMNS)
    here = set(map(tuple, runs[RUN_KEY].astype(str).to_numpy()))
    kept = recorded[[tuple(k) not in here for k in recorded[RUN_KEY].astype(str).to_numpy()]]
    merged = pd.concat([kept, runs], ignore_index=True)
    return merged.sort_values([CLASSES, LOSS, "seed"], kind="stable").reset_index(drop=True)


def _machines(group: pd.DataFrame) -> str:
    """The CPU kinds and torch thread counts that made a pair's runs, with how many runs each
    (the same seed trains a different model on another kind or thread count, so the seed range
    of a pair made on several is a spread over machines as well)."""
    made = group.reindex(columns=MACHINE).astype(object).where(group.reindex(columns=MACHINE).notna(),
                                                                 None)
    counts = {}
    for capability, threads in made.itertuples(index=False):
        key = ("not recorded" if capability is None or threads is None else
               f"{capability}, {int(float(threads))} thread{'s' if float(threads) != 1 else ''}")
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{key}: {n}" for key, n in sorted(counts.items()))


def _flagged(group: pd.DataFrame) -> tuple[int, int]:
    """How many runs raised a worst-case flag, of how many recorded their flags."""
    flags = group.reindex(columns=WORST_CASE_FLAGS)
    known = flags.notna().all(axis=1)
    raised = flags[known].astype(str).eq("True").any(axis=1)
    return int(raised.sum()), int(known.sum())


def class_pairs_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per class pair that has both a CE and a differential run: means over seeds, with
    the seed range (``_min``, ``_max``) of each robust accuracy, and the pair's soundness flags.
    A pair with a run whose worst case is flagged is ``provisional``."""
    for column in (CLASSES, LOSS):
        if column not in table:
            raise DataError(f"the experiments have no parameter {column!r}")
    runs = table[table[LOSS].isin([CE, DIFF])]
    grouped = runs.groupby([CLASSES, LOSS])
    means, low, high = (grouped[MEASURES].agg(f) for f in ("mean", "min", "max"))
    seeds = grouped.size()
    rows = []
    for pair in sorted(runs[CLASSES].unique()):
        if (pair, CE) not in means.index or (pair, DIFF) not in means.index:
            continue
        ce, df = means.loc[(pair, CE)], means.loc[(pair, DIFF)]
        row = {"classes": pair, "seeds": int(min(seeds[(pair, CE)], seeds[(pair, DIFF)]))}
        for measure in MEASURES:
            row[f"ce_{measure}"], row[f"diff_{measure}"] = ce[measure], df[measure]
        for measure in SPREAD:
            for prefix, loss in (("ce", CE), ("diff", DIFF)):
                row[f"{prefix}_{measure}_min"] = low.loc[(pair, loss), measure]
                row[f"{prefix}_{measure}_max"] = high.loc[(pair, loss), measure]
        for claim, (_, holds) in CLAIMS.items():
            row[claim] = holds(ce, df)
        flagged = {loss: _flagged(runs[(runs[CLASSES] == pair) & (runs[LOSS] == loss)])
                   for loss in (CE, DIFF)}
        for prefix, loss in (("ce", CE), ("diff", DIFF)):
            row[f"{prefix}_flagged_runs"] = f"{flagged[loss][0]}/{flagged[loss][1]}"
        row["runs_without_flags"] = sum(int(seeds[(pair, loss)]) - flagged[loss][1]
                                        for loss in (CE, DIFF))
        row["provisional"] = any(raised for raised, _ in flagged.values())
        row["machines"] = _machines(runs[runs[CLASSES] == pair])
        rows.append(row)
    if not rows:
        raise DataError("no class pair has both a cross_entropy and a differential run: the "
                        "cross-run analysis compares the two losses per pair")
    return pd.DataFrame(rows)


def counted(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs that count: those whose worst case no run flagged (``provisional`` False)."""
    if "provisional" not in pairs:
        return pairs
    return pairs[~pairs["provisional"].astype(str).eq("True")]


def select_setting(table: pd.DataFrame, by: list[str]) -> tuple[pd.DataFrame, str | None]:
    """The CE and differential runs of the one setting (every parameter of ``by``, the ones that
    differ between the runs, except the class pair and the loss) that has the most class pairs
    with both losses; and a line naming the setting and what was left out (None when every run
    is of one setting)."""
    runs = table[table[LOSS].isin([CE, DIFF])] if LOSS in table else table
    other = [k for k in by if k not in (CLASSES, LOSS) and k in runs
             and runs[k].astype(str).nunique() > 1]
    if not other:
        return runs, None

    def both(group: pd.DataFrame) -> int:
        losses = group.groupby(CLASSES)[LOSS].nunique() if CLASSES in group else pd.Series()
        return int((losses == 2).sum())

    groups = list(runs.groupby(other, sort=True, dropna=False))
    values, chosen = max(groups, key=lambda kv: (both(kv[1]), len(kv[1])))
    values = values if isinstance(values, tuple) else (values,)
    setting = ", ".join(f"{k}={v}" for k, v in zip(other, values))
    return chosen, (f"per-pair table of the setting {setting} ({both(chosen)} pairs); left out "
                    f"{len(table) - len(chosen)} of {len(table)} runs (other losses or settings)")


def _by_model(table: pd.DataFrame, identity: list[str]) -> pd.DataFrame | None:
    """``table`` with a column ``_k`` naming the model of each run (every parameter of
    ``identity`` but the attack budget), or None where the table cannot tell budgets apart."""
    key = [k for k in identity if k in table and k not in BUDGET]
    if not key or not all(b in table for b in BUDGET):
        return None
    return table.assign(_k=table[key].astype(str).agg("|".join, axis=1))


def one_per_model(table: pd.DataFrame, identity: list[str]) -> pd.DataFrame:
    """Every model once: of runs that differ only in the attack budget, the larger budget."""
    keyed = _by_model(table, identity)
    if keyed is None:
        return table
    ordered = keyed.sort_values(list(BUDGET), kind="stable")
    return ordered.drop_duplicates("_k", keep="last").drop(columns="_k").sort_index()


def budget_check(table: pd.DataFrame, identity: list[str]) -> pd.DataFrame:
    """Runs identical but for the attack budget: the worst case at each radius at the smallest
    and the largest budget and their difference, over different numbers of images (so no
    tolerance is judged: that needs the same images, ``benchmarks/attack_budget_check.py``)."""
    keyed = _by_model(table, identity)
    if keyed is None:
        return pd.DataFrame()
    rows = []
    for _, group in keyed.groupby("_k", sort=False):
        if len(group[list(BUDGET)].drop_duplicates()) < 2:
            continue
        group = group.sort_values(list(BUDGET), kind="stable")
        small, large = group.iloc[0], group.iloc[-1]
        row = {"classes": small.get(CLASSES), "loss": small.get(LOSS),
               "reduced": small["experiment"], "default": large["experiment"],
               "n_test_reduced": small["attack.n_test"], "n_test_default": large["attack.n_test"]}
        for r in RADII:
            column = f"worst_test_eps{r}"
            row[f"reduced_eps{r}"], row[f"default_eps{r}"] = small[column], large[column]
            row[f"difference_eps{r}"] = small[column] - large[column]
        rows.append(row)
    return pd.DataFrame(rows)


BUDGET_HEADING = "## Reduced against default attack budget (worst case, test)"


def budget_section(budget: pd.DataFrame) -> str:
    """The page's budget table, from ``budget_check`` (or its CSV)."""
    return (BUDGET_HEADING + "\n\nDifferent images (the reduced run attacks fewer), so these "
            "differences mix the attack with the sample; the same-image check is "
            "`benchmarks/attack_budget_check.py` (docs/classpairs.md).\n\n"
            + _md(budget.drop(columns=["reduced", "default"])))


ATTACKS = {"paper": "the paper's PGD", "worst": "the worst case over all attacks"}


def paired_tests(pairs: pd.DataFrame) -> pd.DataFrame:
    """Differential minus CE test accuracy across pairs, per attack and radius: the median and
    mean difference, how many pairs went each way (differences rounded to ``DIGITS``: noise is a
    tie, and equal differences share a rank), and
    Wilcoxon's signed-rank p-value, NaN with fewer than two non-zero differences, where the test
    says nothing. ``smallest_possible_p`` is the exact two-sided p of the most extreme outcome
    with that many non-zero differences (2 / 2^n): where it is above 0.05 no outcome could have
    been significant. ``holm_p`` corrects for the family of these tests (statsmodels' Holm);
    ``mean_low`` and ``mean_high`` bound the mean difference by a bootstrap over the pairs.
    Provisional pairs are left out; a pair with several seeds enters with its seed means."""
    pairs = counted(pairs)
    rows = []
    for kind in ATTACKS:
        for r in RADII:
            diff = (pairs[f"diff_{kind}_test_eps{r}"] - pairs[f"ce_{kind}_test_eps{r}"]).dropna()
            diff = diff.round(DIGITS)  # equal differences rank as ties, tiny ones are zero
            nonzero = diff[diff != 0]
            if len(nonzero) >= 2:
                test = stats.wilcoxon(nonzero, alternative="two-sided")
                statistic, p = float(test.statistic), float(test.pvalue)
            else:
                statistic = p = math.nan
            rows.append({"attack": kind, "eps_255": r, "pairs": len(diff),
                         "median_difference": diff.median(), "mean_difference": diff.mean(),
                         "differential_higher": int((diff > 0).sum()),
                         "ce_higher": int((diff < 0).sum()), "ties": int((diff == 0).sum()),
                         **dict(zip(("mean_low", "mean_high"), paired.bootstrap_mean(diff))),
                         "wilcoxon_statistic": statistic, "p_value": p,
                         "smallest_possible_p": min(1.0, 2 / 2 ** len(nonzero))})
    tests = pd.DataFrame(rows)
    tests["holm_p"] = _holm(tests["p_value"])
    return tests


def _holm(p: pd.Series) -> pd.Series:
    """Holm-adjusted p-values over the family ``p`` (statsmodels); NaN where no test ran."""
    adjusted = pd.Series(math.nan, index=p.index)
    tested = p.notna()
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return adjusted


def _partial_spearman(y: pd.Series, x: pd.Series, control: pd.Series) -> tuple[float, float]:
    """Spearman's rho of x and y with ``control`` partialled out: the Pearson correlation of the
    residuals of their ranks regressed on the control's ranks, with its t-test on n - 3 degrees
    of freedom (one controlled variable). Ten lines, so not worth a dependency (pingouin)."""
    ranks = pd.DataFrame({"y": y, "x": x, "c": control}).rank()
    def residual(column):
        slope, intercept = np.polyfit(ranks["c"], ranks[column], 1)
        return ranks[column] - (slope * ranks["c"] + intercept)
    rho = float(np.corrcoef(residual("y"), residual("x"))[0, 1])
    n = len(ranks)
    t = rho * math.sqrt((n - 3) / max(1e-300, 1 - rho * rho))
    return rho, float(2 * stats.t.sf(abs(t), n - 3))


def mechanisms_controlled(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each mechanism against the worst case at CORRELATION_EPS_255, where task difficulty cannot
    carry it: within pairs (Spearman of the paired change in the mechanism, differential minus CE,
    against the paired change in robustness) and across the pairs' models with clean accuracy
    partialled out. Holm over the mechanisms, per analysis. NaN where fewer than 4 values.
    Provisional pairs are left out."""
    pairs = counted(pairs)
    target = f"worst_test_eps{CORRELATION_EPS_255}"
    models = {c: pd.concat([pairs[f"ce_{c}"], pairs[f"diff_{c}"]], ignore_index=True)
              for c in {target, "clean_test_accuracy", *MECHANISMS}}
    rows = []
    for mechanism, (label, predicted, _) in MECHANISMS.items():
        change = pd.DataFrame({"m": pairs[f"diff_{mechanism}"] - pairs[f"ce_{mechanism}"],
                               "r": pairs[f"diff_{target}"] - pairs[f"ce_{target}"]}).dropna()
        within = (stats.spearmanr(change["m"], change["r"]) if len(change) >= 4 else None)
        both = pd.DataFrame({"r": models[target], "m": models[mechanism],
                             "c": models["clean_test_accuracy"]}).dropna()
        partial = _partial_spearman(both["r"], both["m"], both["c"]) if len(both) >= 4 else None
        rows.append({"mechanism": label, "predicted_sign": "+" if predicted > 0 else "-",
                     "within_pairs": len(change),
                     "within_rho": float(within.statistic) if within else math.nan,
                     "within_p": float(within.pvalue) if within else math.nan,
                     "partial_models": len(both),
                     "partial_rho": partial[0] if partial else math.nan,
                     "partial_p": partial[1] if partial else math.nan})
    table = pd.DataFrame(rows)
    for kind in ("within", "partial"):
        table[f"{kind}_holm_p"] = _holm(table[f"{kind}_p"])
    return table


MECHANISMS_HEADING = ("## The mechanisms where task difficulty cannot carry them (within pairs; "
                      "across models with clean accuracy partialled out)")


def mechanisms_section(pairs: pd.DataFrame) -> str:
    """The page's controlled mechanism table, from the per-pair measures."""
    return MECHANISMS_HEADING + "\n\n" + _md(mechanisms_controlled(pairs))


def _spread(row, prefix: str, measure: str) -> str:
    mean, low, high = (row[f"{prefix}_{measure}{s}"] * 100 for s in ("", "_min", "_max"))
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.1f}" + (f" ({low:.1f}-{high:.1f})" if row["seeds"] > 1 else "")


PER_PAIR_HEADING = "## Per pair"


def per_pair_section(pairs: pd.DataFrame) -> str:
    """The page's per-pair table: test accuracies in %, seed means with the seed range, under
    both attacks at 4 and 8/255, and each loss's runs with a flagged worst case."""
    radii = [r for r in RADII if r >= CORRELATION_EPS_255]
    head = ["pair", "seeds", "clean CE", "clean diff",
            *[f"{a} {r}/255 {l}" for r in radii for a in ("paper", "worst") for l in ("CE", "diff")],
            "flagged runs CE", "flagged runs diff", "provisional", "made on (runs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in pairs.sort_values("ce_clean_test_accuracy").iterrows():
        cells = [row["classes"], str(row["seeds"]), f"{100 * row['ce_clean_test_accuracy']:.1f}",
                 f"{100 * row['diff_clean_test_accuracy']:.1f}",
                 *[_spread(row, l, f"{a}_test_eps{r}") for r in radii for a in ("paper", "worst")
                   for l in ("ce", "diff")],
                 str(row["ce_flagged_runs"]), str(row["diff_flagged_runs"]),
                 "yes" if str(row["provisional"]) == "True" else "no", str(row["machines"])]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"{PER_PAIR_HEADING} (test %, mean over seeds with the seed range; flagged runs: "
            f"raised {', '.join(WORST_CASE_FLAGS)}, of the runs that recorded flags; ordered by "
            f"CE clean accuracy; all columns in the CSV)\n\n" + "\n".join(lines))


def tests_section(pairs: pd.DataFrame) -> str:
    """The page's paired tests, from the per-pair measures: a test holds the committed page to it."""
    return TESTS_HEADING + "\n\n" + _md(paired_tests(pairs))


TESTS_HEADING = ("## Differential minus CE, across pairs (Wilcoxon signed-rank, Holm-corrected "
                 "over the attacks and radii)")


IMAGES_HEADING = "## Per pair, image by image"


def _image_cell(row) -> str:
    return (f"{100 * row.difference:+.1f} [{100 * row.difference_low:+.1f}, "
            f"{100 * row.difference_high:+.1f}] p {row.mcnemar_p:.2g}")


def images_section(tests: pd.DataFrame) -> str:
    """Per pair and seed, on test: differential minus CE robust accuracy (points) with its
    Newcombe interval and McNemar's exact p, per attack and radius (all columns in the CSV)."""
    head = (f"{IMAGES_HEADING} (test; differential minus CE in points, Newcombe 95% interval, "
            f"McNemar's exact p on the discordant images; all splits, counts and Wilson intervals "
            f"in the image-tests CSV)")
    if tests.empty:
        return head + "\n\nNo run in the record kept its per-image outcomes.\n"
    test = tests[tests["split"] == "test"]
    columns = [(a, r) for a in ATTACKS for r in RADII]
    lines = ["| pair | seed | images | " + " | ".join(f"{a} {r}/255" for a, r in columns) + " |",
             "|" + "---|" * (3 + len(columns))]
    for (pair, seed), group in test.groupby(["classes", "seed"], sort=True):
        cells = {(row.attack, row.eps_255): _image_cell(row) for row in group.itertuples()}
        lines.append(f"| {pair} | {seed} | {group['images'].iloc[0]} | "
                     + " | ".join(cells[c] for c in columns) + " |")
    return (head + "\n\nBoth losses attacked the same images in every row (checked image by "
            "image before the test).\n\n" + "\n".join(lines) + "\n")


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho of worst-case test accuracy at 4/255 with each mechanism, over every run
    with both values, beside the paper's predicted sign."""
    target = f"worst_test_eps{CORRELATION_EPS_255}"
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


def draw_class_pairs(pairs: pd.DataFrame, out: Path) -> None:
    """Per class pair, ordered by CE clean test accuracy: clean and worst-case test accuracy at
    each radius, CE and differential side by side."""
    pairs = pairs.sort_values("ce_clean_test_accuracy")
    measures = [("clean_test_accuracy", "clean"),
                *[(f"worst_test_eps{r}", f"worst case at {r}/255") for r in RADII]]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.6 * len(measures), 0.32 * len(pairs) + 1.6),
                             sharey=True, squeeze=False)
    y = range(len(pairs))
    for ax, (measure, title) in zip(axes[0], measures):
        ax.scatter(100 * pairs[f"ce_{measure}"], y, marker="o", s=22, label="cross_entropy")
        ax.scatter(100 * pairs[f"diff_{measure}"], y, marker="^", s=22, label="differential")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_yticks(list(y), list(pairs["classes"]), fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("per class pair, ordered by CE clean accuracy (CIFAR-10, JPEG copy where so "
                 "labelled)", fontsize=9)
    save_figure(fig, out)


def draw(table: pd.DataFrame, out: Path) -> None:
    """Worst-case test accuracy at 4/255 against each mechanism, one point per run, by loss."""
    target = f"worst_test_eps{CORRELATION_EPS_255}"
    fig, axes = plt.subplots(1, len(MECHANISMS), figsize=(4.2 * len(MECHANISMS), 3.6),
                             squeeze=False)
    for ax, (column, (label, _, _)) in zip(axes[0], MECHANISMS.items()):
        for loss, runs in table.groupby(LOSS):
            ax.scatter(runs[column], 100 * runs[target], s=18, alpha=0.8, label=loss)
        ax.set_xlabel(label)
        ax.set_ylabel(f"worst-case test accuracy at {CORRELATION_EPS_255}/255 (%)")
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


def main(table: pd.DataFrame, out: Path, written: list, by: list[str] | None = None,
         identity: list[str] | None = None, images_of=None) -> None:
    """Write the figures and the tables beside ``out`` (CSV, and Markdown in ``<stem>.md``) and
    print the Markdown. ``by``: the parameters that differ between the runs, seeds excepted;
    ``identity``: every parameter column (both from the study); ``images_of``: names -> their
    per-image outcomes (``paired.IMAGE_COLUMNS`` less the run's parameters).

    The record beside ``out`` (``<stem>_runs.csv``, ``<stem>_per_image.csv.gz``) is read first and
    kept for every run the experiments here do not repeat, so results made on another machine
    stay in the verdict when their experiments are gone."""
    by, identity = by or [], identity or []
    chosen, note = select_setting(table, by)
    path = {suffix: out.with_name(f"{out.stem}_{suffix}.csv") for suffix in
            ("runs", "per_pair", "tests", "correlations", "budget", "image_tests")}
    path["per_image"] = out.with_name(f"{out.stem}_per_image.csv.gz")  # one row an image: compressed
    recorded = pd.read_csv(path["runs"]) if path["runs"].exists() else None
    runs = run_records(chosen, recorded)
    images = pd.DataFrame(columns=paired.IMAGE_COLUMNS)
    if images_of is not None:
        here = images_of(list(chosen["experiment"]))
        meta = chosen[["experiment", CLASSES, LOSS, "seed"]]
        images = here.merge(meta, on="experiment").reindex(columns=paired.IMAGE_COLUMNS)
    if path["per_image"].exists():
        kept = pd.read_csv(path["per_image"])
        kept = kept[~kept["experiment"].isin(chosen["experiment"])
                    & kept["experiment"].isin(runs["experiment"])]
        images = pd.concat([kept, images], ignore_index=True)
    pairs = class_pairs_table(runs)
    tests = paired_tests(pairs)
    image_tests = paired.image_tests(images, RADII)
    # one point per model of the whole record (runs made elsewhere included), as the per-pair
    # table and the mechanisms have; the budget check needs the experiments' full parameters,
    # so where none are here its recorded table is kept
    models = one_per_model(runs, [k for k in RUN_KEY if k in runs] + ["pairs.seed"])
    corr = correlations(models)
    budget = budget_check(table, identity)
    if budget.empty and path["budget"].exists():
        budget = pd.read_csv(path["budget"])
    draw(models, out)
    written.append(out)
    by_pair = out.with_name(f"{out.stem}_by_pair.png")
    draw_class_pairs(pairs, by_pair)
    written.append(by_pair)
    for suffix, frame in (("runs", runs), ("per_image", images), ("per_pair", pairs),
                          ("tests", tests), ("correlations", corr), ("budget", budget),
                          ("image_tests", image_tests)):
        frame.to_csv(path[suffix], index=False, compression=GZIP if suffix == "per_image" else None)
        written.append(path[suffix])
    sections = [f"Runs: {len(runs)} in the record ({len(table)} experiments read here, "
                f"{len(models)} models); {note or 'one setting'}.",
                claims_section(pairs), per_pair_section(pairs), tests_section(pairs),
                "## Robustness at 4/255 against the mechanisms, across models (Spearman)\n\n"
                + _md(corr.drop(columns=["label"])),
                mechanisms_section(pairs)]
    if len(budget):
        sections.append(budget_section(budget))
    sections.append(images_section(image_tests))
    text = "\n\n".join(sections)
    md = out.with_name(f"{out.stem}.md")
    md.write_text(f"# The cross-run analysis: `difftrain study --by classes`\n\n{text}\n",
                  encoding="utf-8")
    written.append(md)
    print(text)
    print(f"wrote {', '.join(map(str, written))} ({len(runs)} runs, {len(pairs)} pairs)")
