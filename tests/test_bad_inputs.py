"""Every row of docs/bad-inputs.md: the stage fails with the documented message in one line,
before or instead of its work, and leaves no output file behind."""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from difftrain.io import read_tensors, tensor_bytes

from conftest import REPO, make_batches, make_image_folder, run_stage

BASE_PARAMS = {"loss": "differential", "device": "cpu",
               "pairs": {"block_size": 4, "fraction": 0.5},
               "train": {"epochs": 2, "batch_size": 8, "lr": 0.001},
               "attack": {"n_train": 8, "n_test": 8, "pgd": {"steps": 5, "epsilons": [0, 8, 255]},
                          "cw": {"steps": 10, "binary_search_steps": 2},
                          "apgd": {"restarts": 1, "steps": 10}, "square": {"queries": 50},
                          "fab": {"steps": 10}}}

OUTPUTS = {
    "prepare": ["data/prepared", "metrics/prepare.json"],
    "pairs": ["data/pairs", "metrics/pairs.json"],
    "train": ["models/model.safetensors", "metrics/train.json", "dvclive/train"],
    "features": ["plots/features", "metrics/features.json"],
    "attack": ["plots/attack", "data/attack", "metrics/attack.json"],
    "plot": ["plots/figures", "metrics/summary.json"],
}


