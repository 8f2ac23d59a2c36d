"""The paper's attacks through foolbox (pinned at 3.3.4; the only module that imports it).

The paper (Section 5) attacks with foolbox's PGD and Carlini-Wagner (Rauber et al., 2017), so
these are *the paper's attacks*. Each is a hook for the loops in ``robustness.py``:

* ``PGD``: LinfPGD at one radius, ascending cross-entropy or the logit margin
  ``z_other - z_true``. A confident model's sigmoid saturates and cross-entropy gradients
  underflow to zero, so a CE-only attack can overstate robustness; the margin loss cannot.
* ``CarliniWagner``: L2 CW, each image's smallest perturbation found (foolbox's abort_early stops
  a binary-search step once its loss stalls).
"""

from __future__ import annotations

import eagerpy as ep
import foolbox as fb
import torch

from difftrain.labels import sign
from difftrain.model import TwoLogits
from difftrain.params import CWParams, PGDParams


class MarginLinfPGD(fb.attacks.LinfPGD):
    """LinfPGD ascending the logit margin z_other - z_true instead of cross-entropy."""

    def get_loss_fn(self, model, labels):
        def loss_fn(inputs: ep.Tensor) -> ep.Tensor:
            logits = model(inputs).raw
            return ep.astensor(((logits[:, 1] - logits[:, 0]) * sign(labels.raw, logits.dtype)).sum())

        return loss_fn


PGD_LOSSES = {"cross_entropy": fb.attacks.LinfPGD, "margin": MarginLinfPGD}


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
