"""`difftrain report`: the numbers the README and docs quote about class pairs, written from the
committed per-pair table (``docs/classpairs/classpairs_per_pair.csv``, which the study writes
from the experiments), so no number there is typed by hand.

It rewrites the claim, test and controlled-mechanism sections of ``docs/classpairs/classpairs.md``,
the tests CSV beside it, and every block between ``<!-- generated: NAME -->`` and
``<!-- /generated -->`` in README.md and docs/classpairs.md (NAME: classpairs-tests,
classpairs-mechanisms). A file whose text would not change is not written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from difftrain.core.errors import DataError
from difftrain.report import crossrun
from difftrain.report.tables import read_table

FOLDER = Path("docs/classpairs")
PER_PAIR, TESTS_CSV, PAGE = (FOLDER / "classpairs_per_pair.csv", FOLDER / "classpairs_tests.csv",
                             FOLDER / "classpairs.md")
QUOTING = (Path("README.md"), Path("docs/classpairs.md"))
BLOCK = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


def tests_summary(tests: pd.DataFrame) -> str:
    """One line per attack: differential minus CE test accuracy across pairs at each radius."""
    lines = []
    for kind, label in crossrun.ATTACKS.items():
        parts = []
        for row in tests[tests["attack"] == kind].itertuples():
            p = ("no test (fewer than two non-zero differences)" if pd.isna(row.p_value) else
                 f"Wilcoxon p = {row.p_value:.3g}, Holm {row.holm_p:.3g}"
                 + (f"; no outcome could reach 0.05 (smallest possible p {row.smallest_possible_p:.3g})"
                    if row.smallest_possible_p > 0.05 else ""))
            parts.append(f"{row.eps_255}/255: median {100 * row.median_difference:+.1f} points, "
                         f"differential higher on {row.differential_higher}, CE on "
                         f"{row.ce_higher}, tied {row.ties}; {p}")
        lines.append(f"- {label}: " + "; ".join(parts) + ".")
    n = int(tests["pairs"].max())
    return (f"Differential minus CE test accuracy across the {n} class pairs with both losses "
            f"(`difftrain report`, from {PER_PAIR}):\n" + "\n".join(lines) + "\n")


def _section(text: str, heading_start: str, new: str, where: Path) -> str:
    start = text.find(heading_start)
    if start < 0:
        raise DataError(f"{where}: no section starting {heading_start!r} to fill")
    end = text.find("\n## ", start + len(heading_start))
    return text[:start] + new + ("\n" + text[end:] if end >= 0 else "\n")


def pages(repo: Path) -> dict[Path, str]:
    """Each file ``difftrain report`` writes, with the text it should hold."""
    pairs = read_table(repo / PER_PAIR, ["classes", "ce_worst_test_eps4", "diff_worst_test_eps4"])
    tests = crossrun.paired_tests(pairs)
    out = {repo / TESTS_CSV: tests.to_csv(index=False)}
    page = (repo / PAGE).read_text(encoding="utf-8")
    page = _section(page, crossrun.CLAIMS_HEADING.split(" (")[0], crossrun.claims_section(pairs), repo / PAGE)
    page = _section(page, "## Differential minus CE, ", crossrun.tests_section(pairs), repo / PAGE)
    page = _section(page, crossrun.MECHANISMS_HEADING.split(" (")[0],
                    crossrun.mechanisms_section(pairs), repo / PAGE)
    out[repo / PAGE] = page
    blocks = {"classpairs-tests": tests_summary(tests),
              "classpairs-mechanisms": mechanisms_summary(crossrun.mechanisms_controlled(pairs))}

    def fill(match):
        if match.group(2) not in blocks:
            raise DataError(f"unknown generated block {match.group(2)!r}; known: {', '.join(blocks)}")
        return match.group(1) + blocks[match.group(2)] + match.group(4)

    for path in QUOTING:
        text = (repo / path).read_text(encoding="utf-8")
        if not BLOCK.search(text):
            raise DataError(f"{path}: no <!-- generated: ... --> block to fill")
        out[repo / path] = BLOCK.sub(fill, text)
    return out


def mechanisms_summary(table: pd.DataFrame) -> str:
    """One line per mechanism: within pairs and with clean accuracy partialled out."""
    def part(rho, p, holm, n, what):
        if pd.isna(rho):
            return f"{what}: not computable ({n} values)"
        return f"{what}: rho {rho:+.2f} (p {p:.2g}, Holm {holm:.2g}, n = {n})"
    lines = [f"- {row.mechanism} (the paper predicts {row.predicted_sign}): "
             + part(row.within_rho, row.within_p, row.within_holm_p, row.within_pairs, "within pairs")
             + "; " + part(row.partial_rho, row.partial_p, row.partial_holm_p, row.partial_models,
                           "across models, clean accuracy partialled out") + "."
             for row in table.itertuples()]
    return (f"Where task difficulty cannot carry it (`difftrain report`, from {PER_PAIR}; worst "
            f"case at {crossrun.CORRELATION_EPS_255}/255):\n" + "\n".join(lines) + "\n")


def write(repo: Path) -> list[Path]:
    """Write what changed; returns the files written."""
    written = []
    for path, text in pages(repo).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    try:
        written = write(Path(args.repo))
    except DataError as exc:
        raise SystemExit(f"error: {exc}")
    print(f"wrote {len(written)} file(s)" + (": " + ", ".join(map(str, written)) if written else ""))
