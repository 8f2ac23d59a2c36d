"""Sound bounds on the network's score over an Linf ball: IBP, CROWN-IBP and CROWN, hand-written
for this network's layer types because no installable library fits (docs/pipeline.md, "Certified bounds").

The network is rewritten exactly as alternating affine maps and ReLUs (``from_net``): the input
standardisation and any batch norm fold into the adjacent convolution or linear layer, and a
2x2 max-pool, over values that are non-negative (it follows a ReLU), becomes two affine + ReLU
steps, ``max(a, b) = a + relu(b - a)`` across columns, then across rows. Every affine map is a
convolution or a dense layer, whose transpose (for backward bounds) is its matrix transposed
(for a convolution, a matrix product folded back onto the image), or a pooling step done by
index arithmetic. Everything is computed in float64.

* **IBP** (interval bound propagation; Gowal et al., 2018): intervals pushed forward layer by
  layer. Loose, one forward pass.
* **CROWN** (Zhang et al., 2018): the score's lower bound as a linear function of the input,
  propagated backward through every layer; an unstable ReLU (``l < 0 < u``) is bounded above by
  the chord ``u (h - l) / (u - l)`` and below by ``alpha h`` with ``alpha`` 1 where ``u > -l``
  else 0 (CROWN's adaptive choice). It needs bounds on every ReLU's input: **CROWN-IBP** takes
  them from IBP (one backward pass), full **CROWN** computes them by the same backward
  propagation for every ReLU input that IBP leaves unstable (intersected with IBP's), layer by
  layer. On an affine model without ReLUs CROWN is exact. A neuron of a convolution or pooling
  step reaches only a window of the maps before it, so its bound propagates that window, not
  the whole maps (7-10x faster on this network, the same bound up to rounding).

The input set is the Linf ball intersected with [0, 1]^n (the images' domain), as the attacks
search it. ``lower_margin`` returns, per image, a lower bound of ``sign(y) s(x')`` over that set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DTYPE = torch.float64


@dataclass
class Affine:
    """``x -> op(x) + bias`` on tensors of ``in_shape`` (batched), ``op`` a convolution or a
    dense matrix; ``backward`` applies its transpose (``A -> A op``)."""

    weight: torch.Tensor
    bias: torch.Tensor
    in_shape: tuple
    out_shape: tuple

    @property
    def conv(self) -> bool:
        return self.weight.dim() == 4

    def forward(self, x: torch.Tensor, absolute: bool = False, bias: bool = True) -> torch.Tensor:
        w = self.weight.abs() if absolute else self.weight
        b = self.bias if bias and not absolute else None
        if self.conv:
            return F.conv2d(x, w, b)
        y = x.flatten(1) @ w.T
        return (y + b if b is not None else y).view(-1, *self.out_shape)

    def backward(self, a: torch.Tensor) -> torch.Tensor:
        """``A`` (rows, *out_shape) times the map: (rows, *in_shape). For a convolution ``A`` may
        be a window of the output map (rows, C, h, w): the result is the window of the input map
        it reaches, (h + k - 1, w + k - 1) at the same top-left corner."""
        if self.conv:  # W^T A as a matrix product folded back (float64 conv_transpose is slow)
            out_c, in_c, *k = self.weight.shape
            size = (a.shape[2] + k[0] - 1, a.shape[3] + k[1] - 1)
            # one large product (rows x positions, out) @ (out, in x k x k), not a batch of small ones
            cols = a.reshape(len(a), out_c, -1).transpose(1, 2) @ self.weight.reshape(out_c, -1)
            return F.fold(cols.transpose(1, 2), size, k)
        return (a.flatten(1) @ self.weight).view(-1, *self.in_shape)

    def in_corner(self, corner: torch.Tensor | None) -> torch.Tensor | None:
        """The top-left corner in the input map of the window ``backward`` returns (None: whole
        maps). A dense map's input is whole."""
        return corner if self.conv else None

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:
        """``A . bias`` per row."""
        if self.conv:
            return (a.sum((2, 3)) * self.bias).sum(1)
        return a.flatten(1) @ self.bias


def _folded_conv(conv: nn.Conv2d, norm: nn.Module | None, scale_in=None, shift_in=None):
    """(weight, bias) of conv, with an input standardisation (x - shift) / scale before it and
    an eval-mode batch norm after it folded in."""
    w, b = conv.weight.detach().to(DTYPE), conv.bias.detach().to(DTYPE)
    if scale_in is not None:
        w = w / scale_in.view(1, -1, 1, 1)
        b = b - (w * shift_in.view(1, -1, 1, 1)).sum((1, 2, 3))
    return _fold_norm(w, b, norm)


