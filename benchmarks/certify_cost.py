"""What each bound of the certify stage costs, and what the full cascade would, in one run.

    python benchmarks/certify_cost.py [--images 4] [--radii 0.5 1 2]

On the workspace's model and attacked test images (run `dvc repro attack` first), for the first
``--images`` images no attack fooled at the largest radius: seconds per image of IBP, CROWN-IBP
and CROWN, CROWN both through windows (what the stage runs: a neuron's bound propagates only the
window of the maps it reaches) and through whole maps (the first version), their ratio, and the
largest difference between the two CROWN bounds (rounding only). Then the full cascade's cost:
CROWN at every radius of the attack grid up to ``certify.crown_max_eps`` below each image's
smallest fooling radius, the most attempts the stage could make without its
``certify.crown_attempts`` cap, at the measured seconds per attempt.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from difftrain.certify import bounds as B
from difftrain.data.cifar import load_splits, to_float
from difftrain.core.labels import sign
from difftrain.train.model import load_checkpoint
from difftrain.core.params import load_params


def timed(layers, x, side, eps, method, windows=True):
    start = time.perf_counter()
    bound = B.lower_margin(layers, x, side, eps / 255, method, windows=windows)
    return bound, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.5, 1, 2])
    args = parser.parse_args()
    params = load_params()
    table = pd.read_csv("data/attack/per_image.csv")
    test = table[table["split"] == "test"]
    test = test[pd.to_numeric(test["worst_min_eps_255"]) > max(args.radii)].head(args.images)
    if len(test) < args.images:
        raise SystemExit(f"only {len(test)} test images survive every attack at "
                         f"{max(args.radii):g}/255; pass smaller --radii or --images")
    split = load_splits()["test"]
    positions = torch.tensor(test["position"].to_numpy())
    net, _ = load_checkpoint()
    layers = B.from_net(net.cpu().eval())
    x, side = to_float(split.images[positions]).to(B.DTYPE), sign(split.labels[positions], B.DTYPE)
    print(f"{len(x)} test images, {torch.get_num_threads()} threads; seconds per image")
    print(f"{'eps/255':>8} {'ibp':>8} {'crown_ibp':>10} {'crown':>8} {'whole maps':>11} "
          f"{'ratio':>6} {'max |diff|':>11}")
    per_attempt = {}
    for eps in args.radii:
        cost = {m: timed(layers, x, side, eps, m)[1] / len(x) for m in ("ibp", "crown_ibp")}
        windowed, seconds = zip(*(timed(layers, x[i:i + 1], side[i:i + 1], eps, "crown")
                                  for i in range(len(x))))
        whole, whole_seconds = zip(*(timed(layers, x[i:i + 1], side[i:i + 1], eps, "crown", False)
                                     for i in range(len(x))))
        fast, slow = sum(seconds) / len(x), sum(whole_seconds) / len(x)
        per_attempt[eps] = fast
        diff = (torch.cat(windowed) - torch.cat(whole)).abs().max().item()
        print(f"{eps:>8g} {cost['ibp']:>8.4f} {cost['crown_ibp']:>10.4f} {fast:>8.2f} {slow:>11.2f} "
              f"{slow / fast:>5.1f}x {diff:>11.1e}")
    grid = [e for e in params.attack.pgd.epsilons if 0 < e <= params.certify.crown_max_eps]
    mean_cost = sum(per_attempt.values()) / len(per_attempt)
    print(f"\nfull cascade (CROWN up to {params.certify.crown_max_eps:g}/255 wherever no attack "
          f"fooled the image; an upper bound: an image stops at its first uncertified radius)")
    for name, rows in table.groupby("split"):
        attempts = sum(int((pd.to_numeric(rows["worst_min_eps_255"]) > e).sum()) for e in grid)
        print(f"  {name}: at most {attempts} attempts x {mean_cost:.2f} s = "
              f"{attempts * mean_cost / 3600:.2f} h on {torch.get_num_threads()} threads "
              f"(the stage's cap: {params.certify.crown_attempts} a split)")


if __name__ == "__main__":
    main()
