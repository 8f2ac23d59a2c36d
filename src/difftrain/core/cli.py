"""The shared entry point of the stage scripts: load params, run, report errors readably."""

from __future__ import annotations

import ctypes
import errno
import signal
import sys
from typing import Callable

from difftrain.core.errors import DifftrainError
from difftrain.core.params import Params, load_params


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_the_parent() -> None:
    """Stop when the stage is told to, or when DVC is gone. SIGTERM and SIGINT become
    SystemExit, so the output writer's cleanup runs and nothing half-written is left; on Linux
    the kernel sends SIGTERM when the parent dies (DVC killed by SIGTERM does not pass it on,
    and the stage would keep running under PID 1)."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass  # no prctl: the signal handler alone


def run_stage(main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Validate params, then run ``main``; a DifftrainError, or a full, read-only or forbidden
    output folder, becomes one line and exit code 2."""
    _end_with_the_parent()
    try:
        main(load_params(params_path))
    except DifftrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a library writing into an output folder (figures, dvclive)
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES):
            raise
        print(f"error: {exc.filename or 'an output'}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)
