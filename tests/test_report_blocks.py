"""The generated blocks for the certified intervals, Fig. 2 and the intervention: their numbers
and verdicts follow the records, worked out by hand here."""

import math

import pandas as pd
import pytest

from difftrain.core.errors import DataError
from difftrain.report import fig2, intervals, theory


def interval_run(loss, adversarial, certified, worst):
    row = {"loss": loss, "train.adversarial.eps": adversarial,
           "certified_but_fooled": 0.0, "bound_violations": 0.0,
           "certify_unstable_eps0_5": 1200.0, "certify_unstable_eps1": 2100.0}
    for r, c, w in zip(intervals.RADII, certified, worst):
        row[f"certified_test_eps{r:g}"], row[f"certify_worst_test_eps{r:g}"] = c, w
    for m in intervals.METHODS:
        row[f"certify_{m}_decided"], row[f"certify_{m}_tried"] = 3.0, 10.0
        row[f"certify_{m}_seconds"] = 1.5 if m != "milp" else math.nan
    return row


def test_the_interval_table_and_whether_a_certificate_separates_the_losses():
    ce = interval_run("cross_entropy", 0, [0.40, 0.10, 0, 0, 0], [0.90, 0.84, 0.65, 0.28, 0.03])
    df = interval_run("differential", 0, [0.30, 0.05, 0, 0, 0], [0.85, 0.73, 0.49, 0.23, 0.03])
    control = interval_run("cross_entropy", 8, [0.06, 0.01, 0, 0, 0], [0.80, 0.79, 0.79, 0.78, 0.72])
    text = intervals.table(pd.DataFrame([control, ce, df]))
    assert text.index("| CE |") < text.index("| differential |") < text.index("| positive control |")
    assert "| CE | [40.0, 90.0] | [10.0, 84.0] |" in text
    assert "| positive control |" in text and "| 50.0 points |" in text  # CE's width at 0.5
    assert "crown 3 of 10 (1.50 s each)" in text and "milp 3 of 10;" in text
    assert "At no radius" in text  # every certified accuracy below the other's worst case
    # a differential model certified above CE's worst case at 0.5/255 is certifiably more robust
    df_high = interval_run("differential", 0, [0.95, 0.05, 0, 0, 0], [0.97, 0.73, 0.49, 0.23, 0.03])
    assert "Certifiably more robust at 0.5/255" in intervals.separation(pd.DataFrame([ce, df_high]))
    assert "Not in the record yet" not in text
    assert "| nowhere | 50.0 points |" in text  # CE: certified below worst at every radius
    closed = interval_run("cross_entropy", 8, [0.80, 0.79, 0, 0, 0], [0.80, 0.79, 0.79, 0.78, 0.72])
    assert "| 0.5, 1/255 | 0.0 points |" in intervals.table(pd.DataFrame([closed]))
    assert "Not in the record yet (grids/intervals.yaml resumes them): positive control." in \
        intervals.table(pd.DataFrame([ce, df]))


def fig2_run(scheme_params, c90, c95, c99, rank=40):
    return {"experiment": "x", "loss": "cross_entropy", "data.n_train_per_class": 1000,
            "train.epochs": 3000, "train.batch_size": 128, "train.optimizer": "sgd",
            "model.batchnorm": False, "model.features_activation": "relu",
            "model.hidden_activation": "relu", "model.features_init": "he", **scheme_params,
            "final_loss": 1e-5, "clean_train_accuracy": 1.0, "clean_test_accuracy": 0.9,
            "components_90": c90, "components_95": c95, "components_99": c99,
            "numerical_rank": rank, "effective_rank": 10.0}


def test_each_scheme_is_judged_against_the_paper_at_each_threshold():
    runs = fig2.runs_table(pd.DataFrame([
        fig2_run({"train.batch_size": "full"}, 2, 5, 30),
        fig2_run({"train.optimizer": "adam", "train.epochs": 300}, 25, 40, 60),
        fig2_run({"model.features_activation": "linear", "model.features_init": "zero",
                  "train.batch_size": "full"}, 1, 1, 1, rank=1)]))
    steps = dict(zip(runs["scheme"], runs["steps"]))
    assert steps["Adam"] == 300 * 16 and steps["full-batch GD with momentum"] == 3000  # 2,000 images, batches of 128
    lines = {line.split(":")[0][2:]: line for line in fig2.verdict_lines(runs)}
    # GD: 2 <= the paper's 2 at 90% only; Adam: 25 > 20 at every threshold
    assert "reproduced at 90% of the variance" in lines["full-batch GD with momentum"]
    assert "not reproduced at any of 90, 95, 99%" in lines["Adam"]
    assert "numerical rank 1 (Proposition 1: at most 1): holds" in lines[
        "Proposition 1 (linear phi, W = 0), full-batch GD with momentum"]


