"""Training by cross-entropy or by the differential losses, with whole splits held on the device.

No DataLoader: the uint8 split lives on the device and a step indexes it, which removes the
per-image Python work a DataLoader does (see benchmarks/train_throughput.py for the ratio).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from difftrain.train import adversarial
from difftrain.data import pairs
from difftrain.data.cifar import Split, to_float
from difftrain.core.errors import DataError, DivergenceError
from difftrain.core.labels import accuracy
from difftrain.train.model import Net, extract_features, net_options
from difftrain.train.objectives import OBJECTIVES, Objective
from difftrain.data.pairs import PairIndex
from difftrain.core import spectrum
from difftrain.core.params import AdversarialParams, Params
from difftrain.core.runtime import resolve_device, seed_everything

# Evaluation batch: 512 stays in cache (4096 ran 1.6x slower); on the real training split the
# scores are the same, bit for bit, at both (benchmarks/speed.py checks it)
EVAL_BATCH = 512
RANK_TOL = 1e-3  # the numerical rank's tolerance in the rank curve (features.rank_tol's default)


@dataclass
class EpochLog:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    score_gap: float
    # the training features' rank (``spectrum.rank_metrics``), every ``train.rank_every`` epochs
    components_90: int | None = None
    components_95: int | None = None
    components_99: int | None = None
    effective_rank: float | None = None


@dataclass
class TrainResult:
    model: Net
    metrics: dict
    history: list[EpochLog] = field(default_factory=list)


@torch.no_grad()
def raw_scores(model: Net, images: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
    """w . phi(x) for uint8 images, batched, in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model.raw_score(to_float(images[i:i + batch].to(device)))
                     for i in range(0, len(images), batch)])
    model.train(was_training)
    return out


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 training images in [0, 1], for the model's input layer."""
    x = images.double().div(255)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def make_optimizer(model: Net, params: Params, objective: Objective) -> torch.optim.Optimizer:
    objective.freeze_bias(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    t = params.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.Adam(trainable, lr=t.lr, weight_decay=t.weight_decay)


def _steps(objective: Objective, batch_size: int, n: int, index: PairIndex | None, epoch: int,
           generator: torch.Generator):
    """Positions of one epoch's steps: a shuffled batch, or a class-x block then a class-y block."""
    if not objective.pairwise:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            yield order[i:i + batch_size]
    else:
        for a, b in index.rounds[epoch].tolist():
            yield torch.cat([index.block(0, a), index.block(1, b)])


def full_batch_step(model: Net, optimizer: torch.optim.Optimizer, objective: Objective,
                    images: torch.Tensor, labels: torch.Tensor, chunk_size: int,
                    adversary: AdversarialParams | None = None) -> torch.Tensor:
    """One step of gradient descent on the mean loss over all ``images`` (the paper's "gradient
    method"): the loss of each chunk of ``chunk_size`` images, weighted by its share of the
    images, is backpropagated in turn, so the summed gradient is the full batch's (up to float
    rounding) while memory holds one chunk's graph. With batch norm the statistics are each
    chunk's. Returns the full-batch loss."""
    model.train()
    n, total = len(labels), torch.zeros((), device=images.device)
    optimizer.zero_grad(set_to_none=True)
    for i in range(0, n, chunk_size):
        inputs, targets = to_float(images[i:i + chunk_size]), labels[i:i + chunk_size]
        if adversary is not None and adversary.eps > 0:
            inputs = adversarial.perturb(model, inputs, targets, adversary)
        loss = objective.batch_loss(model, inputs, targets) * (len(targets) / n)
        loss.backward()
        total += loss.detach()
    optimizer.step()
    return total


def train_epoch(model: Net, optimizer: torch.optim.Optimizer, objective: Objective,
                batch_size: int | str, images: torch.Tensor, labels: torch.Tensor,
                index: PairIndex | None, epoch: int, generator: torch.Generator,
                adversary: AdversarialParams | None = None, chunk_size: int = 1000
                ) -> torch.Tensor:
    """One epoch of optimisation on device-resident uint8 images; returns the mean step loss.

    ``batch_size`` "full": one full-batch step (``full_batch_step``). With an ``adversary``
    (eps > 0) every step trains on the PGD perturbation of its images."""
    if batch_size == "full":
        return full_batch_step(model, optimizer, objective, images, labels, chunk_size, adversary)
    model.train()
    device = images.device
    total, steps = torch.zeros((), device=device), 0
    for positions in _steps(objective, batch_size, len(labels), index, epoch, generator):
        positions = positions.to(device)
        inputs, targets = to_float(images[positions]), labels[positions]
        if adversary is not None and adversary.eps > 0:
            inputs = adversarial.perturb(model, inputs, targets, adversary)
        loss = objective.batch_loss(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        steps += 1
    return total / steps


def check_batches(params: Params, n: int) -> None:
    """Batch norm in training mode needs two images a batch: a last batch of one would fail
    deep in training (and a batch of one normalises every feature to 0), so refuse it first."""
    size, name = ((params.train.chunk_size, "train.chunk_size") if params.train.batch_size == "full"
                  else (params.train.batch_size, "train.batch_size"))
    if size == 1 or n % size == 1:
        raise DataError(f"{name} {size} leaves a batch of one image of the {n} training images, "
                        f"which batch norm (model.batchnorm) cannot normalise; choose another size")


def fit(params: Params, train: Split, test: Split, index: PairIndex | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None, progress: bool = True) -> TrainResult:
    """Train the paper's network on ``train`` by ``params.loss``; evaluate on ``test`` each epoch."""
    objective = OBJECTIVES[params.loss]
    if objective.pairwise:
        pairs.check(index, train.labels, params.train.epochs, params.loss)
    elif params.model.batchnorm:
        check_batches(params, len(train.labels))
    device = resolve_device(params.device)
    seed_everything(params.seed)
    mean, std = channel_stats(train.images)
    model = Net(mean=mean, std=std, **net_options(params.model.model_dump())).to(device)
    optimizer = make_optimizer(model, params, objective)
    generator = torch.Generator().manual_seed(params.seed)
    images, labels = train.images.to(device), train.labels.to(device)
    test_images, test_labels = test.images.to(device), test.labels.to(device)

    history, start = [], time.perf_counter()
    bar = tqdm(range(params.train.epochs), desc=f"train {params.loss}", disable=not progress,
               unit="epoch")
    for epoch in bar:
        mean_loss = float(train_epoch(model, optimizer, objective, params.train.batch_size,
                                      images, labels, index, epoch, generator,
                                      params.train.adversarial, params.train.chunk_size))
        if not torch.isfinite(torch.tensor(mean_loss)):
            raise DivergenceError(f"loss became {mean_loss} in epoch {epoch + 1} "
                                  f"(train.lr={params.train.lr}); lower train.lr")
        raw = raw_scores(model, images)
        bias_info = objective.settle_bias(model, raw, labels)
        log = EpochLog(epoch + 1, mean_loss, accuracy(raw + bias_info["bias"], labels),
                       accuracy(raw_scores(model, test_images) + bias_info["bias"], test_labels),
                       bias_info["score_gap"])
        every = params.train.rank_every
        if every and ((epoch + 1) % every == 0 or epoch + 1 == params.train.epochs):
            ranks, _ = spectrum.rank_metrics(extract_features(model, images), RANK_TOL)
            for key in ("components_90", "components_95", "components_99", "effective_rank"):
                setattr(log, key, ranks[key])
        history.append(log)
        bar.set_postfix(loss=f"{log.loss:.4f}", train=f"{log.train_accuracy:.4f}",
                        test=f"{log.test_accuracy:.4f}")
        if on_epoch is not None:
            on_epoch(log)
    wall = time.perf_counter() - start

    last = history[-1]
    metrics = {
        "loss": params.loss,
        "train_accuracy": last.train_accuracy,
        "test_accuracy": last.test_accuracy,
        "final_loss": last.loss,
        **bias_info,
        "epochs": params.train.epochs,
        "wall_seconds": round(wall, 3),
        "device": device.type,
    }
    if objective.pairwise:
        metrics["pairs_fraction_seen"] = index.coverage()["fraction"]
    return TrainResult(model.cpu().eval(), metrics, history)

