"""The generated verdict's wording follows its stated rules, on constructed study runs."""

import pandas as pd

from difftrain.report import verdict


def study(paper_diff, worst_diff, paper_ce=(0.05, 0.06, 0.07), worst_ce=(0.03, 0.04, 0.05)):
    """Three seeds of each loss at the study's setting, test accuracies under both attacks."""
    rows = []
    for loss, paper, worst in (("cross_entropy", paper_ce, worst_ce),
                               ("differential", paper_diff, worst_diff)):
        for seed, (p, w) in enumerate(zip(paper, worst)):
            rows.append({"loss": loss, "epochs": verdict.EPOCHS, "adversarial_eps": 0.0,
                         "seed": seed, "paper_test": p, "worst_test": w})
    return pd.DataFrame(rows)


def test_paper_attack_reproduces_and_the_worst_case_does_not():
    got, numbers = verdict._robust_row(study((0.2, 0.25, 0.3), (0.02, 0.05, 0.09)), None,
                                       "test", "8")
    assert got == "reproduced under the paper's PGD; does not survive the worst case"
    assert "paper's PGD 25.0% (20.0-30.0) vs CE 6.0% (5.0-7.0)" in numbers


def test_both_attacks_when_every_seed_is_above_every_ce_seed():
    got, _ = verdict._robust_row(study((0.2, 0.25, 0.3), (0.1, 0.11, 0.12)), None, "test", "8")
    assert got == "reproduced under both attacks"


def test_a_higher_mean_whose_seed_range_overlaps_does_not_count():
    # differential's mean is far above CE's (13% against 6%), but its lowest seed is below CE's top
    got, _ = verdict._robust_row(study((0.06, 0.13, 0.2), (0.03, 0.04, 0.05)), None, "test", "8")
    assert got == "not reproduced under either attack"
