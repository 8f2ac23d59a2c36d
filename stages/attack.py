"""attack: the paper's PGD and CW, AutoAttack's APGD-CE, Square and FAB; worst case per image."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

import pandas as pd

from difftrain.attacks.attack import attack_splits
from difftrain.core.cli import run_stage
from difftrain.data.cifar import load_splits, splits_sha256
from difftrain.core.io import Outputs, ensure_writable
from difftrain.train.model import load_checkpoint, model_config
from difftrain.core.provenance import inherited
from difftrain.attacks.split_attack import MUST_HOLD
from difftrain.attacks.sweeps import stratified
from difftrain.core.runtime import resolve_device, seed_everything


OUTPUTS = ["plots/attack", "data/attack/per_image.csv", "metrics/attack.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()  # read first: a missing input fails before any work
    a = params.attack
    splits = load_splits()
    chosen = {name: stratified(split, getattr(a, f"n_{name}"), a.seed, f"attack.n_{name}")
              for name, split in splits.items()}
    device = resolve_device(params.device)
    model, _ = load_checkpoint(expected_config=model_config(params),
                               data_sha256=splits_sha256(splits),
                               sample=splits["train"].images)
    seed_everything(a.seed)
    headline = params.plot.headline_eps_255
    results = attack_splits(model, splits, chosen, a, headline, device)
    metrics = {r.name: r.metrics(a.overstatement_tol, a.convergence_tol, a.l2_overstatement_tol)
               for r in results}
    metrics["provenance"] = provenance
    with Outputs() as out:
        for r in results:
            for name, table in r.tables().items():
                out.save_csv(table, f"plots/attack/{name}.csv")
        out.save_csv(pd.concat([r.per_image() for r in results]), "data/attack/per_image.csv")
        out.save_json(metrics, "metrics/attack.json")
    k = a.pgd.epsilons.index(headline)
    for r in results:
        soundness = metrics[r.name]["soundness"]
        flags = [flag for flag, up in soundness.items() if (up is True) != (flag in MUST_HOLD)]
        print(f"{r.name}: clean {r.clean_accuracy:.3f}; at {headline:g}/255 the paper's PGD "
              f"{r.paper.accuracy[k]:.3f}, worst case {r.worst.accuracy[k]:.3f}; "
              f"flags: {', '.join(flags) or 'none'}")


if __name__ == "__main__":
    run_stage(main)
