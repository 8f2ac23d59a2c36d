"""One class pair, image by image: does differential training make *these* images more robust?

Both losses of a pair attack the same images (the attacked subsample depends on ``data.*`` and
``attack.*`` only, never on the model), so each image is a matched pair of outcomes and the
right test is McNemar's exact test on the discordant images (``mcnemar``, statsmodels), not a
comparison of two independent accuracies. Each accuracy gets a Wilson 95% interval
(statsmodels) and the paired difference Newcombe's hybrid score interval (``paired_interval``:
statsmodels has none for paired proportions). ``same_images`` checks the matching before any
test runs, and refuses a pair whose runs attacked different images.

Across pairs, ``bootstrap_mean`` gives a percentile interval of the mean difference by
resampling pairs (seeded: the same table gives the same interval).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from difftrain.core.errors import DataError

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
BOOTSTRAP_DRAWS, BOOTSTRAP_SEED = 10_000, 0
# per-image column -> the attack it stands for: a robust image is one whose smallest fooling
# radius is above the radius (``inf``: never fooled; 0: misclassified clean)
ATTACK_COLUMNS = {"paper": "paper_min_eps_255", "worst": "worst_min_eps_255"}
KEY = ["split", "position", "label"]


def wilson(count: int, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of count / n (statsmodels); NaN for n = 0."""
    if n == 0:
        return math.nan, math.nan
    low, high = proportion_confint(count, n, alpha=0.05, method="wilson")
    return float(low), float(high)


def paired_interval(both: int, only_first: int, only_second: int, neither: int
                    ) -> tuple[float, float]:
    """95% interval of p1 - p2 for paired binary outcomes: Newcombe's method 10 (Stat Med 1998,
    17:2635), from the Wilson limits of p1 = (both + only_first) / n and p2 = (both +
    only_second) / n and the phi correlation of the 2x2 table (0 where a margin is empty)."""
    n = both + only_first + only_second + neither
    if n == 0:
        return math.nan, math.nan
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson(both + only_first, n)
    l2, u2 = wilson(both + only_second, n)
    margins = ((both + only_first) * (only_second + neither) * (both + only_second)
               * (only_first + neither))
    phi = ((both * neither - only_first * only_second) / math.sqrt(margins)) if margins else 0.0
    low = (p1 - p2) - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
                                    + (u2 - p2) ** 2))
    high = (p1 - p2) + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2)
                                     + (p2 - l2) ** 2))
    return max(-1.0, low), min(1.0, high)


def mcnemar_p(only_first: int, only_second: int) -> float:
    """McNemar's exact two-sided p on the discordant counts (a binomial test at 1/2); 1 when
    no image is discordant."""
    if only_first + only_second == 0:
        return 1.0
    return float(mcnemar([[0, only_first], [only_second, 0]], exact=True).pvalue)


def same_images(ce: pd.DataFrame, diff: pd.DataFrame, what: str) -> pd.DataFrame:
    """The two runs' per-image rows matched on (split, position, label); a DataError naming
    ``what`` when they did not attack the same images."""
    for name, frame in (("cross_entropy", ce), ("differential", diff)):
        if frame.duplicated(KEY).any():
            raise DataError(f"{what}: the {name} run lists an image twice")
    if set(map(tuple, ce[KEY].to_numpy())) != set(map(tuple, diff[KEY].to_numpy())):
        raise DataError(f"{what}: cross_entropy and differential attacked different images; "
                        "a paired test needs the same ones (same data.* and attack.*)")
    return ce.merge(diff, on=KEY, suffixes=("_ce", "_diff"), validate="one_to_one")


def pair_tests(ce: pd.DataFrame, diff: pd.DataFrame, radii, split: str, what: str) -> list[dict]:
    """Per attack and radius on ``split``: both accuracies as counts with Wilson intervals,
    differential minus CE with Newcombe's interval, the discordant images and McNemar's p."""
    matched = same_images(ce, diff, what)
    matched = matched[matched["split"] == split]
    n = len(matched)
    rows = []
    for attack, column in ATTACK_COLUMNS.items():
        for r in radii:
            a = matched[f"{column}_ce"].to_numpy(float) > r
            b = matched[f"{column}_diff"].to_numpy(float) > r
            both, only_ce, only_diff = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
            neither = n - both - only_ce - only_diff
            ce_low, ce_high = wilson(both + only_ce, n)
            df_low, df_high = wilson(both + only_diff, n)
            low, high = paired_interval(both, only_diff, only_ce, neither)
            rows.append({"attack": attack, "eps_255": r, "split": split, "images": n,
                         "ce_robust": both + only_ce, "diff_robust": both + only_diff,
                         "ce_low": ce_low, "ce_high": ce_high, "diff_low": df_low,
                         "diff_high": df_high, "only_ce": only_ce, "only_diff": only_diff,
                         "difference": (only_diff - only_ce) / n if n else math.nan,
                         "difference_low": low, "difference_high": high,
                         "mcnemar_p": mcnemar_p(only_ce, only_diff)})
    return rows


def bootstrap_mean(values: pd.Series, draws: int = BOOTSTRAP_DRAWS,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A 95% percentile interval of the mean of ``values`` by resampling them (the pairs) with
    replacement; NaN with fewer than two values."""
    values = np.asarray(pd.Series(values).dropna(), float)
    if len(values) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


IMAGE_COLUMNS = ["experiment", "data.classes", "loss", "seed", *KEY, *ATTACK_COLUMNS.values()]


def image_outcomes(per_image: pd.DataFrame) -> pd.DataFrame:
    """The attack stage's ``data/attack/per_image.csv`` reduced to what the paired tests read:
    each image's smallest fooling radius under the paper's PGD (the smaller of its two losses)
    and under the worst case over all attacks."""
    pgd = [c for c in per_image.columns if c.startswith("pgd_") and c.endswith("_min_eps_255")]
    needed = [*KEY, "worst_min_eps_255"]
    missing = [c for c in needed if c not in per_image.columns]
    if missing or not pgd:
        raise DataError(f"data/attack/per_image.csv: no column {', '.join(missing or ['pgd_*_min_eps_255'])}")
    return per_image[KEY].assign(paper_min_eps_255=per_image[pgd].min(axis=1),
                                 worst_min_eps_255=per_image["worst_min_eps_255"])


def image_tests(images: pd.DataFrame, radii, splits=("test", "train")) -> pd.DataFrame:
    """Per class pair and seed with both losses' per-image outcomes (``IMAGE_COLUMNS``): the
    paired per-image tests of ``pair_tests`` on each split. A pair and seed with more than one
    run of a loss is an error (two settings mixed)."""
    rows = []
    for (pair, seed), group in images.groupby(["data.classes", "seed"], sort=True):
        runs = group.groupby("loss")["experiment"].nunique()
        if runs.get("cross_entropy", 0) == 0 or runs.get("differential", 0) == 0:
            continue
        if runs.max() > 1:
            raise DataError(f"per-image outcomes: {pair} seed {seed} has several runs of one loss")
        ce = group[group["loss"] == "cross_entropy"]
        diff = group[group["loss"] == "differential"]
        for split in splits:
            for row in pair_tests(ce, diff, radii, split, f"{pair} seed {seed}"):
                rows.append({"classes": pair, "seed": int(seed),
                             "ce_experiment": ce["experiment"].iloc[0],
                             "diff_experiment": diff["experiment"].iloc[0], **row})
    return pd.DataFrame(rows)
