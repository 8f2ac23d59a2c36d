"""docs/results.md's generated airplane/horse blocks: their words follow the seed rule and their
numbers follow the committed CSVs (changed here by hand, the expected text worked out by hand)."""

import pandas as pd

from conftest import REPO
from difftrain.report import airplane_horse, pages


def _frames():
    return (pd.read_csv(REPO / pages.STUDY), pd.read_csv(REPO / pages.STUDY_RUNS),
            pd.read_csv(REPO / pages.COMPARE))


def _bullet(text, start):
    return next(line for line in text.splitlines() if line.startswith(start))


def test_the_robustness_word_follows_the_seed_ranges_of_both_attacks():
    summary, runs, compare = _frames()
    test = "* **Robustness on test images (Fig. 4): "
    # committed: the paper's PGD separates the seeds, the worst case does not
    assert _bullet(airplane_horse.findings(summary, runs, compare), test).startswith(
        test + "reproduced under the paper's PGD; does not survive the worst case**")
    # every differential seed at 30 epochs lifted above every CE seed under the worst case
    diff30 = (runs["loss"] == "differential") & (runs["epochs"] == 30) & (runs["adversarial_eps"] == 0)
    ce_max = runs[(runs["loss"] == "cross_entropy") & (runs["epochs"] == 30)
                  & (runs["adversarial_eps"] == 0)]["worst_test"].max()
    runs.loc[diff30, "worst_test"] = ce_max + 0.01
    assert _bullet(airplane_horse.findings(summary, runs, compare), test).startswith(
        test + "reproduced under both attacks**")
    # one differential seed below CE's best: the ranges overlap, the paper's PGD no longer counts
    runs.loc[diff30.idxmax(), "paper_test"] = 0.0
    assert "reproduced under the worst case only" in _bullet(
        airplane_horse.findings(summary, runs, compare), test)


def test_the_run_table_reads_the_curves_and_the_largest_lead():
    summary, runs, compare = _frames()
    ce = (compare["experiment"].str.startswith("ce-e30-s0 ") & (compare["split"] == "test")
          & (compare["eps"] == 16))
    compare.loc[ce & (compare["attack"] == "paper_pgd"), "accuracy"] = 0.5
    compare.loc[ce & (compare["attack"] == "worst"), "accuracy"] = 0.125
    row = next(line for line in airplane_horse.runs_table(compare, runs).splitlines()
               if line.startswith("| ce-e30-s0 "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4] == "50.0 / 12.5"  # 16/255 test: paper's PGD / worst case
    assert cells[-1].endswith("(37.5 test at 16/255; 4.0 train at 4/255)")
