"""The study command: grouping and averaging experiments (hand-made), and its errors."""

import math

import pandas as pd
import pytest

from difftrain.report import study
from difftrain.core.errors import DataError


def _row(name, loss, epochs, seed, worst, eps=0.0, classes="airplane/horse", headline=8.0,
         **extra):
    metrics = {column: 0.0 for column in study.METRICS}
    metrics.update(worst_test=worst, clean_test_accuracy=0.9 + seed / 100, **extra)
    params = {key: 0 for key in study.PARAMS}
    params.update({"loss": loss, "train.adversarial.eps": eps, "train.epochs": epochs,
                   "seed": seed, "data.classes": classes, "plot.headline_eps_255": headline})
    return {"experiment": name, **params, "headline_eps_255": headline, **metrics,
            **{flag: flag == "paper_attack_overstates" and seed == 1 for flag in study.FLAGS}}


def test_groups_by_every_parameter_that_differs_and_averages_over_seeds():
    table = pd.DataFrame([
        _row("a", "cross_entropy", 30, 0, 0.10), _row("b", "cross_entropy", 30, 1, 0.20),
        _row("c", "cross_entropy", 30, 2, 0.60), _row("d", "cross_entropy", 10, 0, 0.05),
        _row("e", "cross_entropy", 30, 0, 0.40, eps=8.0), _row("f", "differential", 30, 0, 0.07),
    ])
    by = study.grouping(table)
    assert by == ["loss", "train.epochs", "train.adversarial.eps"]  # params.yaml's order
    summary = study.aggregate(table, by).set_index(by)
    assert len(summary) == 4
    ce30 = summary.loc[("cross_entropy", 30, 0.0)]
    assert ce30["n_seeds"] == 3 and ce30["seeds"] == "0 1 2"
    assert ce30["worst_test_mean"] == pytest.approx(0.3)
    assert (ce30["worst_test_min"], ce30["worst_test_max"]) == (0.10, 0.60)
    assert ce30["clean_test_accuracy_mean"] == pytest.approx(0.91)
    assert ce30["paper_attack_overstates"] == 1  # seeds that raised the flag
    control = summary.loc[("cross_entropy", 30, 8.0)]
    assert control["n_seeds"] == 1 and control["worst_test_mean"] == 0.40
    assert summary.loc[("differential", 30, 0.0)]["worst_test_max"] == 0.07


def test_runs_of_different_class_pairs_or_headline_radii_are_not_averaged_as_seeds():
    # the case that went wrong: an airplane/horse and a ship/truck run with the same seed
    table = pd.DataFrame([_row("a", "cross_entropy", 30, 1, 0.10),
                          _row("b", "cross_entropy", 30, 1, 0.30, classes="ship/truck"),
                          _row("c", "cross_entropy", 30, 2, 0.50, classes="ship/truck")])
    assert study.grouping(table) == ["data.classes"]
    summary = study.aggregate(table).set_index("data.classes")
    assert summary.loc["airplane/horse", "seeds"] == "1"
    assert summary.loc["ship/truck", "seeds"] == "1 2"
    assert summary.loc["ship/truck", "worst_test_mean"] == pytest.approx(0.40)
    lines = study.markdown(summary.reset_index(), ["data.classes"], "8").splitlines()
    assert lines[0].startswith("| data.classes | seeds |")  # the grouping column is named
    radii = pd.DataFrame([_row("a", "cross_entropy", 30, 0, 0.1),
                          _row("b", "cross_entropy", 30, 1, 0.3, headline=4.0)])
    assert study.grouping(radii) == ["plot.headline_eps_255"]
    assert study.headline_label(radii) == "headline"


def test_seeds_of_every_section_are_averaged_over_not_grouped_by():
    a, b = _row("a", "differential", 30, 0, 0.1), _row("b", "differential", 30, 0, 0.3)
    b["attack.seed"], b["data.seed"] = 5, 3
    assert study.grouping(pd.DataFrame([a, b])) == []
    summary = study.aggregate(pd.DataFrame([a, b]))
    assert len(summary) == 1 and summary.loc[0, "n_seeds"] == 2


def test_a_missing_metric_is_nan_not_zero_and_the_figure_is_drawn(tmp_path):
    table = pd.DataFrame([_row("a", "differential", 10, 0, 0.1, margin_ratio=math.nan),
                          _row("b", "differential", 30, 0, 0.2, margin_ratio=0.5)])
    summary = study.aggregate(table)
    assert math.isnan(summary.loc[0, "margin_ratio_mean"]) and summary.loc[1, "margin_ratio_mean"] == 0.5
    study.draw(summary, ["train.epochs"], tmp_path / "study.png", "8")
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"


