"""Why does the paper's PGD miss adversarials the other attacks find: too small a budget, or gradients
that carry no information?

For each split and epsilon given, takes the images the attack stage's worst case fooled at that
radius but the paper's PGD (``attack.pgd`` in ``params.yaml``) did not (``data/attack/per_image.csv``),
and counts how many of them PGD fools with a larger budget (more restarts, more steps, a larger
step) and how many APGD-CE does. If a larger budget recovers most of them, the paper's attack
*stops short* there; if none does, suspect masked gradients. It also counts the attacked images
whose input gradient is exactly zero, at the image and at random points of the ball (a score that
is locally constant: no gradient attack can move from there, a black-box attack can).

    python benchmarks/pgd_budget_check.py [--eps 32 64]

Run it after ``dvc repro`` on the same parameters (it reads ``params.yaml``, the model and the
per-image table). Measured on the positive control (cross-entropy, ``train.adversarial.eps=8``,
30 epochs): README, Results.
"""

import argparse
import logging

import numpy as np
import pandas as pd
import torch

from difftrain.attacks.autoattack_attacks import APGD
from difftrain.data.cifar import load_splits, to_float
from difftrain.attacks.diagnostics import input_gradients
from difftrain.attacks.foolbox_attacks import PGD
from difftrain.train.model import TwoLogits, load_checkpoint
from difftrain.core.params import PGDParams, load_params

# Larger budgets for the paper's PGD, as changes to its parameters (``attack.pgd``).
BUDGETS = [dict(restarts=10), dict(steps=400), dict(rel_stepsize=0.25),
           dict(steps=100, rel_stepsize=0.25, restarts=5)]
RANDOM_POINTS = 10  # random points per image in the ball for the zero-gradient share


def describe(p: PGDParams) -> str:
    return f"PGD {p.steps} steps of {p.rel_stepsize:g} eps x {p.restarts}"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=float, nargs="+", default=[32.0, 64.0])
    parser.add_argument("--model", default="models/model.safetensors")
    parser.add_argument("--per-image", default="data/attack/per_image.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)

    a = load_params().attack
    net, _ = load_checkpoint(args.model)
    model = TwoLogits(net).eval()
    per_image = pd.read_csv(args.per_image)
    torch.manual_seed(args.seed)
    for name, split in load_splits().items():
        rows = per_image[per_image.split == name]
        x = to_float(split.images[torch.tensor(rows.position.values)])
        flat_here = (rows.gradient_l1 == 0).to_numpy()  # the attack stage's diagnostics
        blackbox_only = np.isfinite(rows.square_min_eps_255.to_numpy())
        print(f"{name}: {len(rows)} attacked images; input gradient exactly zero at "
              f"{int(flat_here.sum())} of them; Square alone fooled {int(blackbox_only.sum())}, "
              f"{int(flat_here[blackbox_only].sum())} of those with a zero gradient, median "
              f"||grad s||_1 {np.median(rows.gradient_l1[blackbox_only]):.3g} "
              f"(all images: {np.median(rows.gradient_l1):.3g})")
        for eps in args.eps:
            paper = rows[[f"pgd_{loss}_min_eps_255" for loss in a.pgd.losses]].min(axis=1)
            worst = rows.worst_min_eps_255
            missed = ((paper > eps) & (worst <= eps) & (worst > 0)).to_numpy()
            if not missed.any():
                print(f"  {eps:g}/255: the paper's PGD missed nothing another attack found")
                continue
            xm, ym = x[missed], torch.tensor(rows.label.values[missed])
            counts = {f"the paper's ({describe(a.pgd)})":
                      PGD(model, a.pgd, "margin")(xm, ym, eps, args.seed)}
            for change in BUDGETS:
                budget = a.pgd.model_copy(update=change)
                counts[describe(budget)] = PGD(model, budget, "margin")(xm, ym, eps, args.seed)
            counts[f"APGD-CE {a.apgd.restarts} x {a.apgd.steps}"] = APGD(model, a.apgd)(
                xm, ym, eps, args.seed)
            flat = torch.stack([input_gradients(net, (xm + torch.empty_like(xm).uniform_(
                -eps / 255, eps / 255)).clamp(0, 1), a.batch_size)[1] == 0
                for _ in range(RANDOM_POINTS)]).double()
            print(f"  {eps:g}/255: {int(missed.sum())} images fooled by another attack, not by "
                  f"the paper's PGD (its margin loss, rerun with seed {args.seed}); fooled now by "
                  + "; ".join(f"{k} {int(v.sum())}" for k, v in counts.items())
                  + f"; random points in the ball with zero gradient {float(flat.mean()):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
