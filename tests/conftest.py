"""Tiny generated CIFAR-like data, so the tests need no dataset and run in seconds.

Images are noise with a faint class colour cast: separable by a small network in a few epochs,
yet every image different, and feature scales like those of real photographs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from difftrain.core.params import CIFAR10_CLASSES

REPO = Path(__file__).resolve().parents[1]


def fake_images(label: int, n: int, seed: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 noise images with a faint class colour cast (red: x, blue: y)."""
    rng = np.random.default_rng(seed)
    cast = np.array([20, 0, -20]) if label == 0 else np.array([-20, 0, 20])
    # Smooth noise (8x8 upsampled), like the spatially correlated pixels of photographs.
    noise = rng.normal(0, 40, size=(n, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)
    return np.clip(128 + cast + noise, 0, 255).astype(np.uint8)


def make_image_folder(root: Path, classes=("airplane", "horse"), n_train=16, n_test=8,
                      extra_class="cat") -> Path:
    """root/{train,test}/<class>/NNNN.png with lossless PNGs (exact pixel values)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate([*classes, extra_class]):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(fake_images(k % 2, n, seed=zlib.crc32(f"{split}/{name}".encode()))):
                Image.fromarray(array).save(folder / f"{i:04d}.png")
    return root


def make_batches(root: Path, n_per_class_train=10, n_per_class_test=5) -> Path:
    """root/cifar-10-batches-py in the public pickle format, all ten classes, shuffled order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per_class, seed):
        labels = np.repeat(np.arange(10), n_per_class)
        rng.shuffle(labels)
        data = np.stack([fake_images(label % 2, 1, seed + i)[0] for i, label in enumerate(labels)])
        return {"data": data.transpose(0, 3, 1, 2).reshape(len(labels), -1),
                "labels": labels.tolist()}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_per_class_train, 100 * i)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_per_class_test, 999)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    return folder


def read_batches(folder: Path, split: str):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    entries = [pickle.loads((folder / name).read_bytes()) for name in names]
    data = np.concatenate([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([e["labels"] for e in entries])
    return data, labels


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "raw")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty project directory with a tiny image-folder source, as the current directory."""
    make_image_folder(tmp_path / "data" / "raw")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run one stage script as DVC would, in ``cwd``."""
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=cwd,
                          capture_output=True, text=True)


def write_params(cwd: Path, text: str) -> None:
    (cwd / "params.yaml").write_text(text)


# --- DVC projects on tiny data, for the end-to-end tests ---------------------------------

TINY = {"loss": "differential", "device": "cpu",
        "data": {"n_train_per_class": 12, "n_test_per_class": 6},
        "pairs": {"block_size": 3, "fraction": 0.5},  # 4 blocks of 3 a class: 0.5 exactly
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.001, "rank_every": 1},
        "attack": {"n_train": 8, "n_test": 8, "pgd": {"steps": 5, "epsilons": [0, 8, 255]},
                   "cw": {"steps": 10, "binary_search_steps": 2}},
        "certify": {"crown_attempts": 1, "crown_splits": ["test"], "check_steps": 5,
                    "check_restarts": 1},
        "theory": {"steps": 500, "mlp_steps": 50, "sweep_offsets": [0, 10]}}


def sh(*args, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def set_params(repo: Path, **sections):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in sections.items():
        if isinstance(value, dict):
            params.setdefault(key, {}).update(value)
        else:
            params[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def make_project(repo: Path, commit_data: bool = False) -> Path:
    """A git repository holding a copy of the project and tiny generated data."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    for name in ("stages", "src", ".dvc"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info", "tmp", "cache"))
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    make_image_folder(repo / "data" / "raw", n_train=16, n_test=8)
    set_params(repo, **TINY)
    if commit_data:  # queued experiments see only git-tracked files
        gitignore = repo / ".gitignore"
        gitignore.write_text(gitignore.read_text().replace("/data/raw\n", ""))
    sh("git", "init", "-q", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", ".", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=repo)
    return repo