def _fold_norm(w, b, norm):
    if norm is None:
        return w, b
    scale = norm.weight.detach().to(DTYPE) / torch.sqrt(norm.running_var.detach().to(DTYPE) + norm.eps)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return w * scale.view(shape), (b - norm.running_mean.detach().to(DTYPE)) * scale \
        + norm.bias.detach().to(DTYPE)


@dataclass
class PoolStep:
    """One of a 2x2 max-pool's two affine steps over non-negative maps, as index arithmetic
    (the same map as a grouped strided convolution, without float64 convolution's slow path).

    ``cols``: channel c becomes the pair (a, b - a) for each pair of columns (a the left); after
    the ReLU the pair sums to max(a, b) since a >= 0. ``rows``: each channel pair is first summed
    (the column maxima m), then becomes (m0, m1 - m0) for each pair of rows; the next layer adds
    the two channels up. No bias."""

    axis: str  # "cols" or "rows"
    in_shape: tuple
    out_shape: tuple

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.axis == "cols" else x[:, 0::2] + x[:, 1::2]

    def forward(self, x: torch.Tensor, absolute: bool = False, bias: bool = True) -> torch.Tensor:
        m = self._merge(x)
        first, second = (m[..., 0::2], m[..., 1::2]) if self.axis == "cols" \
            else (m[..., 0::2, :], m[..., 1::2, :])
        other = second + first if absolute else second - first
        return torch.stack([first, other], dim=2).flatten(1, 2)

    def backward(self, a: torch.Tensor) -> torch.Tensor:
        keep, diff = a[:, 0::2], a[:, 1::2]
        grad = torch.stack([keep - diff, diff], dim=-1 if self.axis == "cols" else -2)
        grad = grad.flatten(-2) if self.axis == "cols" else grad.flatten(-3, -2)
        return grad if self.axis == "cols" else grad.repeat_interleave(2, dim=1)

    def bias_term(self, a: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(a), dtype=a.dtype)

    def in_corner(self, corner: torch.Tensor | None) -> torch.Tensor | None:
        """A window at (y, x) of the output reaches (y, 2x) of the input (cols), (2y, x) (rows)."""
        if corner is None:
            return None
        return corner * torch.tensor([1, 2] if self.axis == "cols" else [2, 1])


