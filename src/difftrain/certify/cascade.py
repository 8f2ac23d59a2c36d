"""The certify stage's evaluation: each attacked image's largest certified Linf radius.

A robust accuracy from attacks is an upper bound (no attack fooled the image); a certificate is a
lower bound (no input in the ball can fool it). For every image the attack stage attacked, this
climbs the attack grid (``attack.pgd.epsilons``) and tries to certify the image at each radius
with a cascade from cheap to tight, each method only on what the cheaper ones left:

* IBP and CROWN-IBP (``bounds.py``) on every image still climbing, fooled or not;
* CROWN, batched over ``certify.batch_size`` images, only where no attack fooled the image at
  that radius (the only images it could certify, if all is sound), up to
  ``certify.crown_max_eps`` and for at most ``certify.crown_attempts`` (image, radius) attempts
  a split, in image order (a count, not a clock: the same parameters give the same metrics on
  any machine); what it leaves is reported (``crown_skipped``), and so is each image's number of
  unstable ReLUs after CROWN's intermediate bounds;
* alpha-CROWN (``certify.alpha_steps``) on what CROWN left, with CROWN's intermediate bounds;
* the exact MILP (``milp.py``, HiGHS) on what alpha-CROWN left, up to ``certify.milp_max_eps``,
  for ``certify.milp_attempts`` images a split with a budget of ``certify.milp_nodes``
  branch-and-bound nodes each: certified, undecided, or a point that fools the float32 network,
  which is an adversarial example and lowers that image's worst case.

The first radius nothing certifies ends the image's climb (the balls nest). At radius 0 the
certificate is the float32 network's own prediction. Above it, every bound is of the float32
network (each map's rounding allowance is an input of the bound, ``rounding.layer_errors``) and
must exceed the float64 rounding of its own computation (``rounding.float64_error``).

Soundness, checked by something that can fail: an attack of this stage's own (``check.py``) runs
on every certified image at its certified radius (``certified_but_fooled`` counts those it or
the attack stage fools) and on every (image, radius) a bound was computed for, where the lowest
margin it finds must not lie below the tightest bound (``bound_violations``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from difftrain.certify import bounds as B
from difftrain.certify import check, rounding
from difftrain.certify.milp import Encoder, TOLERANCE
from difftrain.core.keys import eps_key
from difftrain.core.labels import predict, sign
from difftrain.core.params import CertifyParams
from difftrain.data.cifar import to_float

CROWN_FAMILY = ("crown", "alpha_crown", "milp")


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
    worst: torch.Tensor  # the smallest fooling radius per image (inf: never), the MILP's included
    attack_worst: torch.Tensor  # the attack stage's alone
    attempts: pd.DataFrame  # one row per (image, radius, method) bound computed
    checked_fooled: torch.Tensor  # bool: the stage's own attack fooled it at its certified radius
    decided: dict[str, int] = field(default_factory=dict)  # certificates each method gave
    tried: dict[str, int] = field(default_factory=dict)  # (image, radius) attempts per method
    seconds: dict[str, float] = field(default_factory=dict)
    crown_skipped: int = 0  # attempts CROWN did not make (radius or attempt budget)
    milp_skipped: int = 0
    milp: dict[str, int] = field(default_factory=dict)  # outcomes: certified, adversarial, undecided

    def accuracy(self) -> list[float]:
        """Certified accuracy on the grid: images certified at least at each radius."""
        return [float((self.radius >= e).double().mean()) for e in self.grid]

    def worst_accuracy(self) -> list[float]:
        return [float((self.worst > e).double().mean()) for e in self.grid]

    @property
    def certified_but_fooled(self) -> int:
        """Images certified at a radius at or above one an attack fooled them at (the attack
        stage's or this stage's own)."""
        return int(((self.radius >= self.worst) | self.checked_fooled).sum())

    @property
    def bound_violations(self) -> int:
        """(image, radius) pairs where the stage's attack found a margin below the bound."""
        return int(self.attempts["violation"].sum()) if len(self.attempts) else 0

    def metrics(self) -> dict:
        certified, worst = self.accuracy(), self.worst_accuracy()
        crown = self.attempts[self.attempts["method"] == "crown"] if len(self.attempts) else self.attempts
        unstable = {eps_key(e): {"median": float(g["unstable"].median()), "max": int(g["unstable"].max()),
                                 "images": len(g)}
                    for e, g in crown.groupby("eps")} if len(crown) else {}
        gaps = self.attempts.dropna(subset=["check_lowest"]) if len(self.attempts) else self.attempts
        if len(gaps):  # how tight CROWN and what builds on it are: the cheap bounds are far off
            gaps = gaps[gaps["method"].isin(CROWN_FAMILY) & gaps["bound"].abs().lt(math.inf)]
        return {
            "n": len(self.positions),
            "certified": {eps_key(e): {"accuracy": c} for e, c in zip(self.grid, certified)},
            "worst": {eps_key(e): {"accuracy": w} for e, w in zip(self.grid, worst)},
            "interval_width": {eps_key(e): w - c for e, c, w in zip(self.grid, certified, worst)},
            "closed_at": [e for e, c, w in zip(self.grid, certified, worst) if math.isclose(c, w)],
            "certified_but_fooled": self.certified_but_fooled,
            "bound_violations": self.bound_violations,
            "bound_gap_median": (float((gaps["check_lowest"] - gaps["bound"]).median())
                                 if len(gaps) else None),
            "decided": dict(self.decided),
            "tried": dict(self.tried),
            "seconds_per_attempt": {m: self.seconds[m] / self.tried[m]
                                    for m in self.seconds if self.tried.get(m)},
            "crown_skipped": self.crown_skipped,
            "milp": {**self.milp, "skipped": self.milp_skipped},
            "worst_lowered_by_milp": int((self.worst < self.attack_worst).sum()),
            "unstable_after_crown": unstable,
        }

    def table(self) -> pd.DataFrame:
        """Certified and worst-case accuracy against epsilon (dvc plots, the figure's band)."""
        return pd.DataFrame({"split": self.name, "eps": self.grid, "certified": self.accuracy(),
                             "worst": self.worst_accuracy()})

    def attempts_table(self) -> pd.DataFrame:
        """Every bound computed: (image, radius, method), its value and margin, whether it
        certified, the unstable ReLUs after CROWN's intermediate bounds, and the lowest margin
        the stage's own attack found in that ball (data/certify/attempts.csv)."""
        table = self.attempts.copy()
        table.insert(0, "split", self.name)
        table.insert(1, "position", self.positions.numpy()[table["image"].to_numpy(dtype=int)]
                     if len(table) else [])
        return table.drop(columns="image")

    def per_image(self) -> pd.DataFrame:
        return pd.DataFrame({"split": self.name, "position": self.positions.numpy(),
                             "label": self.labels.numpy(),
                             "certified_max_eps_255": self.radius.numpy(),
                             "certified_by": [self.names[i] if i >= 0 else ""
                                              for i in self.method.tolist()],
                             "worst_min_eps_255": self.worst.numpy(),
                             "attack_worst_min_eps_255": self.attack_worst.numpy()})


