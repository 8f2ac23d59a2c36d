"""Typed, validated parameters: the one place that knows what ``params.yaml`` may hold.

Every stage calls :func:`load_params` first, so a typo or an out-of-range value stops the run
with one message naming the key, the value and what is allowed, before any work starts.
pydantic does the type and range checking; this module only words its errors for users.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import (BaseModel, BeforeValidator, PlainValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from difftrain.core.errors import ParamsError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# The training objectives' names. Config is the bottom layer, so it names them and
# train/objectives.py implements exactly these (it refuses to import otherwise).
LOSSES = ("cross_entropy", "differential", "differential_logistic")

FLOAT32_MAX = 3.4e38
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's seeds are 32-bit


class _Section(BaseModel):
    # strict: "0.1" is not a float, 1.0 is not an int; forbid: unknown keys are typos.
    # allow_inf_nan=False: every float must be finite (an infinite radius or step size would
    # run, then write numbers JSON cannot hold)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataParams(_Section):
    root: str = "data/raw"
    classes: tuple[str, str] = ("airplane", "horse")
    n_train_per_class: Optional[PositiveInt] = None
    n_test_per_class: Optional[PositiveInt] = None
    seed: Seed = 0

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError("must be a list of two CIFAR-10 class names")
        for name in value:
            if name not in CIFAR10_CLASSES:
                raise ValueError(
                    f"{name!r} is not a CIFAR-10 class; allowed: {', '.join(CIFAR10_CLASSES)}"
                )
        if value[0] == value[1]:
            raise ValueError("must name two different classes")
        return tuple(value)


class PairsParams(_Section):
    strategy: Literal["uniform"] = "uniform"
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25
    block_size: PositiveInt = 64
    seed: Seed = 0


class ModelParams(_Section):
    batchnorm: bool = False
    features_activation: Literal["relu", "linear"] = "relu"
    hidden_activation: Literal["relu", "tanh"] = "relu"
    features_init: Literal["he", "zero"] = "he"

    @model_validator(mode="after")
    def _proposition_1(self):
        if self.features_init == "zero" and self.features_activation == "relu":
            raise ValueError("model.features_init zero needs model.features_activation linear "
                             "(Proposition 1): a ReLU at 0 has zero gradient, so the features "
                             "would never leave 0")
        if self.batchnorm and (self.features_activation, self.hidden_activation) != ("relu", "relu"):
            raise ValueError("model.features_activation linear and model.hidden_activation tanh "
                             "are the networks of Proposition 1 and Appendix B, without batch "
                             "norm: they take model.batchnorm false")
        return self


class AdversarialParams(_Section):
    eps: NonNegative = 0.0  # Linf radius in /255; 0 = off
    steps: PositiveInt = 7
    step_size: Annotated[float, Field(gt=0.0)] = 2.0  # in /255


def _batch_size(value):
    """A positive number of images, or "full" (one full-batch step an epoch)."""
    if value == "full" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError("must be a positive number of images, or full")


class TrainParams(_Section):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Annotated[float, Field(gt=0.0, lt=FLOAT32_MAX)] = 0.01  # the optimisers compute in float32
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    epochs: PositiveInt = 30
    batch_size: Annotated[int | str, PlainValidator(_batch_size)] = 128
    chunk_size: PositiveInt = 1000
    rank_every: Annotated[int, Field(ge=0)] = 0
    adversarial: AdversarialParams = AdversarialParams()


class FeaturesParams(_Section):
    rank_tol: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3
    svm_C: Annotated[float, Field(gt=0.0)] = 1e5
    svm_max_iter: PositiveInt = 100_000
    subspace_variance: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99


def _epsilon_grid(value: tuple[float, ...]) -> tuple[float, ...]:
    if len(value) < 2 or value[0] != 0:
        raise ValueError("must start at 0 (the clean accuracy) and hold at least one more value")
    if any(b <= a for a, b in zip(value, value[1:])):
        raise ValueError("must be strictly increasing")
    return value


def _as_tuple(value):
    """YAML gives lists; the frozen params hold tuples."""
    return tuple(value) if isinstance(value, list) else value


Grid = Annotated[tuple[NonNegative, ...], BeforeValidator(_as_tuple)]


class PGDParams(_Section):
    epsilons: Grid = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    steps: PositiveInt = 40
    rel_stepsize: Annotated[float, Field(gt=0.0)] = 0.0625
    random_start: bool = True
    restarts: PositiveInt = 1
    losses: Annotated[tuple[Literal["cross_entropy", "margin"], ...],
                      BeforeValidator(_as_tuple)] = ("cross_entropy", "margin")
    infer_identical: bool = True

    _grid = field_validator("epsilons", mode="after")(_epsilon_grid)

    @field_validator("losses", mode="after")
    @classmethod
    def _losses(cls, value):
        if not value or len(set(value)) != len(value):
            raise ValueError("must name cross_entropy and/or margin, each once")
        return value


class CWParams(_Section):
    steps: PositiveInt = 100
    binary_search_steps: PositiveInt = 5
    stepsize: Annotated[float, Field(gt=0.0)] = 0.01
    confidence: NonNegative = 0.0
    initial_const: Annotated[float, Field(gt=0.0)] = 1.0


class APGDParams(_Section):
    restarts: PositiveInt = 5
    steps: PositiveInt = 100


class SquareParams(_Section):
    queries: PositiveInt = 5000


class FABParams(_Section):
    steps: PositiveInt = 100


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class AttackParams(_Section):
    n_train: PositiveInt = 500
    n_test: PositiveInt = 500
    seed: Seed = 0
    batch_size: PositiveInt = 500
    pgd: PGDParams = PGDParams()
    # L2 radii at which both minimum-norm attacks (CW, FAB) are read off: one grid, since the L2
    # worst case is their minimum per image
    l2_epsilons: Grid = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    cw: CWParams = CWParams()
    apgd: APGDParams = APGDParams()
    square: SquareParams = SquareParams()
    fab: FABParams = FABParams()
    overstatement_tol: Fraction = 0.02
    convergence_tol: Fraction = 0.01
    l2_overstatement_tol: Annotated[float, Field(ge=0.0)] = 0.1

    _l2_grid = field_validator("l2_epsilons", mode="after")(_epsilon_grid)


CERTIFY_METHODS = ("ibp", "crown_ibp", "crown", "alpha_crown", "milp")  # cheap to tight


class CertifyParams(_Section):
    methods: Annotated[tuple[Literal[CERTIFY_METHODS], ...],
                       BeforeValidator(_as_tuple)] = ("ibp", "crown_ibp", "crown", "alpha_crown")
    crown_max_eps: NonNegative = 2.0  # /255
    crown_attempts: Annotated[int, Field(ge=0)] = 16  # per split: a count, so the metrics repeat
    crown_splits: Annotated[tuple[Literal["train", "test"], ...], BeforeValidator(_as_tuple)] = (
        "train", "test")  # where CROWN and what builds on it run; the cheap bounds run on both
    alpha_steps: Annotated[int, Field(ge=0)] = 20
    milp_max_eps: NonNegative = 1.0  # /255
    milp_attempts: Annotated[int, Field(ge=0)] = 0  # per split
    milp_nodes: Annotated[int, Field(ge=0)] = 100  # branch-and-bound nodes per attempt
    batch_size: PositiveInt = 50
    check_steps: Annotated[int, Field(ge=0)] = 50
    check_restarts: PositiveInt = 5

    @field_validator("methods", mode="after")
    @classmethod
    def _methods(cls, value):
        if list(value) != sorted(set(value), key=CERTIFY_METHODS.index):
            raise ValueError(f"must name methods of {', '.join(CERTIFY_METHODS)}, each once, "
                             f"cheap to tight (in that order)")
        if {"alpha_crown", "milp"} & set(value) and "crown" not in value:
            raise ValueError("alpha_crown and milp start from CROWN's intermediate bounds: "
                             "name crown before them")
        return value


class PlotParams(_Section):
    headline_eps_255: NonNegative = 8.0
    headline_eps_l2: NonNegative = 0.5


class TheoryParams(_Section):
    seed: Seed = 0
    n_per_class: PositiveInt = 20
    gap: Annotated[float, Field(gt=0.0)] = 1.0
    offset: NonNegative = 5.0
    steps: PositiveInt = 20_000
    lr: Annotated[float, Field(gt=0.0)] = 1.0
    sweep_d: PositiveInt = 20
    sweep_offsets: Annotated[tuple[NonNegative, ...], BeforeValidator(_as_tuple)] = (0.0, 1.0, 3.0, 10.0, 30.0)
    sweep_dims: Annotated[tuple[PositiveInt, ...], BeforeValidator(_as_tuple)] = (1, 2, 5, 10, 20)
    svm_C: Annotated[float, Field(gt=0.0)] = 1e6
    svm_max_iter: PositiveInt = 1_000_000
    mlp_hidden: PositiveInt = 32
    mlp_steps: PositiveInt = 2000
    mlp_lr: Annotated[float, Field(gt=0.0)] = 0.01

    @field_validator("sweep_dims", mode="after")
    @classmethod
    def _dims(cls, value, info):
        d = info.data.get("sweep_d", 20)
        if any(k > d for k in value):
            raise ValueError(f"subspace dimensions must not exceed theory.sweep_d={d}")
        return value


class Params(_Section):
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    loss: Literal[LOSSES] = "cross_entropy"
    data: DataParams = DataParams()
    pairs: PairsParams = PairsParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    features: FeaturesParams = FeaturesParams()
    attack: AttackParams = AttackParams()
    certify: CertifyParams = CertifyParams()
    plot: PlotParams = PlotParams()
    theory: TheoryParams = TheoryParams()

    @model_validator(mode="after")
    def _tanh_has_no_bound(self):
        if self.model.hidden_activation == "tanh" and self.certify.methods:
            raise ValueError("model.hidden_activation tanh needs certify.methods [] (the bounds "
                             "rewrite ReLU networks exactly, a tanh has no such rewrite; the "
                             "radius-0 check still runs)")
        return self

    @model_validator(mode="after")
    def _full_batch_is_pointwise(self):
        if self.train.batch_size == "full" and self.loss != "cross_entropy":
            raise ValueError(f"train.batch_size full is full-batch gradient descent on "
                             f"cross_entropy; loss {self.loss} steps over pair blocks "
                             f"(pairs.block_size), so it takes a number")
        return self

    @model_validator(mode="after")
    def _headline_on_grids(self):
        for key, grid, name in (("headline_eps_255", self.attack.pgd.epsilons, "pgd.epsilons"),
                                ("headline_eps_l2", self.attack.l2_epsilons, "l2_epsilons")):
            eps = getattr(self.plot, key)
            if eps not in grid:
                raise ValueError(f"plot.{key} is {eps:g}, which is not on attack.{name} "
                                 f"{list(grid)}; pick one of those or add it to the grid")
        return self

    def section(self, name: str) -> dict:
        """Plain dict of one section (or top-level key), for checkpoints and provenance."""
        value = getattr(self, name)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _allowed(error: dict) -> str:
    """Turn one pydantic error into 'what is allowed', in the user's words."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "literal_error":
        return "must be one of " + ctx["expected"].replace("'", "").replace(" or ", ", ")
    if kind == "extra_forbidden":
        return "is not a known parameter (a typo?)"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return error["msg"].lower()


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        if not key:  # a check across sections words its own message, keys included
            lines.append(f"{source}: {_allowed(error)}")
            continue
        # For a tuple, pydantic appends the element index; keep it (classes.1 is precise).
        lines.append(f"{source}: {key} {_allowed(error)}; got {error['input']!r}")
    return "\n".join(lines)


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of parameters; got {raw!r}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, source)) from None


