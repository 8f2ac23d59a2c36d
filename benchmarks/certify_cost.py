"""What each bound of the certify stage costs and decides, side by side in one run.

    python benchmarks/certify_cost.py [--images 8] [--radii 0.5 1 2] [--alpha-steps 20]

On the workspace's model and attacked test images (run `dvc repro attack` first), the first
``--images`` test images no attack fooled at the largest radius. Per radius, seconds per image
of IBP, CROWN-IBP, CROWN one image a call (the old cascade) and CROWN batched (all images in one
call, what the stage runs now), the batching speed-up, alpha-CROWN on top of CROWN's
intermediate bounds, the unstable ReLUs after CROWN, and how many images CROWN and alpha-CROWN
certify (each bound with the float32 rounding allowance, against its float64 margin). Then the
full cascade's cost: CROWN at every radius up to ``certify.crown_max_eps`` below each image's
smallest fooling radius, the most attempts the stage could make, at the measured batched cost.
Time it with nothing else running, and compare ratios, not seconds, across machines.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from difftrain.certify import bounds as B, rounding as R
from difftrain.certify.milp import TOLERANCE, Encoder
from difftrain.core.labels import sign
from difftrain.core.params import load_params
from difftrain.data.cifar import load_splits, to_float
from difftrain.train.model import load_checkpoint


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.5, 1, 2])
    parser.add_argument("--alpha-steps", type=int, default=20)
    parser.add_argument("--milp", type=int, default=0, metavar="NODES",
                        help="also one MILP attempt (this node budget) on the first image CROWN "
                             "and alpha-CROWN leave at each radius: its size and cost")
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
    net = net.cpu().eval()
    layers = B.from_net(net)
    x, side = to_float(split.images[positions]).to(B.DTYPE), sign(split.labels[positions], B.DTYPE)
    n = len(x)
    print(f"{n} test images, {torch.get_num_threads()} threads; seconds per image")
    print(f"{'eps/255':>7} {'ibp':>7} {'crown_ibp':>9} {'crown 1/call':>12} {'batched':>8} "
          f"{'speed-up':>8} {'alpha':>7} {'unstable (median)':>17} {'certified: crown':>16} "
          f"{'alpha':>5}")
    batched_cost = {}
    for eps in args.radii:
        lower, upper = B.box(x, eps / 255)
        errors, t_round = clock(lambda: R.layer_errors(net, layers, lower, upper))
        boxes, t_ibp = clock(lambda: B.ibp(layers, lower, upper, errors))
        margin = R.float64_error(layers, lower, upper, boxes, errors)
        _, t_cibp = clock(lambda: B.final_bound(layers, boxes, side, lower, upper, errors=errors))
        single = 0.0
        for i in range(n):
            one = slice(i, i + 1)
            _, t = clock(lambda: B.final_bound(
                layers, B.crown_bounds(layers, lower[one], upper[one],
                                       errors=[e if e is None else e[one] for e in errors]),
                side[one], lower[one], upper[one],
                errors=[e if e is None else e[one] for e in errors]))
            single += t
        crown, t_batch = clock(lambda: B.crown_bounds(layers, lower, upper, errors=errors))
        bound, t_final = clock(lambda: B.final_bound(layers, crown, side, lower, upper, errors=errors))
        batched = t_batch + t_final
        batched_cost[eps] = batched / n
        alpha, t_alpha = clock(lambda: B.alpha_crown(layers, crown, side, lower, upper,
                                                     args.alpha_steps, errors=errors))
        unstable = B.unstable_counts(crown).double().median().item()
        counts = B.unstable_counts(crown)
        print(f"{eps:>7g} {(t_ibp + t_round) / n:>7.3f} {t_cibp / n:>9.3f} {single / n:>12.2f} "
              f"{batched / n:>8.2f} {single / batched:>7.1f}x {t_alpha / n:>7.2f} "
              f"{unstable:>17.0f} {int((bound > margin).sum()):>13}/{n} "
              f"{int((alpha > margin).sum()):>3}/{n}   (unstable {int(counts.min())}-{int(counts.max())})")
        left = torch.nonzero(alpha <= margin).flatten()
        if args.milp and len(left):
            i = int(left[0])
            one, pick = slice(i, i + 1), torch.tensor([i])
            err = [e if e is None else e[pick] for e in errors]
            threshold = float(margin[i] + TOLERANCE * R.float64_magnitude(
                layers, lower[one], upper[one], [(lo[pick], up[pick]) for lo, up in boxes], err))
            encoder, t_enc = clock(lambda: Encoder(layers))
            result, t_milp = clock(lambda: encoder.solve(
                lower[one], upper[one], [(lo[pick], up[pick]) for lo, up in crown], err,
                float(side[i]), threshold, args.milp))
            print(f"        MILP on image {i} ({int(counts[i])} binaries, {result.rows:,} rows): "
                  f"{result.status} after {result.nodes} nodes, {result.lp_iterations:,} simplex "
                  f"iterations, {t_milp:.0f} s (matrices {t_enc:.1f} s, once a network)")
    grid = [e for e in params.attack.pgd.epsilons if 0 < e <= params.certify.crown_max_eps]
    mean_cost = sum(batched_cost.values()) / len(batched_cost)
    print(f"\nfull cascade (CROWN up to {params.certify.crown_max_eps:g}/255 wherever no attack "
          f"fooled the image; an upper bound: an image stops at its first uncertified radius)")
    for name, rows in table.groupby("split"):
        attempts = sum(int((pd.to_numeric(rows["worst_min_eps_255"]) > e).sum()) for e in grid)
        print(f"  {name}: at most {attempts} attempts x {mean_cost:.2f} s = "
              f"{attempts * mean_cost / 3600:.2f} h on {torch.get_num_threads()} threads "
              f"(the stage's cap: {params.certify.crown_attempts} a split)")


if __name__ == "__main__":
    main()
