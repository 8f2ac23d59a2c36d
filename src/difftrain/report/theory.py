"""The theory stage's numbers that docs/pipeline.md quotes (Fig. 1 and Theorem 1, the Remark 1
sweep, Fig. 3), written from a committed copy of that stage's outputs, so the page holds no typed
number and a reader without the DVC cache can still check it.

    dvc repro theory && difftrain report --theory

``--theory`` copies ``metrics/theory.json``, the Remark 1 sweep (``plots/theory/remark1_k*.csv``)
and the theory parameters into ``docs/theory/theory.json``, and the stage's figures into
``docs/figures/theory_*.png``; ``difftrain report`` then fills the ``theory`` block from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from difftrain.core.errors import DataError
from difftrain.core.params import load_params

RECORD = Path("docs/theory/theory.json")
METRICS, SWEEP = Path("metrics/theory.json"), Path("plots/theory")
FIGURES, FIGURE_COPIES = Path("plots/theory_figures"), Path("docs/figures")
FIGURE_NAMES = ("fig1_linear.png", "theorem2_angles.png", "remark1.png", "fig3_network.png")


def collect(repo: Path) -> dict:
    """The record: the stage's metrics (provenance included), its sweep as rows, its parameters."""
    if not (repo / METRICS).is_file():
        raise DataError(f"{METRICS}: not found; run `dvc repro theory` first")
    metrics = json.loads((repo / METRICS).read_text(encoding="utf-8"))
    parts = sorted((repo / SWEEP).glob("remark1_k*.csv"))
    if not parts:
        raise DataError(f"{SWEEP}/remark1_k*.csv: not found; run `dvc repro theory` first")
    sweep = pd.concat([pd.read_csv(p) for p in parts]).sort_values(["subspace_dim", "offset"])
    theory = load_params(repo / "params.yaml").theory.model_dump(mode="json")
    return {"metrics": metrics, "remark1": sweep.to_dict("records"), "params": theory}


def save(repo: Path) -> list[Path]:
    """Write the record and copy the figures; returns what it wrote."""
    record = collect(repo)
    missing = [n for n in FIGURE_NAMES if not (repo / FIGURES / n).is_file()]
    if missing:
        raise DataError(f"{FIGURES}: {', '.join(missing)} not found; run `dvc repro theory` first")
    (repo / RECORD).parent.mkdir(parents=True, exist_ok=True)
    (repo / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written = [repo / RECORD]
    for name in FIGURE_NAMES:
        target = repo / FIGURE_COPIES / f"theory_{name}"
        shutil.copyfile(repo / FIGURES / name, target)
        written.append(target)
    return written


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _pct(ratio: float) -> str:
    return f"{100 * ratio:.1f}%"


def block(record: dict) -> str:
    """The Fig. 1 table, the Remark 1 sweep and Fig. 3 in numbers (Markdown)."""
    linear, network = record["metrics"]["linear"], record["metrics"]["network"]
    gd, limit = linear["theorem1"]["ce"], linear["theorem1"]["ce_limit"]
    svm = linear["svm_margin"]
    t = record["params"]
    lines = [f"| Fig. 1 (line offset {t['offset']:g} in R^2) | margin |", "| --- | --- |",
             f"| optimal (SVM) | {svm:.3f} |",
             f"| cross-entropy, gradient descent, {t['steps']:,} steps | {linear['ce_margin']:.3f} "
             f"({linear['ce_ratio']:.0%} of optimal) |",
             f"| cross-entropy limit (augmented SVM) | {linear['ce_limit_margin']:.3f} "
             f"({linear['ce_limit_margin'] / svm:.0%}) |",
             f"| Theorem 1 bound for the gradient-descent solution / for the limit | "
             f"{gd['bound']:.3f} / {limit['bound']:.3f} (`B` = {gd['B']:.2f} / {limit['B']:.2f}, "
             f"offset of the line {gd['offset']:.2f}; the bound holds: {_yes(gd['holds'])} / "
             f"{_yes(limit['holds'])}) |",
             f"| differential eq. (6), gradient descent + eq. (5) bias | "
             f"{linear['differential_margin']:.3f} ({linear['differential_ratio']:.0%}; angle to "
             f"the SVM {linear['final_angle_differential']:.1g} degrees) |"]
    sweep = pd.DataFrame(record["remark1"])
    d = t["sweep_d"]
    lowest = sweep.groupby("subspace_dim")["ce_limit_ratio"].min()
    below = sweep[sweep["subspace_dim"] < d]
    gap = (below["theorem1_bound_ratio"] - below["ce_limit_ratio"]).abs().max()
    full = sweep[sweep["subspace_dim"] == d]
    offsets = ", ".join(f"{o:g}" for o in sorted(sweep["offset"].unique()))
    remark = (f"Remark 1 sweep (d = {d}, offsets {offsets}): the CE limit's margin over the "
              f"optimum, lowest over the offsets, is "
              + ", ".join(f"{_pct(r)} for k = {k}" for k, r in lowest.items())
              + f". Theorem 1's bound over the optimum follows the limit to within "
              f"{100 * gap:.2f} points for k < {d}")
    if len(full):
        remark += (f"; for k = d = {d} the bound is {_pct(full['theorem1_bound_ratio'].min())} "
                   f"or more of the optimum while the limit falls to "
                   f"{_pct(full['ce_limit_ratio'].min())}")
    ce, df = network["cross_entropy"], network["differential"]
    fig3 = (f"Fig. 3 (two moons, one hidden layer of {t['mlp_hidden']}): training accuracy "
            f"{_pct(ce['train_accuracy'])} for cross-entropy and {_pct(df['train_accuracy'])} for "
            f"eq. (7); the smallest input-space margin {ce['input_margin_min']:.3f} and "
            f"{df['input_margin_min']:.3f}, the median {ce['input_margin_median']:.2f} and "
            f"{df['input_margin_median']:.2f}.")
    revision = record["metrics"].get("provenance", {}).get("git_revision", "unknown")
    at = revision[:10] + (" with uncommitted changes" if revision.endswith("-dirty") else "")
    return ("\n".join(lines) + "\n\n" + remark + ".\n\n" + fig3 + "\n\n"
            f"(`difftrain report`, from {RECORD}: the theory stage at revision {at}.)\n")
