"""Per-pair, image-by-image statistics on constructed tables, with values worked out by hand."""

import math

import pandas as pd
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from difftrain.core.errors import DataError
from difftrain.report import crossrun, paired


def test_mcnemar_exact_p_on_a_constructed_table_by_hand():
    # discordant 1 and 6: two-sided binomial at 1/2 over 7, 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    assert paired.mcnemar_p(1, 6) == pytest.approx(0.125)
    assert paired.mcnemar_p(6, 1) == pytest.approx(0.125)
    # 0 and 5: 2 / 32
    assert paired.mcnemar_p(0, 5) == pytest.approx(0.0625)
    assert paired.mcnemar_p(0, 0) == 1.0  # no discordant image: no evidence either way


def test_holm_on_three_p_values_by_hand():
    # sorted 0.01, 0.02, 0.04: 3 * 0.01 = 0.03, max(0.03, 2 * 0.02) = 0.04, max(0.04, 0.04) = 0.04
    adjusted = crossrun._holm(pd.Series([0.04, 0.01, 0.02, math.nan]))
    assert list(adjusted[:3]) == pytest.approx([0.04, 0.03, 0.04])
    assert math.isnan(adjusted[3])  # no test ran: no adjusted p


def test_wilson_interval_by_hand():
    # 5 of 20, z = 1.96: centre (5 + z^2/2) / (20 + z^2) = 0.2902..., half-width
    # z / (20 + z^2) * sqrt(5 * 15 / 20 + z^2 / 4) = 0.1784...
    low, high = paired.wilson(5, 20)
    assert (low, high) == pytest.approx((0.11186, 0.46870), abs=1e-5)
    assert all(math.isnan(v) for v in paired.wilson(0, 0))


def test_paired_interval_is_newcombes_independent_one_when_the_table_is_uncorrelated():
    # a d = b c (4 * 3 = 2 * 6): phi = 0, and method 10 reduces to Newcombe's hybrid score
    # interval for independent proportions (statsmodels' "newcomb"), with p1 = 6/15, p2 = 10/15
    low, high = paired.paired_interval(4, 2, 6, 3)
    expected = confint_proportions_2indep(6, 15, 10, 15, method="newcomb", compare="diff")
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    # positive correlation narrows it: the same margins, more concordant images
    narrow = paired.paired_interval(6, 0, 4, 5)
    assert narrow[1] - narrow[0] < high - low
    assert narrow[0] < (6 - 10) / 15 < narrow[1]


def images(outcomes, split="test"):
    """Per-image rows from (paper, worst) smallest fooling radii."""
    return pd.DataFrame([{"split": split, "position": i, "label": i % 2,
                          "paper_min_eps_255": p, "worst_min_eps_255": w}
                         for i, (p, w) in enumerate(outcomes)])


def test_pair_tests_count_images_so_ties_are_ties():
    # 10 images; at 4/255 CE robust on 0-3, differential on 2-7: both 2, only CE 2, only diff 4
    ce = images([(8, 8)] * 4 + [(2, 2)] * 6)
    diff = images([(2, 2)] * 2 + [(8, 8)] * 6 + [(2, 2)] * 2)
    rows = {(r["attack"], r["eps_255"]): r
            for r in paired.pair_tests(ce, diff, [1, 2, 4], "test", "t")}
    row = rows[("worst", 4)]
    assert (row["ce_robust"], row["diff_robust"], row["only_ce"], row["only_diff"]) == (4, 6, 2, 4)
    assert row["difference"] == pytest.approx(0.2)
    assert row["mcnemar_p"] == pytest.approx(2 * (1 + 6 + 15) / 64)  # binomial(6), k <= 2
    # at 1/255 no image of either is fooled (the smallest fooling radius is 2): a tie, p = 1
    tie = rows[("worst", 1)]
    assert (tie["only_ce"], tie["only_diff"], tie["difference"], tie["mcnemar_p"]) == (0, 0, 0.0, 1.0)
    # at 2/255, the smallest fooling radius itself, those images are fooled: robust means above it
    edge = rows[("worst", 2)]
    assert (edge["ce_robust"], edge["diff_robust"]) == (4, 6)


def test_pair_tests_refuse_runs_that_attacked_different_images():
    ce = images([(8, 8)] * 4)
    diff = images([(8, 8)] * 4).assign(position=[0, 1, 2, 9])
    with pytest.raises(DataError, match="attacked different images"):
        paired.pair_tests(ce, diff, [4], "test", "cat/dog seed 1")


def test_image_outcomes_take_the_paper_pgd_as_the_smaller_of_its_two_losses():
    table = pd.DataFrame({"split": ["test"], "position": [3], "label": [1],
                          "pgd_cross_entropy_min_eps_255": [8.0],
                          "pgd_margin_min_eps_255": [4.0], "worst_min_eps_255": [2.0]})
    out = paired.image_outcomes(table)
    assert out.iloc[0]["paper_min_eps_255"] == 4.0 and out.iloc[0]["worst_min_eps_255"] == 2.0
    with pytest.raises(DataError, match="worst_min_eps_255"):
        paired.image_outcomes(table.drop(columns="worst_min_eps_255"))


def test_bootstrap_interval_is_seeded_and_holds_the_mean():
    values = pd.Series([0.1, -0.05, 0.2, 0.0, 0.15])
    first = paired.bootstrap_mean(values)
    assert first == paired.bootstrap_mean(values)  # same table, same interval
    assert first[0] < values.mean() < first[1]
    assert first[0] >= values.min() and first[1] <= values.max()
    assert all(math.isnan(v) for v in paired.bootstrap_mean(pd.Series([0.1])))


def test_records_keep_runs_made_elsewhere_and_replace_what_is_rerun():
    key = dict(zip(crossrun.RUN_KEY, ["cat/dog", "cross_entropy", 0, 200, 200, 30]))
    recorded = pd.DataFrame([{**key, "experiment": "", "worst_test_eps4": 0.1},
                             {**key, "seed": 1, "experiment": "old", "worst_test_eps4": 0.2}])
    here = pd.DataFrame([{**key, "seed": 1, "experiment": "new", "worst_test_eps4": 0.3}])
    merged = crossrun.run_records(here, recorded)
    assert list(merged["experiment"].fillna("")) == ["", "new"]
    assert list(merged["worst_test_eps4"]) == [0.1, 0.3]


def test_each_pair_names_the_machines_that_made_its_runs():
    # the same seed trains another model on another CPU kind or thread count: the table says so
    runs = pd.DataFrame({"cpu_capability": ["AVX512", "AVX512", "AVX2", None],
                         "torch_threads": [1, 1.0, 2, None]})
    assert crossrun._machines(runs) == ("AVX2, 2 threads: 1; AVX512, 1 thread: 2; "
                                        "not recorded: 1")
