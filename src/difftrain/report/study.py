"""`difftrain study [EXP ...] [--all]`: the paper's claims across experiments.

Reads experiments through DVC (``dvc.api.exp_show``: names, parameters and the headline metrics in
``metrics/summary.json`` of every experiment derived from ``--rev``, HEAD by default), groups them
by every parameter that differs between them except the seeds (``grouping``: loss, training
length, adversarial radius, class pair, ...; the table names them), averages over the seeds
(mean, min and max), and draws one figure of panels against training length: clean test accuracy;
robust accuracy at the headline epsilon on test and training images, the paper's attack dashed
and the worst case over all attacks solid; penultimate-feature components for 99% of the
variance; the head's margin over the SVM optimum; the median first-order input-space margin. The
table is written beside the figure (CSV), one row per group, and printed as Markdown.

    difftrain study --all --out docs/figures/study.png
    difftrain study --all --by classes --out docs/classpairs/classpairs.png   (crossrun.py)

An experiment whose parameters or metrics cannot be read is left out with a warning naming it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import dvc.api  # noqa: E402
from tqdm import tqdm  # noqa: E402

from difftrain.report import crossrun, fig2, paired  # noqa: E402
from difftrain.report.crossrun import RADII  # noqa: E402
from difftrain.core.errors import DataError  # noqa: E402
from difftrain.core.io import is_accuracy  # noqa: E402
from difftrain.core.keys import eps_key, flatten  # noqa: E402
from difftrain.core.params import Params  # noqa: E402
from difftrain.report.plots import check_figure_out, save_figure  # noqa: E402

# study column -> summary.json key ({tag}: the headline epsilon's key suffix)
METRICS = {
    "clean_test_accuracy": "clean_test_accuracy",
    "clean_train_accuracy": "clean_train_accuracy",
    "paper_test": "pgd_test_accuracy_at_{tag}",
    "paper_train": "pgd_train_accuracy_at_{tag}",
    "worst_test": "robust_test_accuracy_at_{tag}",
    "worst_train": "robust_train_accuracy_at_{tag}",
    "components_90": "feature_components_90",
    "components_95": "feature_components_95",
    "components_99": "feature_components_99",
    "numerical_rank": "feature_numerical_rank",
    "effective_rank": "feature_effective_rank",
    "margin_ratio": "margin_ratio",
    "first_order_margin_test": "first_order_margin_test_median",
    "gradient_l1_test": "gradient_l1_test_median",
    "l2_test_median": "l2_test_median",
}
# study column -> metrics/attack.json key, at the radii the cross-run analysis compares
ATTACK = {f"{kind}_test_eps{r}": f"test.{key}.eps{r}.accuracy"
          for r in RADII for kind, key in (("paper", "pgd"), ("worst", "worst"))}
# study column -> metrics/certify.json key: each robust accuracy's interval on test
CERTIFY_RADII = (0.5, 1, 2, 4, 8)
CERTIFY = {**{f"certified_test_eps{r:g}": f"test.certified.{eps_key(r)}.accuracy" for r in CERTIFY_RADII},
           **{f"certify_worst_test_eps{r:g}": f"test.worst.{eps_key(r)}.accuracy" for r in CERTIFY_RADII},
           "certified_but_fooled": "test.certified_but_fooled",
           "bound_violations": "test.bound_violations",
           **{f"certify_{m}_decided": f"test.decided.{m}" for m in ("crown", "alpha_crown", "milp")},
           **{f"certify_{m}_tried": f"test.tried.{m}" for m in ("crown", "alpha_crown", "milp")},
           **{f"certify_{m}_seconds": f"test.seconds_per_attempt.{m}"
              for m in ("crown", "alpha_crown", "milp")},
           "certify_unstable_eps0_5": "test.unstable_after_crown.eps0_5.median",
           "certify_unstable_eps1": "test.unstable_after_crown.eps1.median",
           "certify_milp_adversarial": "test.milp.adversarial",
           "certify_milp_undecided": "test.milp.undecided"}
FLAGS = ["paper_attack_overstates", "blackbox_beats_whitebox", "not_converged",
         "suspect_gradient_masking"]


# Every parameter of params.yaml, as exp_show names its column; the seeds are averaged over.
PARAMS = list(flatten(Params().model_dump(mode="json")))
SEEDS = [key for key in PARAMS if key == "seed" or key.endswith(".seed")]
EPOCHS = "train.epochs"


def _get(row: dict, name: str, path: str):
    """A column of dvc.api.exp_show's flat rows: bare when unique, 'path:name' when not."""
    return row.get(f"{path}:{name}", row.get(name))


