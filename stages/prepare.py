"""prepare: the two-class CIFAR-10 subset as uint8 tensors, plus counts and content hashes."""

import _env  # noqa: F401  (one line, not a traceback, without the project's environment)

from difftrain.core.cli import run_stage
from difftrain.data.cifar import IMAGE_SUFFIXES, prepare, skipped_files, splits_sha256, tensor_sha256
from difftrain.core.io import Outputs, ensure_writable, git_revision
from difftrain.core.provenance import data_provenance, machine

OUTPUTS = ["data/prepared/train.safetensors", "data/prepared/test.safetensors",
           "data/prepared/provenance.json", "metrics/prepare.json"]


def main(params):
    ensure_writable(*OUTPUTS)
    source, splits = prepare(params.data)
    metrics = {"source": source, "classes": list(params.data.classes)}
    skipped = skipped_files(params.data.root, params.data.classes)
    if skipped:  # reported, not dropped silently (a stray .gif or notes.txt in a class folder)
        metrics["skipped_files"] = skipped
        print(f"prepare: skipped {sum(skipped.values())} files that are not "
              f"{'/'.join(sorted(IMAGE_SUFFIXES))} images: "
              f"{', '.join(f'{k} {v}' for k, v in skipped.items())}")
    for name, split in splits.items():
        metrics[name] = {"n": len(split.labels), **split.counts(params.data.classes),
                         "sha256": tensor_sha256(split.images, split.labels)}
    data = data_provenance(params, source, splits_sha256(splits))
    metrics["provenance"] = {**data, "git_revision": git_revision(), **machine()}
    with Outputs() as out:
        for name, split in splits.items():
            out.save_bytes(split.to_bytes(), f"data/prepared/{name}.safetensors")
        out.save_json(data, "data/prepared/provenance.json")
        out.save_json(metrics, "metrics/prepare.json")
    print(f"prepared {metrics['train']['n']} train / {metrics['test']['n']} test images "
          f"from {source} ({params.data.root})")


if __name__ == "__main__":
    run_stage(main)
