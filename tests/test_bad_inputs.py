"""Every row of docs/bad-inputs.md: the stage fails with the documented message in one line,
before or instead of its work, and leaves no output file behind."""

import json
import os
import pickle
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from difftrain.core.io import read_tensors, tensor_bytes

from conftest import REPO, make_batches, make_image_folder, run_stage

BASE_PARAMS = {"loss": "differential", "device": "cpu",
               "pairs": {"block_size": 4, "fraction": 0.5},
               "train": {"epochs": 2, "batch_size": 8, "lr": 0.001},
               "attack": {"n_train": 8, "n_test": 8, "pgd": {"steps": 5, "epsilons": [0, 8, 255]},
                          "cw": {"steps": 10, "binary_search_steps": 2},
                          "apgd": {"restarts": 1, "steps": 10}, "square": {"queries": 50},
                          "fab": {"steps": 10}},
               "certify": {"crown_attempts": 0}}

OUTPUTS = {
    "prepare": ["data/prepared", "metrics/prepare.json"],
    "pairs": ["data/pairs", "metrics/pairs.json"],
    "train": ["models/model.safetensors", "metrics/train.json", "dvclive/train"],
    "features": ["plots/features", "metrics/features.json"],
    "attack": ["plots/attack", "data/attack", "metrics/attack.json"],
    "certify": ["plots/certify", "data/certify", "metrics/certify.json"],
    "plot": ["plots/figures", "metrics/summary.json"],
    "fetch": [], "study": ["study.png", "study.csv", "ro"], "compare": ["compare.png", "compare.csv"],
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


def _flip_attacked_labels(workdir: Path) -> None:
    """data/attack/per_image.csv naming the right positions with the wrong labels: a table
    from other data (or edited) would certify other images than were attacked."""
    import pandas as pd

    path = workdir / "data" / "attack" / "per_image.csv"
    table = pd.read_csv(path)
    table["label"] = 1 - table["label"]
    table.to_csv(path, index=False)


# --- issue 25: what the project reads must mean what it says ---------------------------------

def _batch(workdir: Path, change) -> None:
    """Replace the source by pickled batches, then change data_batch_1's entry in place."""
    shutil.rmtree(_raw(workdir))
    folder = make_batches(_raw(workdir))
    path = folder / "data_batch_1"
    entry = pickle.loads(path.read_bytes())
    change(entry)
    path.write_bytes(pickle.dumps(entry))


def _labels(entry: dict, value) -> None:
    entry["labels"][0] = value


def _fifo(path: Path) -> None:
    if path.exists():
        path.unlink()
    os.mkfifo(path)


def _batch_fifo(workdir: Path) -> None:
    shutil.rmtree(_raw(workdir))
    _fifo(make_batches(_raw(workdir)) / "data_batch_1")


def _same_images(workdir: Path) -> None:
    horse, airplane = _raw(workdir) / "train" / "horse", _raw(workdir) / "train" / "airplane"
    shutil.rmtree(horse)
    shutil.copytree(airplane, horse)


def _prepared_label(workdir: Path) -> None:
    path = workdir / "data" / "prepared" / "train.safetensors"
    state, metadata = read_tensors(path, "split")
    state["labels"][0] = 2
    path.write_bytes(tensor_bytes(state, metadata))


def _checkpoint(workdir: Path, tensors=None, metadata=None) -> None:
    """Rewrite the checkpoint with its tensors and metadata changed by the given functions."""
    path = workdir / "models" / "model.safetensors"
    state, meta = read_tensors(path, "checkpoint")
    if tensors:
        tensors(state)
    if metadata:
        meta = metadata(meta)
    path.write_bytes(tensor_bytes(state, meta))


def _json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _csv_accuracy(path: Path, value: float) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("accuracy")] = str(value)
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def _link_outside(workdir: Path, output: str) -> None:
    outside = workdir.parent / "outside"
    outside.mkdir()
    target = workdir / output
    if target.exists():
        shutil.move(target, outside / "moved")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside)


