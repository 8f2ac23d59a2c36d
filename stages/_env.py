"""Imported first by every stage script: one clear line, not a traceback, when the interpreter
running the stage lacks the project (DVC runs `python` from PATH, so an environment that is not
activated means the system Python)."""

import sys
from importlib import metadata


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
