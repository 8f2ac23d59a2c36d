import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from difftrain.data.cifar import detect_source, load_split, prepare
from difftrain.core.errors import DataError
from difftrain.core.params import DataParams
from difftrain.core.provenance import machine

from conftest import make_batches, make_image_folder, read_batches, run_stage, write_params


def test_image_folder_counts_labels_order_and_dtype(image_folder):
    source, splits = prepare(DataParams(root=str(image_folder), classes=("horse", "airplane")))
    assert source == "image_folder"
    train = splits["train"]
    assert train.images.dtype == torch.uint8 and train.images.shape == (32, 3, 32, 32)
    assert train.labels.tolist() == [0] * 16 + [1] * 16  # class order follows data.classes
    expected = np.array(Image.open(image_folder / "train" / "horse" / "0003.png"))
    assert torch.equal(train.images[3], torch.from_numpy(expected).permute(2, 0, 1))
    assert splits["test"].counts(("horse", "airplane")) == {"horse": 8, "airplane": 8}


def test_batches_counts_labels_and_pixels(tmp_path):
    folder = make_batches(tmp_path)
    source, splits = prepare(DataParams(root=str(tmp_path), classes=("airplane", "horse")))
    assert source == "batches"
    data, labels = read_batches(folder, "train")
    train = splits["train"]
    assert train.counts(("airplane", "horse")) == {"airplane": 50, "horse": 50}
    assert torch.equal(train.images[train.labels == 0], torch.from_numpy(data[labels == 0]))
    assert torch.equal(train.images[train.labels == 1], torch.from_numpy(data[labels == 7]))
    assert len(splits["test"].labels) == 10


def test_subsampling_is_deterministic_and_seed_dependent(image_folder):
    def take(seed):
        params = DataParams(root=str(image_folder), n_train_per_class=5, n_test_per_class=3,
                            seed=seed)
        return prepare(params)[1]

    a, b, c = take(0), take(0), take(1)
    assert torch.equal(a["train"].images, b["train"].images)
    assert torch.equal(a["train"].index, b["train"].index)
    assert not torch.equal(a["train"].index, c["train"].index)
    assert a["train"].counts(("airplane", "horse")) == {"airplane": 5, "horse": 5}
    assert (a["train"].index[:5].diff() > 0).all()  # kept in source order


def test_missing_root_is_detected_and_prepare_refuses_it_without_downloading(tmp_path):
    assert detect_source(tmp_path / "absent") == "missing"
    with pytest.raises(DataError, match="is missing or empty; .*python -m difftrain.fetch"):
        prepare(DataParams(root=str(tmp_path / "absent")))
    assert not (tmp_path / "absent").exists()  # nothing downloaded, nothing created
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(DataError, match="holds neither cifar-10-batches-py"):
        detect_source(tmp_path)


def _break(root, kind):
    horse = root / "train" / "horse"
    if kind == "missing class":
        for f in horse.iterdir():
            f.unlink()
        horse.rmdir()
        return "train/horse: missing folder for class 'horse'"
    if kind == "missing split":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "test").iterdir()):
            d.rmdir()
        return "test/airplane: missing folder for class 'airplane'"
    if kind == "empty folder":
        for f in horse.iterdir():
            f.unlink()
        return "train/horse: no images"
    if kind == "wrong size":
        Image.new("RGB", (28, 28)).save(horse / "0002.png")
        return "0002.png: expected a 32x32 RGB image; got 28x28 RGB"
    if kind == "grayscale":
        Image.new("L", (32, 32)).save(horse / "0002.png")
        return "0002.png: expected a 32x32 RGB image; got 32x32 L"
    if kind == "corrupt":
        (horse / "0002.png").write_bytes(b"\x89PNG not really")
        return "0002.png: cannot be decoded as an image"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing class", "missing split", "empty folder", "wrong size",
                                  "grayscale", "corrupt"])
def test_bad_image_folder_fails_clearly_and_writes_nothing(workdir, kind):
    expected = _break(workdir / "data" / "raw", kind)
    write_params(workdir, "data:\n  root: data/raw\n")
    result = run_stage("prepare", workdir)
    assert result.returncode == 2
    assert expected in result.stderr
    assert not (workdir / "data" / "prepared").exists() or not any((workdir / "data" / "prepared").iterdir())
    assert not (workdir / "metrics").exists() or not any((workdir / "metrics").iterdir())


def test_corrupt_batch_file_is_named(tmp_path):
    folder = make_batches(tmp_path)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 batch file"):
        prepare(DataParams(root=str(tmp_path)))


