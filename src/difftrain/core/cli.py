"""The shared entry point of the stage scripts: load params, run, report errors readably."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from difftrain.core.errors import DifftrainError
from difftrain.core.params import Params, load_params


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _argv(pid: int) -> list[bytes]:
    """The command line of ``pid`` from /proc, or [] if it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    """The parent of ``pid`` from /proc/PID/stat (field 4, after the parenthesised name)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _watch_dvc_behind_a_shell() -> None:
    """DVC runs a stage as ``$SHELL -c CMD``. bash execs CMD, so DVC is the stage's parent and
    PR_SET_PDEATHSIG covers it; dash (/bin/sh where SHELL is unset, as on CI) keeps the shell in
    between, and the shell outlives DVC. So when the parent is such a shell and its parent is
    DVC, a daemon thread polls once a second and sends this process SIGTERM when the shell is
    orphaned. Any other launcher (a terminal, nohup) is left alone."""
    shell = os.getppid()
    runner = _ppid(shell)
    if b"-c" not in _argv(shell) or runner is None or not any(b"dvc" in a for a in _argv(runner)):
        return

    def watch() -> None:
        while _ppid(shell) == runner:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dvc-watch", daemon=True).start()


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
        _watch_dvc_behind_a_shell()


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
