"""certify: each attacked image's largest certified Linf radius; robust accuracy as an interval."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

import pandas as pd
import torch

from difftrain.certify.cascade import certify_split
from difftrain.core.cli import run_stage
from difftrain.data.cifar import load_splits, splits_sha256
from difftrain.core.errors import DataError
from difftrain.core.io import Outputs, ensure_writable
from difftrain.core.keys import eps_key
from difftrain.train.model import load_checkpoint, model_config
from difftrain.report.tables import read_table
from difftrain.core.provenance import inherited

OUTPUTS = ["plots/certify", "data/certify", "metrics/certify.json"]
PER_IMAGE = "data/attack/per_image.csv"


def attacked(table: pd.DataFrame, name: str, split) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, smallest fooling radius) of the split's attacked images, checked against the
    prepared data: a table from other data would certify other images than were attacked."""
    rows = table[table["split"] == name]
    positions = torch.tensor(rows["position"].to_numpy(), dtype=torch.int64)
    if not len(rows) or positions.min() < 0 or positions.max() >= len(split.labels) \
            or not torch.equal(split.labels[positions], torch.tensor(rows["label"].to_numpy())):
        raise DataError(f"{PER_IMAGE}: its {name} images do not match data/prepared (positions or "
                        f"labels differ); rerun the attack stage (dvc repro attack)")
    worst = torch.tensor(pd.to_numeric(rows["worst_min_eps_255"], errors="coerce").to_numpy(),
                         dtype=torch.float64)
    if torch.isnan(worst).any():
        raise DataError(f"{PER_IMAGE}: worst_min_eps_255 must be a number (inf: never fooled)")
    return positions, worst


def split_params(certify, name: str):
    """The cascade for one split: the cheap bounds only where ``certify.crown_splits`` leaves
    it out."""
    if name in certify.crown_splits:
        return certify
    return certify.model_copy(update={"methods": tuple(m for m in certify.methods
                                                       if m in ("ibp", "crown_ibp"))})


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()  # read first: a missing input fails before any work
    table = read_table(PER_IMAGE, ["split", "position", "label", "worst_min_eps_255"])
    splits = load_splits()
    model, _ = load_checkpoint(expected_config=model_config(params),
                               data_sha256=splits_sha256(splits),
                               sample=splits["train"].images)
    grid = params.attack.pgd.epsilons
    results = []
    for name, split in splits.items():
        positions, worst = attacked(table, name, split)
        results.append(certify_split(model, name, split.images[positions], split.labels[positions],
                                     positions, worst, grid, split_params(params.certify, name)))
    metrics = {r.name: r.metrics() for r in results}
    metrics["provenance"] = provenance
    with Outputs() as out:
        for r in results:
            out.save_csv(r.table(), f"plots/certify/{r.name}.csv")
        out.save_csv(pd.concat([r.per_image() for r in results]), "data/certify/per_image.csv")
        out.save_csv(pd.concat([r.attempts_table() for r in results]), "data/certify/attempts.csv")
        out.save_json(metrics, "metrics/certify.json")
    headline = eps_key(params.plot.headline_eps_255)
    for r in results:
        m = metrics[r.name]
        closed = ", ".join(f"{e:g}" for e in m["closed_at"]) or "no radius"
        print(f"{r.name}: certified {m['certified'].get(headline, {}).get('accuracy', float('nan')):.3f} "
              f"at the headline radius; interval closed at {closed}/255; decided {m['decided']} "
              f"of {m['tried']}; crown skipped {m['crown_skipped']}; milp {m['milp']}")
        if m["certified_but_fooled"] or m["bound_violations"]:
            print(f"SOUNDNESS VIOLATION: {m['certified_but_fooled']} {r.name} image(s) certified "
                  f"where an attack fooled them, {m['bound_violations']} bound(s) above a point "
                  f"an attack found: a bug in an attack, the bounds or the plumbing "
                  f"(data/certify/attempts.csv)")


if __name__ == "__main__":
    run_stage(main)
