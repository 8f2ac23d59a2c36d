"""The shared entry point of the stage scripts: load params, run, report errors readably."""

from __future__ import annotations

import errno
import sys
from typing import Callable

from difftrain.core.errors import DifftrainError
from difftrain.core.params import Params, load_params


def run_stage(main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Validate params, then run ``main``; a DifftrainError, or a full, read-only or forbidden
    output folder, becomes one line and exit code 2."""
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
