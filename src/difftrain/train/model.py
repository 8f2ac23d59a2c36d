"""The paper's 4-layer CNN and its checkpoint format.

``Net(x) = w . phi(x) + b``: ``phi`` is the 84-d penultimate layer (conv 6@5x5, pool, conv 16@5x5,
pool, fc 120, fc 84, ReLU after each), ``w`` a linear head without bias, and ``b`` a separate
scalar: trained by cross-entropy, but for the differential losses frozen during training and set
afterwards by eq. (5). Inputs are images in [0, 1]; per-channel standardisation is a buffer of the
model, so attacks work in pixel space.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from difftrain.core.errors import CheckpointError
from difftrain.core.keys import flatten
from difftrain.core.io import read_tensors, tensor_bytes, written_by
from difftrain.core.params import Params

FEATURE_DIM = 84


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)``, bit for bit, faster where no gradient is taken.

    PyTorch's CPU max-pool kernel takes about 9 ms for a batch of 500 of the first layer's
    maps (6 x 28 x 28) whether or not indices are needed; the elementwise maximum of the four
    strided quarter-maps gives the same values in under 2 ms (``benchmarks/speed.py``). The
    attacks' forward-only passes (Square, success checks) and every evaluation take this path.
    When a gradient is needed the built-in kernel runs, so the gradient is routed to the same
    element (the first maximum in row-major order) as before.
    """

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and h.requires_grad) or h.shape[-1] % 2 or h.shape[-2] % 2:
            return F.max_pool2d(h, 2)
        return torch.maximum(torch.maximum(h[..., 0::2, 0::2], h[..., 0::2, 1::2]),
                             torch.maximum(h[..., 1::2, 0::2], h[..., 1::2, 1::2]))


def _block(layer: nn.Module, width: int, batchnorm: bool, norm: type,
           activation: type = nn.ReLU) -> list[nn.Module]:
    return [layer, *([norm(width)] if batchnorm else []), activation()]


