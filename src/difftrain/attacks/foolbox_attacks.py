"""The paper's attacks through foolbox (pinned at 3.3.4; the only module that imports it).

The paper (Section 5) attacks with foolbox's PGD and Carlini-Wagner (Rauber et al., 2017), so
these are *the paper's attacks*. Each is a hook for the loops in ``sweeps.py``:

* ``PGD``: LinfPGD at one radius, ascending cross-entropy or the logit margin
  ``z_other - z_true``. A confident model's sigmoid saturates and cross-entropy gradients
  underflow to zero, so a CE-only attack can overstate robustness; the margin loss cannot.
  On this binary model the two losses take the same steps until cross-entropy saturates
  (``SATURATION``); each records the largest correct-class margin ``y s`` it evaluated, so the
  stage can tell when the second would repeat the first (``attack.pgd.infer_identical``).
* ``CarliniWagner``: L2 CW, each image's smallest perturbation found (foolbox's abort_early stops
  a binary-search step once its loss stalls).
"""

from __future__ import annotations

import math

import eagerpy as ep
import foolbox as fb
import torch

from difftrain.core.labels import sign
from difftrain.train.model import TwoLogits
from difftrain.core.params import CWParams, PGDParams


# Cross-entropy of the logits (s/2, -s/2) is log(1 + exp(-y s)); its input gradient is
# sigmoid(-y s) times the margin loss's, -grad(y s). LinfPGD steps by the gradient's sign, so the
# two losses take the same steps as long as that factor and the products backpropagation forms
# with it stay representable float32 numbers: sigmoid(-80) = 1.8e-35 is still a normal float32
# (down to 1.2e-38). Checked on the default CE model: on its 200 most confident training images
# (y s up to 75.7) not one pixel's gradient sign differs between the two losses.
SATURATION = 80.0


class _Recording:
    """Records the largest correct-class margin ``y s`` the attack evaluated (``peak``); kept on
    the device, so recording costs no synchronisation per step."""

    _peak: torch.Tensor | None = None

    def _record(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if len(logits):
            top = ((logits[:, 0] - logits[:, 1]) * sign(labels, logits.dtype)).detach().max()
            self._peak = top if self._peak is None else torch.maximum(self._peak, top)

    @property
    def peak(self) -> float:
        return -math.inf if self._peak is None else float(self._peak)


class CrossEntropyLinfPGD(_Recording, fb.attacks.LinfPGD):
    """foolbox's LinfPGD on cross-entropy, its loss computed exactly as foolbox does."""

    def get_loss_fn(self, model, labels):
        def loss_fn(inputs: ep.Tensor) -> ep.Tensor:
            logits = model(inputs)
            self._record(logits.raw, labels.raw)
            return ep.crossentropy(logits, labels).sum()

        return loss_fn


class MarginLinfPGD(_Recording, fb.attacks.LinfPGD):
    """LinfPGD ascending the logit margin z_other - z_true instead of cross-entropy."""

    def get_loss_fn(self, model, labels):
        def loss_fn(inputs: ep.Tensor) -> ep.Tensor:
            logits = model(inputs).raw
            self._record(logits, labels.raw)
            return ep.astensor(((logits[:, 1] - logits[:, 0]) * sign(labels.raw, logits.dtype)).sum())

        return loss_fn


PGD_LOSSES = {"cross_entropy": CrossEntropyLinfPGD, "margin": MarginLinfPGD}


def foolbox_model(model: TwoLogits) -> fb.PyTorchModel:
    return fb.PyTorchModel(model, bounds=(0, 1), device=next(model.parameters()).device)


class PGD:
    """LinfPGD with ``params.restarts`` random restarts on the images not yet fooled."""

    def __init__(self, model: TwoLogits, params: PGDParams, loss: str):
        self.model, self.restarts = model, params.restarts
        self.fmodel = foolbox_model(model)
        self.attack = PGD_LOSSES[loss](rel_stepsize=params.rel_stepsize, steps=params.steps,
                                       random_start=params.random_start)

    def __call__(self, images, labels, eps: float, seed: int) -> torch.Tensor:
        success = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        for restart in range(self.restarts):
            todo = torch.nonzero(~success).flatten()
            if len(todo) == 0:
                break
            torch.manual_seed(seed + restart)
            _, _, hit = self.attack(self.fmodel, images[todo], labels[todo], epsilons=eps / 255)
            success[todo[hit]] = True
        return success

    @property
    def peak(self) -> float:
        """The largest correct-class margin ``y s`` any of its steps evaluated."""
        return self.attack.peak

    @property
    def saturated(self) -> bool:
        """Whether some evaluated margin reached ``SATURATION``: only then can the two PGD
        losses take different steps."""
        return self.peak >= SATURATION


class CarliniWagner:
    """L2 Carlini-Wagner: each image's smallest perturbation found (inf where none)."""

    def __init__(self, model: TwoLogits, params: CWParams):
        self.model = model
        self.fmodel = foolbox_model(model)
        self.attack = fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=params.binary_search_steps, steps=params.steps,
            stepsize=params.stepsize, confidence=params.confidence,
            initial_const=params.initial_const, abort_early=True)

    def __call__(self, images, labels) -> torch.Tensor:
        _, clipped, success = self.attack(self.fmodel, images, labels, epsilons=None)
        d = (clipped - images).flatten(1).norm(dim=1).double()
        return torch.where(success, d, torch.full_like(d, float("inf")))
