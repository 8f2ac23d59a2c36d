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
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import torch
from tqdm.auto import tqdm

from difftrain.data.cifar import Split
from difftrain.core.errors import ParamsError
from difftrain.core.keys import eps_key


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


# Soundness checks that must be True; every other boolean in ``SplitAttack.soundness`` is a
# warning, raised when True.
MUST_HOLD = ("eps0_equals_clean", "non_increasing", "margin_loss_lower_or_equal")


def _median(radii: torch.Tensor) -> float | None:
    """Median of the radii on correctly classified images; None if there are none or it is
    infinite (nothing found for half of them, which ``suspect_gradient_masking`` reports): JSON
    holds no Infinity."""
    found = radii[radii > 0]
    median = float(found.median()) if len(found) else math.inf
    return median if math.isfinite(median) else None


@dataclass
class SplitAttack:
    """Every attack's result on the chosen images of one split.

    ``pgd`` holds the paper's attack, each PGD loss on its own; ``refined`` the attacks run after
    it (APGD-CE, Square, the second APGD pass): for each, the smallest Linf radius it fooled each
    image at where it was tried, inf elsewhere. The reported robust accuracy is the *worst case*:
    an image counts as robust at a radius only if every attack failed there.
    """

    name: str
    positions: torch.Tensor  # which images of the split were attacked
    labels: torch.Tensor
    clean_accuracy: float
    pgd: dict[str, Sweep]  # the paper's PGD: loss -> its own sweep on the Linf grid (/255)
    refined: dict[str, torch.Tensor]  # later attack -> radius it fooled each image at (inf: none)
    minimum_norm: dict[str, Sweep]  # L2 attack -> minimal perturbations, accuracy on the L2 grid
    headline: float  # the Linf radius of the convergence check
    evaluations: dict[str, int]  # images evaluated by each attack (forward + backward counts)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per attack (not a metric)
    mechanism: dict = field(default_factory=dict)  # diagnostics.mechanism's summary
    per_image_extra: dict[str, torch.Tensor] = field(default_factory=dict)  # and its per-image values
    # PGD loss -> True where its sweep was not run but taken from the first loss (identical steps)
    pgd_inferred: dict[str, bool] = field(default_factory=dict)
    pgd_peak_margin: float = math.nan  # the largest y s the first PGD loss evaluated

    @property
    def grid(self) -> tuple[float, ...]:
        return next(iter(self.pgd.values())).grid

    @property
    def paper(self) -> Sweep:
        """The paper's attack as the pipeline reports it: the lower of the PGD losses per image."""
        return Sweep(self.grid, torch.stack([s.min_radius for s in self.pgd.values()]).amin(0))

    @property
    def worst(self) -> Sweep:
        """Per image, the smallest radius any attack fooled it at: the number to report."""
        radii = [self.paper.min_radius, *self.refined.values()]
        return Sweep(self.grid, torch.stack(radii).amin(0))

    @property
    def l2(self) -> Sweep:
        """Per image, the smallest L2 perturbation any minimum-norm attack found."""
        sweeps = list(self.minimum_norm.values())
        return Sweep(sweeps[0].grid, torch.stack([s.min_radius for s in sweeps]).amin(0))

    def soundness(self, overstatement_tol: float, convergence_tol: float,
                  l2_tol: float) -> dict:
        """Checks after Carlini et al. (2019) and AutoAttack's own flags: those in ``MUST_HOLD``
        must be True, every other flag means look closer when True."""
        paper, worst, n = self.paper.accuracy, self.worst.accuracy, len(self.positions)
        gaps = [p - w for p, w in zip(paper, worst)]
        k = max(range(len(gaps)), key=gaps.__getitem__)
        curves = [*(s.accuracy for s in self.pgd.values()), worst,
                  *(s.accuracy for s in self.minimum_norm.values())]
        square = self.refined.get("square")
        second = self.refined.get("apgd_second_pass")
        medians = {name: _median(s.min_radius) for name, s in self.minimum_norm.items()}
        cw, other = medians.get("cw"), medians.get("fab")
        pgd = {loss: s.accuracy for loss, s in self.pgd.items()}
        return {
            "eps0_equals_clean": all(c[0] == self.clean_accuracy for c in curves),
            "non_increasing": all(x >= y for c in curves for x, y in zip(c, c[1:])),
            "suspect_gradient_masking": worst[-1] > 0 or bool(torch.isinf(self.l2.min_radius).any()),
            "margin_loss_lower_or_equal": all(
                m <= c for m, c in zip(pgd.get("margin", []), pgd.get("cross_entropy", []))),
            # The paper's PGD reports more robustness than the worst case, beyond tolerance.
            "paper_attack_overstates": gaps[k] > overstatement_tol,
            "paper_attack_gap": gaps[k],
            "paper_attack_gap_eps": self.grid[k],
            # Square (no gradients) fooled images every gradient attack missed: AutoAttack's
            # signal that gradients mislead (masking or obfuscation).
            "blackbox_beats_whitebox": square is not None and bool(torch.isfinite(square).any()),
            "blackbox_only_images": 0 if square is None else int(torch.isfinite(square).sum()),
            # More APGD restarts at the headline radius still find adversarials: not converged.
            "not_converged": second is not None
            and float(torch.isfinite(second).sum()) / n > convergence_tol,
            "second_pass_drop": 0.0 if second is None
            else float(torch.isfinite(second).sum()) / n,
            # CW's minimal perturbations are clearly larger than another attack's: CW is short.
            "cw_overstates_l2": cw is not None and other is not None and cw > (1 + l2_tol) * other,
        }

    def metrics(self, overstatement_tol: float, convergence_tol: float, l2_tol: float) -> dict:
        pgd = {loss: s.accuracy for loss, s in self.pgd.items()}

        def curve(sweep: Sweep) -> dict:
            return {eps_key(e): {"accuracy": a} for e, a in zip(sweep.grid, sweep.accuracy)}

        return {
            "n": len(self.positions),
            "clean_accuracy": self.clean_accuracy,
            "worst": curve(self.worst),
            "pgd": {eps_key(e): {"accuracy": a, **{loss: c[k] for loss, c in pgd.items()}}
                    for k, (e, a) in enumerate(zip(self.grid, self.paper.accuracy))},
            "l2_worst": curve(self.l2),
            **{name: curve(s) for name, s in self.minimum_norm.items()},
            "median_l2": {"worst": _median(self.l2.min_radius),
                          **{name: _median(s.min_radius) for name, s in self.minimum_norm.items()}},
            # images on which each later attack found a smaller radius than all before it
            "refined_images": {name: int(torch.isfinite(r).sum()) for name, r in self.refined.items()},
            "soundness": self.soundness(overstatement_tol, convergence_tol, l2_tol),
            "mechanism": dict(self.mechanism),
            "gradient_evaluations": dict(self.evaluations),
            "pgd_inferred": dict(self.pgd_inferred),
            "pgd_peak_margin": self.pgd_peak_margin,
        }

    def tables(self) -> dict[str, pd.DataFrame]:
        """Tidy accuracy tables, one per curve and split (so dvc plots can tell them apart)."""
        n = len(self.positions)
        n_correct = self.clean_accuracy * n

        def table(attack: str, sweep: Sweep) -> pd.DataFrame:
            return pd.DataFrame({
                "attack": attack, "split": self.name, "eps": sweep.grid, "accuracy": sweep.accuracy,
                "success_on_correct": [1 - acc * n / n_correct if n_correct else None
                                       for acc in sweep.accuracy]})

        curves = {**{f"pgd_{loss}": s for loss, s in self.pgd.items()}, "paper_pgd": self.paper,
                  "worst": self.worst, **self.minimum_norm, "l2_worst": self.l2}
        return {f"{name}_{self.name}": table(name, s) for name, s in curves.items()}

    def per_image(self) -> pd.DataFrame:
        """Each attacked image's smallest fooling radius per attack and overall (inf: none found;
        for the refining attacks, among the radii they were tried at)."""
        radii = {**{f"pgd_{loss}": s.min_radius for loss, s in self.pgd.items()}, **self.refined,
                 "worst": self.worst.min_radius}
        return pd.DataFrame({
            "split": self.name, "position": self.positions.numpy(),
            "label": self.labels.cpu().numpy(),
            **{f"{name}_min_eps_255": r.numpy() for name, r in radii.items()},
            **{f"{name}_min_l2": s.min_radius.numpy() for name, s in self.minimum_norm.items()},
            "worst_min_l2": self.l2.min_radius.numpy(),
            **{name: v.numpy() for name, v in self.per_image_extra.items()}})
