"""Adversarial training (Madry et al., 2018) as an option of every training objective.

With ``train.adversarial.eps`` > 0, each training step's images, a batch for cross-entropy or both
sides of a block pair for the differential objectives, are replaced by their Linf PGD
perturbation against their own label before the objective's loss is computed. The attack ascends
the margin loss on the score, ``-sign(y) s(x)`` (push each image across the boundary), from a
uniform random start in the ball, ``steps`` steps of ``step_size`` (all in /255), projected back
into the ball and into [0, 1] after each step. It runs with the network in eval mode, so batch
norm uses its running statistics and is not updated by the attack's passes, and it asks autograd
only for the input's gradient, so no weight gradient accumulates.

Cross-entropy with eps 8 is standard PGD adversarial training, the study's positive control: a
model that is genuinely robust, so the evaluation must be able to see robustness when it is
there. A step costs ``steps + 1`` forward-backward passes instead of one.
"""

from __future__ import annotations

import torch

from difftrain.core.labels import sign
from difftrain.core.params import AdversarialParams


def perturb(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
            params: AdversarialParams) -> torch.Tensor:
    """Linf PGD on the score's margin against each input's own label, inside [0, 1]."""
    eps, alpha = params.eps / 255, params.step_size / 255
    was_training = model.training
    model.eval()
    side = sign(labels, inputs.dtype)
    adversarial = (inputs + torch.empty_like(inputs).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(params.steps):
        adversarial.requires_grad_(True)
        margin = (side * model(adversarial)).sum()  # positive while correctly classified
        grad, = torch.autograd.grad(margin, adversarial)
        with torch.no_grad():
            step = adversarial - alpha * grad.sign()
            adversarial = torch.min(torch.max(step, inputs - eps), inputs + eps).clamp(0, 1)
    model.train(was_training)
    return adversarial.detach()
