"""How robust accuracy is measured, whatever library supplies the attacks.

An attack is a small hook (the libraries' wrappers, e.g. ``foolbox_attacks.py``); this module
owns the one loop that drives each kind and the results they produce:

* a *fixed-budget* attack (PGD at one Linf radius) answers "is this image fooled within eps?".
  Since the balls nest, an image fooled inside a small ball is fooled inside every larger one, so
  ``budget_sweep`` attacks, at each epsilon of the grid, only the survivors of the previous one.
  The result equals attacking every image at every epsilon and taking, per image, the smallest
  epsilon that fooled it, at a fraction of the cost (``benchmarks/attack_sweep.py``);
* a *minimum-norm* attack (Carlini-Wagner) returns each image's smallest perturbation it found.

Both end as a :class:`Sweep`: each image's smallest fooling radius (0 for a clean error, inf if
never fooled) and the grid at which accuracy is read off. Soundness follows Carlini et al. (2019),
"On Evaluating Adversarial Robustness": robust accuracy counts clean errors as failures (the curve
starts at clean accuracy), and survivors at the largest radius are suspicious.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import torch
from tqdm.auto import tqdm

from difftrain.data import Split
from difftrain.errors import ParamsError
from difftrain.keys import eps_key


class FixedBudgetAttack(Protocol):
    model: torch.nn.Module  # the two-logit view it queries (counts the images it evaluates)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, eps: float,
                 seed: int) -> torch.Tensor:
        """Success (bool per image) of attacking a batch within radius ``eps``, seeded."""


class MinimumNormAttack(Protocol):
    model: torch.nn.Module

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The smallest adversarial perturbation's norm per image (inf where none was found)."""


def stratified(split: Split, n: int, seed: int, what: str) -> torch.Tensor:
    """Positions of ``n`` images of the split, classes in proportion, chosen by ``seed``."""
    if n > len(split.labels):
        raise ParamsError(f"{what} is {n}, but the split holds only {len(split.labels)} images")
    generator = torch.Generator().manual_seed(seed)
    chosen, remaining = [], n
    classes = torch.unique(split.labels).tolist()
    for i, c in enumerate(classes):
        members = torch.nonzero(split.labels == c).flatten()
        take = remaining if i == len(classes) - 1 else round(n * len(members) / len(split.labels))
        take = min(take, len(members))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
        remaining -= take
    return torch.cat(chosen).sort().values


def chunks(idx: torch.Tensor, batch: int) -> list[torch.Tensor]:
    return [idx[i:i + batch] for i in range(0, len(idx), batch)]


@torch.no_grad()
def clean_correct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  batch: int) -> torch.Tensor:
    """Correctness under the attacks' own view of the model (argmax of its two logits)."""
    return torch.cat([model(images[i:i + batch]).argmax(1) == labels[i:i + batch]
                      for i in range(0, len(labels), batch)])


def accuracy_at(min_radius: torch.Tensor, grid) -> list[float]:
    """Robust accuracy at each radius: images whose smallest fooling radius is larger.

    At radius 0 this is the clean accuracy (clean errors have radius 0)."""
    return [float((min_radius > e).double().mean()) for e in grid]


@dataclass
class Sweep:
    """One attack's result on a set of images."""

    grid: tuple[float, ...]  # radii at which accuracy is read off, from 0
    min_radius: torch.Tensor  # float64 per image: smallest fooling radius, 0 clean error, inf never

    @property
    def accuracy(self) -> list[float]:
        return accuracy_at(self.min_radius, self.grid)


def budget_sweep(attack: FixedBudgetAttack, images, labels, grid, batch: int, seed: int,
                 desc: str = "attack", progress: bool = True) -> Sweep:
    """Each image's smallest fooling radius on ``grid``, attacking only the survivors.

    At grid index k the attack is seeded with ``seed + 1000 k``, so a sweep repeats exactly.
    """
    fooled_at = torch.full((len(labels),), len(grid), dtype=torch.int64, device=labels.device)
    fooled_at[~clean_correct(attack.model, images, labels, batch)] = 0
    bar = tqdm(total=len(grid) - 1, desc=desc, disable=not progress, unit="eps")
    for k, eps in enumerate(grid):
        if eps == 0:
            continue
        for chunk in chunks(torch.nonzero(fooled_at > k).flatten(), batch):
            success = attack(images[chunk], labels[chunk], eps, seed + 1000 * k)
            fooled_at[chunk[success]] = k
        bar.update(1)
        bar.set_postfix(eps=f"{eps:g}", robust=f"{float((fooled_at > k).double().mean()):.3f}")
        if not (fooled_at > k).any():
            break  # nothing left to attack at larger epsilons
    bar.close()
    radii = torch.tensor([*grid, math.inf], dtype=torch.float64)
    return Sweep(tuple(grid), radii[fooled_at.cpu()])