def intervention_runs(rank_one_minus_standard, accuracy_gaps=None):
    rows = []
    for i, d in enumerate(rank_one_minus_standard):
        pair, seed = ["a/b", "c/d", "e/f"][i % 3], i // 3
        gap = accuracy_gaps[i] if accuracy_gaps else 0.0
        for v, shift in (("standard", 0.0), ("rank_one", d)):
            row = {"experiment": f"{v}{i}", "data.classes": pair, "seed": seed, "variant": v,
                   "clean_test_accuracy": 0.9 + (gap if v == "rank_one" else 0.0),
                   "components_99": 60 if v == "standard" else 1,
                   "numerical_rank": 30 if v == "standard" else 1, "margin_ratio": 0.5}
            for kind in ("paper", "worst"):
                for r in fig2.RADII:
                    row[f"{kind}_test_eps{r}"] = 0.5 + shift
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_intervention_verdict_follows_the_paired_tests():
    # rank one lower on all 9 pair-seeds: Wilcoxon's exact p = 2 / 2^9 = 0.0039 per test, Holm
    # multiplies the smallest of six equal p values by 6: 0.0234 for every one
    runs = intervention_runs([-0.05] * 9)
    tests = fig2.intervention_tests(runs)
    assert len(tests) == 6
    assert tests["p_value"].tolist() == pytest.approx([2 / 2 ** 9] * 6)
    assert tests["holm_p"].tolist() == pytest.approx([6 * 2 / 2 ** 9] * 6)
    verdict, numbers = fig2.intervention_summary(runs, tests)
    assert verdict == "supported: the rank-one model is less robust"
    assert "9 pair-seeds (3 pairs)" in numbers and "within 2 points on 9 of 9" in numbers
    # equal robustness: every difference zero, no test, no difference detected
    flat = intervention_runs([0.0] * 9)
    verdict, _ = fig2.intervention_summary(flat, fig2.intervention_tests(flat))
    assert verdict == "no difference detected"
    # 6 pair-seeds, one-sided: Wilcoxon's smallest p 2 / 2^6 = 0.031, times 6 tests in Holm's
    # first step = 0.19: no outcome could reach 5%, so the verdict must not read as a finding
    few = intervention_runs([-0.05] * 6)
    verdict, _ = fig2.intervention_summary(few, fig2.intervention_tests(few))
    assert verdict == "undecided: too few pair-seeds for any test to reach 5% after Holm"


def test_the_intervention_tests_use_matched_pair_seeds_and_give_the_interval_of_the_mean():
    # the fourth pair-seed is 3 points more accurate as rank one: not matched, left out
    runs = intervention_runs([-0.01, -0.02, -0.03, +0.20], accuracy_gaps=[0.02, -0.01, 0.0, 0.03])
    tests = fig2.intervention_tests(runs)
    assert tests["pairs"].tolist() == [3] * 6
    # mean -0.02, sd 0.01, t(0.975, 2 df) = 4.3027: -0.02 -+ 4.3027 * 0.01 / sqrt(3)
    assert tests["mean_difference"].tolist() == pytest.approx([-0.02] * 6)
    assert tests["ci_low"].tolist() == pytest.approx([-0.044841] * 6, abs=1e-6)
    assert tests["ci_high"].tolist() == pytest.approx([0.004841] * 6, abs=1e-6)
    _, numbers = fig2.intervention_summary(runs, tests)
    assert "within 2 points on 3 of 4, the tests' pair-seeds" in numbers
    assert "2/255 -2.0 points (rank one higher on 0 of 3, mean -2.0 [-4.5, +0.5], Holm p" in numbers
    # 3 pair-seeds cannot reach 5% after Holm; with 9 the same differences are undetected, and the
    # verdict says how large a difference the intervals still allow
    runs = intervention_runs([-0.01, -0.02, -0.03, 0.03, 0.015, 0.01, -0.04, 0.02, 0.005])
    verdict, _ = fig2.intervention_summary(runs, fig2.intervention_tests(runs))
    assert verdict.startswith("no difference detected (every mean difference's 95% interval within [")


def test_the_rank_curves_are_drawn_against_optimiser_steps():
    runs = fig2.runs_table(pd.DataFrame([
        fig2_run({"train.batch_size": "full", "train.epochs": 50, "experiment": "gd"}, 2, 5, 30),
        fig2_run({"train.epochs": 4, "experiment": "sgd"}, 25, 40, 60)]))
    tsv = {s: pd.DataFrame({"step": [0, 1], s: [10.0, 5.0]}) for s in fig2.SERIES}
    curve = fig2.curves(lambda name, path: tsv[path.rsplit("/", 1)[1][:-4]], runs)
    steps = curve[curve["series"] == "loss"].groupby("scheme")["step"].apply(list).to_dict()
    # epochs 1 and 2: one step an epoch full-batch, ceil(2,000 / 128) = 16 mini-batch
    assert steps == {"full-batch GD with momentum": [1, 2], "mini-batch SGD": [16, 32]}
    first = fig2.with_first_rank(runs, curve).set_index("scheme")
    assert first.loc["mini-batch SGD", "first_step"] == 16
    assert first.loc["mini-batch SGD", "components_99_first"] == 10.0


