"""The certified intervals the README quotes, from the record ``difftrain study`` writes of the
study-grade certify runs (grids/default-budget.yaml's CE, differential and positive control):
robust accuracy on test as ``[certified, worst case]`` at each radius, where each closes, what
each bound decided and cost, and whether a certificate separates the two losses anywhere."""

from __future__ import annotations

import math

import pandas as pd

RADII = (0.5, 1, 2, 4, 8)
METHODS = ("crown", "alpha_crown", "milp")


def model(row) -> str:
    if float(row.get("train.adversarial.eps", 0) or 0) > 0:
        return "positive control"
    return {"cross_entropy": "CE", "differential": "differential"}.get(row["loss"], row["loss"])


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:.1f}"


def table(runs: pd.DataFrame) -> str:
    """The intervals (Markdown), one row per model, then how they were made."""
    lines = ["| model | " + " | ".join(f"{r:g}/255" for r in RADII) + " | closed (certified = "
             "worst) at | width at 0.5/255 |", "|" + " --- |" * (len(RADII) + 3)]
    notes = []
    for row in runs.to_dict("records"):
        cells = [f"[{_pct(row[f'certified_test_eps{r:g}'])}, {_pct(row[f'certify_worst_test_eps{r:g}'])}]"
                 for r in RADII]
        width = row["certify_worst_test_eps0.5"] - row["certified_test_eps0.5"]
        closed = row.get("certify_closed_at") or ""
        lines.append(f"| {model(row)} | " + " | ".join(cells)
                     + f" | {closed.replace('/', ', ') or 'nowhere'}/255 | {_pct(width)} points |")
        decided = ", ".join(
            f"{m.replace('_', '-')} {int(row[f'certify_{m}_decided'])} of {int(row[f'certify_{m}_tried'])}"
            + (f" ({row[f'certify_{m}_seconds']:.2f} s each)"
               if not math.isnan(row[f"certify_{m}_seconds"]) else "")
            for m in METHODS if not math.isnan(row[f"certify_{m}_tried"]))
        notes.append(f"- {model(row)}: certificates decided on test: {decided}; unstable ReLUs "
                     f"after CROWN (median) {_num(row['certify_unstable_eps0_5'])} at 0.5/255, "
                     f"{_num(row['certify_unstable_eps1'])} at 1/255; certified but fooled "
                     f"{_num(row['certified_but_fooled'])}, bounds above a point found "
                     f"{_num(row['bound_violations'])}.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n\n" + separation(runs) + "\n"


def _num(value) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:g}"


def separation(runs: pd.DataFrame) -> str:
    """One line: is differential training certifiably more or less robust than CE anywhere?
    More at a radius where its certified accuracy exceeds CE's worst case; less where CE's
    certified accuracy exceeds its worst case."""
    by = {model(r): r for r in runs.to_dict("records")}
    if "CE" not in by or "differential" not in by:
        return "Whether a certificate separates the losses: needs both the CE and the differential run."
    ce, df = by["CE"], by["differential"]
    more = [r for r in RADII if df[f"certified_test_eps{r:g}"] > ce[f"certify_worst_test_eps{r:g}"]]
    less = [r for r in RADII if ce[f"certified_test_eps{r:g}"] > df[f"certify_worst_test_eps{r:g}"]]
    if not more and not less:
        return ("Is differential training certifiably more or less robust than CE? At no radius: "
                "on airplane/horse each model's certified accuracy stays below the other's worst "
                "case at every radius, so no certificate separates them.")
    parts = []
    if more:
        parts.append(f"more robust at {', '.join(f'{r:g}' for r in more)}/255")
    if less:
        parts.append(f"less robust at {', '.join(f'{r:g}' for r in less)}/255")
    return ("Is differential training certifiably more or less robust than CE? Certifiably "
            + " and ".join(parts) + " (its certified accuracy above the other's worst case).")
