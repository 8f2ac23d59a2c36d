"""`difftrain grid run|status|collect GRID.yaml` (or `python -m difftrain.grid`): run a grid file
(``spec.py``) on Ray (``grid_engine.py``), show its status, or pull its finished experiments.

    difftrain grid run grids/paper.yaml [--dry-run] [--address ADDR] [--workers N]
                       [--threads-per-run T] [--gpus-per-run G] [--attempts K]
    difftrain grid status grids/paper.yaml
    difftrain grid collect grids/paper.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from difftrain.core.errors import DifftrainError
from difftrain.runs.spec import load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "status", "collect"))
    parser.add_argument("grid", help="grid file, e.g. grids/paper.yaml")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs at a time on the local cluster (default: cores // threads)")
    parser.add_argument("--threads-per-run", type=int, default=1,
                        help="CPUs each run asks for; also its torch threads (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=None,
                        help="GPUs each run asks for (default: 1 where the cluster has GPUs)")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="seconds an --address must answer in (default 30)")
    parser.add_argument("--attempts", type=int, default=3,
                        help="attempts of a run lost with its worker (default 3)")
    parser.add_argument("--git-remote", default="origin", help="git remote runs clone and push to")
    parser.add_argument("--dvc-remote", default=None, help="DVC remote (default: the default one)")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    for option in ("workers", "threads_per_run", "attempts"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1; got {value}")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        parser.error(f"--gpus-per-run must be 0 or more; got {args.gpus_per_run:g}")

    from difftrain.runs import grid_engine  # Ray loads only when a grid runs

    try:
        if args.command == "run" and args.dry_run:  # no remote needed to list the runs
            commit, base = grid_engine.commit_params(Path(args.repo))
            grid = load(args.grid, base)
            print(f"{grid.path}: {len(grid.runs)} runs at commit {commit[:10]}")
            for run in grid.runs:
                print(f"  {run.name}  {run.describe()}")
            return
        engine = grid_engine.Engine(Path(args.repo), args.git_remote, args.dvc_remote,
                                    args.connect_timeout)
        grid = load(args.grid, engine.base_params())
        if args.command == "run":
            ok = engine.run(grid, address=args.address, workers=args.workers,
                            threads=args.threads_per_run, gpus=args.gpus_per_run,
                            attempts=args.attempts)
            sys.exit(0 if ok else 1)
        if args.command == "status":
            print(engine.status_table(grid))
        else:
            engine.collect(grid)
    except DifftrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
