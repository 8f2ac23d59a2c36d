"""Where a default run's time goes, against the floor of the work, before and after, in one run.

* **Floor**: a bare forward + input-gradient pass of ``Net`` (weights frozen, ``autograd.grad``)
  at the attack's batch size, in each memory layout and precision this machine offers
  (contiguous / channels-last, float32 / bfloat16 autocast) and at half the batch: the fastest
  is the most gradient evaluations a second the attacks could reach on this machine. A bare
  forward pass is the floor of the forward-only evaluations (Square, checks).
* **Attacks**: ``attack.attack_split`` on the same images of one trained model, *before* (the
  code paths of commit ae3c606, rebuilt here: the built-in max-pool everywhere, the network's
  weights left trainable so libraries that call ``loss.backward()`` also compute every weight's
  gradient, FAB's one backward pass per logit, both PGD losses run) and *after* (the stage as
  it runs now), per attack: seconds, model evaluations, evaluations a second and their share
  of the floor, and whether every image's radius came out the same.
* **Trainer**: images a second of difftrain's training epoch against a bare training step of
  the same batch size, and of the per-epoch evaluation at the old and the new batch size.

    python benchmarks/speed.py [--model models/model.safetensors] [--n 500] [--split test]
                               [--skip-attacks]

Run it on idle cores (every number is a rate measured side by side with its counterpart, the
variants alternated); it reads params.yaml and the prepared data (dvc repro train first).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch
from torch import nn

import difftrain.attacks.attack as attack_module
import difftrain.attacks.autoattack_attacks as aa
from difftrain.attacks.attack import attack_split
from difftrain.data.cifar import load_split, to_float
from difftrain.train.model import MaxPool2x2, Net, TwoLogits, load_checkpoint
from difftrain.train.objectives import OBJECTIVES
from difftrain.core.params import load_params
from difftrain.attacks.sweeps import stratified
from difftrain.train.trainer import EVAL_BATCH, channel_stats, make_optimizer, raw_scores, train_epoch

OLD_EVAL_BATCH = 4096  # the trainer's evaluation batch at ae3c606


def alternated(variants: dict, images: int, rounds: int = 8, reps: int = 3) -> dict[str, float]:
    """Images a second of each callable, median over ``rounds`` rounds that alternate them."""
    for run in variants.values():
        run()  # warm-up: allocator, kernels
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            for _ in range(reps):
                run()
            times[name].append((time.perf_counter() - start) / reps)
    return {name: images / statistics.median(t) for name, t in times.items()}


def input_gradient(net: nn.Module, x: torch.Tensor, bf16: bool = False) -> None:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        s = net(x)
    torch.autograd.grad(s.float().sum(), x)


def floor(net: Net, x: torch.Tensor, batch: int) -> tuple[float, float, dict]:
    """(best input-gradient passes a second, best forward passes a second, every variant)."""
    frozen = copy.deepcopy(net).eval().requires_grad_(False)
    last = copy.deepcopy(frozen).to(memory_format=torch.channels_last)
    cl = x.contiguous(memory_format=torch.channels_last)
    half = max(1, batch // 2)

    def halves(model, images, bf16=False):
        for i in range(0, len(images), half):
            input_gradient(model, images[i:i + half], bf16)

    grad = alternated({
        f"float32, contiguous, batch {batch}": lambda: input_gradient(frozen, x),
        f"float32, channels-last, batch {batch}": lambda: input_gradient(last, cl),
        f"bfloat16 autocast, contiguous, batch {batch}": lambda: input_gradient(frozen, x, True),
        f"bfloat16 autocast, channels-last, batch {batch}": lambda: input_gradient(last, cl, True),
        f"float32, contiguous, batch {half}": lambda: halves(frozen, x),
    }, len(x))
    with torch.no_grad():
        forward = alternated({"forward, float32, contiguous": lambda: frozen(x)}, len(x))
    return max(grad.values()), max(forward.values()), {**grad, **forward}


class _Trainable(TwoLogits):
    """TwoLogits as it was: the weights keep requires_grad, so ``loss.backward()`` in a library
    computes their gradients too."""

    def __init__(self, net):
        super().__init__(net)
        net.requires_grad_(True)


@contextlib.contextmanager
def before_code(net: Net):
    """The attack stage's code paths at ae3c606: built-in max-pool, trainable weights inside the
    attacks' model, the reference FAB's backward pass per logit."""
    old = copy.deepcopy(net)
    for i, module in enumerate(old.phi):
        if isinstance(module, MaxPool2x2):
            old.phi[i] = nn.MaxPool2d(2)
    saved = attack_module.TwoLogits, aa._BinaryFAB
    attack_module.TwoLogits, aa._BinaryFAB = _Trainable, aa.FABAttack_PT
    try:
        yield old
    finally:
        attack_module.TwoLogits, aa._BinaryFAB = saved


def attacks(net: Net, split, positions, params, headline: float, grad_floor: float,
            forward_floor: float) -> None:
    a = params.attack
    before_params = a.model_copy(update={"pgd": a.pgd.model_copy(update={"infer_identical": False})})
    results, totals = {}, {}
    with before_code(net) as old:
        start = time.perf_counter()
        results["before"] = attack_split(old, split, positions, before_params, headline, "before",
                                         progress=False)
        totals["before"] = time.perf_counter() - start
    start = time.perf_counter()
    results["after"] = attack_split(copy.deepcopy(net), split, positions, a, headline, "after",
                                    progress=False)
    totals["after"] = time.perf_counter() - start

    b, n = results["before"], results["after"]
    print(f"\nattacks on {len(positions)} images ({torch.get_num_threads()} threads); rates in "
          f"model evaluations a second, and their share of the floor ({grad_floor:.0f} gradient "
          f"passes/s; Square is forward-only: {forward_floor:.0f}/s)")
    print(f"{'attack':<18} {'before s':>9} {'evals':>8} {'/s':>6} {'floor':>6} | {'after s':>8} "
          f"{'evals':>8} {'/s':>6} {'floor':>6} | {'speed-up':>8} {'same radii':>10}")
    for name in b.seconds:
        fl = forward_floor if name == "square" else grad_floor
        cells = []
        for r in (b, n):
            s, e = r.seconds[name], r.evaluations[name]
            rate = e / s if e and s > 0 else float("nan")
            cells.append(f"{s:9.1f} {e:8d} {rate:6.0f} {rate / fl:6.0%}")
        same = _same(b, n, name)
        print(f"{name:<18} {cells[0]} | {cells[1]} | {b.seconds[name] / max(n.seconds[name], 1e-9):7.1f}x "
              f"{same:>10}")
    print(f"{'total':<18} {totals['before']:9.1f} {sum(b.evaluations.values()):8d} {'':>13} | "
          f"{totals['after']:8.1f} {sum(n.evaluations.values()):8d} {'':>13} | "
          f"{totals['before'] / totals['after']:7.2f}x")
    print(f"worst case identical at every radius: "
          f"{torch.equal(b.worst.min_radius, n.worst.min_radius)}; L2 worst case identical: "
          f"{torch.equal(b.l2.min_radius, n.l2.min_radius)}; second PGD loss inferred after: "
          f"{[k for k, v in n.pgd_inferred.items() if v] or 'none'} (largest y*s "
          f"{n.pgd_peak_margin:.1f})")


def _same(before, after, name: str) -> str:
    if name.startswith("pgd_"):
        loss = name.removeprefix("pgd_")
        return str(torch.equal(before.pgd[loss].min_radius, after.pgd[loss].min_radius))
    if name in after.refined:
        return str(torch.equal(before.refined[name], after.refined[name]))
    if name in after.minimum_norm:
        return str(torch.equal(before.minimum_norm[name].min_radius,
                               after.minimum_norm[name].min_radius))
    return ""


def trainer(params, split) -> None:
    objective = OBJECTIVES["cross_entropy"]
    torch.manual_seed(0)
    model = Net(False, *channel_stats(split.images))
    optimizer = make_optimizer(model, params, objective)
    batch = params.train.batch_size
    x, y = to_float(split.images[:batch]), split.labels[:batch]

    def step():
        loss = objective.batch_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    generator = torch.Generator().manual_seed(0)
    n = len(split.labels)
    rates = alternated({"bare training step": step}, batch, rounds=8, reps=10)
    rates.update(alternated({"difftrain epoch": lambda: train_epoch(
        model, optimizer, objective, batch, split.images, split.labels, None, 0, generator)},
        n, rounds=3, reps=1))
    old = copy.deepcopy(model)
    for i, module in enumerate(old.phi):
        if isinstance(module, MaxPool2x2):
            old.phi[i] = nn.MaxPool2d(2)
    rates.update(alternated({
        f"evaluation before (batch {OLD_EVAL_BATCH}, built-in max-pool)":
            lambda: raw_scores(old, split.images, OLD_EVAL_BATCH),
        f"evaluation after (batch {EVAL_BATCH})": lambda: raw_scores(model, split.images)},
        n, rounds=4, reps=1))
    print(f"\ntrainer, batch {batch}, {n} images, {torch.get_num_threads()} threads "
          f"(images a second)")
    for name, rate in rates.items():
        print(f"  {name:<52} {rate:8.0f}")
    print(f"  epoch / bare step: {rates['difftrain epoch'] / rates['bare training step']:.0%}")
    same = torch.equal(raw_scores(old, split.images, OLD_EVAL_BATCH), raw_scores(model, split.images))
    print(f"  evaluation scores identical before and after: {same}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model.safetensors")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--skip-attacks", action="store_true", help="floor and trainer only")
    args = parser.parse_args()

    params = load_params()
    net, config = load_checkpoint(args.model)
    split = load_split(f"data/prepared/{args.split}.safetensors")
    positions = stratified(split, args.n, params.attack.seed, "--n")
    batch = params.attack.batch_size
    x = to_float(split.images[positions][:batch])
    grad_floor, forward_floor, variants = floor(net, x, len(x))
    print(f"model: loss={config['loss']}, {config['train']['epochs']} epochs; "
          f"{torch.get_num_threads()} threads; attack batch {batch}")
    print("floor: a bare pass of Net (weights frozen), images a second")
    for name, rate in variants.items():
        print(f"  {name:<46} {rate:8.0f}")
    if not args.skip_attacks:
        attacks(net, split, positions, params, params.plot.headline_eps_255, grad_floor,
                forward_floor)
    trainer(params, load_split("data/prepared/train.safetensors"))


if __name__ == "__main__":
    main()