def read_yaml(text: str, source: str):
    """YAML read exactly as DVC reads params.yaml: ruamel.yaml's safe loader, YAML 1.2.

    So ``seed: 010`` is 10 and ``seed: 1:00`` the string '1:00' here as in ``dvc params diff``,
    ``dvc exp show`` and the study (PyYAML's YAML 1.1 would read 8 and 60: a run would record one
    value in DVC and use another). A key given twice is an error, as in DVC; merge keys work."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe").load(text)
    except DuplicateKeyError as exc:
        key = re.search(r'duplicate key "([^"]*)"', str(exc.problem))
        raise ParamsError(f"{source}: line {exc.problem_mark.line + 1}: not valid YAML: duplicate "
                          f"key {key.group(1) if key else '?'!r}") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamsError(f"{source}:{where} not valid YAML: {problem}") from None


def read_utf8(path: Path) -> str:
    """A text file's content; bytes that are not UTF-8 are one line naming the file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ParamsError(f"{path}: line {line}: not UTF-8 text (byte "
                          f"0x{data[exc.start]:02x}); save the file as UTF-8") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: parameter file not found")
    raw = read_yaml(read_utf8(path), str(path))
    if raw is None:
        raise ParamsError(f"{path}: the file is empty; it must hold the pipeline's parameters "
                          f"(restore it with `git checkout {path}`)")
    return parse_params(raw, str(path))
