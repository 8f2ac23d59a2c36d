"""attack: PGD (Linf) and Carlini-Wagner (L2) sweeps on training and test images."""

import pandas as pd

from difftrain.attack import attack_split
from difftrain.cli import run_stage
from difftrain.data import load_splits
from difftrain.io import Outputs
from difftrain.model import load_checkpoint, model_config
from difftrain.provenance import inherited
from difftrain.robustness import stratified
from difftrain.runtime import resolve_device, seed_everything


def main(params):
    a = params.attack
    splits = load_splits()
    chosen = {name: stratified(split, getattr(a, f"n_{name}"), a.seed, f"attack.n_{name}")
              for name, split in splits.items()}
    model, _ = load_checkpoint("models/model.pt", model_config(params),
                               map_location=resolve_device(params.device))
    seed_everything(a.seed)
    results = [attack_split(model, split, chosen[name], a, name) for name, split in splits.items()]
    metrics = {r.name: r.metrics() for r in results}
    metrics["provenance"] = inherited()
    with Outputs() as out:
        for r in results:
            for name, table in r.tables().items():
                table.to_csv(out.path(f"plots/attack/{name}.csv"), index=False)
        pd.concat([r.per_image() for r in results]).to_csv(out.path("data/attack/per_image.csv"),
                                                           index=False)
        out.save_json(metrics, "metrics/attack.json")
    for r in results:
        print(f"{r.name}: clean {r.clean_accuracy:.3f}, PGD worst at the largest epsilon "
              f"{r.worst[-1]:.3f}, median CW L2 {float(r.cw.min_radius.median()):.3f}")


if __name__ == "__main__":
    run_stage(main)
