"""The DVC wiring, end to end on tiny generated data in a temporary git repository."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO, TINY, make_project, set_params, sh

pytestmark = pytest.mark.slow

FIGURES = {
    "plots/figures": ["margins.png", "pca.png", "robust_l2.png", "robust_linf.png", "training.png"],
    "plots/theory_figures": ["fig1_linear.png", "fig3_network.png", "remark1.png",
                             "theorem2_angles.png"],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project with tiny data, after one `dvc repro`."""
    repo = make_project(tmp_path_factory.mktemp("project"))
    sh("dvc", "repro", cwd=repo)
    return repo


def test_dag_and_declared_files_exist(project):
    dag = sh("dvc", "dag", "--dot", cwd=project)
    for edge in ('"prepare" -> "pairs"', '"pairs" -> "train"', '"train" -> "features"',
                 '"train" -> "attack"', '"attack" -> "plot"', '"features" -> "plot"'):
        assert edge in dag, dag
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for stage in spec["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            assert (project / (entry if isinstance(entry, str) else next(iter(entry)))).exists()
    for plot in spec.get("plots", []):
        if isinstance(plot, str):  # a folder of images
            assert sorted(p.name for p in (project / plot).iterdir()) == FIGURES[plot]
            continue
        for path in next(iter(plot.values()))["y"]:
            assert (project / path).is_file(), path
    certify = json.loads((project / "metrics" / "certify.json").read_text())
    # CROWN only on certify.crown_splits (test), within its budget of 1; the cheap bounds on both
    assert certify["train"]["tried"] == {"ibp": certify["train"]["tried"]["ibp"], "crown_ibp":
                                         certify["train"]["tried"]["crown_ibp"]}
    assert certify["test"]["tried"].get("crown", 0) <= 1 and certify["train"]["tried"]["ibp"] > 0
    assert (project / "data" / "certify" / "attempts.csv").is_file()
    rank = (project / "dvclive/train/plots/metrics/components_99.tsv").read_text().splitlines()
    assert len(rank) == 1 + TINY["train"]["epochs"]  # train.rank_every 1: a row an epoch
    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project))
    assert metrics  # dvc reads every declared metrics file
    assert "CIFAR-10" in (project / "metrics" / "prepare.json").read_text()
    theorem1 = json.loads((project / "metrics" / "features.json").read_text())["theorem1"]
    assert {"subspace_dim", "residual_rms", "offset", "svm_margin", "head", "ce_limit"} <= set(theorem1)
    theory = json.loads((project / "metrics" / "theory.json").read_text())["linear"]["theorem1"]
    assert theory["ce"]["holds"] and theory["ce_limit"]["holds"]


def test_changing_one_section_reruns_only_what_depends_on_it(project):
    assert "up to date" in sh("dvc", "status", cwd=project).lower()
    # `dvc status` lists the stages whose own inputs changed (the changes accumulate here).
    set_params(project, features={"rank_tol": 0.01})
    assert set(json.loads(sh("dvc", "status", "--json", cwd=project))) == {"features"}
    set_params(project, attack={**TINY["attack"], "seed": 1})
    assert set(json.loads(sh("dvc", "status", "--json", cwd=project))) == {"features", "attack"}
    set_params(project, train={**TINY["train"], "lr": 0.002})
    status = sh("dvc", "status", "--json", cwd=project)
    assert set(json.loads(status)) == {"attack", "features", "train"}
    set_params(project, pairs={**TINY["pairs"], "seed": 5})
    assert set(json.loads(sh("dvc", "status", "--json", cwd=project))) == {"attack", "features", "pairs", "train"}
    set_params(project, data={**TINY["data"], "seed": 3})
    assert set(json.loads(sh("dvc", "status", "--json", cwd=project))) == {"attack", "features", "prepare", "pairs", "train"}


def test_a_stage_refuses_a_model_from_other_params(project):
    set_params(project, train={**TINY["train"], "lr": 0.005})
    result = subprocess.run([sys.executable, "stages/features.py"], cwd=project,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "models/model.safetensors was trained with other parameters" in result.stderr
    assert "train.lr: file has 0.001, params.yaml has 0.005" in result.stderr


@pytest.mark.ci  # heavy end-to-end: .ci/run runs it, make test does not
def test_queued_grid_comparison_and_study(tmp_path):
    """The README's workflows, command by command: a queued grid of two, DVC's comparisons, the
    compare figure, and the study reproducing a table from the experiments alone."""
    repo = make_project(tmp_path / "project", commit_data=True)
    sh("dvc", "exp", "run", "--queue", "-S", "loss=cross_entropy,differential",
       "-S", "train.epochs=2", cwd=repo)
    sh("dvc", "queue", "start", "-j", "1", cwd=repo)
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status + sh("dvc", "queue", "logs", status.split()[-1], cwd=repo)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo))
    exps = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            params = exp["revs"][0]["data"]["params"]["params.yaml"]["data"]
            exps[params["loss"], params["train"]["epochs"]] = exp["name"]
    assert set(exps) == {(loss, 2) for loss in ("cross_entropy", "differential")}
    ce, diff = exps["cross_entropy", 2], exps["differential", 2]
    metrics = json.loads(sh("dvc", "metrics", "diff", ce, diff, "--all", "--json", cwd=repo))
    assert "robust_test_accuracy_at_8" in metrics["metrics/summary.json"]
    plots = json.loads(sh("dvc", "plots", "diff", ce, diff, "--json", "--split", cwd=repo))
    for plot_id in ("linf_accuracy", "l2_accuracy", "pca_cumulative_variance"):
        revisions = {rev for entry in plots["data"][plot_id] for rev in entry["revisions"]}
        assert revisions == {ce, diff}, (plot_id, plots["data"][plot_id])
    sh(sys.executable, "-m", "difftrain.compare", ce, diff, "--out", "compare.png", cwd=repo)
    assert (repo / "compare.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(repo / "compare.csv")
    assert table["experiment"].nunique() == 2 and set(table["split"]) == {"train", "test"}

    sh(sys.executable, "-m", "difftrain.study", "--all", "--out", "study.png", cwd=repo)
    summary = pd.read_csv(repo / "study.csv")
    assert len(summary) == 2 and set(summary["n_seeds"]) == {1}
    runs = pd.read_csv(repo / "study_runs.csv").set_index("experiment")
    for (loss, epochs), name in exps.items():
        row = summary[summary["loss"] == loss].iloc[0]  # the only parameter that differs
        assert row["worst_test_mean"] == runs.loc[name, "worst_test"]
    diffed = metrics["metrics/summary.json"]["robust_test_accuracy_at_8"]
    assert runs.loc[ce, "worst_test"] == diffed["old"] and runs.loc[diff, "worst_test"] == diffed["new"]
    for flag in ("paper_attack_overstates", "suspect_gradient_masking"):  # booleans survive too
        diffed = metrics["metrics/summary.json"][flag]
        assert [bool(runs.loc[ce, flag]), bool(runs.loc[diff, flag])] == [diffed["old"], diffed["new"]]
