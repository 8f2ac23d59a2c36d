"""The same small grid through DVC's queue and through the Ray grid runner, one after the other.

    python benchmarks/grid_vs_queue.py [--keep]

Four runs (cross-entropy and differential, seeds 0 and 1) at the CI smoke run's reduced size, on
the data source of params.yaml. Each way starts from its own fresh clone of HEAD with an empty
DVC cache, inside ``.scratch/grid-bench`` (ignored by git and DVC):

* **queue**: ``dvc exp run --queue`` four times, then ``dvc queue start -j 1`` (above 1 has open
  DVC bugs) until ``dvc queue status`` shows nothing queued or running; torch takes every core.
* **runner**: ``difftrain grid run`` with 2 workers of 1 thread each (threads = cores /
  jobs), origin a bare clone, the DVC remote a folder; every run pushed as it finishes.

Prints both wall times (enqueueing and the shared prepare included: a user waits for them too)
and their ratio. Run it on otherwise idle cores; HEAD must hold what is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".scratch" / "grid-bench"
SMOKE = {"data.n_train_per_class": 200, "data.n_test_per_class": 100, "train.epochs": 8,
         "pairs.block_size": 32, "pairs.fraction": 0.5, "attack.n_train": 40, "attack.n_test": 40,
         "attack.pgd.steps": 10, "attack.cw.steps": 20, "attack.cw.binary_search_steps": 3,
         "attack.apgd.restarts": 1, "attack.apgd.steps": 20, "attack.square.queries": 300,
         "attack.fab.steps": 20}
AXES = {"loss": ["cross_entropy", "differential"], "seed": [0, 1]}


def sh(*args: str, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"error: {' '.join(args)} failed in {cwd}:\n"
                 f"{(result.stdout + result.stderr).strip()[-3000:]}")
    return result.stdout


def clone(origin: Path, path: Path, remote: Path) -> Path:
    sh("git", "clone", "-q", str(origin), str(path), cwd=SCRATCH)
    sh("dvc", "remote", "add", "--local", "-d", "bench", str(remote), cwd=path)
    sh("dvc", "config", "--local", "core.analytics", "false", cwd=path)
    return path


def by_queue(work: Path, fixed: dict) -> float:
    start = time.perf_counter()
    for loss in AXES["loss"]:
        for seed in AXES["seed"]:
            args = [a for k, v in {**fixed, "loss": loss, "seed": seed}.items()
                    for a in ("-S", f"{k}={v}")]
            sh("dvc", "exp", "run", "--queue", "-n", f"q-{loss[:4]}-{seed}", *args, cwd=work)
    sh("dvc", "queue", "start", "-j", "1", cwd=work)
    while True:
        time.sleep(5)
        status = sh("dvc", "queue", "status", cwd=work)
        if not any(word in status for word in ("Queued", "Running")):
            break
    seconds = time.perf_counter() - start
    if status.count("Success") != 4:
        sys.exit(f"error: the queue did not finish all four runs:\n{status}")
    return seconds


def by_runner(work: Path, fixed: dict) -> float:
    grid = work / "bench-grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "bench", "fixed": fixed,
                                    "grid": [{k: v for k, v in AXES.items()}]}))
    start = time.perf_counter()
    sh(sys.executable, "-m", "difftrain.grid", "run", str(grid), "--workers", "2",
       "--threads-per-run", "1", cwd=work, env={**os.environ, "PYTHONPATH": str(work / "src")})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    if shutil.which("dvc") is None:
        sys.exit("error: dvc not found on PATH: activate the environment (. .venv/bin/activate)")
    root = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["root"]
    source = (ROOT / root).resolve()
    if not source.exists():
        sys.exit(f"error: data.root {root!r} does not exist: put CIFAR-10 there first (make data)")
    # queued experiments see only tracked files: the source by its absolute path, in both ways
    fixed = {"data.root": str(source), **SMOKE}
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    try:
        origin = SCRATCH / "origin.git"
        sh("git", "clone", "-q", "--bare", str(ROOT), str(origin), cwd=SCRATCH)
        queue = by_queue(clone(origin, SCRATCH / "queue", SCRATCH / "remote-queue"), fixed)
        print(f"dvc queue start -j 1        : {queue:7.1f} s", flush=True)
        runner = by_runner(clone(origin, SCRATCH / "runner", SCRATCH / "remote-runner"), fixed)
        print(f"grid runner, 2 x 1 thread   : {runner:7.1f} s")
        print(f"runner / queue              : {runner / queue:7.2f}x "
              f"({os.cpu_count()} cores, 4 runs at the CI smoke size)")
    finally:
        if not args.keep:
            shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
