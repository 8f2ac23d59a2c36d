"""prepare: the two-class CIFAR-10 subset as uint8 tensors, plus counts and content hashes."""

from difftrain.cli import run_stage
from difftrain.data import prepare, tensor_sha256
from difftrain.io import Outputs, git_revision
from difftrain.provenance import data_provenance


def main(params):
    source, splits = prepare(params.data)
    metrics = {"source": source, "classes": list(params.data.classes)}
    with Outputs() as out:
        for name, split in splits.items():
            out.save_torch(split.to_dict(), f"data/prepared/{name}.pt")
            metrics[name] = {"n": len(split.labels), **split.counts(params.data.classes),
                             "sha256": tensor_sha256(split.images, split.labels)}
        data_sha256 = tensor_sha256(*(t for split in splits.values()
                                      for t in (split.images, split.labels)))
        data = data_provenance(params, source, data_sha256)
        out.save_json(data, "data/prepared/provenance.json")
        metrics["provenance"] = {**data, "git_revision": git_revision()}
        out.save_json(metrics, "metrics/prepare.json")
    print(f"prepared {metrics['train']['n']} train / {metrics['test']['n']} test images "
          f"from {source} ({params.data.root})")


if __name__ == "__main__":
    run_stage(main)
