"""Training throughput, measured side by side in one run on the same images and network:

* cross-entropy and differential (eq. 7) epochs of difftrain's trainer (device-resident uint8
  split, indexed batches; differential = one round of the pair index), and their ratio;
* a plain PyTorch loop: Dataset returning one float image at a time, DataLoader(shuffle=True),
  the same network, cross-entropy, the same batch size.

    python benchmarks/train_throughput.py [--epochs 2] [--synthetic 10000]

Reads data/prepared/train.safetensors (run `dvc repro prepare` first) unless --synthetic N is given.
"""

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from difftrain.data import pairs
from difftrain.data.cifar import Split, load_split, to_float
from difftrain.core.labels import is_x
from difftrain.train.model import Net
from difftrain.train.objectives import OBJECTIVES
from difftrain.core.params import parse_params
from difftrain.core.runtime import resolve_device
from difftrain.train.trainer import channel_stats, make_optimizer, train_epoch


class PerImage(Dataset):
    """The usual Dataset: one image converted per __getitem__ call."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self):
        return len(self.split.labels)

    def __getitem__(self, i):
        return to_float(self.split.images[i]), self.split.labels[i]


def time_epochs(run_epoch, epochs, device):
    run_epoch(0)  # warm-up: allocator, kernels, caches
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        run_epoch(epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--synthetic", type=int, default=0, help="N random images instead of data")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    if args.synthetic:
        g = torch.Generator().manual_seed(0)
        n = args.synthetic
        split = Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                      torch.arange(n) % 2, torch.arange(n))
    else:
        split = load_split("data/prepared/train.safetensors")
    n = len(split.labels)
    device = resolve_device(args.device)
    images, labels = split.images.to(device), split.labels.to(device)
    rates = {}
    for loss in ("cross_entropy", "differential"):
        n_x = int(is_x(split.labels).sum())
        blocks = pairs.n_blocks(n_x, len(split.labels) - n_x, 64)
        params = parse_params({"loss": loss, "device": args.device,
                               "pairs": {"fraction": 1 / blocks},  # one diagonal: any costs the same
                               "train": {"epochs": args.epochs + 1}})
        objective = OBJECTIVES[loss]
        index = pairs.build(split.labels, params.pairs, args.epochs + 1) if objective.pairwise \
            else None
        torch.manual_seed(0)
        model = Net(False, *channel_stats(split.images)).to(device)
        optimizer = make_optimizer(model, params, objective)
        generator = torch.Generator().manual_seed(0)
        seconds = time_epochs(lambda e: train_epoch(model, optimizer, objective,
                                                    params.train.batch_size, images, labels,
                                                    index, e, generator), args.epochs, device)
        rates[loss] = n / seconds

    params = parse_params({"device": args.device})
    torch.manual_seed(0)
    model = Net(False, *channel_stats(split.images)).to(device)
    ce = OBJECTIVES["cross_entropy"]
    optimizer = make_optimizer(model, params, ce)
    loader = DataLoader(PerImage(split), batch_size=params.train.batch_size, shuffle=True)

    def dataloader_epoch(_):
        model.train()
        for x, y in loader:
            loss = ce.batch_loss(model, x.to(device), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    rates["dataloader"] = n / time_epochs(dataloader_epoch, args.epochs, device)

    print(f"{n} images, {args.epochs} timed epochs each, device {device}, "
          f"{torch.get_num_threads()} threads")
    for name, rate in rates.items():
        print(f"  {name:<16} {rate:9.0f} images/s")
    print(f"differential epoch cost / cross-entropy epoch cost: "
          f"{rates['cross_entropy'] / rates['differential']:.3f}x (target <= 1.25x)")
    print(f"difftrain cross-entropy speed-up over the DataLoader loop: "
          f"{rates['cross_entropy'] / rates['dataloader']:.2f}x")


if __name__ == "__main__":
    main()
