"""`difftrain report`: every number the README and docs quote about the verdict, written from
the committed record the study writes from the experiments, so no number there is typed by hand.

The record: ``docs/classpairs/classpairs_runs.csv`` (one row per class-pair run, every seed, kept
across machines), ``docs/classpairs/classpairs_per_image.csv.gz`` (each attacked image's smallest
fooling radius under the paper's PGD and the worst case, for the runs that kept it) and
``docs/figures/study_runs.csv`` (the airplane/horse study). From them it writes the per-pair
table, the across-pair tests and the per-image (McNemar) tests as CSVs, the claim, test,
mechanism and per-image sections of ``docs/classpairs/classpairs.md``, and every block between
``<!-- generated: NAME -->`` and ``<!-- /generated -->`` in README.md, docs/classpairs.md,
docs/results.md, docs/fig2.md and docs/pipeline.md (NAME: verdict, classpairs-*, study-table,
study-runs, study-findings, intervals, intervals-pairs, fig2, fig2-unchanged, intervention,
theory). A record that does not exist yet (its grid has not run) makes its block say so. A file
whose text would not change is not written.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import yaml

from difftrain.core.errors import DataError
from difftrain.report import airplane_horse, crossrun, fig2, intervals, paired, theory, verdict
from difftrain.report.tables import read_table

FOLDER = Path("docs/classpairs")
PER_PAIR, TESTS_CSV, PAGE = (FOLDER / "classpairs_per_pair.csv", FOLDER / "classpairs_tests.csv",
                             FOLDER / "classpairs.md")
BUDGET = FOLDER / "classpairs_budget.csv"
RUNS, IMAGES, IMAGE_TESTS = (FOLDER / "classpairs_runs.csv", FOLDER / "classpairs_per_image.csv.gz",
                             FOLDER / "classpairs_image_tests.csv")
CORRELATIONS = FOLDER / "classpairs_correlations.csv"  # written by `difftrain study --by classes`
STUDY_RUNS = Path("docs/figures/study_runs.csv")
STUDY, COMPARE = Path("docs/figures/study.csv"), Path("docs/figures/compare.csv")  # difftrain study, compare
INTERVAL_RUNS = Path("docs/intervals/intervals_runs.csv")  # difftrain study EXP... --out docs/intervals/intervals.png
PAIR_CERTIFY_RUNS = Path("docs/intervals/pairs_runs.csv")  # difftrain study EXP... --out docs/intervals/pairs.png
PAIR_CERTIFY_GRID = Path("grids/classpairs-certify.yaml")
FIG2_RUNS = Path("docs/fig2/fig2_runs.csv")  # difftrain study --by fig2
INTERVENTION_RUNS, INTERVENTION_TESTS = (Path("docs/intervention/intervention_runs.csv"),
                                         Path("docs/intervention/intervention_tests.csv"))
QUOTING = (Path("README.md"), Path("docs/classpairs.md"), Path("docs/results.md"),
           Path("docs/fig2.md"), Path("docs/pipeline.md"))
BLOCK = re.compile(r"(<!-- generated: ([a-z0-9-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


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
            parts.append(f"{row.eps_255}/255: median {100 * row.median_difference:+.1f} points "
                         f"(mean {100 * row.mean_difference:+.1f}, "
                         f"[{100 * row.mean_low:+.1f}, {100 * row.mean_high:+.1f}]), "
                         f"differential higher on {row.differential_higher}, CE on "
                         f"{row.ce_higher}, tied {row.ties}; {p}")
        lines.append(f"- {label}: " + "; ".join(parts) + ".")
    n = int(tests["pairs"].max())
    return (f"Differential minus CE test accuracy across the {n} class pairs with both losses "
            f"(`difftrain report`, from {RUNS}; seed means; bootstrap 95% interval of the mean "
            f"over pairs in brackets):\n" + "\n".join(lines) + "\n")


def planned_pairs(grid: Path) -> list[str]:
    """The class pairs a grid file names (``a/b``), in its order; none where it is absent."""
    if not grid.exists():
        return []
    spec = yaml.safe_load(grid.read_text(encoding="utf-8")) or {}
    pairs = ["/".join(c) for entry in spec.get("grid", []) for c in entry.get("data.classes", [])]
    return list(dict.fromkeys(pairs))


def _section(text: str, heading_start: str, new: str, where: Path) -> str:
    start = text.find(heading_start)
    if start < 0:
        raise DataError(f"{where}: no section starting {heading_start!r} to fill")
    end = text.find("\n## ", start + len(heading_start))
    return text[:start] + new + ("\n" + text[end:] if end >= 0 else "\n")


def _optional(path: Path, columns: list[str] = ()) -> pd.DataFrame | None:
    """A record that exists once its grid has run (None before), with at least ``columns``."""
    return read_table(path, list(columns)) if path.exists() else None


def record(repo: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed run record and per-image outcomes (empty where no run kept them)."""
    runs = read_table(repo / RUNS, crossrun.RUN_COLUMNS)
    images = (read_table(repo / IMAGES, paired.IMAGE_COLUMNS) if (repo / IMAGES).exists()
              else pd.DataFrame(columns=paired.IMAGE_COLUMNS))
    return runs, images


