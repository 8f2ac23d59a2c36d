"""The attack stage's evaluation of one split: which attacks run, on which images, in what order.

The machinery (loops, results, metrics) is in ``robustness.py``; the attacks themselves are hooks
from the libraries' wrappers (``foolbox_attacks.py``).
"""

from __future__ import annotations

import torch

from difftrain.data import Split, to_float
from difftrain.foolbox_attacks import PGD, CarliniWagner
from difftrain.labels import accuracy
from difftrain.model import Net, TwoLogits
from difftrain.params import AttackParams
from difftrain.robustness import SplitAttack, budget_sweep, norm_sweep


def attack_split(net: Net, split: Split, positions: torch.Tensor, params: AttackParams,
                 name: str, progress: bool = True) -> SplitAttack:
    """Every configured attack on the chosen images of one split."""
    device = next(net.parameters()).device
    model = TwoLogits(net.eval())
    images = to_float(split.images[positions]).to(device)
    labels = split.labels[positions].to(device)
    with torch.no_grad():
        clean = accuracy(net(images), labels)
    pgd = {loss: budget_sweep(PGD(model, params.pgd, loss), images, labels, params.pgd.epsilons,
                              params.batch_size, params.seed, f"PGD-{loss} {name}", progress)
           for loss in params.pgd.losses}
    pgd_evaluations = model.images_evaluated
    cw = norm_sweep(CarliniWagner(model, params.cw), images, labels, params.cw.epsilons,
                    params.batch_size, f"CW {name}", progress)
    evaluations = {"pgd": pgd_evaluations, "cw": model.images_evaluated - pgd_evaluations}
    return SplitAttack(name, positions, labels, clean, pgd, cw, evaluations)