def unpruned_sweep(attack: FixedBudgetAttack, images, labels, grid, batch: int,
                   seed: int) -> torch.Tensor:
    """Reference without pruning: every image attacked at every epsilon, one seed per epsilon.

    Returns success (len(grid), N); clean errors count as successes at every epsilon."""
    wrong = ~clean_correct(attack.model, images, labels, batch)
    out = torch.zeros(len(grid), len(labels), dtype=torch.bool, device=labels.device)
    for k, eps in enumerate(grid):
        if eps == 0:
            continue
        for chunk in chunks(torch.arange(len(labels), device=labels.device), batch):
            out[k, chunk] = attack(images[chunk], labels[chunk], eps, seed)
    return out | wrong[None, :]


def norm_sweep(attack: MinimumNormAttack, images, labels, grid, batch: int, desc: str = "attack",
               progress: bool = True) -> Sweep:
    """Each image's smallest perturbation found by a minimum-norm attack (clean errors: 0, not
    attacked), with accuracy read off on ``grid``."""
    correct = clean_correct(attack.model, images, labels, batch)
    dist = torch.zeros(len(labels), dtype=torch.float64, device=labels.device)
    todo = torch.nonzero(correct).flatten()
    for chunk in tqdm(chunks(todo, batch), desc=desc, disable=not progress, unit="batch"):
        dist[chunk] = attack(images[chunk], labels[chunk]).double()
    return Sweep(tuple(grid), dist.cpu())


@dataclass
class SplitAttack:
    """Every attack's result on the chosen images of one split."""

    name: str
    positions: torch.Tensor  # which images of the split were attacked
    labels: torch.Tensor
    clean_accuracy: float
    pgd: dict[str, Sweep]  # PGD loss -> its sweep on the Linf grid (/255)
    cw: Sweep  # minimal L2 perturbations, accuracy on the L2 grid
    evaluations: dict[str, int]  # images evaluated by each attack family (forward + backward)

    @property
    def worst(self) -> list[float]:
        """The lower PGD accuracy of the losses at each epsilon: the number to report."""
        return [min(values) for values in zip(*(s.accuracy for s in self.pgd.values()))]

    def metrics(self) -> dict:
        found = self.cw.min_radius[self.cw.min_radius > 0]
        pgd = {loss: s.accuracy for loss, s in self.pgd.items()}
        grid = next(iter(self.pgd.values())).grid
        curves = [*pgd.values(), self.cw.accuracy]
        return {
            "n": len(self.positions),
            "clean_accuracy": self.clean_accuracy,
            "pgd": {eps_key(e): {"accuracy": w, **{loss: c[k] for loss, c in pgd.items()}}
                    for k, (e, w) in enumerate(zip(grid, self.worst))},
            "cw": {eps_key(e): acc for e, acc in zip(self.cw.grid, self.cw.accuracy)},
            "cw_median_l2": float(self.cw.min_radius.median()),
            "cw_median_l2_correct": float(found.median()) if len(found) else None,
            "soundness": {
                "eps0_equals_clean": all(c[0] == self.clean_accuracy for c in curves),
                "non_increasing": all(x >= y for c in curves for x, y in zip(c, c[1:])),
                "suspect_gradient_masking": self.worst[-1] > 0
                or bool(math.isinf(self.cw.min_radius.max())),
                "margin_loss_lower_or_equal": all(
                    m <= c for m, c in zip(pgd.get("margin", []), pgd.get("cross_entropy", []))),
            },
            "gradient_evaluations": dict(self.evaluations),
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        """Tidy accuracy tables, one per attack, loss and split (so dvc plots can tell them apart)."""
        n = len(self.positions)
        n_correct = self.clean_accuracy * n

        def table(attack, loss, eps, curve):
            return pd.DataFrame({
                "attack": attack, "loss_fn": loss, "split": self.name, "eps": eps,
                "accuracy": curve,
                "success_on_correct": [1 - acc * n / n_correct if n_correct else None
                                       for acc in curve]})

        grid = next(iter(self.pgd.values())).grid
        out = {f"pgd_{loss}_{self.name}": table("pgd_linf", loss, grid, curve)
               for loss, curve in [*((k, s.accuracy) for k, s in self.pgd.items()),
                                   ("worst", self.worst)]}
        out[f"cw_{self.name}"] = table("cw_l2", "cw", self.cw.grid, self.cw.accuracy)
        return out

    def per_image(self) -> pd.DataFrame:
        """Each attacked image's smallest fooling PGD epsilon (/255, inf if none) and CW L2."""
        return pd.DataFrame({
            "split": self.name, "position": self.positions.numpy(),
            "label": self.labels.cpu().numpy(),
            **{f"pgd_{loss}_min_eps_255": s.min_radius.numpy() for loss, s in self.pgd.items()},
            "cw_min_l2": self.cw.min_radius.numpy()})
