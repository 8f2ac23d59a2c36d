"""One run of a grid: a DVC experiment made in a fresh clone, published only when finished.

On whatever machine runs it (a Ray worker, ``grid_engine.py``), a run

1. clones the git remote at the grid's commit into a scratch folder, and points the clone at the
   grid's DVC remote;
2. writes the lock entries of the shared stages the driver reproduced and pushed (``prepare``
   for this run's data section, and ``theory``), so the clone needs no copy of CIFAR-10: ``dvc exp run --pull``
   pulls those outputs instead of rerunning the stage (DVC skips a stage whose only change is
   missing data);
3. runs ``dvc exp run --pull -n NAME -S key=value ...`` with ``OMP_NUM_THREADS`` set to its CPUs;
4. pushes the data first (``dvc push --run-cache``; harmless to repeat) and the experiment's git
   ref last (``dvc exp push``): the ref on the remote marks the run as done, so a run that
   fails, or dies between the two pushes, publishes nothing a reader could mistake for a result;
5. removes the scratch clone, whatever happened.

A failed stage is returned with the tail of its log (nothing of it is pushed); an error of the
machine (a clone that cannot be made) raises, and a worker that dies is retried by Ray.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

LOG_TAIL = 40  # lines of a failed run's log kept in the grid's status

# For tests of the engine's fault handling only: DIFFTRAIN_GRID_FAULT=exit-before-ref makes a
# run's first attempt kill its worker between the data push and the ref push (a marker in the
# scratch folder tells the first attempt from the retry).
FAULT_EXIT_BEFORE_REF = "exit-before-ref"


def _tail(text: str, lines: int = LOG_TAIL) -> str:
    """The last lines of a log, progress-bar redraws dropped."""
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join([line for line in kept if line.strip()][-lines:])


def environment_tool(name: str) -> str:
    """A tool of this interpreter's environment (dvc), else the one on PATH: the driver and
    the workers run the dvc that was installed with the project."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode:
        raise RuntimeError(f"{what} failed: {_tail(result.stdout + result.stderr, 10)}")


def write_locks(clone: Path, entries: dict) -> None:
    """Put the shared stages' lock entries into the clone's dvc.lock (DVC's own format)."""
    path = clone / "dvc.lock"
    lock = yaml.safe_load(path.read_text()) if path.exists() else None
    lock = lock or {"schema": "2.0", "stages": {}}
    lock.setdefault("stages", {}).update(entries)
    path.write_text(yaml.safe_dump(lock, sort_keys=False))


def run_experiment(spec: dict) -> dict:
    """Make one experiment (``spec``: name, commit, git_url, dvc_remote, args, locks, threads,
    scratch, fault) and publish it; returns its outcome (status, seconds, log tail, and the
    wall-clock start and end, which show how many runs overlapped)."""
    start, started = time.monotonic(), time.time()
    scratch = Path(spec["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    for stale in scratch.glob(f"{spec['name']}.*"):  # left by an attempt whose worker died
        shutil.rmtree(stale, ignore_errors=True)
    clone = Path(tempfile.mkdtemp(prefix=f"{spec['name']}.", dir=scratch))
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": str(clone / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    dvc = environment_tool("dvc")
    try:
        _check(_run(["git", "clone", "-q", "--no-checkout", spec["git_url"], str(clone)], scratch,
                    env), "git clone")
        _check(_run(["git", "checkout", "-q", spec["commit"]], clone, env), "git checkout")
        for key, value in (("user.name", "difftrain grid"), ("user.email", "grid@difftrain")):
            _run(["git", "config", key, value], clone, env)
        _check(_run([dvc, "remote", "add", "--local", "--default", "--force", "grid",
                     spec["dvc_remote"]], clone, env), "dvc remote add")
        if spec.get("locks"):
            write_locks(clone, spec["locks"])
        result = _run([dvc, "exp", "run", "--pull", "-n", spec["name"], *spec["args"]], clone, env)
        if result.returncode:
            return {"status": "failed", "seconds": time.monotonic() - start,
                    "log_tail": _tail(result.stdout + result.stderr), "started": started,
                    "finished": time.time()}
        _check(_run([dvc, "push", "--run-cache"], clone, env), "dvc push")
        marker = scratch / f"fault-{spec['name']}"
        if spec.get("fault") == FAULT_EXIT_BEFORE_REF and not marker.exists():
            marker.touch()
            os._exit(1)  # the worker dies after the data push, before the ref push
        _check(_run([dvc, "exp", "push", "--no-cache", "origin", spec["name"]], clone, env),
               "dvc exp push")
        return {"status": "done", "seconds": time.monotonic() - start, "log_tail": "",
                "started": started, "finished": time.time()}
    finally:
        shutil.rmtree(clone, ignore_errors=True)
