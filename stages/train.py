"""train: the paper's CNN by cross-entropy or differential training; model, metrics, curves."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from dataclasses import asdict

from dvclive import Live

from difftrain.data import pairs
from difftrain.core.cli import run_stage
from difftrain.data.cifar import load_splits, splits_sha256
from difftrain.core.io import Outputs, ensure_writable
from difftrain.train.model import CHECKPOINT, checkpoint, model_config
from difftrain.train.objectives import OBJECTIVES
from difftrain.core.provenance import inherited
from difftrain.train.trainer import fit

OUTPUTS = [CHECKPOINT, "metrics/train.json", "dvclive/train"]


def main(params):
    ensure_writable(*OUTPUTS)
    provenance = inherited()  # read first: a missing input fails before any work
    splits = load_splits()
    index = pairs.load() if OBJECTIVES[params.loss].pairwise else None
    with Outputs() as out:
        live = Live(str(out.dir("dvclive/train")), dvcyaml=False, save_dvc_exp=False)

        def log(epoch):
            for key, value in asdict(epoch).items():
                if key != "epoch" and value is not None:  # the rank: every train.rank_every
                    live.log_metric(key, value, timestamp=False)
            live.next_step()

        result = fit(params, splits["train"], splits["test"], index, on_epoch=log)
        live.end()
        out.save_bytes(checkpoint(result.model, model_config(params), splits_sha256(splits)),
                       CHECKPOINT)
        out.save_json({**result.metrics, "provenance": provenance}, "metrics/train.json")
    m = result.metrics
    print(f"{params.loss}: train {m['train_accuracy']:.4f}, test {m['test_accuracy']:.4f}, "
          f"{m['wall_seconds']:.1f} s on {m['device']}")


if __name__ == "__main__":
    run_stage(main)
