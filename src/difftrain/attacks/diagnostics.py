"""Why a model is or is not robust: first-order input-space margins and input gradients.

For each attacked image, with ``s`` the score and ``g = grad_x s(x)``:

* ``first_order_margin = |s(x)| / ||g||_1`` (in /255): the Linf distance to the boundary of the
  model linearised at x, exact for a linear model (Holder's inequality is tight at
  ``delta = -s sign(g) / ||g||_1``). A large margin with small attack radii means the boundary
  curves towards the image; a small one means the score itself is close to flipping.
* ``gradient_l1 = ||g||_1``: a local Lipschitz estimate of the score in Linf. The paper explains
  why eq. (7) helps by a small Lipschitz constant of the feature map (Section 4.2); if that held,
  differential models would show smaller gradients than cross-entropy ones.

The rank correlation (Spearman) of the first-order margin with the smallest radius any attack
fooled the image at says how much of the measured robustness the linear picture explains.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from difftrain.core.labels import predict


def input_gradients(model: torch.nn.Module, images: torch.Tensor,
                    batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, ||grad_x s||_1) of each image, batched, in eval mode; float64 on the CPU."""
    model.eval()
    scores, norms = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].clone().requires_grad_(True)
        s = model(x)
        grad, = torch.autograd.grad(s.sum(), x)
        scores.append(s.detach().double().cpu())
        norms.append(grad.flatten(1).abs().sum(1).double().cpu())
    return torch.cat(scores), torch.cat(norms)


def first_order_margin(scores: torch.Tensor, gradient_l1: torch.Tensor) -> torch.Tensor:
    """|s| / ||g||_1 in /255 (inf where the gradient vanishes)."""
    return 255 * scores.abs() / gradient_l1


def mechanism(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
              min_radius: torch.Tensor, batch: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metrics over the correctly classified images, per-image values of every image).

    ``min_radius`` is each image's smallest fooling Linf radius (/255) over all attacks (0 for a
    clean error, inf if none fooled it); infinite radii rank above every finite one.
    """
    scores, gradient_l1 = input_gradients(model, images, batch)
    margin = first_order_margin(scores, gradient_l1)
    correct = (predict(scores) == labels.cpu()).numpy()
    table = pd.DataFrame({"margin": margin.numpy(), "gradient": gradient_l1.numpy(),
                          "radius": min_radius.numpy()})[correct]
    # undefined for fewer than three images or a constant column (e.g. nothing ever fooled)
    varies = len(table) > 2 and table["margin"].nunique() > 1 and table["radius"].nunique() > 1
    rho = table["margin"].corr(table["radius"], method="spearman") if varies else math.nan
    metrics = {
        "first_order_margin_median_255": float(table["margin"].median()) if len(table) else None,
        "gradient_l1_median": float(table["gradient"].median()) if len(table) else None,
        "margin_radius_spearman": None if math.isnan(rho) else float(rho),
    }
    return metrics, {"first_order_margin_255": margin, "gradient_l1": gradient_l1}
