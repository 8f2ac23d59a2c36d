"""The attack stage before and after the sound evaluation, side by side in one run, on the same
images of one trained model: wall time and model evaluations (images through the network,
forward or forward + backward) per attack, and the robust accuracies each evaluation reports.

* before: the paper's attacks only, as the stage ran them until AutoAttack was added: foolbox
  PGD (both losses) on the Linf grid, each on its own survivors, and Carlini-Wagner;
* after: ``attack.attack_split``, everything the stage runs now (adds APGD-CE, Square, the second
  APGD pass and FAB);
* with ``--ascending``, also APGD-CE as an ascending survivor sweep on every image (what the
  stage would pay without the downward refinement), with the worst case it gives.

    python benchmarks/attack_sweep.py [--model models/model.safetensors] [--split test] [--n 500]
                                      [--ascending]

Reads params.yaml's attack settings and plot.headline_eps_255; run the pipeline up to the train
stage first.
"""

import argparse
import time

import torch

from difftrain.attacks.attack import attack_split
from difftrain.attacks.autoattack_attacks import APGD
from difftrain.data.cifar import load_split, to_float
from difftrain.attacks.foolbox_attacks import PGD, CarliniWagner
from difftrain.train.model import TwoLogits, load_checkpoint
from difftrain.core.params import load_params
from difftrain.attacks.sweeps import accuracy_at, budget_sweep, norm_sweep, stratified


def timed(model: TwoLogits, run):
    """(result, seconds, images evaluated) of one call."""
    model.images_evaluated, start = 0, time.perf_counter()
    result = run()
    return result, time.perf_counter() - start, model.images_evaluated


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model.safetensors")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--ascending", action="store_true",
                        help="also time APGD-CE as an ascending sweep on every image")
    args = parser.parse_args()

    params = load_params()
    a, headline = params.attack, params.plot.headline_eps_255
    net, config = load_checkpoint(args.model)
    split = load_split(f"data/prepared/{args.split}.safetensors")
    positions = stratified(split, args.n, a.seed, "--n")
    x, y = to_float(split.images[positions]), split.labels[positions]
    model = TwoLogits(net)
    grid = a.pgd.epsilons
    k = grid.index(headline)

    before, before_time, radii = {}, {}, []
    for loss in a.pgd.losses:
        sweep, before_time[f"pgd_{loss}"], before[f"pgd_{loss}"] = timed(model, lambda: budget_sweep(
            PGD(model, a.pgd, loss), x, y, grid, a.batch_size, a.seed, progress=False))
        radii.append(sweep.min_radius)
    paper_radius = torch.stack(radii).amin(0)
    _, before_time["cw"], before["cw"] = timed(model, lambda: norm_sweep(
        CarliniWagner(model, a.cw), x, y, a.l2_epsilons, a.batch_size, progress=False))

    start = time.perf_counter()
    after = attack_split(net, split, positions, a, headline, args.split, progress=False)
    after_total = time.perf_counter() - start

    print(f"model trained with loss={config['loss']}, {config['train']['epochs']} epochs; "
          f"{args.n} {args.split} images; {torch.get_num_threads()} threads; "
          f"headline {headline:g}/255")
    print(f"{'attack':<20} {'before: s':>10} {'evaluations':>12} {'after: s':>10} {'evaluations':>12}")
    for name in after.seconds:
        b = f"{before_time[name]:10.1f} {before[name]:12d}" if name in before else f"{'':>10} {'':>12}"
        print(f"{name:<20} {b} {after.seconds[name]:10.1f} {after.evaluations[name]:12d}")
    total_before = sum(before_time.values())
    print(f"{'total':<20} {total_before:10.1f} {sum(before.values()):12d} {after_total:10.1f} "
          f"{sum(after.evaluations.values()):12d}")
    print(f"after / before: {after_total / total_before:.2f}x wall time, "
          f"{sum(after.evaluations.values()) / sum(before.values()):.2f}x evaluations")
    print(f"robust accuracy at {list(grid)}:")
    print(f"  before (paper's PGD)  {[round(v, 3) for v in accuracy_at(paper_radius, grid)]}")
    print(f"  after (worst case)    {[round(v, 3) for v in after.worst.accuracy]}")
    print(f"  at {headline:g}/255: before {accuracy_at(paper_radius, grid)[k]:.3f}, "
          f"after {after.worst.accuracy[k]:.3f}")

    if args.ascending:
        sweep, seconds, evaluations = timed(model, lambda: budget_sweep(
            APGD(model, a.apgd), x, y, grid, a.batch_size, a.seed, progress=False))
        combined = torch.minimum(paper_radius, sweep.min_radius)
        print(f"APGD-CE as an ascending sweep on every image: {seconds:.1f} s, {evaluations} "
              f"evaluations, against {after.seconds['apgd']:.1f} s, {after.evaluations['apgd']} "
              f"as the downward refinement of PGD's radii "
              f"({seconds / after.seconds['apgd']:.2f}x time)")
        print(f"  worst of paper's PGD and ascending APGD "
              f"{[round(v, 3) for v in accuracy_at(combined, grid)]}")


if __name__ == "__main__":
    main()
