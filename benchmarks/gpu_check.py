"""Does every stage work on this machine's accelerator, and how fast? One command, one answer.

    python benchmarks/gpu_check.py [--device cuda] [-S key=value ...] [--keep]

Clones the project's HEAD into a scratch folder inside the project (``.scratch/``, ignored by
git and DVC), links the same data source, shares the project's DVC cache (so the committed
lock's CPU outputs can be read back), sets ``device`` (and any ``-S`` overrides) and runs every
stage of ``dvc.yaml`` in order with ``dvc repro --single-item --force``, timing each. Then it
prints the per-stage wall times and ``dvc metrics diff HEAD``: the committed lock's metrics (the
CPU run) against this device's. It exits non-zero, naming the stage and the tail of its output,
when a stage fails, and removes the scratch clone unless ``--keep``.

What to expect from the diff on a GPU: ``prepare``, ``pairs`` and ``theory`` compute on the CPU
(theory in float64), so their metrics are identical; training on CUDA sums in another order
(cuDNN), so the weights, and every number computed from them, differ: clean accuracies by a few
tenths of a point and robust accuracies by a point or two, the spread between seeds on CPU, not
the last digit. Only the provenance and the timings differ where nothing was trained.

CI runs it with ``--device cpu`` and the smoke run's overrides, so the script cannot rot on a
machine without a GPU; on CPU the same stages run as ``dvc repro`` runs them.
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
SCRATCH = ROOT / ".scratch" / "gpu-check"


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def stages(dvc_yaml: Path) -> list[str]:
    """dvc.yaml's stages in file order (the order they are written in is the pipeline's)."""
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def set_params(path: Path, device: str, overrides: list[str]) -> None:
    """``device`` and ``-S key=value`` overrides in params.yaml, values read as YAML, as DVC does."""
    from ruamel.yaml import YAML

    yaml_rt = YAML()
    params = yaml_rt.load(path.read_text())
    for item in [f"device={device}", *overrides]:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"-S {item!r}: expected key=value")
        *parents, last = key.split(".")
        node = params
        for part in parents:
            if part not in node:
                fail(f"-S {item!r}: params.yaml has no section {part!r}")
            node = node[part]
        node[last] = YAML(typ="safe").load(value)
    with path.open("w") as f:
        yaml_rt.dump(params, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter override, as dvc exp run -S takes it (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda, but torch sees no CUDA device here; run with --device cpu to check "
             "the script itself")
    dvc = shutil.which("dvc")
    if dvc is None:
        fail("dvc not found on PATH: activate the environment first (. .venv/bin/activate)")
    head = run(["git", "rev-parse", "HEAD"], ROOT).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], ROOT).stdout.strip()
    data_root = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["root"]
    source = (ROOT / data_root).resolve()
    if not source.exists():
        fail(f"data.root {data_root!r} does not exist here; put CIFAR-10 there first (make data)")

    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.parent.mkdir(exist_ok=True)
    clone = run(["git", "clone", "-q", str(ROOT), str(SCRATCH)], ROOT)
    if clone.returncode:
        fail(f"git clone into {SCRATCH} failed: {clone.stderr.strip()}")
    try:
        (SCRATCH / data_root).parent.mkdir(parents=True, exist_ok=True)
        (SCRATCH / data_root).symlink_to(source)
        run([dvc, "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], SCRATCH)
        set_params(SCRATCH / "params.yaml", args.device, args.overrides)
        env = {**os.environ, "PYTHONPATH": str(SCRATCH / "src")}
        device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                       else f"CPU, {torch.get_num_threads()} threads")
        print(f"commit {head[:10]}{' (the working tree has uncommitted changes, not checked)' if dirty else ''}; "
              f"device {args.device}: {device_name}")
        times = {}
        for stage in stages(SCRATCH / "dvc.yaml"):
            start = time.perf_counter()
            result = run([dvc, "repro", "--single-item", "--force", stage], SCRATCH, env)
            times[stage] = time.perf_counter() - start
            print(f"  {stage:<10} {times[stage]:7.1f} s  {'ok' if not result.returncode else 'FAILED'}",
                  flush=True)
            if result.returncode:
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                fail(f"stage {stage!r} failed on {args.device}:\n{tail}")
        print(f"  {'total':<10} {sum(times.values()):7.1f} s")
        diff = run([dvc, "metrics", "diff", "HEAD", "--md", "--no-path"], SCRATCH, env)
        print(f"\ndvc metrics diff HEAD (the committed CPU lock) against {args.device}:")
        print(diff.stdout.strip() or diff.stderr.strip())
        if "failed to load" in (diff.stdout + diff.stderr):
            print("note: the committed lock's outputs are not in this project's DVC cache: run "
                  "`dvc repro` (or `dvc pull`) here on CPU first for a full comparison")
    finally:
        if not args.keep:
            shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