def test_appendix_b_says_whether_the_rank_fell_during_training():
    run = fig2_run({"model.features_activation": "linear", "model.hidden_activation": "tanh",
                    "train.batch_size": "full"}, 24, 36, 60, rank=84)
    runs = fig2.runs_table(pd.DataFrame([run]))
    for first, word in ((55, "not falling"), (70, "falling")):
        runs["first_step"], runs["components_99_first"] = 25, first
        line = fig2.verdict_lines(runs)[0]
        assert f"components for 99% {first} at step 25, 60 at the end: {word} towards 1" in line


def test_study_by_fig2_writes_into_a_folder_that_does_not_exist_yet(tmp_path, monkeypatch):
    from difftrain.report import study
    table = pd.DataFrame([fig2_run({"train.batch_size": "full"}, 2, 5, 30)])
    tsv = {s: pd.DataFrame({"step": [0, 1], s: [10.0, 5.0]}) for s in fig2.SERIES}
    monkeypatch.setattr(study, "experiments", lambda *a, **k: table)
    monkeypatch.setattr(study, "dvc_table", lambda repo, name, path: tsv[path.rsplit("/", 1)[1][:-4]])
    out = tmp_path / "docs" / "fig2" / "fig2.png"
    study.main(["--all", "--by", "fig2", "--out", str(out)])
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig2.png", "fig2_curves.csv.gz", "fig2_runs.csv"]


def pair_run(pair, loss, certified, worst):
    row = interval_run(loss, 0, [certified, 0, 0, 0, 0], [worst, 0.5, 0.3, 0.1, 0.0])
    row["data.classes"] = pair
    return row


def test_per_pair_certificates_separate_the_losses_only_above_the_other_models_worst_case():
    runs = pd.DataFrame([
        pair_run("cat/dog", "cross_entropy", 0.30, 0.60), pair_run("cat/dog", "differential", 0.65, 0.80),
        pair_run("deer/truck", "cross_entropy", 0.70, 0.95), pair_run("deer/truck", "differential", 0.50, 0.69),
        pair_run("airplane/horse", "cross_entropy", 0.40, 0.90), pair_run("airplane/horse", "differential", 0.30, 0.90),
        pair_run("bird/cat", "cross_entropy", 0.40, 0.90)])  # no differential run: left out
    text = intervals.pairs_table(runs)
    # cat/dog: differential certifies 65% > CE's worst 60%; deer/truck: CE certifies 70% > 69%
    assert "| cat/dog | [30.0, 60.0] | [65.0, 80.0] | 30.0 | 15.0 | differential more robust |" in text
    assert "| deer/truck | [70.0, 95.0] | [50.0, 69.0] | 25.0 | 19.0 | CE more robust |" in text
    assert "| airplane/horse | [40.0, 90.0] | [30.0, 90.0] | 50.0 | 60.0 | no |" in text
    assert "Left out, without both losses: bird/cat." in text
    assert "Not run yet" not in text
    planned = intervals.pairs_table(runs, ["cat/dog", "dog/horse", "bird/cat", "ship/truck"])
    assert "Not run yet (2 of the grid's 4 pairs; the grid resumes them): dog/horse, ship/truck." in planned
    assert "CROWN decided 21 of 70 attempts" in text  # 7 runs x 3 of 10
    assert ("of 3 class pairs, differential training is certifiably more robust on cat/dog and "
            "less robust on deer/truck") in intervals.pairs_answer(runs)
    # certified lower on deer/truck and airplane/horse, higher on cat/dog: P(X <= 1 | 3, 1/2) = 1/2,
    # two-sided 1
    assert ("differential against CE: lower on 2, higher on 1, equal on 0 of 3 pairs (two-sided "
            "sign test on the pairs that differ, p 1)") in text
    four = pd.DataFrame([pair_run(p, loss, c, 0.9) for p in ("a/b", "c/d", "e/f", "g/h")
                         for loss, c in (("cross_entropy", 0.5), ("differential", 0.2))])
    assert "lower on 4, higher on 0, equal on 0 of 4 pairs" in intervals.pairs_table(four)
    # 2 x (1/2)^4 = 0.125; certified 20 - 50, worst 90 - 90
    assert "p 0.12); median difference -30.0 points certified, +0.0 points worst case." in intervals.pairs_table(four)
    # equal numbers do not separate: certified == the other's worst case
    tie = pd.DataFrame([pair_run("cat/dog", "cross_entropy", 0.30, 0.60),
                        pair_run("cat/dog", "differential", 0.60, 0.80)])
    assert intervals.pairs_answer(tie).startswith("No certificate separates the losses on the one class pair")


