"""The sweeps that measure robust accuracy, whatever library supplies the attacks.

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
starts at clean accuracy), and survivors at the largest radius are suspicious. One split's
results and their soundness checks are :class:`split_attack.SplitAttack`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from tqdm.auto import tqdm

from difftrain.data.cifar import Split
from difftrain.core.errors import ParamsError


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


def refine_down(attack: FixedBudgetAttack, images, labels, grid, known: torch.Tensor, batch: int,
                seed: int, above: float = 0.0, desc: str = "attack",
                progress: bool = True) -> torch.Tensor:
    """The smallest radius at which ``attack`` fools each image, searching *down* the grid from
    the largest radius below ``known`` (what earlier attacks found) while it keeps succeeding.

    Only images whose known radius exceeds ``above`` are attacked. Returns inf where the attack
    failed at its first try or was not run. A failure at radius e stands for every smaller radius
    too: the smaller ball lies inside the one searched. So for an attack that is monotone in the
    radius this finds what the ascending survivor sweep would, from about one failed attempt per
    image instead of one per radius the image survives (``benchmarks/attack_sweep.py``).
    Seeded with ``seed + 1000 k`` at grid index k, as ``budget_sweep`` is.
    """
    grid_t = torch.tensor(grid, dtype=torch.float64)
    known = known.to(torch.float64).cpu()
    level = torch.searchsorted(grid_t, known) - 1  # largest grid index with radius < known
    active = (known > above) & (level >= 1)
    found = torch.full((len(known),), math.inf, dtype=torch.float64)
    bar = tqdm(total=int(active.sum()), desc=desc, disable=not progress, unit="img")
    for k in range(len(grid) - 1, 0, -1):
        todo = torch.nonzero(active & (level == k)).flatten()
        for chunk in chunks(todo, batch):
            where = chunk.to(labels.device)
            success = attack(images[where], labels[where], grid[k], seed + 1000 * k).cpu()
            found[chunk[success]] = grid[k]
            level[chunk[success]] = k - 1
            active[chunk[~success]] = False
            bar.update(int((~success).sum()))
        active &= level >= 1
    bar.update(bar.total - bar.n)
    bar.close()
    return found


def attack_at(attack: FixedBudgetAttack, images, labels, which: torch.Tensor, eps: float,
              batch: int, seed: int) -> torch.Tensor:
    """``eps`` for each image ``which`` selects that ``attack`` fools within ``eps``; inf elsewhere."""
    found = torch.full((len(labels),), math.inf, dtype=torch.float64)
    for chunk in chunks(torch.nonzero(which.cpu()).flatten(), batch):
        where = chunk.to(labels.device)
        found[chunk[attack(images[where], labels[where], eps, seed).cpu()]] = eps
    return found


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
