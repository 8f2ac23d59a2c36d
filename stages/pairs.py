"""pairs: the block-structured pair index that differential training consumes."""

from difftrain import pairs
from difftrain.cli import run_stage
from difftrain.data import load_split
from difftrain.io import Outputs
from difftrain.provenance import inherited


def main(params):
    labels = load_split("data/prepared/train.pt").labels
    index = pairs.build(labels, params.pairs, params.train.epochs)
    metrics = {"strategy": index.strategy, "block_size": params.pairs.block_size,
               "fraction_requested": params.pairs.fraction, **index.coverage(),
               "provenance": inherited()}
    with Outputs() as out:
        out.save_torch(index.to_dict(), "data/pairs/index.pt")
        out.save_json(metrics, "metrics/pairs.json")
    print(f"pair index: {metrics['blocks_per_class']} blocks per class, "
          f"{metrics['fraction']:.3f} of {metrics['pairs_total']} pairs over {index.epochs} epochs")


if __name__ == "__main__":
    run_stage(main)