def test_too_many_requested_images_names_the_parameter(image_folder):
    with pytest.raises(DataError, match="data.n_train_per_class is 99, but class 'airplane' has only 16"):
        prepare(DataParams(root=str(image_folder), n_train_per_class=99))


def test_prepare_stage_writes_splits_and_metrics_and_reports_skipped_files(workdir):
    write_params(workdir, "data:\n  n_train_per_class: 10\n")
    (workdir / "data" / "raw" / "train" / "airplane" / "notes.txt").write_text("not an image")
    (workdir / "data" / "raw" / "test" / "horse" / "0001.gif").write_bytes(b"GIF89a")
    result = run_stage("prepare", workdir)
    assert result.returncode == 0, result.stderr
    assert "skipped 2 files that are not" in result.stdout
    metrics = json.loads((workdir / "metrics" / "prepare.json").read_text())
    assert metrics["skipped_files"] == {"train/airplane": 1, "test/horse": 1}
    assert metrics["source"] == "image_folder"
    assert metrics["train"] == {"n": 20, "airplane": 10, "horse": 10,
                                "sha256": metrics["train"]["sha256"]}
    assert metrics["test"]["n"] == 16
    train = load_split(workdir / "data" / "prepared" / "train.safetensors")
    assert len(train.labels) == 20
    assert sorted(p.name for p in (workdir / "data" / "prepared").iterdir()) == [
        "provenance.json", "test.safetensors", "train.safetensors"]
    assert metrics["provenance"]["data_sha256"] == json.loads(
        (workdir / "data" / "prepared" / "provenance.json").read_text())["data_sha256"]
    # the machine that made it (issue 30): same CPU kind as here, the stage's thread count
    assert metrics["provenance"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert metrics["provenance"]["torch_threads"] >= 1


def test_machine_names_thread_count_and_cpu_kind():
    """Two runs of one seed match byte for byte only on the same CPU kind and thread count."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = machine()
    finally:
        torch.set_num_threads(threads)
    assert one["torch_threads"] == 1
    assert machine()["torch_threads"] == threads
    assert one["cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256"}
    assert one["cpu_model"]


class _Payload:
    """Unpickling this runs ``os.system`` (a booby-trapped batch file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_booby_trapped_batch_file_is_refused_before_anything_in_it_runs(tmp_path):
    folder = make_batches(tmp_path)
    marker = tmp_path / "payload-ran"
    trap = {"data": _Payload(marker), "labels": [0] * 10}
    (folder / "data_batch_1").write_bytes(pickle.dumps(trap, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refused to load (posix|os)\.system "
                                        r"\(a CIFAR-10 batch holds only numpy arrays"):
        prepare(DataParams(root=str(tmp_path)))
    assert not marker.exists()
    pickle.loads((folder / "data_batch_1").read_bytes())  # the trap is real: plain pickle runs it
    assert marker.exists()


def test_a_test_split_sharing_images_with_training_is_refused(image_folder):
    shutil.rmtree(image_folder / "test")
    (image_folder / "test").symlink_to(image_folder / "train")
    with pytest.raises(DataError, match=r"32 test images are identical to training images, e.g. "
                                        r"\S*/test/(\w+/\d+).png and \S*/train/\1.png"):
        prepare(DataParams(root=str(image_folder)))


def test_one_copied_image_is_enough_to_be_refused(image_folder):
    shutil.copy(image_folder / "train" / "horse" / "0003.png",
                image_folder / "test" / "airplane" / "0009.png")
    with pytest.raises(DataError, match="1 test images are identical to training images"):
        prepare(DataParams(root=str(image_folder)))


def test_a_dangling_link_as_root_is_named(tmp_path):
    (tmp_path / "raw").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"data.root '.*raw' is a link to '.*nowhere', which does "
                                        r"not exist"):
        prepare(DataParams(root=str(tmp_path / "raw")))


def test_splits_are_written_byte_identically(image_folder):
    first = prepare(DataParams(root=str(image_folder)))[1]
    second = prepare(DataParams(root=str(image_folder)))[1]
    assert first["train"].to_bytes() == second["train"].to_bytes()


def test_every_metrics_file_names_the_classes_and_which_is_label_0():
    # reversed classes: horse is label 0 (the positive score), and the provenance every metrics
    # file inherits says so (summary.json and attack.json used to leave it to prepare.json)
    from difftrain.core.params import parse_params
    from difftrain.core.provenance import data_provenance
    params = parse_params({"data": {"classes": ["horse", "airplane"]}})
    provenance = data_provenance(params, "batches", "abc")
    assert provenance["classes"] == ["horse", "airplane"] and provenance["label_0"] == "horse"
