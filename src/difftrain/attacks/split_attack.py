"""One split's attack results (:class:`SplitAttack`): the worst case over every attack, the
soundness checks of Carlini et al. (2019), the metrics, the plot tables and the per-image table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from difftrain.attacks.sweeps import Sweep, accuracy_at
from difftrain.core.keys import eps_key


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
