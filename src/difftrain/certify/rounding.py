"""How far floating point can move a certificate, bounded from the magnitudes involved.

A certificate claims ``sign(y) s(x') > 0`` for every x' in the ball, of the float32 network the
attacks and metrics evaluate. Two roundings stand between a bound and that claim:

* **The float32 network's own.** An inner product of length n computed in floating point, in
  any order, is off by at most ``gamma_n |a|.|b|``, ``gamma_n = n u / (1 - n u)`` (Higham,
  *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5). So the network the
  computer runs is the real one with a perturbation ``delta_k``, ``|delta_k| <= eps_k =
  gamma_{n+1} (|W| |h^| + |b|)``, added to each map's output (n its fan-in; ReLU and max-pool are
  exact). ``layer_errors`` gives every ``eps_k`` over the whole ball, ``|h^|`` from interval
  arithmetic; ``bounds.py`` bounds the perturbed network, the deltas as inputs of their own: a
  backward pass adds ``-|A_k| . eps_k`` at each map, so an error counts with the sensitivity the
  bound computes for it, not with a worst-case ``|W|`` chain (that chain gives about 3 score units
  on the paper's network at radius 0, where the real error is about 2e-6).
* **The bound's own**, computed in float64. Every sum it forms is at most the same computation
  on absolute values (slopes in [0, 1], intercepts at most the bound magnitudes), which one
  forward pass with ``|W|`` bounds; its rounding is at most ``gamma_K`` times that, K the longest
  chain of roundings, and an intermediate bound's rounding moves the last bound by at most as
  much again per layer, hence ``2 L gamma_K`` (``float64_error``). A certificate needs the bound
  above this.

A margin that scaled with the centre score, as the old ``tolerance (1 + |s(x)|)`` did, misses a
network whose score is a small difference of large terms (tests/test_rounding.py builds one).
This is a first-order analysis written down, not a machine-checked proof. It assumes the
network's convolutions and products are sums of products (direct or GEMM, as oneDNN computes 5x5
kernels; no Winograd, FFT or reduced-precision math mode).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from difftrain.certify.bounds import DTYPE, Affine, PoolStep
from difftrain.train.model import MaxPool2x2

U32, U64 = 2.0 ** -24, 2.0 ** -53


def gamma(n: int, unit: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative rounding of an n-term sum of products."""
    if n * unit >= 1:
        raise ValueError(f"gamma_{n} is undefined for unit roundoff {unit}")
    return n * unit / (1 - n * unit)


