"""Every row of docs/bad-inputs.md: the stage fails with the documented message, writes nothing."""

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, make_image_folder, run_stage

BASE_PARAMS = {"loss": "differential", "device": "cpu",
               "pairs": {"block_size": 4, "fraction": 0.5},
               "train": {"epochs": 2, "batch_size": 8, "lr": 0.001},
               "attack": {"n_train": 8, "n_test": 8}}

OUTPUTS = {
    "prepare": ["data/prepared", "metrics/prepare.json"],
    "pairs": ["data/pairs", "metrics/pairs.json"],
    "train": ["models/model.pt", "metrics/train.json", "dvclive/train"],
    "features": ["plots/features", "metrics/features.json"],
    "attack": ["plots/attack", "data/attack", "metrics/attack.json"],
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
    "prepared-missing": lambda w: (w / "data" / "prepared" / "train.pt").unlink(),
    "prepared-corrupt": lambda w: (w / "data" / "prepared" / "train.pt").write_bytes(b"junk"),
    "fraction-needs-epochs": lambda w: _params(w, **{"pairs.fraction": 1.0, "pairs.block_size": 4,
                                                     "train.epochs": 2}),
    "block-too-large": lambda w: _params(w, **{"pairs.block_size": 64}),
    "pair-index-missing": lambda w: (w / "data" / "pairs" / "index.pt").unlink(),
    "pair-index-epochs": lambda w: _params(w, **{"train.epochs": 3}),
    "divergence": lambda w: _params(w, **{"train.lr": 1e30}),
    "model-missing": lambda w: (w / "models" / "model.pt").unlink(),
    "model-corrupt": lambda w: (w / "models" / "model.pt").write_bytes(b"junk"),
    "subspace-variance-zero": lambda w: _params(w, features={"subspace_variance": 0}),
    "model-other-params": lambda w: _params(w, **{"train.lr": 0.005}),
    "attack-n-too-large": lambda w: _params(w, attack={"n_train": 8, "n_test": 999}),
    "epsilon-negative": lambda w: _params(w, attack={"pgd": {"epsilons": [0, -8]}}),
    "epsilon-grid-no-zero": lambda w: _params(w, attack={"cw": {"epsilons": [0.5, 1]}}),
    "attack-unknown": lambda w: _params(w, attack={"fgsm": {"steps": 1}}),
    "apgd-restarts-zero": lambda w: _params(w, attack={"apgd": {"restarts": 0}}),
    "headline-off-grid": lambda w: _params(w, plot={"headline_eps_255": 3}),
}

ROWS = documented_rows()
UPSTREAM = {"prepare": [], "pairs": ["prepare"], "train": ["prepare", "pairs"],
            "features": ["prepare", "pairs", "train"], "attack": ["prepare", "pairs", "train"]}


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """One tiny project per stage, with every stage upstream of it already run."""
    root = tmp_path_factory.mktemp("bases")
    fresh = root / "prepare"
    make_image_folder(_raw(fresh))
    _params(fresh)
    out = {"prepare": fresh}
    previous = fresh
    for stage, upstream in (("pairs", "prepare"), ("train", "pairs"), ("features", "train")):
        here = root / stage
        shutil.copytree(previous, here, symlinks=True)
        result = run_stage(upstream, here)
        assert result.returncode == 0, result.stderr
        out[stage] = previous = here
    out["attack"] = out["features"]
    return out


def test_the_table_and_the_setups_agree():
    assert len(ROWS) >= 20
    assert set(ROWS) == set(SETUPS)


@pytest.mark.parametrize("case", sorted(SETUPS))
def test_bad_input_is_reported_and_nothing_is_written(case, bases, tmp_path):
    stage, expected = ROWS[case]
    workdir = tmp_path / "project"
    shutil.copytree(bases[stage], workdir, symlinks=True)
    SETUPS[case](workdir)
    result = run_stage(stage, workdir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")  # after any progress bar
    assert expected in result.stderr, result.stderr
    for output in OUTPUTS[stage]:
        assert not (workdir / output).exists(), output
    assert not list(workdir.rglob("*.tmp")), "temporary files left behind"
