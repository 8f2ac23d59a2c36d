"""`difftrain compare REV [REV ...]`: the paper's Figs. 4 and 5 style side by side.

Reads each revision's attack tables through DVC (``dvc.api.open``: a git revision, branch, tag
or experiment name; outputs come from the DVC cache or remote, so nothing is rerun) and draws
robust accuracy against epsilon, Linf (Fig. 4) and minimal L2 (Fig. 5), training images in the
top row and test images below, one colour per revision: the worst case over all attacks solid,
the paper's attack (foolbox PGD, CW) dashed. ``workspace`` names the current workspace.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import dvc.api
from difftrain.core.errors import DataError
from difftrain.report.plots import (CURVE_LABEL, CURVE_STYLE, SPLIT_STYLE, check_figure_out, save_figure,
                             symlog_eps)

# panel -> (axis label, its curves: worst case first, then the paper's attack)
PANELS = {"linf": ("Linf, /255 (Fig. 4)", ("worst", "paper_pgd")),
          "l2": ("L2, pixels in [0, 1] (Fig. 5)", ("l2_worst", "cw"))}


def read_at(path: str, rev: str | None, repo: str = ".") -> pd.DataFrame:
    try:
        with dvc.api.open(path, repo=repo, rev=rev) as f:
            return pd.read_csv(io.StringIO(f.read()))
    except Exception as exc:  # dvc raises many types for a missing rev or file
        state = experiment_state(rev, repo) if rev else None
        if state not in (None, "Success"):
            raise DataError(f"experiment {rev} did not finish (state: {state}); it has no "
                            f"results to compare (`dvc queue logs {rev}` says why)") from None
        raise DataError(f"{path} at {rev or 'workspace'}: cannot read it through DVC "
                        f"({type(exc).__name__}: {exc})") from None


def experiment_state(name: str, repo: str = ".") -> str | None:
    """An experiment's state as `dvc exp show` gives it (Success, Failed, Queued, Running), or
    None when no experiment has that name."""
    try:
        rows = dvc.api.exp_show(repo=repo)
    except Exception:  # dvc raises many types; the caller reports its own error then
        return None
    return next((row.get("State") or "Success" for row in rows if row.get("Experiment") == name),
                None)


def label_of(rev: str | None, repo: str = ".") -> str:
    """'rev (loss, optimizer, epochs[, adversarial eps])' from the revision's own params, so the
    legend says what the run is."""
    try:
        p = dvc.api.params_show(repo=repo, rev=rev)
    except Exception:  # dvc raises many types; the bare name is still a usable label
        return rev or "workspace"
    t = p["train"]
    eps = t.get("adversarial", {}).get("eps", 0)
    return (f"{rev or 'workspace'} ({p['loss']}, {t['optimizer']}, {t['epochs']} epochs"
            + (f", adversarial {eps:g}/255" if eps else "") + ")")


def collect(revs: list[str | None], repo: str = ".") -> pd.DataFrame:
    tables = []
    for rev in revs:
        label = label_of(rev, repo)
        for panel, (_, curves) in PANELS.items():
            for curve in curves:
                for split in SPLIT_STYLE:
                    t = read_at(f"plots/attack/{curve}_{split}.csv", rev, repo)
                    tables.append(t.assign(panel=panel, experiment=label,
                                           curve=CURVE_LABEL[curve]))
    return pd.concat(tables, ignore_index=True)


def draw(table: pd.DataFrame, out: Path, data_label: str = "") -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), squeeze=False)
    for row, split in enumerate(SPLIT_STYLE):
        for ax, (panel, (xlabel, curves)) in zip(axes[row], PANELS.items()):
            part = table[(table["panel"] == panel) & (table["split"] == split)]
            sns.lineplot(data=part, x="eps", y="accuracy", hue="experiment", style="curve",
                         dashes={CURVE_LABEL[c]: CURVE_STYLE[c] for c in curves},
                         markers=True, ax=ax)
            ax.set(xlabel=f"epsilon, {xlabel}", ylabel="robust accuracy", ylim=(-0.02, 1.02),
                   title=f"{split} images")
            symlog_eps(ax, part["eps"])
            ax.legend(fontsize=7)
    fig.suptitle("Robust accuracy: worst case over all attacks solid, the paper's attack dashed"
                 + (f" ({data_label})" if data_label else ""))
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", help="git revisions or experiment names; "
                                                "'workspace' for the current workspace")
    parser.add_argument("--out", default="compare.png", help="PNG to write (default compare.png)")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    revs = [None if r == "workspace" else r for r in args.revs]
    try:
        check_figure_out(Path(args.out))
        table = collect(revs, args.repo)
        labels = {json.loads(dvc.api.read("metrics/prepare.json", repo=args.repo, rev=rev))
                  ["provenance"]["data_label"] for rev in revs}
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    written = []
    try:
        draw(table, Path(args.out), " / ".join(sorted(labels)))
        written.append(args.out)
        table.to_csv(Path(args.out).with_suffix(".csv"), index=False)
    except OSError as exc:
        print(f"error: {exc.filename or args.out}: {exc.strerror}; written before it failed: "
              f"{', '.join(map(str, written)) or 'nothing'}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.csv')}")


if __name__ == "__main__":
    main()
