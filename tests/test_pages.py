"""`difftrain report`: the class-pair numbers the README and docs quote are what the committed
per-pair CSV gives, and they follow that CSV when it changes."""

import shutil

import pandas as pd
import pytest

from conftest import REPO
from difftrain.core.errors import DataError
from difftrain.report import pages


def test_the_committed_pages_are_what_the_per_pair_csv_gives():
    stale = [str(p.relative_to(REPO)) for p, text in pages.pages(REPO).items()
             if p.read_text(encoding="utf-8") != text]
    assert stale == [], f"{stale}: run `difftrain report` and commit what it writes"


def _pairs_with_both_losses(runs):
    """The pairs the tables count: a grid part-way through has pairs with one loss only."""
    return int(runs.groupby("data.classes")["loss"].nunique().eq(2).sum())


def _copy(tmp_path):
    for path in (pages.RUNS, pages.IMAGES, pages.BUDGET, pages.STUDY_RUNS, pages.PAGE, *pages.QUOTING,
                 pages.INTERVAL_RUNS, pages.FIG2_RUNS, pages.INTERVENTION_RUNS, pages.INTERVENTION_TESTS,
                 pages.STUDY, pages.COMPARE, pages.CORRELATIONS, pages.PAIR_CERTIFY_RUNS,
                 pages.PAIR_CERTIFY_GRID):
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
    n = _pairs_with_both_losses(runs)
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
    n = _pairs_with_both_losses(runs)
    assert f"1 of {n} pairs are provisional, left out of the counts and tests" in page
    assert f"{pair}." in page
    readme = (tmp_path / "README.md").read_text()
    assert f"across the {n - 1} class pairs" in readme


def test_the_coverage_and_conclusion_lines_follow_the_tables():
    pairs = pd.DataFrame({"classes": ["cat/dog", "airplane/horse", "deer/truck"], "seeds": [3, 3, 1],
                          "ce_clean_test_accuracy": [0.68, 0.90, 0.97]})
    line = pages.coverage_summary(pairs)
    assert line.startswith("3 pairs have both losses (2 with 3 seeds, 1 with 1 seed)")
    assert "from 68.0% (cat/dog) to 97.0% (deer/truck)" in line and "covers 3 of the 45" in line
    tests = pd.DataFrame({
        "attack": ["paper"] * 3 + ["worst"] * 3, "eps_255": [2, 4, 8] * 2, "pairs": [12] * 6,
        "differential_higher": [4, 7, 11, 0, 6, 5],  # 6 of 12 is not "most"
        "holm_p": [0.3, 0.2, 0.01, 0.003, 0.9, 0.04],
        "median_difference": [-0.05, 0.05, 0.08, -0.1, 0.0, -0.01]})
    paper, worst = pages.conclusion_summary(tests).splitlines()[1:]
    assert paper == ("- the paper's PGD: differential is higher on most pairs at 4/255 (7 of 12), "
                     "8/255 (11 of 12); after Holm's correction (5%) differential is more robust "
                     "at 8/255 and CE at no radius.")
    assert worst.endswith("most pairs at no radius; after Holm's correction (5%) differential is "
                          "more robust at no radius and CE at 2/255, 8/255.")


def test_every_generated_marker_in_the_pages_is_a_block_the_report_fills():
    for path in pages.QUOTING:
        text = (REPO / path).read_text(encoding="utf-8")
        markers = text.count("<!-- generated: ")
        filled = [m.group(2) for m in pages.BLOCK.finditer(text)]
        assert len(filled) == markers, f"{path}: {markers} markers, {len(filled)} blocks the report fills"
        assert all(m.group(3).strip() for m in pages.BLOCK.finditer(text)), f"{path}: an empty block"


def test_the_planned_pairs_are_read_from_the_grid_file(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: x\ngrid:\n  - {loss: [a], data.classes: [[cat, dog]]}\n"
                    "  - {loss: [a], data.classes: [[deer, truck], [cat, dog]]}\n")
    assert pages.planned_pairs(grid) == ["cat/dog", "deer/truck"]
    assert pages.planned_pairs(tmp_path / "absent.yaml") == []


def test_a_certify_record_of_the_other_study_mode_is_named_not_a_traceback(tmp_path):
    # `difftrain study --by classes --out docs/intervals/pairs.png` writes a table of another
    # shape under the same name: the report says which file and which columns, before writing
    _copy(tmp_path)
    runs = pd.read_csv(tmp_path / pages.PAIR_CERTIFY_RUNS)
    runs.drop(columns=["certified_test_eps0.5"]).to_csv(tmp_path / pages.PAIR_CERTIFY_RUNS, index=False)
    with pytest.raises(DataError, match=r"pairs_runs.csv: missing column\(s\) certified_test_eps0.5;"):
        pages.write(tmp_path)
