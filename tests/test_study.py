"""The study command: grouping and averaging experiments (hand-made), and its errors."""

import math

import pandas as pd
import pytest

from difftrain import study
from difftrain.errors import DataError


def _row(name, loss, epochs, seed, worst, eps=0.0, **extra):
    metrics = {column: 0.0 for column in study.METRICS}
    metrics.update(worst_test=worst, clean_test_accuracy=0.9 + seed / 100, **extra)
    return {"experiment": name, "loss": loss, "adversarial_eps": eps, "epochs": epochs,
            "seed": seed, "headline_eps_255": 8.0, **metrics,
            **{flag: flag == "paper_attack_overstates" and seed == 1 for flag in study.FLAGS}}


def test_groups_by_loss_adversarial_eps_and_epochs_and_averages_over_seeds():
    table = pd.DataFrame([
        _row("a", "cross_entropy", 30, 0, 0.10), _row("b", "cross_entropy", 30, 1, 0.20),
        _row("c", "cross_entropy", 30, 2, 0.60), _row("d", "cross_entropy", 10, 0, 0.05),
        _row("e", "cross_entropy", 30, 0, 0.40, eps=8.0), _row("f", "differential", 30, 0, 0.07),
    ])
    summary = study.aggregate(table).set_index(study.GROUP)
    assert len(summary) == 4
    ce30 = summary.loc[("cross_entropy", 0.0, 30)]
    assert ce30["n_seeds"] == 3 and ce30["seeds"] == "0 1 2"
    assert ce30["worst_test_mean"] == pytest.approx(0.3)
    assert (ce30["worst_test_min"], ce30["worst_test_max"]) == (0.10, 0.60)
    assert ce30["clean_test_accuracy_mean"] == pytest.approx(0.91)
    assert ce30["paper_attack_overstates"] == 1  # seeds that raised the flag
    control = summary.loc[("cross_entropy", 8.0, 30)]
    assert control["n_seeds"] == 1 and control["worst_test_mean"] == 0.40
    assert summary.loc[("differential", 0.0, 30)]["worst_test_max"] == 0.07


def test_a_missing_metric_is_nan_not_zero_and_the_figure_is_drawn(tmp_path):
    table = pd.DataFrame([_row("a", "differential", 10, 0, 0.1, margin_ratio=math.nan),
                          _row("b", "differential", 30, 0, 0.2, margin_ratio=0.5)])
    summary = study.aggregate(table)
    assert math.isnan(summary.loc[0, "margin_ratio_mean"]) and summary.loc[1, "margin_ratio_mean"] == 0.5
    study.draw(summary, tmp_path / "study.png", 8.0)
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_exp_show_rows_are_read_by_column_name_with_or_without_the_file_prefix(monkeypatch):
    # as dvc.api.exp_show gives them: numbers as floats, booleans as strings
    rows = [{"Experiment": None, "rev": "workspace"},
            {"Experiment": "exp-1", "State": "Success", "params.yaml:loss": "differential",
             "metrics/train.json:loss": "differential", "train.epochs": 4.0, "seed": 0.0,
             "train.adversarial.eps": 0.0, "plot.headline_eps_255": 8.0,
             "robust_test_accuracy_at_8": 0.25, "clean_test_accuracy": 0.9,
             "paper_attack_overstates": "True", "not_converged": "False"},
            {"Experiment": "exp-2", "State": "Failed"}]
    monkeypatch.setattr(study.dvc.api, "exp_show", lambda repo, revs: rows)
    table = study.experiments()
    assert table["experiment"].tolist() == ["exp-1"]
    row = table.iloc[0]
    assert (row["loss"], row["epochs"], row["worst_test"]) == ("differential", 4, 0.25)
    assert bool(row["paper_attack_overstates"]) and not bool(row["not_converged"])
    assert math.isnan(row["margin_ratio"])
    with pytest.raises(DataError, match="no finished difftrain experiment named nope"):
        study.experiments(names=["exp-1", "nope"])


def test_the_markdown_table_shows_mean_and_seed_range_in_percent_and_counts_flags():
    table = pd.DataFrame([
        _row("a", "cross_entropy", 30, 0, 0.10), _row("b", "cross_entropy", 30, 1, 0.20),
        _row("c", "cross_entropy", 30, 2, 0.60),
        _row("d", "differential", 10, 0, 0.05, margin_ratio=math.nan),
    ])
    lines = study.markdown(study.aggregate(table), 8.0).splitlines()
    assert "worst case, test, 8/255 %" in lines[0] and len(lines) == 4
    ce = lines[2].split(" | ")  # groups sorted by loss: cross_entropy first
    assert ce[:4] == ["| cross_entropy", "0", "30", "0 1 2"]
    assert ce[4] == "91.0 (90.0-92.0)"            # clean accuracy, %
    assert ce[6] == "30.0 (10.0-60.0)"            # worst case at 8/255, mean (min-max), %
    assert lines[2].endswith("paper_attack_overstates 1/3 |")
    diff = lines[3].split(" | ")
    assert diff[4] == "90.0" and diff[10] == "n/a"  # one seed: no range; undefined ratio: n/a
    assert lines[3].endswith("| none |")
