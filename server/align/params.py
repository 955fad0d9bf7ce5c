"""Parameters of the fit methods: pydantic models with ranges and upper bounds (the method table
in :mod:`convergent.server.align.methods` names which model each method takes).

Parameters arrive from a protobuf ``Struct``, so every number is a double: integers are
accepted as integral doubles (``3.0``), never as booleans or strings. Every parameter has an
upper bound (a Lasso path of 1e8 alphas once tried to allocate 11.9 TiB). Each type carries a
:class:`Range`: the words the docs table shows, and the same range as JSON Schema keywords, which
``model_json_schema()`` takes from it (the ``ListMethods`` catalogue, :func:`convergent.server.align.catalogue.catalogue`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

SEED_MAX = 2**32 - 1
ALPHA_MAX = 1e12
LIST_MAX = 100          # alphas given as a list
N_ALPHAS_MAX = 200      # generated Lasso path length
MAX_ITER_MAX = 100_000  # coordinate-descent sweeps per alpha
COMPONENTS_MAX = 8192   # CCA / shared-space components, spectral groups (also <= the dims at fit time)
HIDDEN_MAX, DEPTH_MAX, EPOCHS_MAX, PATIENCE_MAX = 4096, 4, 5000, 1000  # the mlp map
TRAIN_PAIRS_MIN, TRAIN_PAIRS_MAX = 100, 200_000
MLP_AUTO_MIN_ANCHORS = 2000  # auto tries the mlp map by default from this many pairs on


# ---------------------------------------------------------------- parameter types
def _fail(message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("convergent_parameter", message, ctx)


def _number(value: object) -> float | None:
    """``value`` as a finite float, None for anything else (booleans and strings included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _whole_number(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        x = _number(value)
        if x is None or not x.is_integer() or not low <= x <= high:
            raise _fail("must be an integer in {low}..{high}", low=low, high=high)
        return int(x)

    return check


def _positive_number(value: object) -> float:
    x = _number(value)
    if x is None or not 0 < x <= ALPHA_MAX:
        raise _fail("must be a number in (0, {high}]", high=f"{ALPHA_MAX:g}")
    return x


def _positive_numbers(value: object) -> list[float]:
    if not isinstance(value, list) or not 1 <= len(value) <= LIST_MAX:
        raise _fail("must be a list of 1..{n} numbers in (0, {high}], got {shown}", n=LIST_MAX, high=f"{ALPHA_MAX:g}",
                    shown=f"a list of {len(value)}" if isinstance(value, list) else repr(value))
    numbers = [_number(v) for v in value]
    if not all(x is not None and 0 < x <= ALPHA_MAX for x in numbers):
        raise _fail("must be a list of numbers in (0, {high}]", high=f"{ALPHA_MAX:g}")
    return [float(x) for x in numbers if x is not None]


def _fraction(value: object) -> float:
    x = _number(value)
    if x is None or not 0 <= x < 1:
        raise _fail("must be a number in [0, 1)")
    return x


def _learning_rate(value: object) -> float:
    x = _number(value)
    if x is None or not 0 < x <= 1:
        raise _fail("must be a number in (0, 1]")
    return x


def _device(value: object) -> str:
    if value not in ("cpu", "cuda", "auto"):
        raise _fail("must be one of 'cpu', 'cuda', 'auto'")
    return str(value)


def _space_method(value: object) -> str:
    if value not in ("gcca", "contrastive"):
        raise _fail("must be 'gcca' or 'contrastive'")
    return str(value)


def _temperature(value: object) -> float:
    x = _number(value)
    if x is None or not 0.001 <= x <= 10:
        raise _fail("must be a number in [0.001, 10]")
    return x


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _fail("must be a boolean")
    return value


def _candidate_names(value: object) -> list[str]:
    from convergent.server.align.methods import CANDIDATES

    if (not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value)
            or len(value) > len(CANDIDATES)):
        raise _fail("must be a non-empty list of candidate names")
    unknown = sorted(set(value) - set(CANDIDATES))
    if unknown:
        raise _fail("has unknown candidates {unknown}; choose from {known}", unknown=unknown, known=sorted(CANDIDATES))
    if len(set(value)) != len(value):
        raise _fail("must name each candidate at most once")
    return list(value)


def _candidates_schema() -> dict[str, Any]:
    from convergent.server.align.methods import CANDIDATES

    return {"type": "array", "items": {"type": "string", "enum": list(CANDIDATES)}, "minItems": 1,
            "maxItems": len(CANDIDATES), "uniqueItems": True}


@dataclass(frozen=True)
class Range:
    """What a parameter accepts, from the same numbers as its validator: in words (``text``: the
    docs table) and as JSON Schema keywords (``schema``, or a function returning them: the type and
    bounds of a given value, which pydantic's ``model_json_schema()`` takes whole; a default of
    None, "chosen from the data", is never sent, so it is no JSON type)."""

    text: str
    schema: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)

    def json_schema(self) -> dict[str, Any]:
        return dict(self.schema() if callable(self.schema) else self.schema)

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        return self.json_schema()

    @classmethod
    def integer(cls, low: int, high: int) -> Range:
        return cls(f"integer in {low}..{high}", {"type": "integer", "minimum": low, "maximum": high})

    @classmethod
    def number(cls, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Range:
        schema = {"type": "number", "exclusiveMinimum" if low_open else "minimum": low,
                  "exclusiveMaximum" if high_open else "maximum": high}
        return cls(f"number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", schema)

    @classmethod
    def numbers(cls, most: int, item: Range) -> Range:
        return cls(f"list of 1..{most} numbers{item.text.removeprefix('number')}",
                   {"type": "array", "items": item.json_schema(), "minItems": 1, "maxItems": most})

    @classmethod
    def choice(cls, *values: str) -> Range:
        return cls(" / ".join(values), {"type": "string", "enum": list(values)})


Seed = Annotated[int, BeforeValidator(_whole_number(0, SEED_MAX)), Range.integer(0, SEED_MAX)]
Components = Annotated[int, BeforeValidator(_whole_number(1, COMPONENTS_MAX)), Range.integer(1, COMPONENTS_MAX)]
# Parameters whose default (None) means "chosen from the data": a given value is never None.
OptionalComponents = Annotated[int | None, BeforeValidator(_whole_number(1, COMPONENTS_MAX)), Range.integer(1, COMPONENTS_MAX)]
PathLength = Annotated[int, BeforeValidator(_whole_number(1, N_ALPHAS_MAX)), Range.integer(1, N_ALPHAS_MAX)]
Sweeps = Annotated[int, BeforeValidator(_whole_number(1, MAX_ITER_MAX)), Range.integer(1, MAX_ITER_MAX)]
OptionalPositive = Annotated[float | None, BeforeValidator(_positive_number), Range.number(0, ALPHA_MAX, low_open=True)]
OptionalPositives = Annotated[list[float] | None, BeforeValidator(_positive_numbers),
                              Range.numbers(LIST_MAX, Range.number(0, ALPHA_MAX, low_open=True))]
Fraction = Annotated[float, BeforeValidator(_fraction), Range.number(0, 1, high_open=True)]
Flag = Annotated[bool, BeforeValidator(_boolean), Range("true / false", {"type": "boolean"})]
Hidden = Annotated[int, BeforeValidator(_whole_number(1, HIDDEN_MAX)), Range.integer(1, HIDDEN_MAX)]
Depth = Annotated[int, BeforeValidator(_whole_number(1, DEPTH_MAX)), Range.integer(1, DEPTH_MAX)]
Epochs = Annotated[int, BeforeValidator(_whole_number(1, EPOCHS_MAX)), Range.integer(1, EPOCHS_MAX)]
Patience = Annotated[int, BeforeValidator(_whole_number(1, PATIENCE_MAX)), Range.integer(1, PATIENCE_MAX)]
TrainPairs = Annotated[int, BeforeValidator(_whole_number(TRAIN_PAIRS_MIN, TRAIN_PAIRS_MAX)),
                       Range.integer(TRAIN_PAIRS_MIN, TRAIN_PAIRS_MAX)]
LearningRate = Annotated[float, BeforeValidator(_learning_rate), Range.number(0, 1, low_open=True)]
Device = Annotated[str, BeforeValidator(_device), Range.choice("cpu", "cuda", "auto")]
SpaceMethod = Annotated[str, BeforeValidator(_space_method), Range.choice("gcca", "contrastive")]
Temperature = Annotated[float, BeforeValidator(_temperature), Range.number(0.001, 10)]
HiddenOrNone = Annotated[int, BeforeValidator(_whole_number(0, HIDDEN_MAX)), Range.integer(0, HIDDEN_MAX)]
OptionalCandidateNames = Annotated[list[str] | None, BeforeValidator(_candidate_names),
                                   Range("list of candidate names, each at most once", _candidates_schema)]

SEED_HELP = "seed of the held-out split"


class Params(BaseModel):
    """Hyper-parameters of one method; only the keys a request sets are used (``exclude_unset``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: Seed = Field(0, description=SEED_HELP)


class _OnePenaltyOrPath(Params):
    """Base of the methods that take one penalty or a list of them to choose from."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["alpha", "alphas"]}})  # as _alpha_or_alphas
    alpha: OptionalPositive = None
    alphas: OptionalPositives = None

    @model_validator(mode="after")
    def _alpha_or_alphas(self) -> "_OnePenaltyOrPath":
        if {"alpha", "alphas"} <= self.model_fields_set:
            raise _fail("give either 'alpha' or 'alphas', not both")
        return self


class RidgeParams(_OnePenaltyOrPath):
    alpha: OptionalPositive = Field(None, description="one penalty, on scikit-learn's `Ridge` scale")
    alphas: OptionalPositives = Field(None, description="penalties to choose from by generalised cross-validation "
                                                       "(default 13 values scaled to the data)")
    fit_intercept: Flag = Field(True, description="fit the offset b")


class ProcrustesParams(Params):
    scale: Flag = Field(True, description="fit a global scale s")
    fit_intercept: Flag = Field(True, description="fit the offset b (else nothing is centred)")


class CCAParams(Params):
    n_components: OptionalComponents = Field(None, description="canonical dimensions k (default min(d_x, d_y, n − 1); "
                                                               "at most the models' dimensions)")
    reg: Fraction = Field(1e-3, description="shrinkage of both covariances towards the identity")


class UnitMatchingParams(Params):
    sign: Flag = Field(True, description="match the absolute correlation (a unit may be matched with a flipped sign)")
    scale: Flag = Field(True, description="a least-squares slope per matched unit (else the ratio of standard deviations)")


class SparseParams(_OnePenaltyOrPath):
    alpha: OptionalPositive = Field(None, description="one L1 penalty, on the correlation scale")
    alphas: OptionalPositives = Field(None, description="penalties to choose from on the held-out anchors")
    n_alphas: PathLength = Field(12, description="length of the generated penalty path")
    max_iter: Sweeps = Field(1000, description="coordinate-descent sweeps per penalty")


class SpectralParams(Params):
    n_groups: OptionalComponents = Field(None, description="groups of units (default: the eigengap's choice)")
    reg: Fraction = Field(1e-3, description="shrinkage of the correlation estimate")


class MLPParams(Params):
    hidden: Hidden = Field(256, description="width of each hidden layer of the residual g")
    depth: Depth = Field(1, description="hidden layers of g")
    epochs: Epochs = Field(300, description="most passes over the training pairs")
    lr: LearningRate = Field(3e-3, description="AdamW learning rate")
    weight_decay: Fraction = Field(1e-4, description="AdamW decoupled weight decay")
    patience: Patience = Field(30, description="epochs without a better validation error before stopping")
    max_train_pairs: TrainPairs = Field(20_000, description="g is trained on a seeded sample of at most this many "
                                                            "fitting pairs (the linear part uses all)")
    device: Device = Field("cpu", description="where g is trained (cuda: a GPU must be present)")


class AutoParams(Params):
    candidates: OptionalCandidateNames = Field(
        None, description="the candidates to choose among (default: the `auto` default ones)")


class SharedParams(Params):
    """``fit_shared_space``: MAXVAR generalised CCA of N models (method "gcca", the default)."""

    method: SpaceMethod = Field("gcca", description="gcca (from the pair statistics) or contrastive (learned heads)")
    n_components: OptionalComponents = Field(None, description="dimensions of the shared space")
    reg: Fraction = Field(1e-3, description="shrinkage of each model's covariance")


class ContrastiveSharedParams(Params):
    """``fit_shared_space(method="contrastive")``: per-model heads trained by multi-positive InfoNCE."""

    method: SpaceMethod = Field("gcca", description="contrastive here")
    n_components: Components = Field(64, description="dimensions of the consensus space")
    temperature: Temperature = Field(0.1, description="InfoNCE temperature")
    epochs: Epochs = Field(200, description="passes over the anchors")
    lr: LearningRate = Field(3e-3, description="AdamW learning rate")
    weight_decay: Fraction = Field(1e-4, description="AdamW decoupled weight decay")
    hidden: HiddenOrNone = Field(0, description="hidden ReLU units of each head (0: linear heads)")


class CooperativeParams(Params):
    """``fit_cooperative``: the softmax head on a shared space's coordinates."""

    reg: Fraction = Field(1e-3, description="L2 penalty on the head's weights")
    max_iter: Sweeps = Field(500, description="L-BFGS iterations")
