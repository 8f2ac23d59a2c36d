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


def test_a_changed_per_pair_table_changes_the_quoted_numbers(tmp_path):
    for path in (pages.PER_PAIR, pages.TESTS_CSV, pages.PAGE, *pages.QUOTING):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    pairs = pd.read_csv(tmp_path / pages.PER_PAIR)
    pairs["diff_worst_test_eps2"] = pairs["ce_worst_test_eps2"] + 0.01  # differential higher on all
    pairs.to_csv(tmp_path / pages.PER_PAIR, index=False)
    written = {p.relative_to(tmp_path) for p in pages.write(tmp_path)}
    assert written == {pages.TESTS_CSV, pages.PAGE, *pages.QUOTING}
    readme = (tmp_path / "README.md").read_text()
    assert "2/255: median +1.0 points, differential higher on 12, CE on 0, tied 0" in readme
    assert pages.write(tmp_path) == []  # a second run changes nothing