EXP_SHOW = [{"Experiment": None, "rev": "workspace"},
            {"Experiment": "exp-1", "State": "Success", "params.yaml:loss": "differential",
             "metrics/train.json:loss": "differential", "train.epochs": 4.0, "seed": 0.0,
             "train.adversarial.eps": 0.0, "plot.headline_eps_255": 8.0,
             "data.classes": ["cat", "dog"], "robust_test_accuracy_at_8": 0.25,
             "clean_test_accuracy": 0.9, "paper_attack_overstates": "True",
             "not_converged": "False"},
            {"Experiment": "exp-2", "State": "Failed"},
            {"Experiment": "exp-3", "State": "Success", "loss": "differential",
             "train.epochs": "thirty", "seed": 0.0, "plot.headline_eps_255": 8.0},
            {"Experiment": "exp-4", "State": "Success", "loss": "differential",
             "train.epochs": 4.0, "seed": 1.0, "plot.headline_eps_255": 8.0,
             "robust_test_accuracy_at_8": 1.7}]


def test_exp_show_rows_are_read_by_name_and_unreadable_experiments_are_left_out_named(monkeypatch):
    # as dvc.api.exp_show gives them: numbers as floats, booleans as strings
    monkeypatch.setattr(study.dvc.api, "exp_show", lambda repo, revs: EXP_SHOW)
    warnings = []
    table = study.experiments(warn=warnings.append)
    assert table["experiment"].tolist() == ["exp-1"]
    row = table.iloc[0]
    assert (row["loss"], row["train.epochs"], row["worst_test"]) == ("differential", 4, 0.25)
    assert row["data.classes"] == "cat/dog"
    assert bool(row["paper_attack_overstates"]) and not bool(row["not_converged"])
    assert math.isnan(row["margin_ratio"])
    assert any("exp-3" in w and "train.epochs is 'thirty'" in w for w in warnings)
    assert any("exp-4" in w and "robust_test_accuracy_at_8 must be an accuracy in [0, 1]" in w
               for w in warnings)
    with pytest.raises(DataError, match="no finished difftrain experiment named nope"):
        study.experiments(names=["exp-1", "nope"], warn=warnings.append)
    with pytest.raises(DataError, match=r"named exp-2 .*not finished: exp-2 \(Failed\)"):
        study.experiments(names=["exp-2"], warn=warnings.append)


def test_the_markdown_table_shows_mean_and_seed_range_in_percent_and_counts_flags():
    table = pd.DataFrame([
        _row("a", "cross_entropy", 30, 0, 0.10), _row("b", "cross_entropy", 30, 1, 0.20),
        _row("c", "cross_entropy", 30, 2, 0.60),
        _row("d", "differential", 10, 0, 0.05, margin_ratio=math.nan),
    ])
    by = study.grouping(table)
    lines = study.markdown(study.aggregate(table, by), by, "8").splitlines()
    assert lines[0].startswith("| loss | train.epochs | seeds |")
    assert "worst case, test, 8/255 %" in lines[0] and len(lines) == 4
    ce = lines[2].split(" | ")  # groups sorted by loss: cross_entropy first
    assert ce[:3] == ["| cross_entropy", "30", "0 1 2"]
    assert ce[3] == "91.0 (90.0-92.0)"            # clean accuracy, %
    assert ce[5] == "30.0 (10.0-60.0)"            # worst case at 8/255, mean (min-max), %
    assert lines[2].endswith("paper_attack_overstates 1/3 |")
    diff = lines[3].split(" | ")
    assert diff[3] == "90.0" and diff[9] == "n/a"  # one seed: no range; undefined ratio: n/a
    assert lines[3].endswith("| none |")


def test_compare_says_an_experiment_failed_instead_of_a_dvc_error(monkeypatch):
    from difftrain.report import compare

    def no_file(*args, **kwargs):
        raise FileNotFoundError("no such file in the experiment")

    monkeypatch.setattr(compare.dvc.api, "open", no_file)
    monkeypatch.setattr(compare.dvc.api, "exp_show", lambda repo: EXP_SHOW)
    with pytest.raises(DataError, match=r"experiment exp-2 did not finish \(state: Failed\)"):
        compare.read_at("plots/attack/worst_test.csv", "exp-2")
    with pytest.raises(DataError, match="plots/attack/worst_test.csv at exp-1: cannot read it"):
        compare.read_at("plots/attack/worst_test.csv", "exp-1")


def test_rev_repeats_for_a_grid_run_at_several_commits(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(study.dvc.api, "exp_show",
                        lambda repo, revs: asked.append(revs) or EXP_SHOW)
    study.main(["--all", "--rev", "abc", "--rev", "def", "--out", str(tmp_path / "s.png")])
    assert asked == [["abc", "def"]]


def test_two_experiments_with_identical_parameters_and_seed_are_one_measurement_not_two_seeds():
    table = pd.DataFrame([_row("b", "cross_entropy", 30, 0, 0.10), _row("a", "cross_entropy", 30, 0, 0.30),
                          _row("c", "cross_entropy", 30, 1, 0.20)])
    warnings = []
    kept = study.once_per_setting(table, warnings.append)
    assert sorted(kept["experiment"]) == ["a", "c"]  # the first by name of the two seed-0 runs
    assert warnings == ["warning: b repeats the parameters and seed of a: counted once, as a"]
    summary = study.aggregate(kept, ["loss"]).iloc[0]
    assert summary["n_seeds"] == 2 and summary["seeds"] == "0 1"
