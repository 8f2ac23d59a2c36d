"""The certified intervals the README quotes, from the records ``difftrain study`` writes of the
study-grade certify runs: robust accuracy on test as ``[certified, worst case]`` at each radius
for grids/intervals.yaml's CE, differential and positive control (where each closes, what each
bound decided and cost), the same at 0.5/255 per class pair (grids/classpairs-certify.yaml), and
whether a certificate separates the two losses anywhere."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

RADII = (0.5, 1, 2, 4, 8)
METHODS = ("crown", "alpha_crown", "milp")
MODELS = ("CE", "differential", "positive control")  # grids/intervals.yaml's three
# what the records must hold: `difftrain study` without --by writes them (--by classes writes
# another table under the same name)
RECORD_COLUMNS = (["loss", "certified_but_fooled", "bound_violations", "certify_unstable_eps0_5"]
                  + [f"{k}_test_eps{r:g}" for r in RADII for k in ("certified", "certify_worst")]
                  + [f"certify_{m}_{k}" for m in ("crown", "alpha_crown") for k in ("tried", "decided")])
PAIR_COLUMNS = RECORD_COLUMNS + ["data.classes"]


def model(row) -> str:
    if float(row.get("train.adversarial.eps", 0) or 0) > 0:
        return "positive control"
    return {"cross_entropy": "CE", "differential": "differential"}.get(row["loss"], row["loss"])


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:.1f}"


def _interval(row, r: float) -> str:
    return f"[{_pct(row[f'certified_test_eps{r:g}'])}, {_pct(row[f'certify_worst_test_eps{r:g}'])}]"


def table(runs: pd.DataFrame) -> str:
    """The intervals (Markdown), one row per model, then how they were made."""
    lines = ["| model | " + " | ".join(f"{r:g}/255" for r in RADII) + " | closed (certified = "
             "worst) at | width at 0.5/255 |", "|" + " --- |" * (len(RADII) + 3)]
    notes = []
    order = {m: i for i, m in enumerate(MODELS)}
    for row in sorted(runs.to_dict("records"), key=lambda r: order.get(model(r), len(order))):
        cells = [_interval(row, r) for r in RADII]
        width = row["certify_worst_test_eps0.5"] - row["certified_test_eps0.5"]
        closed = [f"{r:g}" for r in RADII  # both are shares of the same images: exact
                  if round(row[f"certified_test_eps{r:g}"], 9) == round(row[f"certify_worst_test_eps{r:g}"], 9)]
        lines.append(f"| {model(row)} | " + " | ".join(cells)
                     + f" | {', '.join(closed) + '/255' if closed else 'nowhere'} | {_pct(width)} points |")
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
    missing = [m for m in MODELS if m not in {model(r) for r in runs.to_dict("records")}]
    if missing:
        notes.append(f"- Not in the record yet (grids/intervals.yaml resumes them): {', '.join(missing)}.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n\n" + separation(runs) + "\n"


def _num(value) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:g}"


def _separates(ce, df, r: float) -> tuple[bool, bool]:
    """(differential certifiably more robust, certifiably less robust) than CE at radius ``r``:
    one model's certified accuracy above the other's worst case on the same images. A missing
    (nan) number separates nothing."""
    return (df[f"certified_test_eps{r:g}"] > ce[f"certify_worst_test_eps{r:g}"],
            ce[f"certified_test_eps{r:g}"] > df[f"certify_worst_test_eps{r:g}"])


def separation(runs: pd.DataFrame) -> str:
    """One line: is differential training certifiably more or less robust than CE anywhere?
    More at a radius where its certified accuracy exceeds CE's worst case; less where CE's
    certified accuracy exceeds its worst case."""
    by = {model(r): r for r in runs.to_dict("records")}
    if "CE" not in by or "differential" not in by:
        return "Whether a certificate separates the losses: needs both the CE and the differential run."
    ce, df = by["CE"], by["differential"]
    more = [r for r in RADII if _separates(ce, df, r)[0]]
    less = [r for r in RADII if _separates(ce, df, r)[1]]
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


PAIR_RADIUS = 0.5  # the radius grids/classpairs-certify.yaml runs CROWN and alpha-CROWN at


def _pairs(runs: pd.DataFrame):
    """(pair, CE row, differential row) for each pair with both losses, and the pairs without."""
    both, missing = [], []
    for pair, group in runs.groupby("data.classes", sort=True):
        by = {model(row): row for row in group.to_dict("records")}
        if "CE" in by and "differential" in by:
            both.append((pair, by["CE"], by["differential"]))
        else:
            missing.append(pair)
    return both, missing


def pairs_answer(runs: pd.DataFrame) -> str:
    """One line: on which pairs a certificate at 0.5/255 separates the losses, and which way."""
    r, (both, _) = PAIR_RADIUS, _pairs(runs)
    more = [pair for pair, ce, df in both if _separates(ce, df, r)[0]]
    less = [pair for pair, ce, df in both if _separates(ce, df, r)[1]]
    if not more and not less:
        which = "the one class pair" if len(both) == 1 else f"any of the {len(both)} class pairs"
        return (f"No certificate separates the losses on {which} certified at {r:g}/255: each "
                "model's certified accuracy stays at or below the other's worst case.")
    parts = [f"more robust on {', '.join(more)}" if more else "",
             f"less robust on {', '.join(less)}" if less else ""]
    return (f"At {r:g}/255, of {len(both)} class pairs, differential training is certifiably "
            + " and ".join(p for p in parts if p)
            + " (one model's certified accuracy above the other's worst case).")


def pairs_table(runs: pd.DataFrame, planned: list[str] = ()) -> str:
    """Per class pair, both losses' ``[certified, worst case]`` at 0.5/255 on the attacked test
    images (Markdown), what the bounds decided, the ``planned`` pairs (``a/b``) not yet in the
    record, then ``pairs_answer``."""
    r, (both, missing) = PAIR_RADIUS, _pairs(runs)
    lines = [f"| pair | CE at {r:g}/255 | differential at {r:g}/255 | CE width | differential width "
             "| a certificate separates them |", "|" + " --- |" * 6]
    for pair, ce, df in both:
        up, down = _separates(ce, df, r)
        width = [_pct(row[f"certify_worst_test_eps{r:g}"] - row[f"certified_test_eps{r:g}"])
                 for row in (ce, df)]
        lines.append(f"| {pair} | {_interval(ce, r)} | {_interval(df, r)} | {width[0]} | {width[1]} | "
                     + ("differential more robust" if up else "CE more robust" if down else "no") + " |")
    tried = {m: int(runs[f"certify_{m}_tried"].sum()) for m in ("crown", "alpha_crown")}
    decided = {m: int(runs[f"certify_{m}_decided"].sum()) for m in ("crown", "alpha_crown")}
    notes = (f"Over the {len(runs)} runs: CROWN decided {decided['crown']} of {tried['crown']} "
             f"attempts, alpha-CROWN {decided['alpha_crown']} of the {tried['alpha_crown']} CROWN "
             f"left; unstable ReLUs after CROWN at {r:g}/255, median of the runs' medians "
             f"{_num(runs['certify_unstable_eps0_5'].median())}; certified but fooled "
             f"{_num(runs['certified_but_fooled'].sum())}, bounds above a point found "
             f"{_num(runs['bound_violations'].sum())}.")
    if missing:
        notes += f" Left out, without both losses: {', '.join(missing)}."
    absent = [pair for pair in planned if pair not in set(runs["data.classes"])]
    if absent:
        notes += (f" Not run yet ({len(absent)} of the grid's {len(planned)} pairs; the grid "
                  f"resumes them): {', '.join(absent)}.")
    return ("\n".join(lines) + "\n\n" + notes + "\n\n" + certified_direction(both)
            + "\n\n" + pairs_answer(runs) + "\n")


def certified_direction(both: list) -> str:
    """One line: on how many pairs differential training is *certified* lower than CE at 0.5/255,
    with a two-sided sign test over the pairs that differ (scipy's exact binomial test), and
    the median differences of both ends of the interval. It reads what the bounds prove on each
    model; which model is more robust is the worst case's question."""
    r = PAIR_RADIUS
    gaps = pd.DataFrame([{"certified": df[f"certified_test_eps{r:g}"] - ce[f"certified_test_eps{r:g}"],
                          "worst": df[f"certify_worst_test_eps{r:g}"] - ce[f"certify_worst_test_eps{r:g}"]}
                         for _, ce, df in both], columns=["certified", "worst"]).dropna()
    lower, higher = int((gaps["certified"] < 0).sum()), int((gaps["certified"] > 0).sum())
    if not lower + higher:
        return f"Certified accuracy at {r:g}/255: no pair with both numbers differs."
    p = stats.binomtest(lower, lower + higher, 0.5).pvalue
    return (f"Certified accuracy at {r:g}/255, differential against CE: lower on {lower}, higher "
            f"on {higher}, equal on {len(gaps) - lower - higher} of {len(gaps)} pairs (two-sided "
            f"sign test on the pairs that differ, p {p:.2g}); median difference "
            f"{100 * gaps['certified'].median():+.1f} points certified, "
            f"{100 * gaps['worst'].median():+.1f} points worst case. This is what the bounds prove "
            "on each model, not which model is more robust.")

