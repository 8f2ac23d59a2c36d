import json

import pytest
import torch

from difftrain.data import pairs
from difftrain.data.cifar import prepare
from difftrain.core.errors import CheckpointError, DataError, DivergenceError
from difftrain.train.model import FEATURE_DIM, Net, checkpoint, load_checkpoint, model_config
from difftrain.core.params import DataParams, parse_params
from difftrain.train.trainer import fit, raw_scores

from conftest import make_image_folder, run_stage, write_params

LOSSES = ["cross_entropy", "differential", "differential_logistic"]
# The squared loss (eq. 7) has curvature ~ ||phi(x) - phi(y)||^2 along w, so it needs a smaller
# step than the logistic losses on these high-contrast images (on CIFAR-10, 0.01 is stable).
LR = {"cross_entropy": 0.01, "differential": 0.001, "differential_logistic": 0.01}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "raw", n_train=24, n_test=8)
    return prepare(DataParams(root=str(root)))[1]


def _fit(tiny, loss, epochs=8, model=None, **overrides):
    tanh = (model or {}).get("hidden_activation") == "tanh"  # no bounds for a tanh network
    params = parse_params({"loss": loss, "device": "cpu", "model": model or {},
                           "certify": {"methods": []} if tanh else {},
                           "pairs": {"block_size": 8, "fraction": 1.0},
                           "train": {"epochs": epochs, "batch_size": 16, "lr": LR[loss],
                                     **overrides}})
    index = pairs.build(tiny["train"].labels, params.pairs, epochs)
    return params, fit(params, tiny["train"], tiny["test"], index, progress=False)


def test_the_activations_sit_where_the_paper_puts_them():
    # the default is Fig. 2's network; Appendix B's tanh ends h (fc 120), before W, not phi
    kinds = lambda net: [type(m).__name__ for m in net.phi if not isinstance(m, torch.nn.Conv2d)]
    assert kinds(Net())[-4:] == ["Linear", "ReLU", "Linear", "ReLU"]
    assert kinds(Net(features_activation="linear", hidden_activation="tanh"))[-4:] == [
        "Linear", "Tanh", "Linear", "Identity"]
    assert list(Net().state_dict()) == list(Net(features_activation="linear").state_dict())
    zero = Net(features_activation="linear", features_init="zero")
    assert zero.features_layer().weight.abs().max() == 0 and zero.features_layer().out_features == FEATURE_DIM


def test_network_shape_and_feature_dimension():
    net = Net()
    x = torch.rand(5, 3, 32, 32)
    assert net.features(x).shape == (5, FEATURE_DIM)
    assert net(x).shape == (5,)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (5, 5)), (6, 16, (5, 5))]
    assert net.head.bias is None  # w has no bias; b is separate


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_fits_separable_tiny_images(tiny, loss):
    params, result = _fit(tiny, loss)
    assert result.metrics["train_accuracy"] == 1.0
    assert result.metrics["separable"] is True and result.metrics["score_gap"] > 0
    assert len(result.history) == params.train.epochs


def test_differential_bias_is_eq5_midpoint(tiny):
    _, result = _fit(tiny, "differential")
    raw = raw_scores(result.model, tiny["train"].images)
    is_x = tiny["train"].labels == 0
    expected = -(raw[is_x].min() + raw[~is_x].max()) / 2
    assert result.metrics["bias"] == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("optimizer, batchnorm", [("adam", False), ("sgd", True)])
def test_adam_and_batchnorm_train(tiny, optimizer, batchnorm):
    params = parse_params({"device": "cpu", "model": {"batchnorm": batchnorm},
                           "train": {"epochs": 6, "batch_size": 16, "optimizer": optimizer,
                                     "lr": 0.003 if optimizer == "adam" else 0.01}})
    result = fit(params, tiny["train"], tiny["test"], progress=False)
    assert result.metrics["train_accuracy"] == 1.0


def test_same_params_and_seed_give_identical_metrics_and_weights(tiny):
    _, a = _fit(tiny, "differential", epochs=3)
    _, b = _fit(tiny, "differential", epochs=3)
    for m in (a.metrics, b.metrics):
        m.pop("wall_seconds")
    assert a.metrics == b.metrics
    assert all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k]) for k in a.model.state_dict())


@pytest.mark.parametrize("model", [{}, {"features_activation": "linear", "features_init": "zero"},
                                   {"features_activation": "linear", "hidden_activation": "tanh"}],
                         ids=["paper", "proposition-1", "appendix-b"])
