"""pairs: the block-structured pair index that differential training consumes."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from difftrain import pairs
from difftrain.cli import run_stage
from difftrain.data import load_split
from difftrain.io import Outputs, ensure_writable
from difftrain.provenance import inherited

OUTPUTS = [pairs.INDEX_PATH, "metrics/pairs.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()  # read first: a missing input fails before any work
    labels = load_split("data/prepared/train.safetensors").labels
    index = pairs.build(labels, params.pairs, params.train.epochs)
    metrics = {"strategy": index.strategy, "block_size": params.pairs.block_size,
               "fraction_requested": params.pairs.fraction, **index.coverage(),
               "provenance": provenance}
    with Outputs() as out:
        out.save_bytes(index.to_bytes(), pairs.INDEX_PATH)
        out.save_json(metrics, "metrics/pairs.json")
    print(f"pair index: {metrics['blocks_per_class']} blocks per class, "
          f"{metrics['fraction']:.3f} of {metrics['pairs_total']} pairs over {index.epochs} epochs")


if __name__ == "__main__":
    run_stage(main)