FEATURE_ACTIVATIONS = {"relu": nn.ReLU, "linear": nn.Identity}
HIDDEN_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class Net(nn.Module):
    """The paper's network, phi = act(W h(x) + c) with h the layers up to fc 120.

    ``features_activation``: ``act``, ReLU in Fig. 2's network, none ("linear") for Proposition 1,
    whose features end with the linear layer; ``hidden_activation``: the end of h (fc 120's
    activation), tanh for Appendix B's squashing variant (with linear features); ``features_init``
    "zero" starts W at 0 (Proposition 1's W[0] = 0), c is 0 either way."""

    def __init__(self, batchnorm: bool = False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                 features_activation: str = "relu", features_init: str = "he",
                 hidden_activation: str = "relu"):
        super().__init__()
        self.features_init = features_init
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.phi = nn.Sequential(
            *_block(nn.Conv2d(3, 6, 5), 6, batchnorm, nn.BatchNorm2d),
            MaxPool2x2(),
            *_block(nn.Conv2d(6, 16, 5), 16, batchnorm, nn.BatchNorm2d),
            MaxPool2x2(),
            nn.Flatten(),
            *_block(nn.Linear(16 * 5 * 5, 120), 120, batchnorm, nn.BatchNorm1d,
                    HIDDEN_ACTIVATIONS[hidden_activation]),
            *_block(nn.Linear(120, FEATURE_DIM), FEATURE_DIM, batchnorm, nn.BatchNorm1d,
                    FEATURE_ACTIVATIONS[features_activation]),
        )
        self.head = nn.Linear(FEATURE_DIM, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation for every weight, zeros for every bias."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.features_init == "zero":
            nn.init.zeros_(self.features_layer().weight)  # its bias is zero already
        nn.init.zeros_(self.bias)

    def features_layer(self) -> nn.Linear:
        """phi's last linear layer, W of Proposition 1."""
        return [m for m in self.phi if isinstance(m, nn.Linear)][-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x), the 84-d penultimate features, for images in [0, 1]."""
        return self.phi((x - self.mean) / self.std)

    def raw_score(self, x: torch.Tensor) -> torch.Tensor:
        """w . phi(x), the score without bias: what the differential losses compare."""
        return self.head(self.features(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The score s(x) = w . phi(x) + b; s >= 0 predicts class x (``labels.predict``)."""
        return self.raw_score(x) + self.bias


class TwoLogits(nn.Module):
    """The binary classifier s(x) as two logits (s/2, -s/2), the form attack libraries expect:
    softmax gives sigmoid(s), argmax gives class x for s >= 0 as ``labels.predict`` does.
    Counts the images it evaluates (the attacks' cost).

    It freezes the network's weights (``requires_grad`` off): attacks need the input's gradient
    only, and libraries that call ``loss.backward()`` (eagerpy under foolbox, FAB) would also
    compute and accumulate every weight's gradient on every step, a fifth of the time of a pass
    for nothing (the input gradient is the same, bit for bit; ``benchmarks/speed.py``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False)
        self.images_evaluated = 0
        self.eval()  # attacks see the deployed model: batch norm in inference mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_evaluated += len(x)
        s = self.net(x)
        return torch.stack([s, -s], dim=1) / 2


def net_options(model: dict) -> dict:
    """``Net``'s keyword arguments from a ``model`` parameter section (a checkpoint's record of
    one made before the activations and features_init existed means relu and he)."""
    return {"batchnorm": model["batchnorm"],
            "features_activation": model.get("features_activation", "relu"),
            "hidden_activation": model.get("hidden_activation", "relu"),
            "features_init": model.get("features_init", "he")}


def model_config(params: Params) -> dict:
    """The checkpoint's record of what built the model: the parameter sections that determine
    its weights. Later stages check theirs against it (``load_checkpoint``)."""
    return {name: params.section(name) for name in ("seed", "loss", "data", "pairs", "model", "train")}


CHECKPOINT = "models/model.safetensors"
CHECKPOINT_FORMAT = "difftrain-checkpoint-2"


def checkpoint(model: Net, config: dict, data_sha256: str) -> bytes:
    """The file the train stage writes: the weights (safetensors), the parameters that built
    them and the content hash of the prepared data they were trained on (metadata)."""
    return tensor_bytes(model.state_dict(), {"format": CHECKPOINT_FORMAT,
                                             "config": json.dumps(config, sort_keys=True),
                                             "data_sha256": data_sha256})


def load_checkpoint(path: str | Path = CHECKPOINT, expected_config: dict | None = None,
                    map_location: str | torch.device = "cpu",
                    data_sha256: str | None = None,
                    sample: torch.Tensor | None = None) -> tuple[Net, dict]:
    """(model in eval mode, config) from a checkpoint, refusing one that would mix runs.

    Refused: a file from other parameters (``expected_config``, e.g. the current params.yaml's
    ``loss``, ``model``, ``train``, ``data``), one trained on other data than the prepared data
    (``data_sha256``, e.g. after the source changed and stages were run by hand), and one whose
    weights are not all finite (a diverged or damaged model would give meaningless metrics),
    and, given ``sample`` images, one whose scores on them are not finite or do not vary
    (``check_scores``).
    """
    state, metadata = read_tensors(path, "difftrain checkpoint", CheckpointError)
    if not isinstance(metadata, dict) or metadata.get("format") != CHECKPOINT_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else metadata
        raise CheckpointError(f"{path}: not a difftrain checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r}){written_by(path)}")
    config = _config(metadata, path)
    if expected_config is not None:
        have, want = flatten(config), flatten(expected_config)
        diff = sorted(k for k in want if have.get(k) != want[k])
        if diff:
            detail = "; ".join(f"{k}: file has {have.get(k)!r}, params.yaml has {want[k]!r}"
                               for k in diff)
            raise CheckpointError(f"{path} was trained with other parameters ({detail}); "
                                  f"rerun the train stage (dvc repro)")
    if data_sha256 is not None and metadata.get("data_sha256") != data_sha256:
        raise CheckpointError(f"{path} was trained on other data (data hash "
                              f"{str(metadata.get('data_sha256'))[:12]}..., the prepared data has "
                              f"{data_sha256[:12]}...); rerun the train stage (dvc repro train)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite weights in {', '.join(bad)}; the model diverged "
                              f"or the file is damaged; rerun the train stage (dvc repro train)")
    if "std" in state and not (state["std"] > 0).all():
        raise CheckpointError(f"{path}: the input standardisation 'std' must be positive; got "
                              f"{state['std'].flatten().tolist()}; the file is damaged; rerun the "
                              f"train stage (dvc repro train)")
    model = Net(**net_options(config["model"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the network ({exc})") from None
    model = model.to(map_location).eval()
    if sample is not None:
        check_scores(model, sample, path)
    return model, config


def _config(metadata: dict, path) -> dict:
    """The checkpoint's parameter record, or one line naming the file when it is damaged."""
    try:
        config = json.loads(metadata["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged metadata: 'config' is missing or not JSON "
                              f"({type(exc).__name__}){written_by(path)}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) \
            or not isinstance(config["model"].get("batchnorm"), bool):
        raise CheckpointError(f"{path}: damaged metadata: 'config' must be an object holding "
                              f"model.batchnorm; got {str(config)[:80]!r}{written_by(path)}")
    return config


@torch.no_grad()
def extract_features(model: Net, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """phi(x) of uint8 images in eval mode, batched on the model's device, as float64 on the
    CPU: what the rank is computed from, during training and in the features stage."""
    from difftrain.data.cifar import to_float

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model.features(to_float(images[i:i + batch].to(device))).double().cpu()
                     for i in range(0, len(images), batch)])
    model.train(was_training)
    return out


SCORE_SAMPLE = 256  # images whose scores check a loaded model


@torch.no_grad()
def check_scores(model: Net, images: torch.Tensor, path) -> None:
    """Refuse a model whose scores on real images are not finite or do not vary.

    Finite weights are not enough: a 3e38 weight overflows and a zero ``std`` divides by zero,
    and a model whose score is the same for every image would still get accuracies and "robust"
    accuracies (0.500 at every radius) that mean nothing."""
    from difftrain.data.cifar import to_float

    device = next(model.parameters()).device
    scores = model(to_float(images[:SCORE_SAMPLE]).to(device))
    if not torch.isfinite(scores).all():
        example = scores[~torch.isfinite(scores)][0].item()
        raise CheckpointError(f"{path}: the model's scores on the prepared training images are "
                              f"not finite (e.g. {example}): an overflowing weight or a damaged "
                              f"file; rerun the train stage (dvc repro train)")
    if len(scores) > 1 and scores.max() == scores.min():
        raise CheckpointError(f"{path}: the model gives every one of {len(scores)} prepared "
                              f"training images the same score ({scores[0].item():.6g}), so no "
                              f"accuracy measured on it means anything; rerun the train stage "
                              f"(dvc repro train)")