def _size(lo: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.maximum(lo.abs(), up.abs())


def layer_errors(net: nn.Module, layers: list, lower: torch.Tensor,
                 upper: torch.Tensor) -> list[torch.Tensor | None]:
    """For each map of ``layers`` (``bounds.from_net(net)``), a bound on how far the float32
    network's value of that map's output can be from the exact value given the same computed
    input, anywhere in the box [lower, upper]: ``eps_k`` per image and neuron (None: exact, the
    max-pool steps). Interval arithmetic on the float32 network, widened by the rounding so far,
    bounds the magnitudes ``|h^|``."""
    lo, up = lower.to(DTYPE), upper.to(DTYPE)
    mean, std = net.mean.to(DTYPE), net.std.to(DTYPE)
    lo, up = (lo - mean) / std, (up - mean) / std  # std > 0: the order is kept
    spread = gamma(2, U32) * _size(lo, up)  # (x - mean) / std: two roundings
    lo, up = lo - spread, up + spread
    local = []  # the rounding each conv/linear (with its batch norm) adds, in network order
    modules = list(net.phi)
    for i, module in enumerate(modules):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w, b = module.weight.detach().to(DTYPE), module.bias.detach().to(DTYPE)
            conv = w.dim() == 4
            shape = (1, -1, 1, 1) if conv else (1, -1)
            apply = (lambda t, m: F.conv2d(t, m)) if conv else (lambda t, m: t @ m.T)
            centre = apply((up + lo) / 2, w) + b.view(shape)
            radius = apply((up - lo) / 2, w.abs())
            err = gamma(w[0].numel() + 1, U32) * (apply(_size(lo, up), w.abs()) + b.abs().view(shape))
            if conv:  # the first map's input error, (x - mean) / std, reaches it through |W|
                err = err + (apply(spread, w.abs()) if not local else 0)
            lo, up = centre - radius - err, centre + radius + err
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)):
                scale = (nxt.weight.detach().to(DTYPE)
                         / torch.sqrt(nxt.running_var.detach().to(DTYPE) + nxt.eps)).view(shape)
                rm = nxt.running_mean.detach().to(DTYPE).view(shape)
                beta = nxt.bias.detach().to(DTYPE).view(shape)
                # (z - m) / sqrt(v + eps) * g + b: five roundings on terms at most this large
                size = _size(lo, up)
                err = scale.abs() * err + gamma(5, U32) * (scale.abs() * (size + rm.abs()) + beta.abs())
                lo, up = (torch.minimum(scale * (lo - rm), scale * (up - rm)) + beta - err,
                          torch.maximum(scale * (lo - rm), scale * (up - rm)) + beta + err)
            local.append(err)
        elif isinstance(module, nn.ReLU):
            lo, up = lo.clamp(min=0), up.clamp(min=0)
        elif isinstance(module, (nn.MaxPool2d, MaxPool2x2)):
            lo, up = F.max_pool2d(lo, 2), F.max_pool2d(up, 2)
        elif isinstance(module, nn.Flatten):
            lo, up = lo.flatten(1), up.flatten(1)
        elif not isinstance(module, (nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)):
            raise ValueError(f"layer_errors: no rounding bound for {type(module).__name__}")
    w = net.head.weight.detach().to(DTYPE)[0]
    bias = net.bias.detach().to(DTYPE).abs()
    # s = fl(fl(w . phi) + b): 84 products and the bias, one sum of 85 terms at most
    head = gamma(w.numel() + 1, U32) * (_size(lo, up) @ w.abs() + bias)
    if isinstance(modules[-1], nn.Identity):  # phi's last layer is folded into the head
        head = head + local.pop() @ w.abs()
    local.append(head.view(-1, 1))
    out, affine = [], iter(local)
    for layer in layers:
        out.append(next(affine) if isinstance(layer, Affine) else None)
    if next(affine, None) is not None:
        raise ValueError("layer_errors: the network and its rewrite have different maps")
    return out


def rounding_chain(layers: list) -> int:
    """K: the longest chain of float64 roundings a bound's value goes through, generously
    counted (each map's longer side, forward or transposed, plus four, and the input sums)."""
    k = 0
    for layer in layers:
        if isinstance(layer, PoolStep):
            k += 2 + 4
            continue
        w = layer.weight
        fan_in = w[0].numel()
        fan_out = w.shape[0] * (w.shape[2] * w.shape[3] if w.dim() == 4 else 1)
        k += max(fan_in, fan_out) + 4
    return k + 2 * 3 * 32 * 32 + 4


def float64_magnitude(layers: list, lower: torch.Tensor, upper: torch.Tensor,
                      bounds: list[tuple], errors: list | None = None) -> torch.Tensor:
    """Per image, the absolute-value evaluation of any bound on the last map's output computed
    from ``bounds`` (IBP's, or anything inside them) and ``errors``: every coefficient a
    backward pass forms is at most |W| chained, every intercept at most the bound magnitudes."""
    f = (upper + lower).abs() / 2 + (upper - lower) / 2
    for k, layer in enumerate(layers):
        if k:
            lo, up = bounds[k - 1]
            f = f + torch.maximum(lo.abs(), up.abs())  # the ReLU's output or its intercept
        out = layer.forward(f, absolute=True)
        if isinstance(layer, Affine):
            b = layer.bias.abs()
            out = out + (b.view(1, -1, 1, 1) if layer.conv else b.view(1, -1))
        if errors is not None and errors[k] is not None:
            out = out + errors[k]
        f = out
    return f.flatten(1)[:, 0]


def float64_error(layers: list, lower: torch.Tensor, upper: torch.Tensor,
                  bounds: list[tuple], errors: list | None = None) -> torch.Tensor:
    """Per image, a bound on the float64 rounding of a bound computed from ``bounds`` (IBP's over
    the box, so it holds for every tighter bound too) and ``errors``."""
    return 2 * len(layers) * gamma(rounding_chain(layers), U64) * float64_magnitude(
        layers, lower, upper, bounds, errors)
