from pathlib import Path

import pandas as pd
import pytest

from difftrain.report import plots as P
from difftrain.report import summary as S
from difftrain.report import tables as T
from difftrain.core.errors import DataError


def _write(tmp_path, name, table):
    path = tmp_path / name
    table.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",")
    return path


def _accuracy(split):
    return pd.DataFrame({"attack": "worst", "split": split,
                         "eps": [0, 1, 2, 4], "accuracy": [0.9, 0.6, 0.2, 0.0]})


def test_every_figure_is_drawn_from_small_synthetic_tables(tmp_path):
    acc = T.read_tables([_write(tmp_path, f"a_{s}.csv", _accuracy(s)) for s in ("train", "test")],
                        ["eps", "accuracy", "split"])
    pca = pd.DataFrame({"component": list(range(1, 85)) * 2,
                        "cumulative_explained_variance": [min(1, k / 20) for k in range(1, 85)] * 2,
                        "split": ["train"] * 84 + ["test"] * 84})
    margins = pd.DataFrame({"split": ["train"] * 50 + ["test"] * 50,
                            "margin": [i / 10 - 1 for i in range(100)]})
    for name in ("loss", "train_accuracy", "test_accuracy"):
        _write(tmp_path, f"{name}.tsv", pd.DataFrame({"step": [0, 1, 2], name: [0.5, 0.3, 0.2]}))
    log = T.read_training_log(tmp_path)
    assert log["epoch"].tolist() == [1, 2, 3]

    P.accuracy_curves(acc, tmp_path / "pgd.png", "PGD", "epsilon (Linf, /255)")
    P.pca_curve(pca, tmp_path / "pca.png", "PCA")
    P.margin_histogram(margins, tmp_path / "margins.png", "margins")
    P.training_curves(log, tmp_path / "training.png", "training")
    for name in ("pgd", "pca", "margins", "training"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_missing_column_is_named_with_the_file(tmp_path):
    path = _write(tmp_path, "worst_train.csv", _accuracy("train").drop(columns="accuracy"))
    with pytest.raises(DataError, match=r"worst_train.csv: missing column\(s\) accuracy"):
        T.read_table(path, ["eps", "accuracy", "split"])
    with pytest.raises(DataError, match="absent.csv: plot table not found"):
        T.read_table(tmp_path / "absent.csv", ["eps"])
    _write(tmp_path, "loss.tsv", pd.DataFrame({"epoch": [1], "loss": [0.1]}))
    with pytest.raises(DataError, match="loss.tsv: missing column"):
        T.read_training_log(tmp_path)


def _attack_metrics(paper: float, worst: float) -> dict:
    curve = {"eps0": {"accuracy": 1.0}, "eps8": {"accuracy": worst}}
    l2 = {"eps0": {"accuracy": 1.0}, "eps0_5": {"accuracy": 0.3}}
    flags = {f: False for f in ("suspect_gradient_masking", "paper_attack_overstates",
                                "blackbox_beats_whitebox", "not_converged", "cw_overstates_l2")}
    return {s: {"worst": curve, "pgd": {"eps0": {"accuracy": 1.0}, "eps8": {"accuracy": paper}},
                "l2_worst": l2, "cw": {**l2, "eps0_5": {"accuracy": 0.4}},
                "median_l2": {"worst": 0.3, "cw": 0.35}, "soundness": dict(flags),
                "mechanism": {"first_order_margin_median_255": 2.0, "gradient_l1_median": 9.0,
                              "margin_radius_spearman": 0.5}}
            for s in ("train", "test")}


def test_headline_reports_the_worst_case_beside_the_paper_attack_and_names_a_missing_epsilon():
    attack = _attack_metrics(paper=0.5, worst=0.1)
    attack["test"]["soundness"]["paper_attack_overstates"] = True
    train = {"test_accuracy": 0.9, "train_accuracy": 1.0}
    features = {"train": {"components_90": 1, "components_95": 2, "components_99": 3, "numerical_rank": 5, "effective_rank": 2.5}, "optimum": {"margin_ratio": 0.7}}
    summary = S.headline(train, features, attack, 8, 0.5)
    assert summary["robust_test_accuracy_at_8"] == 0.1 and summary["pgd_test_accuracy_at_8"] == 0.5
    assert summary["l2_test_accuracy_at_l2_0_5"] == 0.3 and summary["cw_test_accuracy_at_l2_0_5"] == 0.4
    assert summary["paper_attack_overstates"] is True and summary["not_converged"] is False
    assert summary["first_order_margin_test_median"] == 2.0
    assert [summary[f"feature_components_{t}"] for t in (90, 95, 99)] == [1, 2, 3]
    with pytest.raises(DataError, match="no worst accuracy at epsilon 4 .*plot.headline_eps_255"):
        S.headline(train, features, attack, 4, 0.5)


def test_headline_gains_the_certified_end_of_the_interval_and_refuses_a_bad_one(tmp_path):
    attack = _attack_metrics(paper=0.5, worst=0.1)
    train = {"test_accuracy": 0.9, "train_accuracy": 1.0}
    features = {"train": {"components_90": 1, "components_95": 2, "components_99": 3, "numerical_rank": 5, "effective_rank": 2.5}, "optimum": {"margin_ratio": 0.7}}
    certify = {s: {"certified": {"eps0": {"accuracy": 0.9}, "eps8": {"accuracy": 0.04}}}
               for s in ("train", "test")}
    certify["train"]["certified"]["eps8"]["accuracy"] = 0.3  # each split reads its own
    summary = S.headline(train, features, attack, 8, 0.5, certify)
    assert summary["certified_test_accuracy_at_8"] == 0.04
    assert summary["certified_train_accuracy_at_8"] == 0.3
    certify["test"]["certified"]["eps8"]["accuracy"] = 1.5
    with pytest.raises(DataError, match="metrics/certify.json.*test.certified.eps8.accuracy"):
        S.headline(train, features, attack, 8, 0.5, certify)
    # the Linf figure shades each split's interval
    acc = pd.concat([_accuracy("train"), _accuracy("test")])
    band = pd.DataFrame({"split": ["test"] * 3, "eps": [0, 4, 8], "certified": [0.9, 0.2, 0.0],
                         "worst": [0.9, 0.5, 0.1]})
    P.accuracy_curves(acc, tmp_path / "linf.png", "Linf", "epsilon", band)
    assert (tmp_path / "linf.png").stat().st_size > 0


def test_every_accuracy_curve_dvc_plots_draws_has_a_label_and_a_line_style():
    """The Linf and L2 figures name each curve by CURVE_LABEL and draw it with CURVE_STYLE: an
    attack table the pipeline declares without both would be drawn unnamed or fail to draw."""
    import yaml
    from conftest import REPO
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    files = [name for entry in plots if isinstance(entry, dict) for spec in entry.values()
             if isinstance(spec, dict) for name in spec.get("y", {})]
    declared = {Path(name).stem.rsplit("_", 1)[0] for name in files if name.startswith("plots/attack/")}
    assert declared and declared <= set(P.CURVE_LABEL) == set(P.CURVE_STYLE), declared
