"""Imported first by every stage script: one clear line, not a traceback, when the interpreter
running the stage lacks the project (DVC runs `python` from PATH, so an environment that is not
activated means the system Python), when the stage runs out of memory, or when a warning was
turned into an error."""

import os
import sys
from importlib import metadata
from pathlib import Path


def _missing() -> list[str]:
    try:
        requirements = metadata.requires("difftrain") or []
    except metadata.PackageNotFoundError:
        return ["difftrain"]
    missing = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = requirement.split(";")[0].split("==")[0].split(">")[0].split("<")[0].strip()
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


if _missing():
    print(f"error: {sys.executable} lacks the project's packages ({', '.join(_missing())}); "
          f"activate the environment first (. .venv/bin/activate), or run `make setup`",
          file=sys.stderr)
    sys.exit(2)


def _one_line(kind, exc, tb):
    """Failures of the machine rather than of the code get one line, not a traceback: memory
    too small for the stage (a MemoryError, torch's allocator or a shared library that cannot
    be mapped under a memory limit), and a warning turned into an error (``-W error``,
    ``PYTHONWARNINGS=error``) by a library the stage imports or calls."""
    stage = Path(sys.argv[0]).stem
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else kind.__name__
    if issubclass(kind, MemoryError) or any(sign in str(exc) for sign in _OUT_OF_MEMORY):
        print(f"error: the {stage} stage ran out of memory ({kind.__name__}: {text[:200]}); the "
              f"process's memory limit (ulimit -v, a container or job limit) is too small for "
              f"it: raise the limit or run on a larger machine", file=sys.stderr)
        sys.exit(2)
    if issubclass(kind, Warning):
        print(f"error: the {stage} stage stopped on a warning turned into an error "
              f"({kind.__name__}: {text[:200]}); warnings are errors here (-W error or "
              f"PYTHONWARNINGS={os.environ.get('PYTHONWARNINGS', '')!r}): run the stage without "
              f"that setting", file=sys.stderr)
        sys.exit(2)
    sys.__excepthook__(kind, exc, tb)


_OUT_OF_MEMORY = ("can't allocate memory", "Cannot allocate memory", "failed to map segment",
                  "out of memory")
sys.excepthook = _one_line
