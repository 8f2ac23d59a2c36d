"""pairs: the block-structured pair index that differential training consumes."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from difftrain.data import pairs
from difftrain.core.cli import run_stage
from difftrain.data.cifar import load_split
from difftrain.core.io import Outputs, ensure_writable
from difftrain.train.objectives import OBJECTIVES
from difftrain.core.provenance import inherited

OUTPUTS = [pairs.INDEX_PATH, "metrics/pairs.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()  # read first: a missing input fails before any work
    if not OBJECTIVES[params.loss].pairwise:  # e.g. cross-entropy: no index, so no pair checks
        with Outputs() as out:
            out.save_bytes(pairs.not_needed(params.loss), pairs.INDEX_PATH)
            out.save_json({"needed": False, "loss": params.loss, "provenance": provenance},
                          "metrics/pairs.json")
        print(f"pair index: not needed by loss {params.loss}")
        return
    labels = load_split("data/prepared/train.safetensors").labels
    index = pairs.build(labels, params.pairs, params.train.epochs)
    metrics = {"needed": True, "strategy": index.strategy, "block_size": params.pairs.block_size,
               "fraction_requested": params.pairs.fraction, **index.coverage(),
               "provenance": provenance}
    with Outputs() as out:
        out.save_bytes(index.to_bytes(), pairs.INDEX_PATH)
        out.save_json(metrics, "metrics/pairs.json")
    print(f"pair index: {metrics['blocks_per_class']} blocks per class, "
          f"{metrics['fraction']:.3f} of {metrics['pairs_total']} pairs over {index.epochs} epochs")


if __name__ == "__main__":
    run_stage(main)
