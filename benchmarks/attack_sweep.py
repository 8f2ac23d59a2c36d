"""Survivor-pruned PGD sweep against foolbox's own multi-epsilon call, side by side in one run:
model evaluations (forward+backward per image per step, counted at the model), wall time and the
resulting accuracies, on the same images of one trained model.

    python benchmarks/attack_sweep.py [--model models/model.pt] [--n 200] [--split test]

Reads params.yaml's attack.pgd settings (epsilons, steps, step size); random starts are turned
off so both sweeps are deterministic and comparable image by image.
"""

import argparse
import time

import torch

from difftrain.data import load_split, to_float
from difftrain.foolbox_attacks import PGD, PGD_LOSSES
from difftrain.model import TwoLogits, load_checkpoint
from difftrain.params import load_params
from difftrain.robustness import budget_sweep, stratified, unpruned_sweep


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/model.pt")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--loss", default="margin", choices=sorted(PGD_LOSSES))
    args = parser.parse_args()

    params = load_params()
    pgd = params.attack.pgd.model_copy(update={"random_start": False})
    model, config = load_checkpoint(args.model)
    split = load_split(f"data/prepared/{args.split}.pt")
    positions = stratified(split, args.n, 0, "--n")
    x, y = to_float(split.images[positions]), split.labels[positions]
    counter = TwoLogits(model)
    attack = PGD(counter, pgd, args.loss)
    eps = pgd.epsilons

    counter.images_evaluated, start = 0, time.perf_counter()
    pruned = budget_sweep(attack, x, y, eps, 500, 0, progress=False).accuracy
    pruned_time, pruned_evals = time.perf_counter() - start, counter.images_evaluated

    counter.images_evaluated, start = 0, time.perf_counter()
    success = unpruned_sweep(attack, x, y, eps, 500, 0)
    full_time, full_evals = time.perf_counter() - start, counter.images_evaluated
    full = [float(1 - s.double().mean()) for s in success]
    full_nested = [float(1 - s.double().mean()) for s in success.cummax(dim=0).values]

    print(f"model trained with loss={config['loss']}; {args.n} {args.split} images; "
          f"PGD-{args.loss}, {pgd.steps} steps, epsilons (/255) {list(eps)}")
    print(f"{'eps':>6} {'pruned':>8} {'foolbox':>8} {'foolbox, nested':>16}")
    for e, p, f, n in zip(eps, pruned, full, full_nested):
        print(f"{e:6g} {p:8.3f} {f:8.3f} {n:16.3f}")
    print(f"model evaluations: pruned {pruned_evals}, foolbox {full_evals}, "
          f"ratio {full_evals / pruned_evals:.2f}x")
    print(f"wall time: pruned {pruned_time:.1f} s, foolbox {full_time:.1f} s, "
          f"ratio {full_time / pruned_time:.2f}x ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
