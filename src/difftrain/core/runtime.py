"""Device choice, seeding and threads: what every stage that computes must agree on.

Threads: torch uses as many threads as ``torch.get_num_threads()`` says (``OMP_NUM_THREADS``
sets it), and several torch processes side by side must share them, or they oversubscribe the
cores (one attack stage beside three other torch jobs ran 11x slower, not 4x).
``side_by_side`` runs independent jobs in processes of ``threads // jobs`` threads each.
"""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, TypeVar

import numpy as np
import torch

from difftrain.core.errors import ParamsError


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU; 'cuda' without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device is 'cuda' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed every generator a stage may touch, so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


T = TypeVar("T")


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def side_by_side(fn: Callable[..., T], jobs: list[tuple], worth_it: bool = True) -> list[T]:
    """``[fn(*args) for args in jobs]``, the jobs side by side when there are threads for them.

    With ``t = torch.get_num_threads()`` threads and ``n = min(len(jobs), t)``, the first job runs
    here and the others in ``n - 1`` fresh processes (spawned: forking after OpenMP has started
    is unsafe), every process with ``t // n`` threads. Each job must seed what it draws, so a job
    gives the same result wherever it runs (the attacks do). With one thread, one job, or inside a
    worker process, the jobs run here one after the other, and so they do when the caller says the
    work is too small to repay starting a process (``worth_it``: a few seconds of imports).
    ``fn`` and its arguments must pickle.
    """
    threads = torch.get_num_threads()
    n = min(len(jobs), threads)
    if n <= 1 or not worth_it or multiprocessing.parent_process() is not None:
        return [fn(*args) for args in jobs]
    per_job = threads // n
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n - 1, mp_context=context, initializer=_set_threads,
                             initargs=(per_job,)) as pool:
        remote = [pool.submit(fn, *args) for args in jobs[1:]]
        torch.set_num_threads(per_job)
        try:
            here = fn(*jobs[0])
        finally:
            torch.set_num_threads(threads)
        return [here, *(future.result() for future in remote)]
