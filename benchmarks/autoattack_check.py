"""An independent AutoAttack run on the attack stage's own images, beside what the stage reported.

Runs the reference ``AutoAttack`` class (pyautoattack 0.2.0, Croce and Hein's code) as a reviewer
would, version 'custom' with APGD-CE (``attack.apgd`` restarts and steps) and Square
(``attack.square.queries``), on every image the attack stage attacked, at each epsilon given;
none of the stage's sweeps, pruning or ordering is used. Prints, per split and epsilon, the
stage's worst case (``metrics/attack.json``), the paper's PGD, and AutoAttack's robust accuracy.

    python benchmarks/autoattack_check.py [--eps 4 8 16] [--model models/model.safetensors]

Run it after ``dvc repro`` on the same parameters (it reads ``params.yaml`` and the metrics).
"""

import argparse
import json
import logging
import time

import torch
from pyautoattack import AutoAttack

from difftrain.data.cifar import load_splits, to_float
from difftrain.core.keys import eps_key
from difftrain.train.model import TwoLogits, load_checkpoint
from difftrain.core.params import load_params
from difftrain.attacks.sweeps import stratified


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    parser.add_argument("--model", default="models/model.safetensors")
    parser.add_argument("--metrics", default="metrics/attack.json")
    parser.add_argument("--seed", type=int, default=0, help="AutoAttack's seed (not the stage's)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)

    params = load_params()
    a = params.attack
    net, config = load_checkpoint(args.model)
    model = TwoLogits(net)
    reported = json.loads(open(args.metrics).read())
    print(f"model: loss={config['loss']}, {config['train']['epochs']} epochs, adversarial eps "
          f"{config['train'].get('adversarial', {}).get('eps', 0)}; AutoAttack custom "
          f"[apgd-ce {a.apgd.restarts}x{a.apgd.steps}, square {a.square.queries}], seed {args.seed}")
    print(f"{'split':<6} {'eps':>5} {'paper PGD':>10} {'stage worst':>12} {'AutoAttack':>11} "
          f"{'worst - AA':>11} {'seconds':>8}")
    for name, split in load_splits().items():
        positions = stratified(split, getattr(a, f"n_{name}"), a.seed, f"attack.n_{name}")
        x, y = to_float(split.images[positions]), split.labels[positions]
        for eps in args.eps:
            adversary = AutoAttack(model, norm="Linf", eps=eps / 255, version="custom",
                                   attacks=["apgd-ce", "square"], seed=args.seed)
            adversary.apgd.n_restarts, adversary.apgd.n_iter = a.apgd.restarts, a.apgd.steps
            adversary.square.n_queries = a.square.queries
            start = time.perf_counter()
            adv, _ = adversary.run_standard_evaluation(x, y, batch_size=a.batch_size)
            with torch.no_grad():
                robust = float((model(adv).argmax(1) == y).double().mean())
            key = eps_key(eps)
            worst = reported[name]["worst"][key]["accuracy"]
            paper = reported[name]["pgd"][key]["accuracy"]
            print(f"{name:<6} {eps:5g} {paper:10.3f} {worst:12.3f} {robust:11.3f} "
                  f"{worst - robust:+11.3f} {time.perf_counter() - start:8.0f}", flush=True)


if __name__ == "__main__":
    main()