def test_checkpoint_round_trip_gives_identical_predictions_and_identical_bytes(tiny, tmp_path, model):
    params, result = _fit(tiny, "differential", epochs=3, model=model)
    data = checkpoint(result.model, model_config(params), "abc")
    assert data == checkpoint(result.model, model_config(params), "abc")  # deterministic bytes
    (tmp_path / "model.safetensors").write_bytes(data)
    loaded, config = load_checkpoint(tmp_path / "model.safetensors", model_config(params),
                                     data_sha256="abc")
    images = tiny["test"].images.float() / 255
    with torch.no_grad():
        assert torch.equal(loaded(images), result.model(images))
    assert config["loss"] == "differential"


def test_checkpoint_from_other_params_other_data_or_with_nan_weights_is_refused(tiny, tmp_path):
    params, result = _fit(tiny, "cross_entropy", epochs=3)
    path = tmp_path / "model.safetensors"
    path.write_bytes(checkpoint(result.model, model_config(params), "abc"))
    other = parse_params({"loss": "differential", "train": {"epochs": 1, "batch_size": 16}})
    with pytest.raises(CheckpointError, match="trained with other parameters .*loss: file has "
                                              "'cross_entropy', params.yaml has 'differential'"):
        load_checkpoint(path, model_config(other))
    with pytest.raises(CheckpointError, match="model.safetensors was trained on other data "
                                              r"\(data hash abc\.\.\., the prepared data has def"):
        load_checkpoint(path, model_config(params), data_sha256="def")
    with torch.no_grad():
        result.model.phi[0].weight[0, 0, 0, 0] = float("nan")
    path.write_bytes(checkpoint(result.model, model_config(params), "abc"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: non-finite weights in phi.0.weight"):
        load_checkpoint(path)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a difftrain checkpoint"):
        load_checkpoint(tmp_path / "junk.safetensors")
    torch.save({"state_dict": result.model.state_dict()}, tmp_path / "pickled.safetensors")
    with pytest.raises(CheckpointError, match="pickled.safetensors: not a difftrain checkpoint"):
        load_checkpoint(tmp_path / "pickled.safetensors")  # a pickle is never unpickled


def test_divergence_is_reported(tiny):
    with pytest.raises(DivergenceError, match=r"loss became (nan|inf) .*train.lr=1e\+30"):
        _fit(tiny, "differential", epochs=3, lr=1e30)


def test_missing_or_mismatched_pair_index_is_refused(tiny):
    params = parse_params({"loss": "differential", "pairs": {"block_size": 8, "fraction": 1 / 3},
                           "train": {"epochs": 3}})
    labels = tiny["train"].labels
    with pytest.raises(DataError, match="needs the pair index"):
        fit(params, tiny["train"], tiny["test"], None, progress=False)
    stale = pairs.build(labels.flip(0), params.pairs, 3)  # other labels, same counts
    with pytest.raises(DataError, match="built for other training data"):
        fit(params, tiny["train"], tiny["test"], stale, progress=False)
    short = pairs.build(labels, params.pairs, 2)
    with pytest.raises(DataError, match="holds 2 epochs but train.epochs is 3"):
        fit(params, tiny["train"], tiny["test"], short, progress=False)


def test_stages_prepare_pairs_train_write_their_outputs(workdir):
    write_params(workdir, "loss: differential\ndevice: cpu\npairs:\n  block_size: 8\n  fraction: 0.5\n"
                          "train:\n  epochs: 2\n  batch_size: 16\n")
    for stage in ("prepare", "pairs", "train"):
        result = run_stage(stage, workdir)
        assert result.returncode == 0, result.stderr
    metrics = json.loads((workdir / "metrics" / "train.json").read_text())
    assert metrics["loss"] == "differential" and metrics["epochs"] == 2
    assert 0 <= metrics["test_accuracy"] <= 1
    assert (workdir / "models" / "model.safetensors").is_file()
    live = workdir / "dvclive" / "train" / "plots" / "metrics"
    assert (live / "loss.tsv").read_text().count("\n") == 3  # header + one row per epoch
    leftovers = [p for p in workdir.rglob(".*.tmp")]
    assert leftovers == []


def test_cross_entropy_needs_no_pair_index_so_the_pairs_stage_checks_nothing(workdir):
    # 10 epochs cannot cover pairs.fraction 0.25 (nor 1e-9 with 4 blocks); CE must not care
    write_params(workdir, "loss: cross_entropy\ndevice: cpu\npairs:\n  block_size: 4\n"
                          "  fraction: 1.0e-9\ntrain:\n  epochs: 1\n  batch_size: 16\n")
    for stage in ("prepare", "pairs", "train"):
        result = run_stage(stage, workdir)
        assert result.returncode == 0, result.stderr
    assert json.loads((workdir / "metrics" / "pairs.json").read_text())["needed"] is False
    with pytest.raises(DataError, match="was written for loss 'cross_entropy', which needs no "
                                        "pair index; rerun the pairs stage"):
        pairs.load(workdir / "data" / "pairs" / "index.safetensors")