def _take(errors: list, idx: torch.Tensor) -> list:
    return [None if e is None else e[idx] for e in errors]


def _bounds_of(bounds: list[tuple], idx: torch.Tensor) -> list[tuple]:
    return [(lo[idx], up[idx]) for lo, up in bounds]


class _Record:
    """The attempts made, and the counters the metrics report."""

    def __init__(self, methods):
        self.rows = []
        self.decided = {m: 0 for m in methods}
        self.tried = {m: 0 for m in methods}
        self.seconds = {m: 0.0 for m in methods}
        self.milp = {"certified": 0, "adversarial": 0, "undecided": 0}

    def add(self, method, images, eps, bound, margin, ok, unstable=None, seconds=0.0):
        self.tried[method] += len(images)
        self.decided[method] += int(ok.sum())
        self.seconds[method] += seconds
        for i, image in enumerate(images.tolist()):
            self.rows.append({"image": image, "eps": eps, "method": method,
                              "bound": float(bound[i]), "margin": float(margin[i]),
                              "certified": bool(ok[i]),
                              "unstable": None if unstable is None else int(unstable[i])})


def certify_split(net, name: str, images: torch.Tensor, labels: torch.Tensor,
                  positions: torch.Tensor, worst: torch.Tensor, grid, params: CertifyParams,
                  progress: bool = True) -> SplitCertificate:
    """Climb ``grid`` for every image with the cascade of ``params.methods``.

    ``images`` are uint8, ``worst`` each image's smallest fooling radius over all attacks."""
    net = net.cpu().eval()
    methods = params.methods
    layers = B.from_net(net) if methods else []
    x = to_float(images).to(B.DTYPE)
    labels = labels.cpu()
    side = sign(labels, B.DTYPE)
    attack_worst = worst.double()
    worst = attack_worst.clone()
    with torch.no_grad():
        alive = predict(net(x.float())) == labels  # radius 0: the float32 network's own answer
    radius = torch.full((len(labels),), -math.inf, dtype=torch.float64)
    method = torch.full((len(labels),), -1, dtype=torch.int64)
    names = ("clean", *methods)
    radius[alive] = 0.0
    method[alive] = 0
    record = _Record(methods)
    skipped = {"crown": 0, "milp": 0}
    encoder = Encoder(layers) if "milp" in methods else None
    bar = tqdm(total=len(grid) - 1, desc=f"certify {name}", disable=not progress, unit="eps")
    for eps in grid[1:]:
        todo = torch.nonzero(alive).flatten()
        if not len(todo) or not methods:
            break
        done = torch.zeros(len(labels), dtype=torch.bool)
        for chunk in todo.split(params.batch_size):
            _certify_chunk(net, layers, encoder, x, labels, side, chunk, eps, worst, params,
                           record, skipped, done, method, names)
        radius[done] = eps
        alive &= done
        bar.update(1)
        bar.set_postfix(eps=f"{eps:g}", certified=f"{float(alive.double().mean()):.3f}")
    bar.close()
    attempts, checked = _check(net, x, labels, radius, record, params)
    return SplitCertificate(name=name, positions=positions, labels=labels, grid=tuple(grid),
                            radius=radius, method=method, names=names, worst=worst,
                            attack_worst=attack_worst, attempts=attempts, checked_fooled=checked,
                            decided=record.decided, tried=record.tried, seconds=record.seconds,
                            crown_skipped=skipped["crown"], milp_skipped=skipped["milp"],
                            milp=record.milp)


