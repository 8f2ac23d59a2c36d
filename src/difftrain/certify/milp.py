"""Exact verification where it is affordable: a mixed-integer program over the rewritten network,
solved by HiGHS (highspy), on the images CROWN and alpha-CROWN left undecided.

The encoding is MIPVerify's (Tjeng, Xiao & Tedrake, 2019) over ``bounds.from_net``'s affine maps:
the input ranges over the ball intersected with [0, 1]^n; a ReLU whose input bounds (CROWN's)
are stable is fixed (active: ``h = z``; inactive: ``h = 0``); an unstable one gets one binary
``d`` and big-M rows from its bounds, ``h >= z``, ``h <= u d``, ``h <= z - l (1 - d)``. Each
map's output may be off by its float32 rounding allowance (``rounding.layer_errors``), so
``z`` is a range around ``W h + b`` rather than a value: the program is the float32 network's,
as the bounds are. The objective is ``min sign * s``.

A row keeps only points whose objective is below the margin, and HiGHS stops at the first
solution. So: no solution ("infeasible with the margin") certifies the image;
a solution is re-scored on the float32 network, and if it fools it, it is an adversarial
example (which also lowers the worst case); what the node budget (a count, not a clock: the
same answer on any machine) leaves is undecided.

What bounds an attempt's work: HiGHS overrides ``simplex_iteration_limit`` inside its MIP search
(each LP relaxation sets its own limit), so that option bounds nothing here. Two of its defaults
let an attempt run past what the node count sees: after a root restart the cut rounds are
uncapped, and the RENS and RINS sub-MIPs dive on their own (on the paper's CNN a RENS inside a
RENS ran past 10 minutes on one image, after 200 s of root cuts). With restarts and both
sub-MIPs off, the root runs at most 2 sqrt(binaries) cut rounds
(``HighsMipSolverData::evaluateRootNode``), each LP re-solve is capped by HiGHS at
max(10,000, 10x the root LP's iterations), and the search stops at ``nodes``: a work bound that
grows with the model, not with the machine.

The margin is HiGHS's feasibility tolerance (1e-9 here) times the magnitude of the sums
(``rounding.float64_magnitude``): a row violated by that much, carried through the network's ``|W|`` chain, moves the objective by at most that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.sparse as sp
import torch

from difftrain.certify.bounds import DTYPE, Affine

TOLERANCE = 1e-9  # HiGHS's primal and MIP feasibility tolerance here (its defaults: 1e-7, 1e-6)
# What bounds an attempt (module docstring): HiGHS's options, fixed, so the answer repeats
OPTIONS = {"output_flag": False, "threads": 1, "random_seed": 0,
           "mip_allow_restart": False, "mip_heuristic_run_rens": False,
           "mip_heuristic_run_rins": False,
           "primal_feasibility_tolerance": TOLERANCE, "mip_feasibility_tolerance": TOLERANCE}
INF = math.inf


@dataclass
class MilpResult:
    status: str  # "certified", "candidate" (a point below the threshold), "undecided", "optimal"
    nodes: int
    objective: float  # the solution's sign * s (nan: none found)
    point: torch.Tensor | None  # the solution's input, in [0, 1] (None: none found)
    lp_iterations: int = 0  # simplex iterations spent
    rows: int = 0  # of the program before presolve


def _matrix(layer) -> sp.csr_matrix:
    """The map's linear part as a sparse matrix (out x in), by applying it to unit vectors."""
    n = math.prod(layer.in_shape)
    rows, cols, vals = [], [], []
    for start in range(0, n, 512):
        size = min(512, n - start)
        eye = torch.zeros(size, n, dtype=DTYPE)
        eye[torch.arange(size), torch.arange(start, start + size)] = 1.0
        out = layer.forward(eye.view(size, *layer.in_shape), bias=False).reshape(size, -1)
        i, j = torch.nonzero(out, as_tuple=True)
        rows.append(j.numpy())
        cols.append((i + start).numpy())
        vals.append(out[i, j].numpy())
    m = math.prod(layer.out_shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(m, n))


