"""How long reading the two-class subset takes: difftrain's reader against torchvision's
ImageFolder + ToTensor (the usual way), on the same files, in one run.

    python benchmarks/prepare_read.py [--root data/raw] [--classes airplane horse]
"""

import argparse
import time

import torch
from torchvision import datasets, transforms

from difftrain.data.cifar import SPLITS, read_source


def time_ours(root, classes):
    start = time.perf_counter()
    n = sum(len(images) for split in SPLITS
            for images in read_source(root, classes, split)[1].values())
    return n, time.perf_counter() - start


def time_image_folder(root, classes):
    start, n = time.perf_counter(), 0
    for split in SPLITS:
        dataset = datasets.ImageFolder(f"{root}/{split}", transform=transforms.PILToTensor(),
                                       allow_empty=True)
        keep = [i for i, (_, c) in enumerate(dataset.samples) if dataset.classes[c] in classes]
        images = torch.stack([dataset[i][0] for i in keep])
        n += len(images)
    return n, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data/raw")
    parser.add_argument("--classes", nargs=2, default=["airplane", "horse"])
    args = parser.parse_args()
    time_ours(args.root, args.classes)  # warm the page cache so both read from memory
    n_ours, ours = time_ours(args.root, args.classes)
    n_ref, ref = time_image_folder(args.root, args.classes)
    assert n_ours == n_ref, (n_ours, n_ref)
    print(f"images read: {n_ours}")
    print(f"difftrain reader:           {ours:6.2f} s  ({n_ours / ours:8.0f} images/s)")
    print(f"torchvision ImageFolder:    {ref:6.2f} s  ({n_ref / ref:8.0f} images/s)")
    print(f"speed-up (ImageFolder / ours): {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