def _certify_chunk(net, layers, encoder, x, labels, side, chunk, eps, worst, params, record,
                   skipped, done, method, names):
    """One batch of still-climbing images at one radius, through the cascade."""
    lower, upper = B.box(x[chunk], eps / 255)
    errors = rounding.layer_errors(net, layers, lower, upper)
    boxes = B.ibp(layers, lower, upper, errors)
    margin = rounding.float64_error(layers, lower, upper, boxes, errors)
    left = torch.ones(len(chunk), dtype=torch.bool)  # positions within the chunk

    def settle(m, where, bound, unstable=None, seconds=0.0):
        ok = bound > margin[where]
        record.add(m, chunk[where], eps, bound, margin[where], ok, unstable, seconds)
        done[chunk[where[ok]]] = True
        method[chunk[where[ok]]] = names.index(m)
        left[where[ok]] = False

    for m in ("ibp", "crown_ibp"):
        if m in params.methods and left.any():
            where = torch.nonzero(left).flatten()
            start = time.perf_counter()
            sub = _bounds_of(boxes, where)
            bound = B.ibp_margin(sub, side[chunk[where]]) if m == "ibp" else B.final_bound(
                layers, sub, side[chunk[where]], lower[where], upper[where],
                errors=_take(errors, where))
            settle(m, where, bound, seconds=time.perf_counter() - start)
    if "crown" not in params.methods:
        return
    # the costly ones only where the attacks left a chance, within the radius and the budget
    where = torch.nonzero(left & (worst[chunk] > eps)).flatten()
    if eps > params.crown_max_eps:
        skipped["crown"] += len(where)
        return
    room = max(params.crown_attempts - record.tried["crown"], 0)
    skipped["crown"] += max(len(where) - room, 0)
    where = where[:room]
    if not len(where):
        return
    start = time.perf_counter()
    lo, up, err, sides = lower[where], upper[where], _take(errors, where), side[chunk[where]]
    crown = B.crown_bounds(layers, lo, up, errors=err)
    unstable = B.unstable_counts(crown)
    settle("crown", where, B.final_bound(layers, crown, sides, lo, up, errors=err), unstable,
           time.perf_counter() - start)
    keep = left[where]  # what CROWN left, as positions within ``where``
    if "alpha_crown" in params.methods and keep.any():
        start = time.perf_counter()
        sub = torch.nonzero(keep).flatten()
        bound = B.alpha_crown(layers, _bounds_of(crown, sub), sides[sub], lo[sub], up[sub],
                              params.alpha_steps, errors=_take(err, sub))
        settle("alpha_crown", where[sub], bound, unstable[sub], time.perf_counter() - start)
        keep = left[where]
    if "milp" not in params.methods or not keep.any():
        return
    sub = torch.nonzero(keep).flatten()
    if eps > params.milp_max_eps:
        skipped["milp"] += len(sub)
        return
    for j in sub.tolist():
        if record.tried["milp"] >= params.milp_attempts:
            skipped["milp"] += 1
            continue
        one = slice(j, j + 1)
        start = time.perf_counter()
        threshold = margin[where[j]] + TOLERANCE * rounding.float64_magnitude(
            layers, lo[one], up[one], _bounds_of(boxes, where[one]), _take(err, torch.tensor([j])))
        result = encoder.solve(lo[one], up[one], _bounds_of(crown, torch.tensor([j])),
                               _take(err, torch.tensor([j])), float(sides[j]), float(threshold),
                               params.milp_nodes)
        image = int(chunk[where[j]])
        status = result.status
        if status == "candidate":  # re-scored on the float32 network, inside the ball
            lo32, up32 = check.inward_box(x[image:image + 1], torch.tensor([eps / 255]))
            point = result.point.float().clamp(lo32, up32)
            with torch.no_grad():
                fooled = bool(predict(net(point))[0] != labels[image])
            status = "adversarial" if fooled else "undecided"
            if fooled:
                worst[image] = min(float(worst[image]), eps)
        record.milp[status] += 1
        bound = torch.tensor([math.inf if status == "certified" else -math.inf])
        settle("milp", where[j:j + 1], bound, unstable[j:j + 1], time.perf_counter() - start)