class Encoder:
    """The rewritten network's maps as sparse matrices, built once per network."""

    def __init__(self, layers: list):
        self.layers = layers
        self.matrices = [_matrix(layer) for layer in layers]
        self.biases = [_bias(layer) for layer in layers]

    def solve(self, lower: torch.Tensor, upper: torch.Tensor, bounds: list[tuple],
              errors: list, sign: float, threshold: float, nodes: int,
              first: bool = True) -> MilpResult:
        """One image: is ``min sign * s`` over the box at least ``threshold``? ``bounds`` and
        ``errors`` are that image's (1-image batches), from CROWN over the same box. ``first``:
        stop at the first solution below ``threshold`` (what the cascade needs); otherwise
        solve to optimality ("optimal", with the minimum: for tests and benchmarks)."""
        import highspy

        cols_lo, cols_hi, integer = [lower.flatten().numpy()], [upper.flatten().numpy()], []
        blocks, row_lo, row_hi = [], [], []
        previous = slice(0, lower.numel())  # the input's columns, then each ReLU layer's
        width = lower.numel()  # columns so far
        pending = []  # row blocks, built once the column count is known
        for k, (matrix, bias) in enumerate(zip(self.matrices[:-1], self.biases[:-1])):
            lo, up = (t.flatten().numpy() for t in bounds[k])
            spread = np.zeros_like(lo) if errors[k] is None else errors[k].flatten().numpy()
            active, inactive = lo >= 0, up <= 0
            unstable = ~active & ~inactive
            m = len(lo)
            h = slice(width, width + m)
            width += m
            n_unstable = int(unstable.sum())
            d = slice(width, width + n_unstable)
            width += n_unstable
            cols_lo.append(np.zeros(m))
            cols_hi.append(np.where(inactive, 0.0, np.maximum(up, 0.0)))
            cols_lo.append(np.zeros(n_unstable))
            cols_hi.append(np.ones(n_unstable))
            integer.append(np.arange(d.start, d.stop))
            # active and unstable: h - W h_prev >= b - spread (h >= z for the lowest z)
            keep = np.nonzero(~inactive)[0]
            pending.append((keep, h, previous, matrix, None, None))
            row_lo.append(bias[keep] - spread[keep])
            row_hi.append(np.where(active[keep], bias[keep] + spread[keep], INF))
            # unstable: h - u d <= 0, and h - W h_prev - l d <= b + spread - l
            u_idx = np.nonzero(unstable)[0]
            pending.append((u_idx, h, None, None, d, -up[u_idx]))
            row_lo.append(np.full(len(u_idx), -INF))
            row_hi.append(np.zeros(len(u_idx)))
            pending.append((u_idx, h, previous, matrix, d, -lo[u_idx]))
            row_lo.append(np.full(len(u_idx), -INF))
            row_hi.append(bias[u_idx] + spread[u_idx] - lo[u_idx])
            previous = h
        # assemble the rows: coefficient 1 on h, -W on h_prev, a coefficient on d
        for rows, h, prev, matrix, d, d_coef in pending:
            r = len(rows)
            eye = sp.csr_matrix((np.ones(r), (np.arange(r), h.start + rows)), shape=(r, width))
            block = eye
            if prev is not None:
                w = -matrix[rows]
                w = sp.csr_matrix((w.data, w.indices + prev.start, w.indptr), shape=(r, width))
                block = block + w
            if d is not None:
                block = block + sp.csr_matrix((d_coef, (np.arange(r), d.start + np.arange(r))),
                                              shape=(r, width))
            blocks.append(block)
        head, head_bias = self.matrices[-1], self.biases[-1]
        cost = np.zeros(width)
        cost[previous] = sign * head.toarray()[0]
        spread_head = 0.0 if errors[-1] is None else float(errors[-1].flatten()[0])
        constant = sign * float(head_bias[0]) - spread_head
        if math.isfinite(threshold):  # only points below the threshold: none means certified
            blocks.append(sp.csr_matrix(cost.reshape(1, -1)))
            row_lo.append(np.array([-INF]))
            row_hi.append(np.array([threshold - constant]))
        a = sp.vstack(blocks).tocsr()

        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = width, a.shape[0]
        lp.col_cost_ = cost
        lp.col_lower_, lp.col_upper_ = np.concatenate(cols_lo), np.concatenate(cols_hi)
        lp.row_lower_, lp.row_upper_ = np.concatenate(row_lo), np.concatenate(row_hi)
        lp.offset_ = constant
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = width, a.shape[0]
        kinds = [highspy.HighsVarType.kContinuous] * width
        for j in np.concatenate(integer).tolist():
            kinds[j] = highspy.HighsVarType.kInteger
        lp.integrality_ = kinds  # one assignment: the binding returns a copy to index into
        solver = highspy.Highs()
        options = {**OPTIONS, "mip_max_nodes": int(nodes),
                   "mip_max_improving_sols": 1 if first else 2 ** 31 - 1,
                   "mip_rel_gap": 1e-4 if first else 0.0}
        for option, value in options.items():
            if solver.setOptionValue(option, value) != highspy.HighsStatus.kOk:
                raise RuntimeError(f"HiGHS refused option {option}={value!r}")
        solver.passModel(lp)
        solver.run()
        status = solver.getModelStatus()
        info = solver.getInfo()
        explored = int(info.mip_node_count)
        spent = {"lp_iterations": int(info.simplex_iteration_count), "rows": a.shape[0]}
        if status == highspy.HighsModelStatus.kInfeasible:
            return MilpResult("certified", explored, math.nan, None, **spent)
        if info.primal_solution_status == 2:  # a feasible solution below the margin
            values = np.asarray(solver.getSolution().col_value[:lower.numel()])
            point = torch.tensor(values, dtype=DTYPE).view_as(lower)
            optimal = not first and status == highspy.HighsModelStatus.kOptimal
            return MilpResult("optimal" if optimal else "candidate", explored,
                              float(info.objective_function_value), point, **spent)
        return MilpResult("undecided", explored, math.nan, None, **spent)


def _bias(layer) -> np.ndarray:
    if isinstance(layer, Affine):
        b = layer.bias
        size = math.prod(layer.out_shape)
        return (b.view(-1, 1).expand(-1, size // len(b)).reshape(-1) if layer.conv
                else b).numpy().astype(np.float64)
    return np.zeros(math.prod(layer.out_shape))
