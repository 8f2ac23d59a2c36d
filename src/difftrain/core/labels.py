"""The label convention, in one place.

Class x is label 0 (the first of ``data.classes``) and gets a positive score; class y is label 1.
A score ``s >= 0`` predicts class x, so a tie goes to class x, as the argmax over the two logits
``(s/2, -s/2)`` the attacks see does. Everything that turns labels into signs, targets or masks,
or scores into labels, goes through these functions.
"""

from __future__ import annotations

import torch

CLASS_X, CLASS_Y = 0, 1


def is_x(labels: torch.Tensor) -> torch.Tensor:
    """True where the label is class x."""
    return labels == CLASS_X


def sign(labels: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """+1 for class x, -1 for class y: the side of the boundary each label belongs on."""
    return 1 - 2 * labels.to(dtype)


def predict(scores: torch.Tensor) -> torch.Tensor:
    """Labels from scores: class x where s >= 0, else class y."""
    return (scores < 0).long()


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of scores that predict their label."""
    return float((predict(scores) == labels.to(scores.device)).double().mean())
