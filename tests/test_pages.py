"""`difftrain report`: the class-pair numbers the README and docs quote are what the committed
per-pair CSV gives, and they follow that CSV when it changes."""

import shutil

import pandas as pd

from conftest import REPO
from difftrain.report import pages


def test_the_committed_pages_are_what_the_per_pair_csv_gives():
    stale = [str(p.relative_to(REPO)) for p, text in pages.pages(REPO).items()
             if p.read_text(encoding="utf-8") != text]
    assert stale == [], f"{stale}: run `difftrain report` and commit what it writes"


def _copy(tmp_path):
    for path in (pages.RUNS, pages.IMAGES, pages.BUDGET, pages.STUDY_RUNS, pages.PAGE, *pages.QUOTING,
                 pages.INTERVAL_RUNS, pages.FIG2_RUNS, pages.INTERVENTION_RUNS, pages.INTERVENTION_TESTS):
        if (REPO / path).exists():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / path, tmp_path / path)


def test_a_changed_run_record_changes_the_quoted_numbers(tmp_path):
    _copy(tmp_path)
    runs = pd.read_csv(tmp_path / pages.RUNS)
    ce = runs[runs["loss"] == "cross_entropy"].groupby("data.classes")["worst_test_eps2"].mean()
    diff = runs["loss"] == "differential"
    runs.loc[diff, "worst_test_eps2"] = runs.loc[diff, "data.classes"].map(ce) + 0.01
    runs.to_csv(tmp_path / pages.RUNS, index=False)
    written = {p.relative_to(tmp_path) for p in pages.write(tmp_path)}
    assert {pages.PER_PAIR, pages.TESTS_CSV, pages.PAGE, *pages.QUOTING[:2]} <= written
    readme = (tmp_path / "README.md").read_text()
    n = runs["data.classes"].nunique()
    assert f"2/255: median +1.0 points (mean +1.0, [+1.0, +1.0]), differential higher on {n}, CE on 0, tied 0" in readme
    assert pages.write(tmp_path) == []  # a second run changes nothing


def test_a_hand_edit_to_the_readme_verdict_is_overwritten(tmp_path):
    _copy(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    block = readme[readme.index("<!-- generated: verdict -->"):]
    block = block[:block.index("<!-- /generated -->")]
    assert "64 (63-65) of 84" in block  # CE's components over the study's three seeds
    (tmp_path / "README.md").write_text(readme.replace("64 (63-65) of 84", "2 (2-2) of 84"))
    assert pages.Path("README.md") in {p.relative_to(tmp_path) for p in pages.write(tmp_path)}
    assert (tmp_path / "README.md").read_text() == readme


def test_a_flagged_run_makes_its_pair_provisional_and_out_of_the_counts(tmp_path):
    _copy(tmp_path)
    runs = pd.read_csv(tmp_path / pages.RUNS)
    pair = "automobile/frog"
    flagged = (runs["data.classes"] == pair) & (runs["loss"] == "differential")
    for flag in ("paper_attack_overstates", "not_converged", "blackbox_beats_whitebox",
                 "suspect_gradient_masking"):
        runs[flag] = runs[flag].astype(object)
        runs.loc[flagged, flag] = flag == "not_converged"
    runs.to_csv(tmp_path / pages.RUNS, index=False)
    pages.write(tmp_path)
    page = (tmp_path / pages.PAGE).read_text()
    n = runs["data.classes"].nunique()
    assert f"1 of {n} pairs are provisional, left out of the counts and tests" in page
    assert f"{pair}." in page
    readme = (tmp_path / "README.md").read_text()
    assert f"across the {n - 1} class pairs" in readme