def pages(repo: Path) -> dict[Path, str]:
    """Each file ``difftrain report`` writes, with the text it should hold."""
    runs, images = record(repo)
    pairs = crossrun.class_pairs_table(runs)
    tests = crossrun.paired_tests(pairs)
    image_tests = paired.image_tests(images, crossrun.RADII)
    study = read_table(repo / STUDY_RUNS, ["loss", "epochs", "adversarial_eps", "seed"])
    out = {repo / PER_PAIR: pairs.to_csv(index=False), repo / TESTS_CSV: tests.to_csv(index=False),
           repo / IMAGE_TESTS: image_tests.to_csv(index=False)}
    page = (repo / PAGE).read_text(encoding="utf-8")
    page = _section(page, crossrun.CLAIMS_HEADING.split(" (")[0], crossrun.claims_section(pairs), repo / PAGE)
    page = _section(page, "## Per pair", crossrun.per_pair_section(pairs), repo / PAGE)
    page = _section(page, "## Differential minus CE, ", crossrun.tests_section(pairs), repo / PAGE)
    page = _section(page, crossrun.MECHANISMS_HEADING.split(" (")[0],
                    crossrun.mechanisms_section(pairs), repo / PAGE)
    if (repo / BUDGET).exists():
        page = _section(page, crossrun.BUDGET_HEADING,
                        crossrun.budget_section(pd.read_csv(repo / BUDGET)), repo / PAGE)
    page = _section(page, crossrun.IMAGES_HEADING, crossrun.images_section(image_tests),
                    repo / PAGE)
    out[repo / PAGE] = page
    fig2_runs = _optional(repo / FIG2_RUNS)
    intervention = intervention_runs = None
    if (repo / INTERVENTION_RUNS).exists():
        intervention_runs = pd.read_csv(repo / INTERVENTION_RUNS)
        intervention = fig2.intervention_summary(intervention_runs,
                                                 pd.read_csv(repo / INTERVENTION_TESTS))
    interval_runs = _optional(repo / INTERVAL_RUNS, intervals.RECORD_COLUMNS)
    pair_certify = _optional(repo / PAIR_CERTIFY_RUNS, intervals.PAIR_COLUMNS)
    correlations = _optional(repo / CORRELATIONS)
    summary, compare = pd.read_csv(repo / STUDY), pd.read_csv(repo / COMPARE)
    blocks = {"study-table": airplane_horse.study_table(summary, study),
              "study-runs": airplane_horse.runs_table(compare, study),
              "study-findings": airplane_horse.findings(summary, study, compare),"classpairs-coverage": coverage_summary(pairs),
              "classpairs-tests": tests_summary(tests),
              "classpairs-conclusion": conclusion_summary(tests),
              "classpairs-correlations": (correlations_summary(correlations)
                                          if correlations is not None else
                                          "The study has not written its correlations yet.\n"),
              "classpairs-mechanisms": mechanisms_summary(crossrun.mechanisms_controlled(pairs)),
              "classpairs-images": images_summary(image_tests, pairs),
              "verdict": verdict.verdict_table(study, pairs, tests, fig2_runs, intervention),
              "intervals": ((intervals.table(interval_runs) if interval_runs is not None else
                             "grids/intervals.yaml (the study-grade setting) has not run yet; each run's default-setting intervals are in its metrics/certify.json.\n")
                            + ("\n" + intervals.pairs_answer(pair_certify) + "\n"
                               if pair_certify is not None else "")),
              "theory": (theory.block(json.loads((repo / theory.RECORD).read_text(encoding="utf-8")))
                         if (repo / theory.RECORD).exists() else
                         "No theory record yet: `dvc repro theory && difftrain report --theory`.\n"),
              "intervals-pairs": (intervals.pairs_table(pair_certify, planned_pairs(repo / PAIR_CERTIFY_GRID))
                                  if pair_certify is not None
                                  else "grids/classpairs-certify.yaml has not run yet.\n"),
              "fig2": ("\n".join(fig2.verdict_lines(fig2_runs)) + "\n" if fig2_runs is not None
                       else "grids/fig2.yaml has not run yet.\n"),
              "fig2-unchanged": (fig2.default_unchanged(runs, intervention_runs) + "\n"
                                 if intervention_runs is not None else
                                 "grids/intervention.yaml has not run yet.\n"),
              "intervention": (": ".join(intervention) + ".\n\n" + fig2.tanh_line(intervention_runs) + "\n"
                               if intervention is not None
                               else "grids/intervention.yaml has not run yet.\n")}

    def fill(match):
        if match.group(2) not in blocks:
            raise DataError(f"unknown generated block {match.group(2)!r}; known: {', '.join(blocks)}")
        return match.group(1) + blocks[match.group(2)] + match.group(4)

    for path in QUOTING:
        if not (repo / path).exists():
            continue
        text = (repo / path).read_text(encoding="utf-8")
        if not BLOCK.search(text):
            raise DataError(f"{path}: no <!-- generated: ... --> block to fill")
        out[repo / path] = BLOCK.sub(fill, text)
    return out


