"""The training objectives, one object each: the only place that knows what ``loss`` may name.

An :class:`Objective` says what a training step minimises and how the bias ``b`` is found:

* pointwise (cross-entropy, paper eq. 2): the loss of the scores ``s = w.phi + b`` of a batch
  against its labels; the bias is trained with the rest;
* pairwise (differential training, eqs. 7 and 6): the loss sees only the score *differences*
  ``w.phi(x_i) - w.phi(y_j)`` over all cross pairs of a block, so it is blind to the bias; ``b``
  stays frozen during training and is set afterwards by eq. (5).

Losses are means, not the paper's sums, so the step size does not scale with the batch or block
size. The trainer (``trainer.py``) and the synthetic network of the theory stage (``theory.py``)
both train through :meth:`Objective.batch_loss` and :meth:`Objective.settle_bias`; adding an
objective means adding one entry to ``OBJECTIVES`` and its name to ``params.LOSSES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from difftrain.core.geometry import eq5_bias
from difftrain.core.labels import is_x
from difftrain.core.params import LOSSES


def cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. (2) for two classes: binary cross-entropy of the single logit, class x positive."""
    return F.binary_cross_entropy_with_logits(scores, is_x(labels).to(scores.dtype))


def pair_differences(scores_x: torch.Tensor, scores_y: torch.Tensor) -> torch.Tensor:
    """(|X|, |Y|) matrix of s(x_i) - s(y_j): every cross pair of a block at once."""
    return scores_x[:, None] - scores_y[None, :]


def differential(scores_x: torch.Tensor, scores_y: torch.Tensor) -> torch.Tensor:
    """Eq. (7): mean over pairs of (w.phi(x_i) - w.phi(y_j) - 1)^2."""
    return (pair_differences(scores_x, scores_y) - 1).square().mean()


def differential_logistic(scores_x: torch.Tensor, scores_y: torch.Tensor) -> torch.Tensor:
    """Eq. (6): mean over pairs of log(1 + exp(-(w.phi(x_i) - w.phi(y_j)))), computed stably."""
    return F.softplus(-pair_differences(scores_x, scores_y)).mean()


@dataclass(frozen=True)
class Objective:
    name: str
    equation: str  # where the paper states it
    pairwise: bool  # loss over cross-class pairs of bias-free scores (else over labelled scores)
    trains_bias: bool  # False: b is frozen in training and set by eq. (5) afterwards
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # pointwise: loss(scores with bias, labels); pairwise: loss(raw scores of x, raw scores of y)

    def batch_loss(self, model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of one step. ``model`` has ``raw_score`` (w.phi) and ``forward`` (+ b); a
        pairwise step's inputs are a class-x block and a class-y block, ``labels`` tells which."""
        if not self.pairwise:
            return self.loss(model(inputs), labels)
        s, x = model.raw_score(inputs), is_x(labels)
        return self.loss(s[x], s[~x])

    def freeze_bias(self, model) -> None:
        """Exclude the bias from optimisation unless this objective trains it."""
        model.bias.requires_grad_(self.trains_bias)

    @torch.no_grad()
    def settle_bias(self, model, raw_scores: torch.Tensor, labels: torch.Tensor) -> dict:
        """Eq. (5) facts of the training scores (bias, separable, score gap); an objective that
        does not train the bias gets the eq. (5) bias written into ``model.bias``."""
        x = is_x(labels)
        bias, separable, gap = eq5_bias(raw_scores[x], raw_scores[~x])
        if not self.trains_bias:
            model.bias.fill_(bias)
        return {"bias": float(model.bias.detach()), "separable": separable, "score_gap": gap}


OBJECTIVES = {o.name: o for o in (
    Objective("cross_entropy", "eq. (2)", pairwise=False, trains_bias=True, loss=cross_entropy),
    Objective("differential", "eq. (7)", pairwise=True, trains_bias=False, loss=differential),
    Objective("differential_logistic", "eq. (6)", pairwise=True, trains_bias=False,
              loss=differential_logistic),
)}
if tuple(OBJECTIVES) != LOSSES:  # the schema and the code must name the same objectives
    raise ImportError(f"params.LOSSES {LOSSES} != the objectives defined here {tuple(OBJECTIVES)}")