def _check(net, x, labels, radius, record, params) -> tuple[pd.DataFrame, torch.Tensor]:
    """The stage's own attack on every certified image at its radius and on every (image,
    radius) a bound was computed for; returns the attempts table and who it fooled."""
    checked = torch.zeros(len(labels), dtype=torch.bool)
    certified = torch.nonzero(radius > 0).flatten()
    if len(certified) and params.check_steps:
        _, fooled = check.lowest_margin(net, x[certified], labels[certified],
                                        radius[certified] / 255, params.check_steps,
                                        params.check_restarts)
        checked[certified] = fooled
    attempts = pd.DataFrame(record.rows, columns=["image", "eps", "method", "bound", "margin",
                                                  "certified", "unstable"])
    attempts["check_lowest"] = math.nan
    if len(attempts) and params.check_steps:
        tight = attempts[attempts["bound"].abs() < math.inf].groupby(["image", "eps"])["bound"].max()
        for eps, group in tight.groupby(level="eps"):
            images = torch.tensor(group.index.get_level_values("image").to_numpy())
            lowest, _ = check.lowest_margin(net, x[images], labels[images],
                                            torch.full((len(images),), eps / 255),
                                            params.check_steps, params.check_restarts)
            found = dict(zip(images.tolist(), lowest.tolist()))
            rows = attempts["eps"] == eps
            attempts.loc[rows, "check_lowest"] = attempts.loc[rows, "image"].map(found)
    attempts["violation"] = (attempts["check_lowest"] < attempts["bound"] - attempts["margin"]) \
        & (attempts["bound"].abs() < math.inf)
    return attempts, checked