def _outside_untouched(workdir: Path) -> bool:
    return not [p for p in (workdir.parent / "outside").rglob("*") if "moved" not in p.parts]


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
    "epsilon-grid-no-zero": lambda w: _params(w, attack={"l2_epsilons": [0.5, 1]}),
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
    "certify-other-images": _flip_attacked_labels,
    "certify-methods-unordered": lambda w: _params(w, certify={"methods": ["crown", "ibp"]}),
    "features-zero-init-relu": lambda w: _params(w, model={"batchnorm": False, "features_init": "zero"}),
    "full-batch-pairwise": lambda w: _params(w, **{"train.batch_size": "full"}),
    "batch-size-word": lambda w: _params(w, **{"train.batch_size": "ful"}),
    "batchnorm-batch-of-one": lambda w: _params(w, loss="cross_entropy", model={"batchnorm": True},
                                                **{"train.batch_size": 31}),
    "certify-tanh-hidden": lambda w: _params(w, model={"batchnorm": False, "hidden_activation": "tanh"}),
    "no-environment": lambda w: None,
    # issue 25: sources, artifacts and metrics checked for what they claim to be
    "batch-float-data": lambda w: _batch(w, lambda e: e.update(data=e["data"].astype("float32") / 255)),
    "batch-channels-last": lambda w: _batch(w, lambda e: e.update(
        data=e["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy())),
    "batch-label-ten": lambda w: _batch(w, lambda e: _labels(e, 10)),
    "batch-label-negative": lambda w: _batch(w, lambda e: _labels(e, -1)),
    "batch-label-float": lambda w: _batch(w, lambda e: _labels(e, 7.9)),
    "batch-label-count": lambda w: _batch(w, lambda e: e.update(labels=e["labels"][:-1])),
    "batch-fifo": _batch_fifo,
    "class-folder-alias": lambda w: (shutil.rmtree(_raw(w) / "train" / "horse"),
                                     (_raw(w) / "train" / "horse").symlink_to("airplane")),
    "class-same-images": _same_images,
    "image-fifo": lambda w: _fifo(_raw(w) / "train" / "horse" / "0099.png"),
    "source-fifo": lambda w: _fifo(_raw(w) / "notes.txt"),
    "prepared-label-two": _prepared_label,
    "model-zero-std": lambda w: _checkpoint(w, tensors=lambda s: s["std"].zero_()),
    "model-huge-weight": lambda w: _checkpoint(w, tensors=lambda s: s["phi.9.weight"].fill_(3e38)),
    "model-constant-scores": lambda w: _checkpoint(w, tensors=lambda s: (
        s["phi.0.weight"].zero_(), s["phi.0.bias"].zero_())),
    "model-metadata-not-object": lambda w: (w / "models" / "model.safetensors").write_bytes(
        _list_metadata(w)),
    "model-config-not-json": lambda w: _checkpoint(w, metadata=lambda m: {**m, "config": "{"}),
    "model-config-missing": lambda w: _checkpoint(
        w, metadata=lambda m: {k: v for k, v in m.items() if k != "config"}),
    "metrics-accuracy-above-one": lambda w: _json(
        w / "metrics" / "attack.json", lambda d: d["train"]["worst"]["eps8"].update(accuracy=1.7)),
    "metrics-section-missing": lambda w: _json(w / "metrics" / "features.json",
                                               lambda d: d.pop("optimum")),
    "plot-table-accuracy-negative": lambda w: _csv_accuracy(
        w / "plots" / "attack" / "worst_test.csv", -0.5),
    "output-link-outside": lambda w: _link_outside(w, "data/prepared"),
    "metrics-link-outside": lambda w: _link_outside(w, "metrics"),
    "seed-sexagesimal": lambda w: _text(w, b"seed: 1:00\n"),
    "study-out-no-suffix": lambda w: None,
    "study-out-unsupported": lambda w: None,
    "study-out-read-only": lambda w: _mount_tmpfs(w / "ro", "ro,size=16k"),
    "compare-out-unsupported": lambda w: None,
    "memory-limit": lambda w: None,
    "warnings-as-errors": lambda w: None,
}
# Run by another interpreter than the project's: the base Python the environment was made from.
INTERPRETER = {"no-environment": getattr(sys, "_base_executable", sys.executable)}
# What must not have happened, beyond the outputs.
AFTERWARDS = {"batch-runs-code": lambda w: not (w / "payload-ran").exists(),
              "output-link-outside": _outside_untouched, "metrics-link-outside": _outside_untouched}
# Commands that are not stage scripts, and the arguments of the study and compare rows.
COMMANDS = {"fetch": ["-m", "difftrain.fetch"], "study": ["-m", "difftrain.study", "--all"],
            "compare": ["-m", "difftrain.compare", "a", "b"]}
ARGS = {"study-out-no-suffix": ["--out", "study"], "study-out-unsupported": ["--out", "study.txt"],
        "study-out-read-only": ["--out", "ro/study.png"],
        "compare-out-unsupported": ["--out", "compare.csv"]}
# Run under a memory limit, or with warnings turned into errors.
PREFIX = {"memory-limit": ["prlimit", f"--as={1_500_000_000}"]}
ENV = {"warnings-as-errors": {"PYTHONWARNINGS": "error"}}

ROWS = documented_rows()
BASE = {"fetch": "prepare", "study": "prepare", "compare": "prepare"}  # project they run in


def _list_metadata(workdir: Path) -> bytes:
    """The checkpoint with metadata that parses as a JSON list, not an object."""
    state, _ = read_tensors(workdir / "models" / "model.safetensors", "checkpoint")
    from safetensors.torch import save
    return save(state, metadata={"difftrain": json.dumps(["not", "an", "object"])})


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
        for name in [upstream] + (["attack", "certify"] if stage == "plot" else []):
            result = run_stage(name, here)
            assert result.returncode == 0, result.stderr
        out[stage] = previous = here
    out["attack"] = out["features"]
    out["certify"] = out["plot"]  # attack already run there
    return out


def test_the_table_and_the_setups_agree():
    assert len(ROWS) >= 50
    assert set(ROWS) == set(SETUPS)


def _in_process(command: list[str], workdir: Path, monkeypatch, capsys) -> tuple[int, str]:
    """(exit code, stderr) of a stage script or ``-m`` module run in this interpreter: the same
    code path as a subprocess without paying the imports again (most rows fail in milliseconds
    once torch is loaded)."""
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", [command[0] if command[0] != "-m" else command[1], *(
        command[1:] if command[0] != "-m" else command[2:])])
    monkeypatch.syspath_prepend(str(REPO / "stages"))
    capsys.readouterr()
    try:
        if command[0] == "-m":  # run as __main__ from a fresh import, as python -m does
            monkeypatch.delitem(sys.modules, command[1], raising=False)
            runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(command[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(SETUPS))
def test_bad_input_is_reported_and_nothing_is_written(case, bases, tmp_path, monkeypatch, capsys):
    stage, expected = ROWS[case]
    workdir = tmp_path / "project"
    shutil.copytree(bases[BASE.get(stage, stage)], workdir, symlinks=True)
    before = {p for p in workdir.rglob("*") if p.is_file()}
    cleanup = SETUPS[case](workdir)
    try:
        python = INTERPRETER.get(case, sys.executable)
        if python == sys.executable and case in INTERPRETER:
            pytest.skip("not running inside a virtual environment")
        command = COMMANDS.get(stage, [str(REPO / "stages" / f"{stage}.py")]) + ARGS.get(case, [])
        if case in INTERPRETER or case in PREFIX or case in ENV:  # needs a process of its own
            result = subprocess.run([*PREFIX.get(case, []), python, *command], cwd=workdir,
                                    capture_output=True, text=True,
                                    env={**os.environ, **ENV.get(case, {})})
            code, stderr = result.returncode, result.stderr
        else:
            code, stderr = _in_process(command, workdir, monkeypatch, capsys)
        assert code == 2, stderr
        assert stderr.strip().splitlines()[-1].startswith("error: ")  # after progress bars
        assert expected in stderr, stderr
        for output in OUTPUTS.get(stage, []):  # nothing new: at most an empty folder
            path = workdir / output
            written = {p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()}
            assert not (written - before), (output, written - before)
        assert not list(workdir.rglob("*.tmp")), "temporary files left behind"
        assert AFTERWARDS.get(case, lambda w: True)(workdir), case
    finally:
        if callable(cleanup):
            cleanup()
