"""The attack stage's evaluation of one split: which attacks run, on which images, in what order.

1. **The paper's attack**: foolbox's LinfPGD on every epsilon of the grid, once per loss, each on
   its own survivors (``robustness.budget_sweep``): the paper's Fig. 4 as published. The second
   loss is not run when the first never came near saturation (``attack.pgd.infer_identical``):
   on this binary model it would take the same steps (``foolbox_attacks.SATURATION``).
2. **APGD-CE** (AutoAttack), for every image downward from the smallest radius PGD fooled it at
   (``robustness.refine_down``): finds the images PGD stops short on, and their radii.
3. **Square** (AutoAttack's black-box attack) on the images that survive both at the headline
   epsilon, downward from the largest radius they survive: as in AutoAttack, the black-box attack
   runs on what the gradient attack left, at the radius reported.
4. **A second APGD pass** with twice the restarts and another seed on the survivors at the
   headline epsilon: if it still finds adversarials the evaluation had not converged.
5. **Minimum-norm L2**: foolbox's Carlini-Wagner (the paper's Fig. 5) and AutoAttack's FAB on
   every correctly classified image; the reported minimal perturbation is the smaller.
6. **Diagnostics** (``diagnostics.py``): first-order input-space margins and input gradients.

The worst case over all of them is the robust accuracy reported (``robustness.SplitAttack``).
Square and the second pass run only where they can change the headline number, which keeps the
default run within minutes on a CPU (``benchmarks/attack_sweep.py`` says where the time goes).
"""

from __future__ import annotations

import copy
import time

import torch

from difftrain.attacks import diagnostics
from difftrain.attacks.autoattack_attacks import APGD, FAB, Square
from difftrain.data.cifar import Split, to_float
from difftrain.attacks.foolbox_attacks import PGD, CarliniWagner
from difftrain.core.labels import accuracy
from difftrain.train.model import Net, TwoLogits
from difftrain.core.params import AttackParams
from difftrain.attacks.split_attack import SplitAttack
from difftrain.attacks.sweeps import attack_at, budget_sweep, norm_sweep, refine_down
from difftrain.core.runtime import side_by_side

SECOND_PASS_SEED = 7919  # offset of the second APGD pass's seed: other random starts
# Splits side by side only when each attacks this many images: a worker process first spends a
# few seconds importing torch and the attack libraries.
SIDE_BY_SIDE_MIN_IMAGES = 100


def attack_splits(net: Net, splits: dict[str, Split], chosen: dict[str, torch.Tensor],
                  params: AttackParams, headline: float, device: torch.device,
                  progress: bool = True) -> list[SplitAttack]:
    """``attack_split`` on every split, the splits side by side in their own processes when
    there are threads for each (``runtime.side_by_side``). Every attack seeds itself, so each
    split's numbers are the same, bit for bit, as one after the other (tested); on 2 cores the
    stage takes about 13% less time, more where the libraries' Python overhead dominates."""
    # each job its own copy of the network: a worker's is pickled while this process uses its own
    jobs = [(net if i == 0 else copy.deepcopy(net), device, split, chosen[name], params, headline,
             name, progress) for i, (name, split) in enumerate(splits.items())]
    worth_it = min(len(p) for p in chosen.values()) >= SIDE_BY_SIDE_MIN_IMAGES
    return side_by_side(_attack_on, jobs, worth_it)


def _attack_on(net: Net, device, split: Split, positions, params: AttackParams, headline: float,
               name: str, progress: bool) -> SplitAttack:
    return attack_split(net.to(device), split, positions, params, headline, name, progress)


def attack_split(net: Net, split: Split, positions: torch.Tensor, params: AttackParams,
                 headline: float, name: str, progress: bool = True) -> SplitAttack:
    """Every configured attack on the chosen images of one split; ``headline`` is the Linf
    radius (/255) Square and the convergence check run at."""
    device = next(net.parameters()).device
    model = TwoLogits(net.eval())
    images = to_float(split.images[positions]).to(device)
    labels = split.labels[positions].to(device)
    with torch.no_grad():
        clean = accuracy(net(images), labels)
    grid, batch, seed = params.pgd.epsilons, params.batch_size, params.seed
    evaluations, seconds = {}, {}
    booked = {"images": model.images_evaluated, "clock": time.perf_counter()}

    def spent(attack: str) -> None:
        """Book the images evaluated and the wall time since the last attack to ``attack``."""
        evaluations[attack] = model.images_evaluated - booked["images"]
        seconds[attack] = time.perf_counter() - booked["clock"]
        booked.update(images=model.images_evaluated, clock=time.perf_counter())

    pgd, first, inferred = {}, None, {}
    for loss in params.pgd.losses:
        inferred[loss] = first is not None and params.pgd.infer_identical and not first.saturated
        if inferred[loss]:
            # No margin the first loss evaluated came near saturation, so this loss would take
            # the same steps from the same random starts: its sweep is the first one's.
            pgd[loss] = pgd[params.pgd.losses[0]]
        else:
            attack = PGD(model, params.pgd, loss)
            pgd[loss] = budget_sweep(attack, images, labels, grid, batch, seed,
                                     f"PGD-{loss} {name}", progress)
            first = first or attack
        spent(f"pgd_{loss}")
    # the worst case so far, per image: each later Linf attack starts below it
    worst = torch.stack([s.min_radius for s in pgd.values()]).amin(0)
    refined = {}
    for attack_name, attack, above in (("apgd", APGD(model, params.apgd), 0.0),
                                       ("square", Square(model, params.square), headline)):
        refined[attack_name] = refine_down(attack, images, labels, grid, worst, batch, seed,
                                           above, f"{attack_name} {name}", progress)
        worst = torch.minimum(worst, refined[attack_name])
        spent(attack_name)
    # The convergence check: twice the restarts and other random starts, at the headline radius,
    # on the images every attack so far left standing there.
    second = APGD(model, params.apgd, restarts=2 * params.apgd.restarts)
    refined["apgd_second_pass"] = attack_at(second, images, labels, worst > headline, headline,
                                            batch, seed + SECOND_PASS_SEED)
    worst = torch.minimum(worst, refined["apgd_second_pass"])
    spent("apgd_second_pass")

    minimum_norm = {}
    for norm_name, attack, label in (("cw", CarliniWagner(model, params.cw), "CW"),
                                     ("fab", FAB(model, params.fab, seed), "FAB")):
        minimum_norm[norm_name] = norm_sweep(attack, images, labels, params.l2_epsilons, batch,
                                             f"{label} {name}", progress)
        spent(norm_name)
    mechanism, per_image_extra = diagnostics.mechanism(net, images, labels, worst, batch)
    return SplitAttack(name=name, positions=positions, labels=labels, clean_accuracy=clean,
                       pgd=pgd, refined=refined, minimum_norm=minimum_norm, headline=headline,
                       evaluations=evaluations, seconds=seconds, mechanism=mechanism,
                       per_image_extra=per_image_extra, pgd_inferred=inferred,
                       pgd_peak_margin=first.peak)

