"""An attack of the certify stage's own, to catch a certificate that claims too much.

Independent of the attack stage (no foolbox, no AutoAttack, its own random starts): projected
sign-gradient descent on the margin ``sign(y) s(x')`` of the float32 network, from several
uniform random starts in the ball, keeping the lowest value any iterate reached (an attack that
passes through a fooling point and leaves it still found it). Two checks read it:

* every certified image, at its certified radius: an image it fools there is
  ``certified_but_fooled`` (the bound, its rounding margin or the plumbing is wrong);
* every bound computed, certified or not: the lowest value it finds must not lie below the
  bound minus its margin (a bound above a point that exists is wrong, whatever its sign).
"""

from __future__ import annotations

import torch

from difftrain.core.labels import predict


def inward_box(x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 box of the ball of radius ``eps`` (per image) around float64 ``x``,
    intersected with [0, 1]^n, rounded inward so that every float32 point in it is in the ball."""
    radius = eps.to(torch.float64).view(-1, *([1] * (x.dim() - 1)))
    lower, upper = (x - radius).clamp(0, 1), (x + radius).clamp(0, 1)
    lo, up = lower.float(), upper.float()
    lo = torch.where(lo.double() < lower, torch.nextafter(lo, torch.full_like(lo, 2.0)), lo)
    up = torch.where(up.double() > upper, torch.nextafter(up, torch.full_like(up, -1.0)), up)
    return lo, up


def lowest_margin(net, x: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, steps: int,
                  restarts: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(the lowest ``sign(y) s`` any iterate reached, whether any iterate was misclassified) per
    image, over the ball of radius ``eps`` (per image, [0, 1] units) around ``x`` (float64)."""
    net = net.eval()
    trainable = [p for p in net.parameters() if p.requires_grad]
    for p in trainable:  # the input's gradient only: no weight gradient is built
        p.requires_grad_(False)
    try:
        return _descend(net, x, labels, eps, steps, restarts, seed)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _descend(net, x, labels, eps, steps, restarts, seed):
    side = 1 - 2 * labels.float()
    lo, up = inward_box(x, eps)
    step = (2.5 * eps.float() / max(steps, 1)).view(-1, 1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    lowest = torch.full((len(x),), float("inf"))
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for restart in range(restarts):
        point = x.float().clamp(lo, up) if restart == 0 else \
            lo + (up - lo) * torch.rand(x.shape, generator=generator)
        for i in range(steps + 1):
            point.requires_grad_(True)
            score = net(point)
            margin = side * score
            lowest = torch.minimum(lowest, margin.detach())
            fooled |= predict(score.detach()) != labels
            if i == steps:
                break
            grad, = torch.autograd.grad(margin.sum(), point)
            point = torch.min(torch.max(point.detach() - step * grad.sign(), lo), up)
    return lowest.double(), fooled