def theory_record(limit_k20=0.746, bound_k10=0.9790):
    bound = {"offset": 1.07, "B": 4.66, "bound": 0.187, "holds": True}
    return {
        "params": {"offset": 5.0, "steps": 20000, "sweep_d": 20, "mlp_hidden": 32},
        "metrics": {"linear": {"svm_margin": 0.5, "ce_margin": 0.2, "ce_ratio": 0.4,
                               "ce_limit_margin": 0.25, "differential_margin": 0.5,
                               "differential_ratio": 1.0, "final_angle_differential": 0.0,
                               "theorem1": {"ce": bound, "ce_limit": {**bound, "holds": False}}},
                    "network": {loss: {"train_accuracy": 1.0, "input_margin_min": 0.05,
                                       "input_margin_median": 0.4}
                                for loss in ("cross_entropy", "differential")},
                    "provenance": {"git_revision": "0123456789abcdef-dirty"}},
        "remark1": [{"subspace_dim": 10, "offset": 0.0, "ce_limit_ratio": 1.0, "theorem1_bound_ratio": 1.0},
                    {"subspace_dim": 10, "offset": 3.0, "ce_limit_ratio": 0.978, "theorem1_bound_ratio": bound_k10},
                    {"subspace_dim": 20, "offset": 3.0, "ce_limit_ratio": limit_k20, "theorem1_bound_ratio": 1.0}]}


def test_the_theory_block_quotes_the_record():
    text = theory.block(theory_record())
    assert "| cross-entropy limit (augmented SVM) | 0.250 (50%) |" in text  # 0.25 / 0.5
    assert "the bound holds: yes / no" in text
    assert "lowest over the offsets, is 97.8% for k = 10, 74.6% for k = 20" in text
    assert "within 0.10 points for k < 20" in text  # |0.979 - 0.978|, k = d left out
    assert "the limit falls to 74.6%" in text
    assert "revision 0123456789 with uncommitted changes" in text
    assert "within 0.50 points" in theory.block(theory_record(bound_k10=0.983))


def test_the_theory_record_needs_the_stage_outputs(tmp_path):
    with pytest.raises(DataError, match="metrics/theory.json: not found; run `dvc repro theory`"):
        theory.save(tmp_path)


def test_the_default_model_check_compares_only_runs_of_one_cpu_kind_and_thread_count():
    def run(classes, seed, threads, accuracy, **extra):
        return {"data.classes": classes, "seed": seed, "cpu_capability": "AVX512",
                "torch_threads": threads, "clean_test_accuracy": accuracy, "worst_test_eps2": 0.5,
                "components_99": math.nan, **extra}
    before = pd.DataFrame([run("a/b", 0, 1, 0.90, loss="cross_entropy"),
                           run("a/b", 1, 2, 0.80, loss="cross_entropy"),   # 2 threads: not comparable
                           run("a/b", 0, 1, 0.10, loss="differential")])   # another loss
    after = pd.DataFrame([run("a/b", 0, 1, 0.90, variant="standard"),
                          run("a/b", 1, 1, 0.85, variant="standard"),
                          run("a/b", 0, 1, 0.70, variant="rank_one")])
    text = fig2.default_unchanged(before, after)
    assert text.startswith("No measure of the default CE model moved: 1 pair-seeds")
    assert "(AVX512 1 thread)" in text
    before.loc[0, "worst_test_eps2"] = 0.49
    assert fig2.default_unchanged(before, after).endswith("1 differ: a/b seed 0 (worst_test_eps2).")
    assert fig2.default_unchanged(before.iloc[1:], after).startswith("No pair and seed ran in both")


def test_the_tanh_line_says_whether_its_features_are_low_rank():
    runs = intervention_runs([0.0, 0.0])
    tanh = runs[runs["variant"] == "standard"].assign(variant="tanh", components_99=50,
                                                        worst_test_eps2=0.4)
    text = fig2.tanh_line(pd.concat([runs, tanh]))
    assert "a/b seed 0: 50 components for 99% (numerical rank 30) against 60" in text
    assert "worst case at 2/255 40.0% against 50.0%" in text
    assert "not low-rank at this training length" in text
    tanh["components_99"] = 29  # fewer than half of 60
    assert "second intervention" in fig2.tanh_line(pd.concat([runs, tanh]))
