import json
import math

import pytest
import torch
import yaml

from difftrain.core import io
from difftrain.core.errors import DataError

from conftest import REPO


def test_every_output_in_dvc_yaml_names_the_stage_that_writes_it():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        for entry in spec.get("outs", []) + spec.get("metrics", []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            assert io.written_by(path) == f"; the {stage} stage writes it (dvc repro {stage})", path
            assert io.written_by(f"/somewhere/else/{path}/file.csv").startswith(f"; the {stage}")


def test_metrics_are_strict_json_with_non_finite_values_named():
    text = io.json_text({"a": 1.5, "b": {"c": math.inf}, "d": [0.0, math.nan]})
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data == {"a": 1.5, "b": {"c": None}, "d": [0.0, None],
                    "non_finite": ["b.c: inf", "d.1: nan"]}
    assert "non_finite" not in json.loads(io.json_text({"a": 1.0}))


def test_tensor_files_are_byte_identical_for_identical_content_and_read_back(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "i": torch.tensor([1, 2], dtype=torch.int64)}
    meta = {"z": "1", "a": "2", "m": "3"}
    data = io.tensor_bytes(tensors, meta)
    assert all(io.tensor_bytes(dict(reversed(list(tensors.items()))), dict(reversed(list(meta.items()))))
               == data for _ in range(5))
    (tmp_path / "t.safetensors").write_bytes(data)
    read, read_meta = io.read_tensors(tmp_path / "t.safetensors", "test file")
    assert read_meta == meta and torch.equal(read["w"], tensors["w"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="bad.safetensors: not a test file"):
        io.read_tensors(tmp_path / "bad.safetensors", "test file")


def test_read_json_names_the_file_and_its_writer(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "attack.json").write_text('{"train": {"n"')
    with pytest.raises(DataError, match=r"metrics/attack.json: not valid JSON .*the attack stage writes it"):
        io.read_json(folder / "attack.json")
    (folder / "train.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="train.json: expected a JSON object, got list"):
        io.read_json(folder / "train.json")


def test_a_full_disk_names_the_output_and_the_space_needed(tmp_path, monkeypatch):
    import errno
    import builtins

    real_open = builtins.open

    class Full:
        def __init__(self, *a, **k):
            self.file = real_open(*a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builtins, "open", Full)
    with pytest.raises(io.DifftrainError, match=r"out/x.bin: no space left on the device \(needs 3 bytes"):
        with io.Outputs() as out:
            out.save_bytes(b"abc", tmp_path / "out" / "x.bin")
    monkeypatch.undo()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary is gone too