def coverage_summary(pairs: pd.DataFrame) -> str:
    """How many pairs have both losses, and the span of CE's clean test accuracy over them."""
    ce = pairs.dropna(subset=["ce_clean_test_accuracy"])
    if ce.empty:
        return crossrun.coverage_line(pairs) + "\n"
    lo, hi = ce.loc[ce["ce_clean_test_accuracy"].idxmin()], ce.loc[ce["ce_clean_test_accuracy"].idxmax()]
    seeds = pairs["seeds"].astype(int).value_counts().sort_index(ascending=False)
    spread = ", ".join(f"{n} with {k} seed{'s' if k > 1 else ''}" for k, n in seeds.items())
    return (f"{len(pairs)} pairs have both losses ({spread}); CE clean test accuracy (seed mean) from "
            f"{100 * lo['ce_clean_test_accuracy']:.1f}% ({lo['classes']}) to "
            f"{100 * hi['ce_clean_test_accuracy']:.1f}% ({hi['classes']}). "
            + crossrun.coverage_line(pairs) + " (`difftrain report`)\n")


def conclusion_summary(tests: pd.DataFrame) -> str:
    """Which across-pair differences survive Holm's correction, per attack, in words."""
    lines = []
    for kind, label in crossrun.ATTACKS.items():
        rows = tests[tests["attack"] == kind]
        up = [f"{r.eps_255}/255" for r in rows.itertuples() if r.holm_p < 0.05 and r.median_difference > 0]
        down = [f"{r.eps_255}/255" for r in rows.itertuples() if r.holm_p < 0.05 and r.median_difference < 0]
        most = [f"{r.eps_255}/255 ({r.differential_higher} of {r.pairs})" for r in rows.itertuples()
                if r.differential_higher > r.pairs / 2]
        lines.append(f"- {label}: differential is higher on most pairs at "
                     + (", ".join(most) if most else "no radius")
                     + "; after Holm's correction (5%) differential is more robust at "
                     + (", ".join(up) if up else "no radius") + " and CE at "
                     + (", ".join(down) if down else "no radius") + ".")
    return ("In words (`difftrain report`, from the tests above):\n" + "\n".join(lines) + "\n")


def correlations_summary(table: pd.DataFrame) -> str:
    """Spearman's rho over every model of the record, as the study wrote it."""
    lines = [f"- {row.label}: rho = {row.spearman_rho:+.2f} (p = {row.p_value:.2g}, {row.runs} "
             f"models; the paper predicts {row.predicted_sign})" for row in table.itertuples()]
    return (f"Over every model once (`difftrain study --by classes`, {CORRELATIONS}):\n"
            + "\n".join(lines) + "\n")


def images_summary(tests: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """How many per-pair McNemar tests at each radius favour each loss at 5%, per attack."""
    if tests.empty:
        return "No run in the record kept its per-image outcomes.\n"
    test = tests[tests["split"] == "test"]
    runs = test[["classes", "seed"]].drop_duplicates()
    lines = []
    for kind, label in crossrun.ATTACKS.items():
        parts = []
        for r in crossrun.RADII:
            rows = test[(test["attack"] == kind) & (test["eps_255"] == r)]
            significant = rows[rows["mcnemar_p"] < 0.05]
            parts.append(f"{r}/255: differential higher on {int((significant['difference'] > 0).sum())}, "
                         f"CE on {int((significant['difference'] < 0).sum())}, neither on "
                         f"{int(len(rows) - len(significant))}")
        lines.append(f"- {label}: " + "; ".join(parts) + ".")
    return (f"Per pair and seed, image by image (`difftrain report`, from {IMAGES}): McNemar's "
            f"exact test at 5%, unadjusted, on {len(runs)} pair-seeds of "
            f"{runs['classes'].nunique()} pairs with per-image outcomes (of {len(pairs)} pairs):\n"
            + "\n".join(lines) + "\n")


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
    parser.add_argument("--theory", action="store_true",
                        help="first copy the theory stage's outputs into docs/ (after `dvc repro theory`)")
    args = parser.parse_args(argv)
    try:
        copied = theory.save(Path(args.repo)) if args.theory else []
        written = copied + write(Path(args.repo))
    except DataError as exc:
        raise SystemExit(f"error: {exc}")
    print(f"wrote {len(written)} file(s)" + (": " + ", ".join(map(str, written)) if written else ""))
