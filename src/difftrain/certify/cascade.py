"""The certify stage's evaluation: each attacked image's largest certified Linf radius.

A robust accuracy from attacks is an upper bound (no attack fooled the image); a certificate is a
lower bound (no input in the ball can fool it). For every image the attack stage attacked, this
climbs the attack grid (``attack.pgd.epsilons``) and tries to certify the image at each radius
with a cascade of bounds from cheap to tight (``bounds.py``: IBP, then CROWN-IBP, then CROWN),
each only on what the cheaper one left; the first radius none can certify ends the climb (the
balls nest, so a certificate there would also cover every smaller radius). The cheap bounds try
every image still climbing, fooled or not (the soundness check below); CROWN only those the
attacks did not fool at that radius (the only ones it could certify, if all is sound). So each robust
accuracy becomes an interval ``[certified, worst case]``.

The certificate is ``sign(y) s(x') > tolerance (1 + |s(x)|)`` for every x' in the ball
intersected with [0, 1]^n: the bounds are computed in float64, and the float32 network's own
rounding moves its score by far less than the margin (``certify.tolerance``; measured in the
tests). CROWN costs most and grows with the radius, so it runs only up to
``certify.crown_max_eps`` and for at most ``certify.crown_attempts`` (image, radius) attempts a
split, in image order (a count, not a clock, so the same parameters give the same metrics on
any machine); what it leaves is
reported (``crown_skipped``).

Soundness, checked: an image certified at a radius at or above one where an attack fooled it
is a bug in an attack, the verifier or the plumbing; ``certified_but_fooled`` counts them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from difftrain.certify import bounds as B
from difftrain.data.cifar import to_float
from difftrain.core.keys import eps_key
from difftrain.core.labels import sign
from difftrain.core.params import CertifyParams


@dataclass
class SplitCertificate:
    """The certificates of one split's attacked images."""

    name: str
    positions: torch.Tensor
    labels: torch.Tensor
    grid: tuple[float, ...]  # the attack's Linf grid (/255)
    radius: torch.Tensor  # float64: largest certified radius (/255); -inf: not even at 0
    method: torch.Tensor  # int: index in ``names`` of what certified it there (-1: nothing)
    names: tuple[str, ...]  # "clean" (radius 0), then the cascade's methods
    worst: torch.Tensor  # the attacks' smallest fooling radius per image (inf: never fooled)
    decided: dict[str, int] = field(default_factory=dict)  # certificates each method gave
    tried: dict[str, int] = field(default_factory=dict)  # (image, radius) attempts per method
    seconds: dict[str, float] = field(default_factory=dict)
    crown_skipped: int = 0  # attempts CROWN did not make (radius or attempt budget)

    def accuracy(self) -> list[float]:
        """Certified accuracy on the grid: images certified at least at each radius."""
        return [float((self.radius >= e).double().mean()) for e in self.grid]

    def worst_accuracy(self) -> list[float]:
        return [float((self.worst > e).double().mean()) for e in self.grid]

    @property
    def certified_but_fooled(self) -> int:
        """Images certified at a radius at or above one an attack fooled them at."""
        return int((self.radius >= self.worst).sum())

    def metrics(self) -> dict:
        certified, worst = self.accuracy(), self.worst_accuracy()
        return {
            "n": len(self.positions),
            "certified": {eps_key(e): {"accuracy": c} for e, c in zip(self.grid, certified)},
            "interval_width": {eps_key(e): w - c for e, c, w in zip(self.grid, certified, worst)},
            "certified_but_fooled": self.certified_but_fooled,
            "decided": dict(self.decided),
            "tried": dict(self.tried),
            "seconds_per_attempt": {m: self.seconds[m] / self.tried[m]
                                    for m in self.seconds if self.tried.get(m)},
            "crown_skipped": self.crown_skipped,
        }

    def table(self) -> pd.DataFrame:
        """Certified and worst-case accuracy against epsilon (dvc plots, the figure's band)."""
        return pd.DataFrame({"split": self.name, "eps": self.grid, "certified": self.accuracy(),
                             "worst": self.worst_accuracy()})

    def per_image(self) -> pd.DataFrame:
        return pd.DataFrame({"split": self.name, "position": self.positions.numpy(),
                             "label": self.labels.numpy(),
                             "certified_max_eps_255": self.radius.numpy(),
                             "certified_by": [self.names[i] if i >= 0 else ""
                                              for i in self.method.tolist()],
                             "worst_min_eps_255": self.worst.numpy()})


def certify_split(net, name: str, images: torch.Tensor, labels: torch.Tensor,
                  positions: torch.Tensor, worst: torch.Tensor, grid, params: CertifyParams,
                  progress: bool = True) -> SplitCertificate:
    """Climb ``grid`` for every image with the cascade of ``params.methods``.

    ``images`` are uint8, ``worst`` each image's smallest fooling radius over all attacks."""
    layers = B.from_net(net.cpu().eval())
    x = to_float(images).to(B.DTYPE)
    side = sign(labels, B.DTYPE)
    with torch.no_grad():
        scores = net(x.float()).double()
    tolerance = params.tolerance * (1 + scores.abs())
    radius = torch.full((len(labels),), -math.inf, dtype=torch.float64)
    method = torch.full((len(labels),), -1, dtype=torch.int64)
    names = ("clean", *params.methods)
    alive = B.forward(layers, x) * side > tolerance  # certified at radius 0: correct, with margin
    radius[alive] = 0.0
    method[alive] = 0
    worst = worst.double()
    decided = {m: 0 for m in params.methods}
    tried = {m: 0 for m in params.methods}  # also CROWN's budget counter
    seconds = {m: 0.0 for m in params.methods}
    skipped = 0
    bar = tqdm(total=len(grid) - 1, desc=f"certify {name}", disable=not progress, unit="eps")
    for eps in grid[1:]:
        todo = torch.nonzero(alive).flatten()
        done_here = torch.zeros(len(labels), dtype=torch.bool)
        for m in params.methods:
            todo = todo[~done_here[todo]]
            if not len(todo):
                break
            if m == "crown":  # the costly one only where the attacks left a chance
                todo = todo[worst[todo] > eps]
                if eps > params.crown_max_eps:
                    skipped += len(todo)
                    continue
            start = time.perf_counter()
            # CROWN one image at a time, so its budget is counted in images
            size = 1 if m == "crown" else params.batch_size
            for chunk in todo.split(size):
                if m == "crown" and tried[m] >= params.crown_attempts:
                    skipped += len(chunk)
                    continue
                tried[m] += len(chunk)
                bound = B.lower_margin(layers, x[chunk], side[chunk], eps / 255, m)
                ok = bound > tolerance[chunk]
                done_here[chunk[ok]] = True
                method[chunk[ok]] = names.index(m)
                decided[m] += int(ok.sum())
            seconds[m] += time.perf_counter() - start
        radius[done_here] = eps
        alive &= done_here
        bar.update(1)
        bar.set_postfix(eps=f"{eps:g}", certified=f"{float(alive.double().mean()):.3f}")
        if not alive.any():
            break
    bar.close()
    return SplitCertificate(name=name, positions=positions, labels=labels.cpu(), grid=tuple(grid),
                            radius=radius, method=method, names=names, worst=worst,
                            decided=decided, tried=tried, seconds=seconds, crown_skipped=skipped)
