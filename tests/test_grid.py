"""The grid runner on loopback: a bare git repository as origin, a folder as the DVC remote, and a
two-stage stand-in pipeline (``prepare`` reads the data, ``train`` writes a metric from the
parameters) so each experiment takes seconds. What is checked is the runner: every run lands
exactly once, as a DVC experiment a fresh clone can read and restore; failures publish nothing;
lost workers and nodes are retried and their attempts recorded; a rerun runs nothing."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from difftrain.runs import spec as G
from difftrain.core.errors import ParamsError

from conftest import REPO, sh

PREP = """\
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))
out = pathlib.Path("data/prepared"); out.mkdir(parents=True, exist_ok=True)
n = len(sorted(pathlib.Path("data/raw").glob("*.txt")))
(out / "data.json").write_text(json.dumps({"classes": p["data"]["classes"], "n": n}))
"""
TRAIN = """\
import json, os, pathlib, sys, time, yaml
p = yaml.safe_load(open("params.yaml"))
data = json.loads(pathlib.Path("data/prepared/data.json").read_text())
time.sleep(float(os.environ.get("GRID_TEST_SLEEP", "0")))
if p["train"]["epochs"] == 13:
    sys.exit("boom: 13 epochs is unlucky")
accuracy = round(0.5 + p["seed"] / 100 + (0.1 if p["loss"] == "differential" else 0), 4)
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/model.txt").write_text(f"{p['loss']} {p['seed']} {data['classes']}")
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/summary.json").write_text(json.dumps({"clean_test_accuracy": accuracy, "n": data["n"]}))
"""
DVC_YAML = {"stages": {
    "prepare": {"cmd": "python prep.py", "deps": ["prep.py", "data/raw"], "params": ["data"],
                "outs": ["data/prepared"]},
    "train": {"cmd": "python train.py", "deps": ["train.py", "data/prepared"],
              "params": ["seed", "loss", "train.epochs"], "outs": ["models/model.txt"],
              "metrics": ["metrics/summary.json"]}}}


def git(*args, cwd):
    return sh("git", "-c", "user.name=t", "-c", "user.email=t@t", *args, cwd=cwd)


@pytest.fixture
def project(tmp_path):
    """A repository with origin (bare) and a DVC remote (folder), its commit pushed."""
    origin, repo = tmp_path / "origin.git", tmp_path / "repo"
    sh("git", "init", "-q", "--bare", str(origin), cwd=tmp_path)
    repo.mkdir()
    (repo / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (repo / "prep.py").write_text(PREP)
    (repo / "train.py").write_text(TRAIN)
    (repo / ".gitignore").write_text("/data/raw\n/.grid/\n/.scratch/\n")
    (repo / "data" / "raw").mkdir(parents=True)
    for i in range(3):
        (repo / "data" / "raw" / f"{i}.txt").write_text(str(i))
    git("init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "remote", "add", "-d", "storage", str(tmp_path / "dvc-remote"), cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    git("remote", "add", "origin", str(origin), cwd=repo)
    git("push", "-q", "-u", "origin", "HEAD", cwd=repo)
    return repo


def write_grid(repo: Path, blocks, name="t") -> Path:
    path = repo / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": name, "fixed": {"train.epochs": 2}, "grid": blocks}))
    return path


def run_grid(repo: Path, grid: Path, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "difftrain.grid", "run", str(grid), *args],
                          cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


def remote_names(repo: Path) -> list[str]:
    refs = sh("git", "ls-remote", "origin", "refs/exps/*", cwd=repo)
    return [line.split("/")[-1] for line in refs.splitlines()]


def state(repo: Path, name="t") -> dict:
    return json.loads((repo / ".grid" / f"{name}.json").read_text())["runs"]


# --- the grid file ------------------------------------------------------------------------

def test_paper_grid_lists_the_readme_sixteen_runs():
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    grid = G.load(REPO / "grids" / "paper.yaml", base)
    described = sorted(tuple(sorted(r.overrides.items())) for r in grid.runs)
    seeded = lambda s: {"seed": s, "pairs.seed": s} if s else {}  # noqa: E731
    expected = sorted(tuple(sorted(d.items())) for d in (
        *({"loss": loss, **seeded(s)} for loss in ("cross_entropy", "differential") for s in (0, 1, 2)),
        {"loss": "differential_logistic"},
        *({"loss": loss, "train.epochs": 100} for loss in ("cross_entropy", "differential",
                                                            "differential_logistic")),
        {"loss": "cross_entropy", "train.epochs": 10},
        *({"loss": loss, "train.epochs": 10, "pairs.fraction": 0.125}
          for loss in ("differential", "differential_logistic")),
        {"loss": "differential", "train.epochs": 150},
        *({"loss": "cross_entropy", "train.adversarial.eps": 8, **seeded(s)} for s in (0, 1))))
    assert described == expected and len(grid.runs) == 16
    assert len({r.name for r in grid.runs}) == 16 and all(r.name.startswith("paper-") for r in grid.runs)


def test_class_pairs_grid_holds_all_45_unordered_pairs_with_both_losses():
    import itertools

    from difftrain.core.params import CIFAR10_CLASSES

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    grid = G.load(REPO / "grids" / "classpairs.yaml", base)
    seen = sorted((tuple(r.overrides["data.classes"]), r.overrides["loss"]) for r in grid.runs)
    assert seen == sorted((pair, loss) for pair in itertools.combinations(CIFAR10_CLASSES, 2)
                          for loss in ("cross_entropy", "differential"))
    # the 12-pair span has the same experiment names, so the full grid skips what it ran
    span = G.load(REPO / "grids" / "classpairs-span.yaml", base)
    assert len(span.runs) == 24 and {r.name for r in span.runs} <= {r.name for r in grid.runs}
    # the rest and the span together are the full grid, by name, and share no run
    rest = G.load(REPO / "grids" / "classpairs-rest.yaml", base)
    assert len(rest.runs) == 66
    assert {r.name for r in rest.runs} | {r.name for r in span.runs} == {r.name for r in grid.runs}
    # the seeds: the span's pairs and losses at seeds 1 and 2, `seed` and `pairs.seed` together
    seeds = G.load(REPO / "grids" / "classpairs-seeds.yaml", base)
    assert sorted((tuple(r.overrides["data.classes"]), r.overrides["loss"], r.overrides["seed"])
                  for r in seeds.runs) == sorted(
        (tuple(r.overrides["data.classes"]), r.overrides["loss"], s)
        for r in span.runs for s in (1, 2))
    assert all(r.overrides["pairs.seed"] == r.overrides["seed"] for r in seeds.runs)
    assert not {r.name for r in seeds.runs} & {r.name for r in grid.runs}


def test_a_dry_run_lists_the_runs_without_any_remote(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((REPO / "params.yaml").read_text())
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "init", cwd=repo)
    grid = write_grid(repo, [{"loss": ["cross_entropy", "differential"]}])
    result = run_grid(repo, grid, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "2 runs at commit" in result.stdout and result.stdout.count("  t-") == 2


@pytest.mark.parametrize("spec, message", [
    ({"name": "t", "grid": [{"train.epoch": [3]}]}, "run t-[0-9a-f]{8} \\(train.epoch=3\\): train.epoch is not a known parameter"),
    ({"name": "t", "grid": [{"loss": ["differential", "hinge"]}]}, "\\(loss=hinge\\): loss must be one of"),
    ({"name": "t", "fixed": {"attack.n_test": 0}, "grid": [{"seed": [0]}]}, "attack.n_test must be > 0"),
    ({"name": "t", "grid": [{"seed": 3}]}, "seed must be a non-empty list of values"),
    ({"name": "t", "grid": [], "axes": {}}, "axes is not a grid key"),
    ({"name": "T x", "grid": [{"seed": [0]}]}, "name must be lowercase letters"),
])
def test_a_bad_grid_is_one_line_naming_the_run_and_the_key(tmp_path, spec, message):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ParamsError, match=message) as info:
        G.load(path, yaml.safe_load((REPO / "params.yaml").read_text()))
    assert "\n" not in str(info.value)


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                    for p, c in zip("abcdefghi", "bcdefghij")])


@pytest.mark.parametrize("text, message", [
    (f"name: t\ndescription: {BOMB.replace(chr(10), ' ')}\ngrid: [{{seed: [0]}}]\n".encode(),
     "not valid YAML|aliases"),
    (("name: t\nfixed: {}\n" + BOMB + "\ngrid: [{seed: [0]}]\n").encode(), "line 4: aliases \\(\\*a\\)"),
    (b"name: t\nfixed: {data.root: 2024-01-02}\ngrid: [{seed: [0]}]\n", "fixed: data.root: must be plain data .* got a date"),
    (b"name: t\ngrid: [{data.root: [!!binary aGk=]}]\n", "must be plain data .* got a bytes"),
    (b"name: t\ngrid: [{data.root: [!!set {a, b}]}]\n", "must be plain data .* got a (set|CommentedSet)"),
    (b"name: t\ngrid: [{seed: [0]}]\ndescription: donn\xe9es\n", "line 3: not UTF-8 text \\(byte 0xe9\\)"),
    (b"name: t\nfixed: {data.root: '${oc.env:HOME}/data'}\ngrid: [{seed: [0]}]\n", "interpolation is not allowed"),
    (b"name: t\ngrid: [{data: [{classes: [cat, dog]}]}]\n", "grid block 1: data is a section of params.yaml; name its parameters \\(data.root"),
])
def test_a_hostile_grid_file_is_refused_in_one_line_before_anything_is_expanded(tmp_path, text, message):
    path = tmp_path / "g.yaml"
    path.write_bytes(text)
    with pytest.raises(ParamsError, match=message) as info:
        G.load(path, yaml.safe_load((REPO / "params.yaml").read_text()))
    assert "\n" not in str(info.value)


def test_the_same_run_from_two_blocks_is_one_experiment_and_names_hash_every_parameter():
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    path = REPO / "grids" / "paper.yaml"
    a = G.run_name("g", G.effective(base, {"train.epochs": 30}))
    assert a == G.run_name("g", G.effective(base, {}))  # 30 is the default: the same run
    assert a != G.run_name("g", G.effective(base, {"seed": 1}))
    assert len(G.load(path, base).runs) == 16


# --- the runner on loopback ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.ci  # heavy end-to-end: .ci/run runs it, make test does not
def test_a_two_worker_grid_lands_every_run_once_readable_and_restorable_and_a_rerun_runs_nothing(
        project, tmp_path):
    grid = write_grid(project, [{"loss": ["cross_entropy", "differential"], "seed": [0, 1]},
                                {"data.classes": [["cat", "dog"]]}])
    result = run_grid(project, grid, "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    names = remote_names(project)
    runs = G.load(grid, yaml.safe_load((project / "params.yaml").read_text())).runs
    assert sorted(names) == sorted(r.name for r in runs) and len(names) == 5  # once each
    assert all(len(record["attempts"]) == 1 for record in state(project).values())
    # never more runs at once than workers (a task blocked in ray.get lends its CPU away)
    spans = [(r["started"], r["finished"]) for r in state(project).values()]
    assert max(sum(s <= t < f for s, f in spans) for t, _ in spans) <= 2

    fresh = tmp_path / "fresh"
    git("clone", "-q", str(tmp_path / "origin.git"), str(fresh), cwd=tmp_path)
    sh(sys.executable, "-m", "difftrain.grid", "collect", str(grid), cwd=project)
    sh("dvc", "exp", "pull", "origin", *names, cwd=fresh)  # the refs, and the data from the remote
    code = ("import json, dvc.api; print(json.dumps([[r['Experiment'], r.get('loss'), r.get('seed'),"
            " r.get('data.classes'), r.get('clean_test_accuracy')] for r in dvc.api.exp_show()"
            " if r.get('Experiment')]))")
    shown = {row[0]: row[1:] for row in json.loads(sh(sys.executable, "-c", code, cwd=fresh))}
    for run in runs:
        params = G.effective(yaml.safe_load((project / "params.yaml").read_text()), run.overrides)
        loss, seed, classes, accuracy = shown[run.name]
        # exp_show gives numbers as floats and lists as their text
        assert (loss, seed, classes) == (params["loss"], params["seed"], str(params["data"]["classes"]))
        assert accuracy == round(0.5 + seed / 100 + (0.1 if loss == "differential" else 0), 4)
    cats = next(r.name for r in runs if r.overrides.get("data.classes") == ["cat", "dog"])
    sh("dvc", "exp", "apply", cats, cwd=fresh)
    sh("dvc", "checkout", cwd=fresh)
    assert "['cat', 'dog']" in (fresh / "models" / "model.txt").read_text()
    assert json.loads((fresh / "data" / "prepared" / "data.json").read_text())["classes"] == ["cat", "dog"]

    again = run_grid(project, grid, "--workers", "2")
    assert again.returncode == 0 and "5 already on the remote, 0 to run" in again.stdout
    assert sorted(remote_names(project)) == sorted(names)
    assert not (project / ".scratch" / "grid").exists()  # scratch clones removed


@pytest.mark.slow
def test_a_failing_run_lands_nothing_and_is_reported_with_its_log(project):
    grid = write_grid(project, [{"seed": [0]}, {"seed": [1], "train.epochs": [13]}])
    other = project / ".scratch" / "grid" / "other.abc123" / "run.xyz"  # another driver's clone
    other.mkdir(parents=True)
    result = run_grid(project, grid, "--workers", "2")
    assert other.is_dir()  # a driver that ends removes only its own scratch
    assert result.returncode == 1
    assert "boom: 13 epochs is unlucky" in result.stdout
    records = state(project)
    failed = [n for n, r in records.items() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0] not in remote_names(project)
    assert len(remote_names(project)) == 1
    status = sh(sys.executable, "-m", "difftrain.grid", "status", str(grid), cwd=project)
    assert f"{failed[0]}  failed" in status and "boom: 13 epochs is unlucky" in status


@pytest.mark.slow
def test_a_crash_between_the_data_push_and_the_ref_push_publishes_nothing_and_the_retry_lands(project):
    grid = write_grid(project, [{"seed": [0, 1]}])
    result = run_grid(project, grid, "--workers", "2",
                      env={"DIFFTRAIN_GRID_FAULT": "exit-before-ref"})
    assert result.returncode == 0, result.stdout + result.stderr
    records = state(project)
    assert all(len(r["attempts"]) == 2 and r["status"] == "done" for r in records.values())
    assert sorted(remote_names(project)) == sorted(records)  # once each, after the retry


@pytest.mark.slow
@pytest.mark.ci  # heavy end-to-end: .ci/run runs it, make test does not
def test_a_node_removed_mid_run_loses_nothing_and_its_retry_is_recorded(project, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from difftrain.runs.grid_engine import Engine

    monkeypatch.setenv("GRID_TEST_SLEEP", "6")  # long enough to remove a node mid-run
    monkeypatch.chdir(project)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    grid_path = write_grid(project, [{"seed": [0, 1, 2]}])
    engine = Engine(project)
    grid = G.load(grid_path, engine.base_params())
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault(
        "ok", engine.run(grid, address=cluster.address, attempts=3)))
    try:
        runner.start()
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:
            time.sleep(1)
            records = state(project) if (project / ".grid" / "t.json").exists() else {}
            started = [r["attempts"][0] for r in records.values() if r.get("attempts")]
            victim = next((n for n in nodes if n.node_id in started), None)
        assert victim is not None, "no run started"
        time.sleep(2)
        cluster.remove_node(victim)
        runner.join(timeout=600)
        assert outcome.get("ok") is True
        records = state(project)
        assert sorted(remote_names(project)) == sorted(records)  # every run, once
        retried = [r for r in records.values() if len(r["attempts"]) == 2]
        assert retried and all(r["attempts"][0] == victim.node_id for r in retried)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


# --- one driver per grid, damaged state, what the cluster cannot give ------------------------

def _engine(project):
    from difftrain.runs.grid_engine import Engine
    return Engine(project)


def test_a_second_driver_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(project):
    import socket
    engine = _engine(project)
    grid = G.load(write_grid(project, [{"seed": [0]}]), engine.base_params())
    lock = project / ".grid" / "t.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "then"}))
    with pytest.raises(Exception, match=f"grid t already has a driver: PID {os.getpid()} on "
                                        f"{socket.gethostname()} since then"):
        engine._acquire(grid)
    # a driver that died (its PID is gone) left its lock and a scratch clone: taken over, removed
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    lock.write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    clone = project / ".scratch" / "grid" / "t.abc123"
    clone.mkdir(parents=True)
    assert engine.driver(grid) is None
    taken = engine._acquire(grid)
    assert json.loads(taken.read_text())["pid"] == os.getpid() and not clone.exists()
    # and a damaged lock holds nobody
    lock.write_text("{not json")
    assert engine.driver(grid) is None


def test_each_shared_stage_is_made_once_per_setting_of_its_own_parameters(project, monkeypatch):
    """theory reads no data: a grid over two class pairs and two seeds makes prepare twice and
    theory once, and every run gets the entry of its own setting of each stage."""
    spec = {"stages": {**DVC_YAML["stages"], "theory": {"cmd": "python prep.py", "params": ["theory"],
                                                        "outs": ["plots/theory"]}}}
    (project / "dvc.yaml").write_text(yaml.safe_dump(spec))
    git("commit", "-qam", "a theory stage", cwd=project)
    engine = _engine(project)
    grid = G.load(write_grid(project, [{"seed": [0, 1], "data.classes": [["cat", "dog"], ["deer", "horse"]],
                                        "theory.seed": [0]}]), engine.base_params())
    made = []

    def reproduce(run, stages, scratch):
        params = run.params(engine.base_params())
        made.append((tuple(stages), tuple(params["data"]["classes"])))
        return {stages[0]: {"stage": stages[0], "classes": params["data"]["classes"]}}

    monkeypatch.setattr(engine, "_reproduce_shared", reproduce)
    locks = engine.shared_locks(grid, grid.runs, project / ".scratch")
    assert sorted(s for s, _ in made) == [("prepare",), ("prepare",), ("theory",)]
    for run in grid.runs:
        classes = run.params(engine.base_params())["data"]["classes"]
        assert locks[run.name]["prepare"]["classes"] == classes
        assert set(locks[run.name]) == {"prepare", "theory"}


def test_a_damaged_state_file_is_one_line_and_a_gone_driver_is_said(project, monkeypatch, capsys):
    from difftrain.runs import grid_engine
    engine = _engine(project)
    grid = G.load(write_grid(project, [{"seed": [0, 1]}]), engine.base_params())
    path = project / ".grid" / "t.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"commit": "')
    assert engine._load_state(grid)["runs"] == {}
    assert "t.json is damaged (JSONDecodeError); rebuilt from the remote's refs" in capsys.readouterr().err
    engine._save_state(grid, {"commit": engine.commit,
                              "runs": {grid.runs[0].name: {"status": "running", "attempts": []}}})
    monkeypatch.setattr(grid_engine, "remote_experiments", lambda *a: set())
    table = engine.status_table(grid)
    assert f"{grid.runs[0].name}  driver gone" in table and f"{grid.runs[1].name}  pending" in table


@pytest.mark.slow
def test_gpus_the_cluster_lacks_are_refused_before_the_shared_stages(project):
    result = run_grid(project, write_grid(project, [{"seed": [0]}]), "--gpus-per-run", "1")
    assert result.returncode == 2
    assert "--gpus-per-run 1: the cluster has 0 GPUs" in result.stderr
    assert not (project / ".grid" / "t.lock").exists()  # released
    assert "shared stage" not in result.stdout
    negative = run_grid(project, write_grid(project, [{"seed": [0]}]), "--gpus-per-run", "-1")
    assert negative.returncode == 2 and "--gpus-per-run must be 0 or more; got -1" in negative.stderr


def test_the_commit_must_be_on_the_runners_remote_and_uncommitted_params_are_said(project, capsys, tmp_path):
    from difftrain.runs.grid_engine import Engine
    other = tmp_path / "other.git"
    sh("git", "init", "-q", "--bare", str(other), cwd=tmp_path)
    git("remote", "add", "other", str(other), cwd=project)
    (project / "notes.txt").write_text("x")
    git("add", "notes.txt", cwd=project)
    git("commit", "-qm", "later", cwd=project)
    git("push", "-q", "other", "HEAD", cwd=project)  # on another remote only
    with pytest.raises(Exception, match="is not on git remote 'origin'"):
        Engine(project)._check_commit_on_remote()
    git("push", "-q", "origin", "HEAD", cwd=project)
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n# edited\n")
    Engine(project)._check_commit_on_remote()
    assert "warning: uncommitted changes to params.yaml: the runs use commit" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["données/cifar", "C:\\\\data\\\\raw", "ends with \\\\", 'say "hi"',
                                   'a\\\\"b', "it's", ["deer", "cheval é"], 3, 0.05, True, None])
def test_dvc_reads_back_exactly_the_value_the_grid_validated(tmp_path, value):
    # DVC applies `-S key=value` with this function (Hydra's grammar): what the run reads from
    # params.yaml must be the value the grid validated and named the run after
    from dvc.utils.hydra import apply_overrides
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  root: x\n")
    run = G.Run("t-0", {"data.root": value})
    apply_overrides(str(path), [run.cli()[1]])
    assert yaml.safe_load(path.read_text())["data"]["root"] == value


def test_a_value_with_a_newline_is_refused(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "fixed": {"data.root": "two\nlines"},
                                    "grid": [{"seed": [0]}]}))
    with pytest.raises(ParamsError, match="a control character .* cannot be passed to dvc exp run -S"):
        G.load(path, yaml.safe_load((REPO / "params.yaml").read_text()))


def test_an_unreachable_address_fails_within_its_bound_naming_it():
    import socket
    from difftrain.runs.grid_engine import reachable
    with socket.socket() as closed:  # a port nothing listens on: bound, then released
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(Exception, match=f"--address 127.0.0.1:{port}: no Ray cluster answered within 2 s"):
        reachable(f"127.0.0.1:{port}", 2.0)
    assert time.monotonic() - start < 5
    with pytest.raises(Exception, match="expected host:port"):
        reachable("nowhere", 2.0)
    reachable("local", 2.0)  # the embedded cluster: nothing to reach
