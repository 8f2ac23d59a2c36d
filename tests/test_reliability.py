"""Sharing, crash recovery and reproducibility, end to end on tiny data (issue: data versioning)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_image_folder, make_project, set_params, sh

pytestmark = pytest.mark.slow

OUTPUTS = ("data/prepared", "data/pairs", "models", "metrics", "plots", "data/attack", "dvclive")


def digests(repo: Path) -> dict[str, str]:
    """sha256 of every file under the pipeline's output folders."""
    out = {}
    for folder in OUTPUTS:
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.ci  # heavy end-to-end: .ci/run runs it, make test does not
def test_push_then_pull_in_a_fresh_clone_restores_every_output(tmp_path):
    repo = make_project(tmp_path / "project")
    remote = tmp_path / "remote"
    sh("dvc", "remote", "modify", "--local", "local", "url", str(remote), cwd=repo)
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "dvc.lock", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run", cwd=repo)
    sh("dvc", "push", cwd=repo)

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    make_image_folder(clone / "data" / "raw", n_train=16, n_test=8)  # the user's own copy
    sh("dvc", "remote", "modify", "--local", "local", "url", str(remote), cwd=clone)
    sh("dvc", "pull", cwd=clone)
    assert digests(clone) == digests(repo)
    assert "up to date" in sh("dvc", "status", cwd=clone).lower()
    rerun = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in rerun, rerun


@pytest.mark.ci  # heavy end-to-end: .ci/run runs it, make test does not
def test_a_stage_killed_mid_run_leaves_nothing_finished_and_repro_recovers(tmp_path):
    repo = make_project(tmp_path / "project")
    set_params(repo, train={"epochs": 400, "batch_size": 8, "lr": 0.001},
               pairs={"block_size": 3, "fraction": 0.5})
    sh("dvc", "repro", "pairs", cwd=repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((repo / "dvclive").glob(".train.*.tmp/plots/metrics/loss.tsv")):
        assert time.monotonic() < deadline and proc.poll() is None, "training never started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, mid-epoch
    proc.wait()
    assert not (repo / "models" / "model.safetensors").exists()
    assert not (repo / "metrics" / "train.json").exists()
    assert not (repo / "dvclive" / "train").exists()

    set_params(repo, train={"epochs": 2, "batch_size": 8, "lr": 0.001})
    sh("dvc", "repro", cwd=repo)
    assert (repo / "models" / "model.safetensors").is_file()
    assert [str(p) for p in repo.rglob("*.tmp") if ".dvc" not in p.parts] == []
    assert "up to date" in sh("dvc", "status", cwd=repo).lower()


def _stage_processes(repo: Path) -> list[int]:
    """PIDs of stage scripts running in ``repo`` (their working directory), from /proc."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") == str(repo) and b"stages/" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("shell", [s for s in ("/bin/sh", "/bin/bash") if Path(s).exists()])
def test_sigterm_to_dvc_repro_ends_the_stage_and_leaves_nothing_half_written(tmp_path, shell):
    """DVC does not pass SIGTERM on to the stage it runs; the stage ends with its parent
    (PR_SET_PDEATHSIG) and its SIGTERM handler lets the output writer clean up. DVC runs the
    stage through $SHELL: bash execs it, dash (/bin/sh where SHELL is unset) stays in between."""
    repo = make_project(tmp_path / "project")
    set_params(repo, loss="cross_entropy", train={"epochs": 100_000, "batch_size": 8, "lr": 0.001})
    sh("dvc", "repro", "pairs", cwd=repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SHELL": shell}
    proc = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((repo / "dvclive").glob(".train.*.tmp/plots/metrics/loss.tsv")):
        assert time.monotonic() < deadline and proc.poll() is None, "training never started"
        time.sleep(0.2)
    assert _stage_processes(repo)
    proc.send_signal(signal.SIGTERM)  # to dvc only, as `kill PID` or a CI timeout sends it
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _stage_processes(repo):
        assert time.monotonic() < deadline, f"stage still running: {_stage_processes(repo)}"
        time.sleep(0.2)
    assert not (repo / "models" / "model.safetensors").exists()
    assert not (repo / "metrics" / "train.json").exists()
    assert [str(p) for p in repo.rglob("*.tmp") if ".dvc" not in p.parts] == []


@pytest.mark.ci  # heavy end-to-end: .ci/run runs it, make test does not
def test_two_runs_give_byte_identical_outputs_except_timings_and_a_rerun_upstream_reruns_nothing(tmp_path):
    repo = make_project(tmp_path / "project")
    sh("dvc", "repro", cwd=repo)
    first_tables = digests(repo)
    first = {p.name: p.read_text() for p in (repo / "metrics").glob("*.json")}
    assert set(first) == {"prepare.json", "pairs.json", "train.json", "features.json",
                          "attack.json", "certify.json", "summary.json", "theory.json"}
    for text in first.values():  # strict JSON: no NaN or Infinity anywhere
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))

    # Forcing the first stage again writes the same bytes, so DVC reruns nothing after it.
    rerun = sh("dvc", "repro", "-f", "prepare", cwd=repo)
    assert "Running stage 'prepare'" in rerun
    after = sh("dvc", "repro", cwd=repo)
    assert "Running stage" not in after, after
    assert "up to date" in sh("dvc", "status", cwd=repo).lower()

    sh("dvc", "repro", "-f", cwd=repo)
    second = {p.name: p.read_text() for p in (repo / "metrics").glob("*.json")}
    a, b = json.loads(first["train.json"]), json.loads(second["train.json"])
    assert a.pop("wall_seconds") > 0 and b.pop("wall_seconds") > 0  # timings: the only keys left out
    assert a == b
    a, b = json.loads(first["certify.json"]), json.loads(second["certify.json"])
    for split in ("train", "test"):
        assert a[split].pop("seconds_per_attempt").keys() == b[split].pop("seconds_per_attempt").keys()
    assert a == b  # certificates and budgets are counts, not clocks
    changed = {k for k, v in digests(repo).items() if first_tables.get(k) != v}
    assert changed <= {"metrics/train.json", "metrics/certify.json"}, changed  # all else: same bytes


def test_outputs_follow_the_umask_as_dvc_checkout_does(tmp_path):
    repo = make_project(tmp_path / "project")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", "umask 022 && dvc repro pairs"], cwd=repo, env=env, check=True,
                   capture_output=True)
    for path in [repo / "data" / "prepared" / "train.safetensors", repo / "metrics" / "pairs.json",
                 repo / "data" / "pairs" / "index.safetensors"]:
        assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))
    assert (repo / "data" / "prepared").stat().st_mode & 0o777 == 0o755
