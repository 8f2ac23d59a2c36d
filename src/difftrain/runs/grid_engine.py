"""The grid on Ray: every run a Ray task, every finished run a DVC experiment on the remotes.

Ray core tasks, not Ray Tune: a fixed grid gains nothing from a tuner's search and scheduling,
and Tune on several nodes wants shared storage that would duplicate what DVC's remotes already
hold. The driver

1. checks that the grid's commit (HEAD) is on the git remote, which the workers clone;
2. lists the runs already on the git remote (their experiment refs at this commit) and skips
   them: a grid resumes after the driver dies and can span several sittings;
3. reproduces each shared stage (``prepare``, ``theory``) once per distinct setting of its parameters in
   a scratch clone beside the data, pushes their outputs and hands their lock entries to the
   workers, which therefore need no copy of CIFAR-10;
4. submits one task per remaining run asking for ``threads`` CPUs (and a GPU where the cluster
   has one), retried up to ``attempts`` times when its worker or node is lost; a ledger actor on
   the driver's node counts each run's attempts and where they ran;
5. records every outcome in ``.grid/<name>.json`` (``status``) as it arrives.

Embedded by default (``ray.init(address="local")``, as many workers as the cores allow for the
threads a run asks); ``--address`` or ``RAY_ADDRESS`` joins a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
import functools

import yaml

from difftrain.core.errors import DifftrainError
from difftrain.core.params import read_yaml
from difftrain.runs.grid_worker import environment_tool, run_experiment
from difftrain.runs.spec import Grid, Run

# Reproduced by the driver once per distinct setting of their parameters; workers pull their
# outputs: prepare (the only stage that reads the source data) and theory (synthetic, the
# same in every run of a grid that does not change theory.*: half a minute a run saved)
SHARED_STAGES = ("prepare", "theory")
STATE = ".grid"  # per-grid status files (ignored by git and DVC)
SCRATCH = ".scratch/grid"  # where clones are made on this machine: a folder per driver in it,
# so a driver that ends removes its own clones, never those of another grid running beside it


def _git(args: list[str], cwd: Path, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode:
        raise DifftrainError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def _dvc(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([environment_tool("dvc"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def reachable(address: str, timeout: float) -> None:
    """A cluster address (host:port, or ray://host:port) must answer within ``timeout``
    seconds: Ray itself retries an unreachable GCS for minutes without an error."""
    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DifftrainError(f"--address {address}: expected host:port, local or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DifftrainError(f"--address {address}: no Ray cluster answered within {timeout:g} s "
                             f"({exc.strerror or type(exc).__name__}); check the address and "
                             f"that `ray start --head` runs there") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remote_experiments(git_url: str, commit: str, cwd: Path) -> set[str]:
    """Names of the experiments at ``commit`` whose refs are on the git remote: the done runs
    (a ref is pushed last, so its presence means the run's data is there too)."""
    refs = _git(["ls-remote", git_url, "refs/exps/*"], cwd)
    prefix = f"refs/exps/{commit[:2]}/{commit[2:]}/"
    return {line.split("\t")[1][len(prefix):] for line in refs.splitlines()
            if "\t" in line and line.split("\t")[1].startswith(prefix)}


def commit_params(repo: Path, commit: str | None = None) -> tuple[str, dict]:
    """(commit, params.yaml at that commit): HEAD's by default, what a grid's runs start from."""
    commit = commit or _git(["rev-parse", "HEAD"], repo.resolve())
    text = _git(["show", f"{commit}:params.yaml"], repo.resolve())
    return commit, read_yaml(text, f"params.yaml at {commit[:10]}")


class Engine:
    """The driver of a grid in one repository (``repo``): its commit, remotes and status."""

    def __init__(self, repo: Path, git_remote: str = "origin", dvc_remote: str | None = None,
                 connect_timeout: float = 30.0):
        self.repo = repo.resolve()
        self.commit = _git(["rev-parse", "HEAD"], self.repo)
        url = _git(["remote", "get-url", git_remote], self.repo, check=False)
        if not url:
            raise DifftrainError(f"git remote {git_remote!r} is not set in {self.repo}: the "
                                 f"workers clone the grid's commit from it (git remote add ...)")
        local = (self.repo / url)
        self.git_url = str(local.resolve()) if "://" not in url and ":" not in url.split("/")[0] \
            and local.exists() else url
        self.git_remote = git_remote
        self.connect_timeout = connect_timeout
        self.dvc_remote = self._dvc_remote_url(dvc_remote)

    def _dvc_remote_url(self, name: str | None) -> str:
        """The DVC remote's URL as every worker can use it (a local folder made absolute)."""
        from dvc.repo import Repo

        with Repo(str(self.repo)) as dvc_repo:
            config = dvc_repo.config
            name = name or config["core"].get("remote")
            if not name or name not in config["remote"]:
                raise DifftrainError(f"DVC remote {name!r} is not configured in {self.repo}: the "
                                     f"workers push their data to it (dvc remote add -d ...)")
            url = config["remote"][name]["url"]
        if "://" not in url:
            url = str((self.repo / ".dvc" / url).resolve()) if not os.path.isabs(url) else url
        return url

    def base_params(self) -> dict:
        """params.yaml as the grid's commit has it: what every run starts from."""
        return commit_params(self.repo, self.commit)[1]

    # --- status ----------------------------------------------------------------------------

    def _state_path(self, grid: Grid) -> Path:
        return self.repo / STATE / f"{grid.name}.json"

    def _load_state(self, grid: Grid) -> dict:
        """The driver's record of the grid; a damaged one is said in one line and rebuilt (the
        remote's refs, not this file, say which runs are done)."""
        path = self._state_path(grid)
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(state, dict) or not isinstance(state.get("runs", {}), dict):
                raise ValueError("not a mapping of runs")
        except (ValueError, UnicodeDecodeError) as exc:
            print(f"warning: {path} is damaged ({type(exc).__name__}); rebuilt from the remote's "
                  f"refs", file=sys.stderr)
            state = {}
        return state if state.get("commit") == self.commit else {"commit": self.commit, "runs": {}}

    # --- one driver per grid and repository --------------------------------------------------

    def _lock_path(self, grid: Grid) -> Path:
        return self.repo / STATE / f"{grid.name}.lock"

    def driver(self, grid: Grid) -> dict | None:
        """The live driver of this grid here (pid, host, started), or None: no lock, or a lock
        whose process is gone (a driver on this host that died, or a damaged lock)."""
        path = self._lock_path(grid)
        try:
            holder = json.loads(path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None  # damaged: nobody can hold it
        if host == socket.gethostname() and not _alive(pid):
            return None
        return holder

    def _acquire(self, grid: Grid) -> Path:
        """Take the grid's driver lock, or refuse naming the driver that holds it. A lock left
        by a driver that died is taken over, and that driver's scratch clones are removed."""
        path = self._lock_path(grid)
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = self.driver(grid)
        if holder is not None:
            raise DifftrainError(f"grid {grid.name} already has a driver: PID {holder['pid']} on "
                                 f"{holder['host']} since {holder.get('started', '?')}; wait for "
                                 f"it or stop it (`difftrain grid status {grid.path}`)")
        if path.exists():  # a dead driver's: its clones are of no use to anyone
            path.unlink()
            for folder in (self.repo / SCRATCH).glob(f"{grid.name}.*"):
                shutil.rmtree(folder, ignore_errors=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another driver took it between the check and here
            return self._acquire(grid)
        with os.fdopen(fd, "w") as handle:
            json.dump(mine, handle)
        return path

    def _save_state(self, grid: Grid, state: dict) -> None:
        path = self._state_path(grid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def status_table(self, grid: Grid) -> str:
        """Each run: done (its ref is on the remote), running, failed (with its log tail),
        pending; and its attempts."""
        done = remote_experiments(self.git_url, self.commit, self.repo)
        runs = self._load_state(grid)["runs"]
        lines = [f"{grid.path}: {len(grid.runs)} runs at commit {self.commit[:10]}, "
                 f"{sum(r.name in done for r in grid.runs)} done"]
        alive = self.driver(grid) is not None
        for run in grid.runs:
            record = runs.get(run.name, {})
            status = "done" if run.name in done else record.get("status", "pending")
            if status == "done" and run.name not in done:
                status = "lost"  # recorded done, but its ref is not on the remote
            if status in ("queued", "running") and not alive:
                status = "driver gone"  # rerun the grid: it resumes here
            lines.append(f"  {run.name}  {status:<8} attempts {len(record.get('attempts', []))}"
                         f"  {run.describe()}")
            if status == "failed" and record.get("log_tail"):
                lines.extend("      | " + line for line in record["log_tail"].splitlines())
        return "\n".join(lines)

    # --- the shared stages -----------------------------------------------------------------

    def _shared_key(self, params: dict, stage_params: list[str]) -> str:
        picked = {}
        for key in stage_params:
            node = params
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            picked[key] = node
        return json.dumps(picked, sort_keys=True)

    def shared_locks(self, grid: Grid, runs: list[Run], scratch: Path) -> dict[str, dict]:
        """For each run, the lock entries of the shared stages: each stage reproduced here once
        per distinct setting of *its own* parameters (``theory`` reads no data, so one grid over
        45 class pairs computes it once, not 45 times), in a scratch clone beside the data, and
        pushed."""
        spec = yaml.safe_load(_git(["show", f"{self.commit}:dvc.yaml"], self.repo))
        stages = [s for s in SHARED_STAGES if s in spec.get("stages", {})]
        base = self.base_params()
        locks: dict[str, dict] = {run.name: {} for run in runs}
        for stage in stages:
            keys = sorted({p if isinstance(p, str) else next(iter(p))
                           for p in spec["stages"][stage].get("params", [])})
            by_key: dict[str, list[Run]] = {}
            for run in runs:
                by_key.setdefault(self._shared_key(run.params(base), keys), []).append(run)
            for i, (key, members) in enumerate(by_key.items(), 1):
                print(f"shared stage {stage} for {json.loads(key)} ({i}/{len(by_key)}, "
                      f"{len(members)} runs)", flush=True)
                entry = self._reproduce_shared(members[0], [stage], scratch)[stage]
                for run in members:
                    locks[run.name][stage] = entry
        return locks

    def _reproduce_shared(self, run: Run, stages: list[str], scratch: Path) -> dict:
        clone = scratch / f"shared-{run.name}"
        shutil.rmtree(clone, ignore_errors=True)
        clone.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(clone / "src"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        try:
            _git(["clone", "-q", self.git_url, str(clone)], self.repo)
            _git(["checkout", "-q", self.commit], clone)
            params = run.params(self.base_params())
            root = params.get("data", {}).get("root")
            if root and not os.path.isabs(root) and (self.repo / root).exists():
                (clone / root).parent.mkdir(parents=True, exist_ok=True)
                (clone / root).symlink_to((self.repo / root).resolve())
            (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            for args in (["remote", "add", "--local", "--default", "--force", "grid",
                          self.dvc_remote], ["cache", "dir", "--local",
                                             str(self.repo / ".dvc" / "cache")]):
                _dvc(args, clone, env)
            for args in (["repro", "--pull", *stages], ["push", "--run-cache", *stages]):
                result = _dvc(args, clone, env)
                if result.returncode:
                    raise DifftrainError(f"shared stage(s) {', '.join(stages)} for "
                                         f"{run.describe()}: dvc {args[0]} failed:\n"
                                         f"{(result.stdout + result.stderr).strip()[-2000:]}")
            lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
            return {s: lock[s] for s in stages}
        finally:
            shutil.rmtree(clone, ignore_errors=True)

    # --- running ---------------------------------------------------------------------------

    def _check_commit_on_remote(self) -> None:
        """The grid's commit must be on the remote the workers clone (another remote's branch
        holding it is not enough); uncommitted changes to what the runs read are said."""
        _git(["fetch", "-q", self.git_remote], self.repo)
        if not _git(["branch", "-r", "--contains", self.commit, "--list", f"{self.git_remote}/*"],
                    self.repo):
            raise DifftrainError(f"commit {self.commit[:10]} is not on git remote "
                                 f"{self.git_remote!r}: the workers clone it from there; push it "
                                 f"first (git push {self.git_remote})")
        changed = _git(["status", "--porcelain", "--untracked-files=no", "--", "params.yaml",
                        "dvc.yaml", "stages", "src"], self.repo, check=False)
        if changed.strip():
            files = ", ".join(line.split(maxsplit=1)[-1] for line in changed.splitlines()[:4])
            print(f"warning: uncommitted changes to {files}: the runs use commit "
                  f"{self.commit[:10]}, not these", file=sys.stderr)

    def run(self, grid: Grid, address: str | None = None, workers: int | None = None,
            threads: int = 1, gpus: float | None = None, attempts: int = 3) -> bool:
        """Run every run not yet on the remote; True when every run of the grid is done."""
        if gpus is not None and gpus < 0:
            raise DifftrainError(f"--gpus-per-run must be 0 or more; got {gpus:g}")
        self._check_commit_on_remote()
        lock = self._acquire(grid)
        try:
            return self._run_locked(grid, address, workers, threads, gpus, attempts)
        finally:
            lock.unlink(missing_ok=True)

    def _run_locked(self, grid, address, workers, threads, gpus, attempts) -> bool:
        state = self._load_state(grid)
        done = remote_experiments(self.git_url, self.commit, self.repo)
        todo = [run for run in grid.runs if run.name not in done]
        print(f"{grid.path}: {len(grid.runs)} runs, {len(grid.runs) - len(todo)} already on the "
              f"remote, {len(todo)} to run (commit {self.commit[:10]})", flush=True)
        for run in grid.runs:
            if run.name in done:
                state["runs"].setdefault(run.name, {}).update(status="done")
        self._save_state(grid, state)
        if not todo:
            return True
        (self.repo / SCRATCH).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{grid.name}.", dir=self.repo / SCRATCH))
        try:
            return self._run(grid, todo, state, scratch, address, workers, threads, gpus, attempts)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            for folder in (self.repo / SCRATCH, (self.repo / SCRATCH).parent):
                try:
                    folder.rmdir()  # only when empty: no other driver is using it
                except OSError:
                    break

    def _run(self, grid, todo, state, scratch, address, workers, threads, gpus, attempts) -> bool:
        import ray

        address = address or os.environ.get("RAY_ADDRESS") or "local"
        reachable(address, self.connect_timeout)
        init = {"address": address, "log_to_driver": False}
        if address == "local":  # an embedded cluster of this machine's cores
            cores = os.cpu_count() or 1
            init.update(num_cpus=threads * (workers or max(1, cores // threads)),
                        include_dashboard=False)
        ray.init(**init)
        try:
            # what the cluster cannot give is refused before the shared stages run: a task
            # asking for it would wait forever
            resources = ray.cluster_resources()
            for what, asked in (("GPU", gpus), ("CPU", threads)):
                if asked and resources.get(what, 0) < asked:
                    flag = "--gpus-per-run" if what == "GPU" else "--threads-per-run"
                    raise DifftrainError(f"{flag} {asked:g}: the cluster has "
                                         f"{resources.get(what, 0):g} {what}s")
            locks = self.shared_locks(grid, todo, scratch)
            return self._dispatch(grid, todo, locks, state, scratch, threads, gpus, attempts)
        finally:
            ray.shutdown()

    def _dispatch(self, grid, todo, locks, state, scratch, threads, gpus, attempts) -> bool:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        ledger = _ledger_class().options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            here, soft=False)).remote()
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(_task).options(num_cpus=threads, num_gpus=gpus,
                                         max_retries=attempts - 1, retry_exceptions=False)
        fault = os.environ.get("DIFFTRAIN_GRID_FAULT")
        pending = {}
        for run in todo:
            spec = {"name": run.name, "commit": self.commit, "git_url": self.git_url,
                    "dvc_remote": self.dvc_remote, "args": run.cli(), "locks": locks[run.name],
                    "threads": threads, "scratch": str(scratch), "fault": fault}
            pending[task.remote(spec, ledger)] = run
            state["runs"][run.name] = {"status": "queued", "attempts": [],
                                       "overrides": run.overrides}
        self._save_state(grid, state)
        ok = True
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            seen = ray.get(ledger.attempts.remote())
            for name, nodes in seen.items():
                record = state["runs"][name]
                if record["status"] in ("queued", "running"):
                    record.update(status="running", attempts=nodes)
            for ref in ready:
                run = pending.pop(ref)
                record = state["runs"][run.name]
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # a lost worker after its last attempt, or an error
                    outcome = {"status": "failed", "log_tail": f"{type(exc).__name__}: {exc}"[-4000:]}
                record.update(outcome, attempts=ray.get(ledger.attempts.remote()).get(run.name, []))
                ok &= outcome["status"] == "done"
                print(f"{run.name}: {outcome['status']} after {len(record['attempts'])} "
                      f"attempt(s){'' if outcome['status'] == 'done' else ':'}"
                      f"{'' if outcome['status'] == 'done' else chr(10) + outcome['log_tail']}",
                      flush=True)
            self._save_state(grid, state)
        return ok

    def collect(self, grid: Grid) -> None:
        """Pull the finished runs' experiments (refs and data) into this repository, where
        `dvc exp show` and the study read them."""
        done = [r.name for r in grid.runs
                if r.name in remote_experiments(self.git_url, self.commit, self.repo)]
        if not done:
            print(f"{grid.path}: no run is on the remote yet")
            return
        result = _dvc(["exp", "pull", self.git_remote, *done], self.repo)
        if result.returncode:
            raise DifftrainError(f"dvc exp pull failed: {(result.stdout + result.stderr).strip()}")
        print(f"pulled {len(done)} of {len(grid.runs)} runs of {grid.path}")


def _task(spec: dict, ledger) -> dict:
    """A Ray task: record the attempt, then make the experiment (``grid_worker``).

    The record is sent without waiting for it: a task blocked in ``ray.get`` lends its CPU to
    the next queued task, and once unblocked both run, so a grid of 1-CPU tasks on 2 cores
    ran 3 at a time (oversubscribed) while the first version waited here."""
    import ray

    ledger.start.remote(spec["name"], ray.get_runtime_context().get_node_id())
    return run_experiment(spec)


@functools.cache  # made on first use, so importing this module needs no Ray
def _ledger_class():
    import ray

    @ray.remote(num_cpus=0)
    class _Ledger:
        """Every attempt of every run, with the node it ran on: a lost task's retry shows."""

        def __init__(self):
            self.runs: dict[str, list[str]] = {}

        def start(self, name: str, node: str) -> int:
            self.runs.setdefault(name, []).append(node)
            return len(self.runs[name])

        def attempts(self) -> dict[str, list[str]]:
            return self.runs

    return _Ledger