def _pool_steps(channels: int, height: int, width: int) -> list[PoolStep]:
    """2x2 max-pool of non-negative maps as two affine steps, each followed by a ReLU."""
    return [PoolStep("cols", (channels, height, width), (2 * channels, height, width // 2)),
            PoolStep("rows", (2 * channels, height, width // 2),
                     (2 * channels, height // 2, width // 2))]


def from_net(net) -> list[Affine | PoolStep]:
    """The network as affine maps with a ReLU between each two (``model.Net``, eval mode).

    Linear features (Proposition 1's network, no ReLU on phi) fold phi's last linear layer into
    the head, exactly: w.(W h + c) + b = (w W) h + (w.c + b). A tanh (Appendix B's variant) has
    no exact ReLU rewrite and is refused."""
    modules = list(net.phi)
    activation = modules[-1]
    if any(isinstance(m, nn.Tanh) for m in modules):
        raise ValueError("bounds.py rewrites ReLU networks exactly; a tanh "
                         "(model.hidden_activation tanh) has no such rewrite: run the stages "
                         "before certify (dvc exp run ... attack)")
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    norms = [m for m in modules if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d))]
    norm = (lambda i: norms[i]) if norms else (lambda i: None)
    if len(convs) != 2 or len(linears) != 2:
        raise ValueError("expected the paper's network: two convolutions, two linear layers")
    layers, shape = [], (3, 32, 32)
    mean, std = net.mean.detach().to(DTYPE).flatten(), net.std.detach().to(DTYPE).flatten()
    w, b = _folded_conv(convs[0], norm(0), std, mean)
    for i, conv in enumerate(convs):
        if i:  # the pooled map arrives as channel pairs to be summed: duplicate the weights
            w, b = _folded_conv(conv, norm(1))
            w = w.repeat_interleave(2, dim=1)
        out = (w.shape[0], shape[1] - w.shape[2] + 1, shape[2] - w.shape[3] + 1)
        layers.append(Affine(w, b, shape, out))
        layers.extend(_pool_steps(*out))
        shape = (2 * out[0], out[1] // 2, out[2] // 2)
    w, b = _fold_norm(linears[0].weight.detach().to(DTYPE), linears[0].bias.detach().to(DTYPE),
                      norm(2))
    w = w.view(w.shape[0], shape[0] // 2, -1).repeat_interleave(2, dim=1).reshape(w.shape[0], -1)
    layers.append(Affine(w, b, shape, (w.shape[0],)))
    w, b = _fold_norm(linears[1].weight.detach().to(DTYPE), linears[1].bias.detach().to(DTYPE),
                      norm(3))
    head = net.head.weight.detach().to(DTYPE)
    bias = net.bias.detach().to(DTYPE).view(1)
    if isinstance(activation, nn.Identity):  # no ReLU between phi's last layer and the head
        head, bias, w = head @ w, head @ b + bias, None
    if w is not None:
        layers.append(Affine(w, b, (linears[0].out_features,), (w.shape[0],)))
    layers.append(Affine(head, bias, (head.shape[1],), (1,)))
    return layers


def forward(layers: list[Affine], x: torch.Tensor) -> torch.Tensor:
    """The score of the rewritten network (float64): equals the network's, up to rounding."""
    h = x.to(DTYPE)
    for i, layer in enumerate(layers):
        h = layer.forward(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h.flatten(1)[:, 0]


def box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Linf ball of radius ``eps`` around ``x``, intersected with [0, 1]^n."""
    x = x.to(DTYPE)
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _spread(errors: list | None, k: int):
    """Map k's rounding allowance (``rounding.layer_errors``), or 0."""
    return 0.0 if errors is None or errors[k] is None else errors[k]


def ibp(layers: list[Affine], lower: torch.Tensor, upper: torch.Tensor,
        errors: list | None = None) -> list[tuple]:
    """Interval bounds (l, u) of every affine map's output, given an input box (and, with
    ``errors``, each map's output perturbed by at most its rounding allowance)."""
    bounds = []
    for i, layer in enumerate(layers):
        centre, radius = layer.forward((upper + lower) / 2), layer.forward((upper - lower) / 2,
                                                                            absolute=True)
        radius = radius + _spread(errors, i)
        bounds.append((centre - radius, centre + radius))
        lower, upper = torch.relu(centre - radius), torch.relu(centre + radius)
    return bounds


def _relaxation(lower: torch.Tensor, upper: torch.Tensor):
    """(lower slope, upper slope, upper intercept) of CROWN's linear bounds on relu(h)."""
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(DTYPE)
    chord = upper / (upper - lower).where(unstable, torch.ones_like(upper))
    upper_slope = torch.where(unstable, chord, active)
    intercept = torch.where(unstable, -chord * lower, torch.zeros_like(lower))
    lower_slope = torch.where(unstable, (upper > -lower).to(DTYPE), active)
    return lower_slope, upper_slope, intercept


def _window(t: torch.Tensor, rows: torch.Tensor, corner: torch.Tensor | None,
            size: tuple) -> torch.Tensor:
    """Per row r, the (h, w) = ``size`` window of map ``t[rows[r]]`` (images, C, H, W) whose
    top-left corner is ``corner[r]``; with no corner, the whole maps (broadcast where every row
    is on one image)."""
    if corner is None:
        return t[rows[:1]] if bool((rows == rows[0]).all()) else t[rows]
    patches = t.unfold(2, size[0], 1).unfold(3, size[1], 1)  # a view: (images, C, y, x, h, w)
    return patches[rows, :, corner[:, 0], corner[:, 1]]


def backward_lower(layers: list, top: int, a: torch.Tensor, rows: torch.Tensor,
                   relax: list[tuple], lower: torch.Tensor, upper: torch.Tensor,
                   corner: torch.Tensor | None = None, errors: list | None = None) -> torch.Tensor:
    """CROWN: a lower bound of ``A . z_top`` (``z_top`` the output of affine map ``top``) for each
    row of ``A``, row r on image ``rows[r]``, over the input box [lower, upper] of each image,
    with the ReLU after map k relaxed by ``relax[k]`` (``_relaxation`` of its input bounds).

    ``corner`` (rows, 2): ``A`` is a window of map ``top``'s output with this top-left corner,
    all rows of one size. A neuron of a convolution or pooling step reaches only a window of the
    maps before it (its receptive field: 14 x 14 of the 32 x 32 input for the second
    convolution), so CROWN's intermediate bounds propagate windows, several times less work than
    whole maps; the same sums, so the same bounds up to rounding.

    ``errors``: each map's output may be off by its rounding allowance (``rounding.py``), an
    input of its own: ``-|A| . eps`` at that map."""
    constant = torch.zeros(len(a), dtype=DTYPE)
    for k in range(top, -1, -1):
        if errors is not None and errors[k] is not None:
            spread = _window(errors[k], rows, corner, a.shape[2:]) if a.dim() > 2 else errors[k][rows]
            constant -= (a.abs() * spread).flatten(1).sum(1)
        constant += layers[k].bias_term(a)
        a = layers[k].backward(a)
        corner = layers[k].in_corner(corner)
        if k:
            lower_slope, upper_slope, intercept = (
                _window(t, rows, corner, a.shape[2:]) for t in relax[k - 1])
            negative = a.clamp(max=0)
            constant += (negative * intercept).flatten(1).sum(1)
            a = (a - negative) * lower_slope + negative * upper_slope
    centre, radius = ((_window(t, rows, corner, a.shape[2:]) if corner is not None else t[rows])
                      for t in ((upper + lower) / 2, (upper - lower) / 2))
    return (a * centre).flatten(1).sum(1) - (a.abs() * radius).flatten(1).sum(1) + constant


def crown_bounds(layers: list[Affine], lower: torch.Tensor, upper: torch.Tensor,
                 chunk: int = 1024, windows: bool = True, errors: list | None = None) -> list[tuple]:
    """Bounds of every affine map's output: IBP's, tightened by CROWN for every ReLU input IBP
    leaves unstable, layer by layer (each layer's CROWN uses the tightened bounds before it).
    ``windows=False`` propagates whole maps (the same bounds, slower: for benchmarks/)."""
    bounds = ibp(layers, lower, upper, errors)
    relax = [_relaxation(*bounds[0])]
    for k in range(1, len(layers) - 1):  # the first map's IBP bounds are exact; the last has no ReLU
        # IBP from the tightened bounds of the layer before: far fewer neurons left unstable
        centre = layers[k].forward((torch.relu(bounds[k - 1][1]) + torch.relu(bounds[k - 1][0])) / 2)
        radius = layers[k].forward((torch.relu(bounds[k - 1][1]) - torch.relu(bounds[k - 1][0])) / 2,
                                   absolute=True) + _spread(errors, k)
        low = torch.maximum(bounds[k][0], centre - radius)
        up = torch.minimum(bounds[k][1], centre + radius)
        unstable = ((low < 0) & (up > 0)).flatten(1)
        image, neuron = torch.nonzero(unstable, as_tuple=True)
        if not len(image):
            bounds[k] = (low, up)
            relax.append(_relaxation(low, up))
            continue
        new_low, new_up = low.flatten(1).clone(), up.flatten(1).clone()
        shape = layers[k].out_shape
        for start in range(0, len(image), chunk):
            img, idx = image[start:start + chunk], neuron[start:start + chunk]
            n, r = len(img), torch.arange(len(img))
            if len(shape) == 3 and windows:  # a neuron of a map: a 1 x 1 window at its position
                a = torch.zeros(2 * n, shape[0], 1, 1, dtype=DTYPE)
                channel, position = idx // (shape[1] * shape[2]), idx % (shape[1] * shape[2])
                a[r, channel] = 1.0  # lower bound of z_j
                a[r + n, channel] = -1.0  # lower bound of -z_j: minus the upper bound
                corner = torch.stack([position // shape[2], position % shape[2]], 1).repeat(2, 1)
            else:
                a = torch.zeros(2 * n, math.prod(shape), dtype=DTYPE)
                a[r, idx], a[r + n, idx] = 1.0, -1.0
                a, corner = a.view(2 * n, *shape), None
            bound = backward_lower(layers, k, a, torch.cat([img, img]), relax, lower, upper, corner,
                                   errors)
            new_low[img, idx] = torch.maximum(new_low[img, idx], bound[:n])
            new_up[img, idx] = torch.minimum(new_up[img, idx], -bound[n:])
        bounds[k] = (new_low.view_as(low), new_up.view_as(up))
        relax.append(_relaxation(*bounds[k]))
    return bounds


def intermediate_bounds(layers: list, lower: torch.Tensor, upper: torch.Tensor, method: str,
                        windows: bool = True, errors: list | None = None) -> list[tuple]:
    """Every affine map's output bounds over the box, by ``method`` ('ibp', 'crown_ibp': IBP's;
    'crown' and what builds on it: CROWN's)."""
    if method in ("ibp", "crown_ibp"):
        return ibp(layers, lower, upper, errors)
    return crown_bounds(layers, lower, upper, windows=windows, errors=errors)


def final_bound(layers: list, bounds: list[tuple], sign: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor, slopes: list[torch.Tensor] | None = None,
                errors: list | None = None) -> torch.Tensor:
    """CROWN's lower bound of ``sign * s`` per image from the ReLU inputs' ``bounds``; ``slopes``
    (one tensor per ReLU, values in [0, 1]) replace the lower slope of the unstable neurons
    (alpha-CROWN: any slope in [0, 1] bounds relu(h) >= slope h there, so every choice is sound)."""
    relax = [_relaxation(*b) for b in bounds[:-1]]
    if slopes is not None:
        relax = [(torch.where((lo < 0) & (up > 0), alpha, low), up_slope, intercept)
                 for (low, up_slope, intercept), (lo, up), alpha in zip(relax, bounds, slopes)]
    a = sign.to(DTYPE).view(-1, 1)
    return backward_lower(layers, len(layers) - 1, a, torch.arange(len(sign)), relax, lower, upper,
                          errors=errors)


def alpha_crown(layers: list, bounds: list[tuple], sign: torch.Tensor, lower: torch.Tensor,
                upper: torch.Tensor, steps: int, lr: float = 0.1,
                errors: list | None = None) -> torch.Tensor:
    """alpha-CROWN on the last bound (Xu et al., 2021): the unstable ReLUs' lower slopes, started
    at CROWN's choice, optimised by projected Adam to raise each image's bound, with CROWN's
    intermediate bounds kept. Returns the best bound seen per image (each one is sound), so it is
    never below CROWN's."""
    relax = [_relaxation(*b) for b in bounds[:-1]]
    alphas = [low.clone().requires_grad_(True) for low, _, _ in relax]
    optimizer = torch.optim.Adam(alphas, lr=lr)
    best = torch.full((len(sign),), -math.inf, dtype=DTYPE)
    for step in range(steps + 1):
        bound = final_bound(layers, bounds, sign, lower, upper, alphas, errors)
        best = torch.maximum(best, bound.detach())
        if step == steps:
            break
        optimizer.zero_grad()
        (-bound.sum()).backward()  # images are independent: the sum's gradient is each one's
        optimizer.step()
        with torch.no_grad():
            for alpha in alphas:
                alpha.clamp_(0.0, 1.0)
    return best


def unstable_counts(bounds: list[tuple]) -> torch.Tensor:
    """Per image, the ReLUs whose input bounds straddle 0 (l < 0 < u): the binary variables an
    exact method needs, so what decides whether it can finish."""
    return sum(((lo < 0) & (up > 0)).flatten(1).sum(1) for lo, up in bounds[:-1])


def lower_margin(layers: list[Affine], x: torch.Tensor, sign: torch.Tensor, eps: float,
                 method: str, windows: bool = True, errors: list | None = None) -> torch.Tensor:
    """A lower bound of ``sign * s(x')`` over the ball of radius ``eps`` (in [0, 1] units) around
    each image ``x`` intersected with [0, 1]^n, by ``method``: 'ibp', 'crown_ibp' or 'crown'
    (``windows``: see ``crown_bounds``; ``errors``: each map's rounding allowance, from
    ``rounding.layer_errors`` over the same box)."""
    lower, upper = box(x, eps)
    sign = sign.to(DTYPE)
    bounds = intermediate_bounds(layers, lower, upper, method, windows, errors)
    return ibp_margin(bounds, sign) if method == "ibp" else final_bound(
        layers, bounds, sign, lower, upper, errors=errors)


def ibp_margin(bounds: list[tuple], sign: torch.Tensor) -> torch.Tensor:
    """IBP's lower bound of ``sign * s``: the score's interval, read on the label's side."""
    low, up = bounds[-1]
    return torch.where(sign.to(DTYPE) > 0, low[:, 0], -up[:, 0])


METHODS = ("ibp", "crown_ibp", "crown")