def _value(value):
    """A parameter's value in a form that groups and prints: lists as 'a/b', whole floats as
    ints (exp_show gives numbers as floats)."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        value = [v.strip(" '\"") for v in value[1:-1].split(",")]
    if isinstance(value, (list, tuple)):
        return "/".join(str(_value(v)) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _record(row: dict, name: str) -> dict:
    """The study's row of one experiment; an unreadable parameter or an accuracy outside [0, 1]
    is a DataError naming the file and the key."""
    def number(key: str, kind: type):
        value = _get(row, key, "params.yaml")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (kind is int and not float(value).is_integer()):
            raise DataError(f"params.yaml: {key} is {value!r}, not {'an integer' if kind is int else 'a number'}")
        return kind(value)

    eps = number("plot.headline_eps_255", float)
    record = {"experiment": name, **{key: _value(_get(row, key, "params.yaml")) for key in PARAMS},
              "seed": number("seed", int), EPOCHS: number(EPOCHS, int), "headline_eps_255": eps}
    tag = eps_key(eps).removeprefix("eps")
    for column, key in METRICS.items():
        value = _get(row, key.format(tag=tag), "metrics/summary.json")
        if value is not None and "accuracy" in key and not is_accuracy(value):
            raise DataError(f"metrics/summary.json: {key.format(tag=tag)} must be an accuracy in "
                            f"[0, 1]; got {value!r}")
        record[column] = float(value) if isinstance(value, (int, float)) else math.nan
    for column, key in ATTACK.items():
        value = _get(row, key, "metrics/attack.json")
        if value is not None and not is_accuracy(value):
            raise DataError(f"metrics/attack.json: {key} must be an accuracy in [0, 1]; "
                            f"got {value!r}")
        record[column] = float(value) if isinstance(value, (int, float)) else math.nan
    for column, key in CERTIFY.items():  # absent (nan) where the certify stage did not write it
        value = _get(row, key, "metrics/certify.json")
        record[column] = float(value) if isinstance(value, (int, float)) \
            and not isinstance(value, bool) else math.nan
    for flag in FLAGS:  # exp_show gives booleans as the strings 'True' and 'False'
        record[flag] = str(_get(row, flag, "metrics/summary.json")) == "True"
    value = _get(row, "final_loss", "metrics/train.json")  # the last epoch's mean training loss
    record["final_loss"] = float(value) if isinstance(value, (int, float)) else math.nan
    for column in crossrun.MACHINE:  # the training stage's: it made the model
        record[column] = _get(row, f"provenance.{column}", "metrics/train.json")
    return record


PER_IMAGE = "data/attack/per_image.csv"


def per_image(repo: str, names: list[str]) -> pd.DataFrame:
    """Each named experiment's per-image outcomes (``paired.image_outcomes`` of the attack
    stage's table, read through DVC from the cache or the remote), with the experiment's name;
    a DataError naming the experiment where its table cannot be read."""
    frames = []
    for name in tqdm(names, desc="per-image outcomes", disable=len(names) < 5):
        try:
            with dvc.api.open(PER_IMAGE, repo=repo, rev=name) as handle:
                table = pd.read_csv(handle)
        except Exception as exc:  # dvc raises many types for a missing rev or file
            raise DataError(f"{PER_IMAGE} of experiment {name}: cannot read it through DVC "
                            f"({type(exc).__name__}: {exc}); `difftrain grid collect` first") from None
        frames.append(paired.image_outcomes(table).assign(experiment=name))
    if not frames:
        return pd.DataFrame(columns=paired.IMAGE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def dvc_table(repo: str, name: str, path: str) -> pd.DataFrame:
    """A tab-separated output of experiment ``name`` (a dvclive series), read through DVC."""
    try:
        with dvc.api.open(path, repo=repo, rev=name) as handle:
            return pd.read_csv(handle, sep="\t")
    except Exception as exc:  # dvc raises many types for a missing rev or file
        raise DataError(f"{path} of experiment {name}: cannot read it through DVC "
                        f"({type(exc).__name__}: {exc}); `difftrain grid collect` first") from None


def experiments(repo: str = ".", rev: str | list[str] | None = None, names: list[str] | None = None,
                warn=print) -> pd.DataFrame:
    """One row per finished experiment: its name, every parameter and the study metrics.

    An experiment whose parameters or metrics cannot be read is left out, named (``warn``), so
    one damaged run does not stop the study; one that failed is left out too, and so named when
    asked for by name."""
    try:
        rows = dvc.api.exp_show(repo=repo, revs=rev)
    except Exception as exc:  # dvc raises many types for a bad repo or revision
        raise DataError(f"cannot list experiments of {repo} ({type(exc).__name__}: {exc})") from None
    out, failed = [], []
    for row in rows:
        name = row.get("Experiment")
        if not name or (names and name not in names):
            continue
        if row.get("State") not in (None, "Success"):
            failed.append(f"{name} ({row.get('State')})")
            continue
        if _get(row, "plot.headline_eps_255", "params.yaml") is None:
            continue  # not a difftrain experiment, or one without metrics
        try:
            out.append(_record(row, name))
        except DataError as exc:
            warn(f"warning: experiment {name} left out: {exc}")
    if names:
        missing = sorted(set(names) - {r["experiment"] for r in out})
        if missing:
            said = f"; not finished: {', '.join(failed)}" if failed else ""
            raise DataError(f"no finished difftrain experiment named {', '.join(missing)} "
                            f"(see `dvc exp show`){said}")
    if not out:
        raise DataError("no finished difftrain experiments found (run `dvc exp show`)")
    return once_per_setting(pd.DataFrame(out), warn)


def once_per_setting(table: pd.DataFrame, warn=print) -> pd.DataFrame:
    """Experiments with identical parameters, seeds included, are one measurement (a rerun, or
    one grid read at two commits), not two seeds: the first by name is kept, the others named."""
    key = [k for k in PARAMS if k in table]
    text = table[key].astype(str).agg("|".join, axis=1)
    table = table.assign(_setting=text).sort_values("experiment", kind="stable")
    for _, group in table.groupby("_setting", sort=False):
        if len(group) > 1:
            kept, *rest = group["experiment"]
            warn(f"warning: {', '.join(rest)} repeat{'s' if len(rest) == 1 else ''} the parameters "
                 f"and seed of {kept}: counted once, as {kept}")
    return table.drop_duplicates("_setting").drop(columns="_setting").sort_index().reset_index(drop=True)


def grouping(table: pd.DataFrame) -> list[str]:
    """The parameters that differ between the experiments, seeds excepted, in params.yaml's
    order: runs that agree on all of them are seeds of one setting. (Grouping by a fixed list
    would average, say, two class pairs with the same seed as if they were seeds.)"""
    return [key for key in PARAMS if key not in SEEDS and key in table
            and table[key].astype(str).nunique() > 1]


def aggregate(table: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per setting (``by``, default ``grouping``): the seeds, and mean / min / max of
    each metric over them; a flag column counts the seeds that raised it."""
    by = grouping(table) if by is None else by
    keyed = table.assign(_all="all") if not by else table
    groups = keyed.groupby(by or ["_all"], sort=True, dropna=False)
    stats = groups[list(METRICS)].agg(["mean", "min", "max"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    summary = pd.concat([groups["seed"].agg(seeds=lambda s: " ".join(map(str, sorted(s)))),
                         groups["seed"].size().rename("n_seeds"), stats,
                         groups[FLAGS].sum()], axis=1).reset_index()
    return summary.drop(columns="_all", errors="ignore")


def _label(row, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all runs"


PANELS = [("clean_test_accuracy", "clean test accuracy", None),
          ("worst_test", "robust test accuracy at {eps}/255", "paper_test"),
          ("worst_train", "robust train accuracy at {eps}/255", "paper_train"),
          ("components_99", "PCA components for 99% (train)", None),
          ("margin_ratio", "head / SVM margin (train features)", None),
          ("first_order_margin_test", "median first-order margin (test, /255)", None)]


def draw(summary: pd.DataFrame, by: list[str], out: Path, headline_eps: str) -> None:
    """Panels against training length, one colour per setting of the other grouping
    parameters; bars span the seeds."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lines = [k for k in by if k != EPOCHS]
    x = EPOCHS if EPOCHS in summary else None
    runs = list(summary.groupby(lines, sort=True, dropna=False)) if lines else [((), summary)]
    for ax, (metric, title, dashed) in zip(axes.flat, PANELS):
        for i, (_, part) in enumerate(runs):
            label = _label(part.iloc[0], lines)
            xs = part[x].to_numpy(float) if x else [0.0] * len(part)
            for column, style in ((metric, "-"), (dashed, "--")):
                if column is None:
                    continue
                mean, low, high = (part[f"{column}_{s}"].to_numpy(float)
                                   for s in ("mean", "min", "max"))
                ax.errorbar(xs, mean, yerr=[mean - low, high - mean], fmt="o" + style, capsize=3,
                            color=colours[i % len(colours)],
                            label=label if style == "-" else None)
        if x:
            ticks = sorted(summary[x].unique())
            ax.set(xscale="log", xlabel="epochs")
            ax.set_xticks(ticks, labels=ticks)
        ax.set(title=title.format(eps=headline_eps))
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("The study: solid = worst case over all attacks, dashed = the paper's attack; "
                 "bars span the seeds")
    save_figure(fig, out)


# README table: (study column, heading, scale, decimals); "{eps}" is the headline epsilon
TABLE = [("clean_test_accuracy", "clean test %", 100, 1),
         ("paper_test", "paper's PGD, test, {eps}/255 %", 100, 1),
         ("worst_test", "worst case, test, {eps}/255 %", 100, 1),
         ("paper_train", "paper's PGD, train, {eps}/255 %", 100, 1),
         ("worst_train", "worst case, train, {eps}/255 %", 100, 1),
         ("components_99", "PCA comps. 99%", 1, 0),
         ("margin_ratio", "head / SVM margin", 1, 2),
         ("first_order_margin_test", "first-order margin, test, /255", 1, 2),
         ("gradient_l1_test", "median grad L1, test", 1, 0)]


def cell(row, column: str, scale: float, decimals: int) -> str:
    """Mean over seeds, (min-max) where there are several, n/a where undefined."""
    mean, low, high = (row[f"{column}_{s}"] * scale for s in ("mean", "min", "max"))
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{decimals}f}"
    return text + (f" ({low:.{decimals}f}-{high:.{decimals}f})" if row["n_seeds"] > 1 else "")


def markdown(summary: pd.DataFrame, by: list[str], headline_eps: str) -> str:
    """The study table as Markdown: the grouping parameters by name, the seeds, each metric's
    mean over seeds with its range, and how many seeds raised each soundness flag."""
    eps = headline_eps
    head = [*by, "seeds", *(title.format(eps=eps) for _, title, _, _ in TABLE), "flags (seeds)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for _, row in summary.iterrows():
        flags = ", ".join(f"{flag} {int(row[flag])}/{row['n_seeds']}" for flag in FLAGS
                          if row[flag]) or "none"
        cells = [*(str(row[k]) for k in by), row["seeds"],
                 *(cell(row, column, scale, decimals) for column, _, scale, decimals in TABLE), flags]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="experiment names (default: with --all)")
    parser.add_argument("--all", action="store_true", help="every finished experiment")
    parser.add_argument("--rev", action="append", default=None,
                        help="baseline commit the experiments derive from (default HEAD; "
                             "repeat it for a grid run at several commits)")
    parser.add_argument("--repo", default=".")
    parser.add_argument("--by", choices=("classes", "fig2", "intervention"), default=None,
                        help="classes: the cross-run analysis per class pair (crossrun.py); fig2: "
                             "the rank curves of grids/fig2.yaml; intervention: rank-one against "
                             "standard CE features, grids/intervention.yaml (fig2.py)")
    parser.add_argument("--out", default="study.png", help="figure to write; the CSVs go beside it")
    args = parser.parse_args(argv)
    if not args.experiments and not args.all:
        parser.error("name experiments or pass --all")
    out = Path(args.out)
    written = []
    try:
        check_figure_out(out)
        out.parent.mkdir(parents=True, exist_ok=True)  # a new folder, as for the figure itself
        table = experiments(args.repo, args.rev, args.experiments or None,
                            warn=lambda line: print(line, file=sys.stderr))
        if args.by in ("fig2", "intervention"):
            fig2.main(table, out, written, args.by,
                      read=lambda name, path: dvc_table(args.repo, name, path))
        elif args.by == "classes":
            crossrun.main(table, out, written, grouping(table),
                          [k for k in PARAMS if k in table],
                          images_of=lambda names: per_image(args.repo, names))
        else:
            report(table, out, written)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {exc.filename or out}: {exc.strerror or exc}; written before it failed: "
              f"{', '.join(map(str, written)) or 'nothing'}", file=sys.stderr)
        sys.exit(2)


def headline_label(table: pd.DataFrame) -> str:
    """The headline radius for the headings: its value, or 'headline' where runs differ."""
    radii = table["headline_eps_255"].unique()
    return f"{radii[0]:g}" if len(radii) == 1 else "headline"


def report(table: pd.DataFrame, out: Path, written: list) -> None:
    """The study's figure, its table (CSV and Markdown) and one row per run, each path added to
    ``written`` once it is."""
    by = grouping(table)
    summary = aggregate(table, by)
    eps = headline_label(table)
    runs = out.with_name(out.stem + "_runs.csv")
    draw(summary, by, out, eps)
    written.append(out)
    summary.to_csv(out.with_suffix(".csv"), index=False)
    written.append(out.with_suffix(".csv"))
    table.sort_values([*by, "seed"]).to_csv(runs, index=False)
    written.append(runs)
    print(markdown(summary, by, eps))
    print(f"wrote {', '.join(map(str, written))} ({len(table)} experiments, {len(summary)} groups "
          f"by {', '.join(by) or 'nothing: every run has the same parameters'})")


if __name__ == "__main__":
    main()
