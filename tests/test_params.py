import pytest

from difftrain.core.errors import ParamsError
from difftrain.core.params import Params, load_params, parse_params

from conftest import REPO


def test_repository_params_are_valid_and_match_the_defaults():
    assert load_params(REPO / "params.yaml") == Params()


@pytest.mark.parametrize(
    "raw, key, allowed",
    [
        ({"loss": "diferential"}, "loss",
         "must be one of cross_entropy, differential, differential_logistic; got 'diferential'"),
        ({"device": "tpu"}, "device", "must be one of auto, cpu, cuda"),
        ({"sed": 1}, "sed", "is not a known parameter"),
        ({"train": {"lrate": 0.1}}, "train.lrate", "is not a known parameter"),
        ({"train": {"lr": 0}}, "train.lr", "must be > 0"),
        ({"train": {"lr": "fast"}}, "train.lr", "got 'fast'"),
        ({"train": {"epochs": 0}}, "train.epochs", "must be > 0"),
        ({"train": {"epochs": 2.5}}, "train.epochs", "integer"),
        ({"train": {"batch_size": -4}}, "train.batch_size", "must be a positive number of images, or full"),
        ({"train": {"momentum": 1.0}}, "train.momentum", "must be < 1"),
        ({"train": {"weight_decay": -0.1}}, "train.weight_decay", "must be >= 0"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer", "must be one of sgd, adam"),
        ({"model": {"batchnorm": "yes"}}, "model.batchnorm", "boolean"),
        ({"data": {"classes": ["airplane", "hrse"]}}, "data.classes", "'hrse' is not a CIFAR-10 class"),
        ({"data": {"classes": ["airplane"]}}, "data.classes", "list of two"),
        ({"data": {"classes": ["horse", "horse"]}}, "data.classes", "two different classes"),
        ({"data": {"n_train_per_class": 0}}, "data.n_train_per_class", "must be > 0"),
        ({"data": {"n_test_per_class": "all"}}, "data.n_test_per_class", "got 'all'"),
        ({"data": {"seed": -1}}, "data.seed", "must be >= 0"),
        ({"pairs": {"fraction": 1.5}}, "pairs.fraction", "must be <= 1"),
        ({"pairs": {"fraction": 0}}, "pairs.fraction", "must be > 0"),
        ({"pairs": {"strategy": "hard"}}, "pairs.strategy", "must be one of uniform"),
        ({"pairs": {"block_size": 0}}, "pairs.block_size", "must be > 0"),
        ({"seed": -3}, "seed", "must be >= 0"),
    ],
)
def test_bad_value_is_rejected_with_key_and_allowed_values(raw, key, allowed):
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert message.startswith(f"params.yaml: {key} "), message
    assert allowed in message


def test_yaml_exponent_floats_are_numbers(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  lr: 1e-3\n")
    assert load_params(tmp_path / "params.yaml").train.lr == pytest.approx(1e-3)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: parameter file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="bad.yaml: line 2: not valid YAML: expected"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ParamsError, match="list.yaml: expected a mapping"):
        load_params(tmp_path / "list.yaml")


# Scalars YAML 1.1 (PyYAML) and YAML 1.2 (DVC's ruamel.yaml) read differently, and others.
TRICKY = ["seed: 010", "seed: 1:00", "seed: 0o17", "seed: 0x1F", "train:\n  lr: 1e-3",
          "model:\n  batchnorm: yes", "model:\n  batchnorm: on", "loss: no", "seed: 1_000",
          "theory:\n  sweep_offsets: [0, 1:30]"]


@pytest.mark.parametrize("text", TRICKY)
def test_params_are_read_exactly_as_dvc_reads_them(text):
    from dvc.utils.serialize import parse_yaml

    from difftrain.core.params import read_yaml

    assert read_yaml(text, "params.yaml") == parse_yaml(text, "params.yaml")


def test_an_octal_looking_seed_is_the_number_dvc_records_and_a_clock_time_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 010\n")
    assert load_params(tmp_path / "params.yaml").seed == 10  # YAML 1.1 would say 8
    (tmp_path / "params.yaml").write_text("seed: 1:00\n")  # YAML 1.1 would say 60
    with pytest.raises(ParamsError, match="seed input should be a valid integer; got '1:00'"):
        load_params(tmp_path / "params.yaml")


def test_merge_keys_dvc_accepts_are_accepted(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "attack:\n  apgd: &budget\n    restarts: 2\n    steps: 10\n"
        "  pgd:\n    steps: 10\n  fab:\n    <<: *budget\n")
    with pytest.raises(ParamsError, match="attack.fab.restarts is not a known parameter"):
        load_params(tmp_path / "params.yaml")  # merged, then checked like any other key
    (tmp_path / "params.yaml").write_text(
        "attack:\n  apgd: &budget\n    steps: 10\n  fab:\n    <<: *budget\n")
    assert load_params(tmp_path / "params.yaml").attack.fab.steps == 10