def documented_rows() -> dict[str, tuple[str, str]]:
    """id -> (stage, error text) from the markdown table."""
    rows = {}
    for line in (REPO / "docs" / "bad-inputs.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("id", "---"):
            rows[cells[0]] = (cells[1], cells[3].strip("`"))
    return rows


def _params(workdir: Path, **changes) -> None:
    params = yaml.safe_load(yaml.safe_dump(BASE_PARAMS))
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            params.setdefault(section, {})[name] = value
        else:
            params[section] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def _raw(workdir):
    return workdir / "data" / "raw"


def _text(workdir: Path, data: bytes) -> None:
    (workdir / "params.yaml").write_bytes(data)


class _Payload:
    def __reduce__(self):
        return os.system, ("touch payload-ran",)  # relative: lands in the stage's directory


def _booby_trapped_batches(workdir: Path) -> None:
    shutil.rmtree(_raw(workdir))
    folder = make_batches(_raw(workdir))
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": _Payload(), "labels": [0]}, protocol=2))


def _mount_tmpfs(folder: Path, options: str):
    """Mount a small tmpfs over ``folder``; the test is skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
    return lambda: subprocess.run(["umount", str(folder)], check=True)


def _full_disk(workdir: Path):
    shutil.move(_raw(workdir), workdir / "raw")
    _params(workdir, data={"root": "raw"})
    return _mount_tmpfs(workdir / "data", "size=16k")


def _read_only_metrics(workdir: Path):
    (workdir / "metrics").rename(workdir / "metrics-before")
    return _mount_tmpfs(workdir / "metrics", "ro,size=16k")


def _nan_weights(workdir: Path) -> None:
    path = workdir / "models" / "model.safetensors"
    state, metadata = read_tensors(path, "checkpoint")
    state["head.weight"][0, 0] = float("nan")
    path.write_bytes(tensor_bytes(state, metadata))


def _data_changed(workdir: Path) -> None:
    image = _raw(workdir) / "train" / "airplane" / "0000.png"
    Image.eval(Image.open(image), lambda v: 255 - v).save(image)
    assert run_stage("prepare", workdir).returncode == 0


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


SETUPS = {
    "loss-typo": lambda w: _params(w, loss="diferential"),
    "unknown-key": lambda w: _params(w, trian={"lr": 0.1}),
    "lr-negative": lambda w: _params(w, **{"train.lr": -0.1}),
    "class-unknown": lambda w: _params(w, **{"data.classes": ["airplane", "hrse"]}),
    "root-unrecognised": lambda w: (shutil.rmtree(_raw(w)), _raw(w).mkdir(),
                                    (_raw(w) / "notes.txt").write_text("x")),
    "class-folder-missing": lambda w: shutil.rmtree(_raw(w) / "train" / "horse"),
    "split-missing": lambda w: shutil.rmtree(_raw(w) / "test"),
    "class-folder-empty": lambda w: [p.unlink() for p in (_raw(w) / "train" / "horse").iterdir()],
    "image-wrong-size": lambda w: Image.new("RGB", (28, 28)).save(_raw(w) / "train" / "horse" / "0002.png"),
    "image-grayscale": lambda w: Image.new("L", (32, 32)).save(_raw(w) / "train" / "horse" / "0002.png"),
    "image-corrupt": lambda w: (_raw(w) / "train" / "horse" / "0002.png").write_bytes(b"\x89PNG\r\n"),
    "subsample-too-large": lambda w: _params(w, **{"data.n_train_per_class": 999}),
    "prepared-missing": lambda w: (w / "data" / "prepared" / "train.safetensors").unlink(),
    "prepared-corrupt": lambda w: (w / "data" / "prepared" / "train.safetensors").write_bytes(b"junk"),
    "fraction-needs-epochs": lambda w: _params(w, **{"pairs.fraction": 1.0, "pairs.block_size": 4,
                                                     "train.epochs": 2}),
    "block-too-large": lambda w: _params(w, **{"pairs.block_size": 64}),
    "pair-index-missing": lambda w: (w / "data" / "pairs" / "index.safetensors").unlink(),
    "pair-index-epochs": lambda w: _params(w, **{"train.epochs": 3}),
    "divergence": lambda w: _params(w, **{"train.lr": 1e30}),
    "model-missing": lambda w: (w / "models" / "model.safetensors").unlink(),
    "model-corrupt": lambda w: (w / "models" / "model.safetensors").write_bytes(b"junk"),
    "subspace-variance-zero": lambda w: _params(w, features={"subspace_variance": 0}),
    "model-other-params": lambda w: _params(w, **{"train.lr": 0.005}),
    "attack-n-too-large": lambda w: _params(w, attack={"n_train": 8, "n_test": 999}),
    "epsilon-negative": lambda w: _params(w, attack={"pgd": {"epsilons": [0, -8]}}),
    "epsilon-grid-no-zero": lambda w: _params(w, attack={"cw": {"epsilons": [0.5, 1]}}),
    "attack-unknown": lambda w: _params(w, attack={"fgsm": {"steps": 1}}),
    "apgd-restarts-zero": lambda w: _params(w, attack={"apgd": {"restarts": 0}}),
    "headline-off-grid": lambda w: _params(w, plot={"headline_eps_255": 3}),
    # issue 15: untrusted files, leaks, non-finite values, strict params, early checks
    "batch-runs-code": _booby_trapped_batches,
    "test-links-train": lambda w: (shutil.rmtree(_raw(w) / "test"),
                                   (_raw(w) / "test").symlink_to("train")),
    "root-dangling-link": lambda w: (shutil.rmtree(_raw(w)), _raw(w).symlink_to("gone")),
    "params-empty": lambda w: _text(w, b"# nothing here\n"),
    "params-duplicate-key": lambda w: _text(w, b"loss: differential\ndevice: cpu\nloss: cross_entropy\n"),
    "params-not-utf8": lambda w: _text(w, b"device: cpu\nloss: diff\xe9rential\n"),
    "seed-float": lambda w: _text(w, b"seed: 1e23\n"),
    "seed-too-large": lambda w: _params(w, data={"seed": 2**64}),
    "lr-overflow": lambda w: _params(w, train={"optimizer": "adam", "lr": 1e300}),
    "epsilon-infinite": lambda w: _params(w, attack={"pgd": {"epsilons": [0, float("inf")]}}),
    "cw-stepsize-infinite": lambda w: _params(w, attack={"cw": {"stepsize": float("inf")}}),
    "disk-full": _full_disk,
    "provenance-missing": lambda w: (w / "data" / "prepared" / "provenance.json").unlink(),
    "fraction-unachievable": lambda w: _params(w, pairs={"block_size": 4, "fraction": 1e-9}),
    "epochs-exhaust-memory": lambda w: _params(w, train={"epochs": 100_000_000}),
    "model-nan-features": _nan_weights,
    "model-nan-attack": _nan_weights,
    "model-other-data": _data_changed,
    "metrics-read-only": _read_only_metrics,
    "attack-metrics-truncated": lambda w: _truncate(w / "metrics" / "attack.json", 100),
    "train-metrics-empty": lambda w: _truncate(w / "metrics" / "train.json", 0),
    "no-environment": lambda w: None,
}
# Run by another interpreter than the project's: the base Python the environment was made from.
INTERPRETER = {"no-environment": getattr(sys, "_base_executable", sys.executable)}
# What must not have happened, beyond the outputs.
AFTERWARDS = {"batch-runs-code": lambda w: not (w / "payload-ran").exists()}

ROWS = documented_rows()


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """One tiny project per stage, with every stage upstream of it already run."""
    root = tmp_path_factory.mktemp("bases")
    fresh = root / "prepare"
    make_image_folder(_raw(fresh))
    _params(fresh)
    out = {"prepare": fresh}
    previous = fresh
    for stage, upstream in (("pairs", "prepare"), ("train", "pairs"), ("features", "train"),
                            ("plot", "features")):
        here = root / stage
        shutil.copytree(previous, here, symlinks=True)
        for name in [upstream] + (["attack"] if stage == "plot" else []):
            result = run_stage(name, here)
            assert result.returncode == 0, result.stderr
        out[stage] = previous = here
    out["attack"] = out["features"]
    return out


def test_the_table_and_the_setups_agree():
    assert len(ROWS) >= 50
    assert set(ROWS) == set(SETUPS)


@pytest.mark.parametrize("case", sorted(SETUPS))
def test_bad_input_is_reported_and_nothing_is_written(case, bases, tmp_path):
    stage, expected = ROWS[case]
    workdir = tmp_path / "project"
    shutil.copytree(bases[stage], workdir, symlinks=True)
    before = {p for p in workdir.rglob("*") if p.is_file()}
    cleanup = SETUPS[case](workdir)
    try:
        python = INTERPRETER.get(case, sys.executable)
        if python == sys.executable and case in INTERPRETER:
            pytest.skip("not running inside a virtual environment")
        result = subprocess.run([python, str(REPO / "stages" / f"{stage}.py")], cwd=workdir,
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")  # after progress bars
        assert expected in result.stderr, result.stderr
        for output in OUTPUTS[stage]:  # nothing new: at most an empty folder
            path = workdir / output
            written = {p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()}
            assert not (written - before), (output, written - before)
        assert not list(workdir.rglob("*.tmp")), "temporary files left behind"
        assert AFTERWARDS.get(case, lambda w: True)(workdir), case
    finally:
        if callable(cleanup):
            cleanup()
