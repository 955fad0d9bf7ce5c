"""The fit methods, in one table: each method's estimator, parameters, ranges and role in ``auto``.

Everything that needs to know the methods reads :data:`METHODS`: parameter validation
(:func:`validate_params`, ``INVALID_ARGUMENT`` before any math runs), ``auto``'s candidates and
their simplicity order (:data:`CANDIDATES`), the memory estimate of a fit, the state dispatch
of a stored fit (:func:`estimator_from_state`), ``convergent methods`` and the table in
``docs/alignment.md`` (:func:`markdown_table`, checked by a test). Adding a method is one
:class:`Method` entry here, its estimator, and its name in the contract
(``convergent.wire.FIT_METHODS``, which the CLI's help shows without loading the server).

Parameters arrive from a protobuf ``Struct``, so every number is a double: integers are
accepted as integral doubles (``3.0``), never as booleans or strings. Every parameter has an
upper bound (a Lasso path of 1e8 alphas once tried to allocate 11.9 TiB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from convergent.server.align.maps import CCAMap, ProcrustesMap, RidgeMap, _AffineMap
from convergent.server.align.matching import PermutationMap, SemiMatchingMap
from convergent.server.align.mlp import ResidualMLPMap
from convergent.server.align.sparse import SparseMap
from convergent.server.align.spectral import SpectralMatching
from convergent.server.errors import InvalidInput
from convergent.wire import FIT_METHODS

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
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value)
            or len(value) > len(CANDIDATES)):
        raise _fail("must be a non-empty list of candidate names")
    unknown = sorted(set(value) - set(CANDIDATES))
    if unknown:
        raise _fail("has unknown candidates {unknown}; choose from {known}", unknown=unknown, known=sorted(CANDIDATES))
    return list(value)


@dataclass(frozen=True)
class Range:
    """What a parameter accepts, in words (the docs table and ``convergent methods`` show it)."""

    text: str


Seed = Annotated[int, BeforeValidator(_whole_number(0, SEED_MAX)), Range(f"integer in 0..{SEED_MAX}")]
Components = Annotated[int, BeforeValidator(_whole_number(1, COMPONENTS_MAX)), Range(f"integer in 1..{COMPONENTS_MAX}")]
# Parameters whose default (None) means "chosen from the data": a given value is never None.
OptionalComponents = Annotated[int | None, BeforeValidator(_whole_number(1, COMPONENTS_MAX)),
                               Range(f"integer in 1..{COMPONENTS_MAX}")]
PathLength = Annotated[int, BeforeValidator(_whole_number(1, N_ALPHAS_MAX)), Range(f"integer in 1..{N_ALPHAS_MAX}")]
Sweeps = Annotated[int, BeforeValidator(_whole_number(1, MAX_ITER_MAX)), Range(f"integer in 1..{MAX_ITER_MAX}")]
OptionalPositive = Annotated[float | None, BeforeValidator(_positive_number), Range(f"number in (0, {ALPHA_MAX:g}]")]
OptionalPositives = Annotated[list[float] | None, BeforeValidator(_positive_numbers),
                              Range(f"list of 1..{LIST_MAX} numbers in (0, {ALPHA_MAX:g}]")]
Fraction = Annotated[float, BeforeValidator(_fraction), Range("number in [0, 1)")]
Flag = Annotated[bool, BeforeValidator(_boolean), Range("true / false")]
Hidden = Annotated[int, BeforeValidator(_whole_number(1, HIDDEN_MAX)), Range(f"integer in 1..{HIDDEN_MAX}")]
Depth = Annotated[int, BeforeValidator(_whole_number(1, DEPTH_MAX)), Range(f"integer in 1..{DEPTH_MAX}")]
Epochs = Annotated[int, BeforeValidator(_whole_number(1, EPOCHS_MAX)), Range(f"integer in 1..{EPOCHS_MAX}")]
Patience = Annotated[int, BeforeValidator(_whole_number(1, PATIENCE_MAX)), Range(f"integer in 1..{PATIENCE_MAX}")]
TrainPairs = Annotated[int, BeforeValidator(_whole_number(TRAIN_PAIRS_MIN, TRAIN_PAIRS_MAX)),
                       Range(f"integer in {TRAIN_PAIRS_MIN}..{TRAIN_PAIRS_MAX}")]
LearningRate = Annotated[float, BeforeValidator(_learning_rate), Range("number in (0, 1]")]
Device = Annotated[str, BeforeValidator(_device), Range("cpu / cuda / auto")]
SpaceMethod = Annotated[str, BeforeValidator(_space_method), Range("gcca / contrastive")]
Temperature = Annotated[float, BeforeValidator(_temperature), Range("number in [0.001, 10]")]
HiddenOrNone = Annotated[int, BeforeValidator(_whole_number(0, HIDDEN_MAX)), Range(f"integer in 0..{HIDDEN_MAX}")]
OptionalCandidateNames = Annotated[list[str] | None, BeforeValidator(_candidate_names),
                                   Range("list of candidate names, each at most once")]

SEED_HELP = "seed of the held-out split"


class Params(BaseModel):
    """Hyper-parameters of one method; only the keys a request sets are used (``exclude_unset``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: Seed = Field(0, description=SEED_HELP)


class _OnePenaltyOrPath(Params):
    """Base of the methods that take one penalty or a list of them to choose from."""

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


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Candidate:
    """One of ``auto``'s candidates: ``method`` with fixed ``params``. ``rank``: place in the
    one-standard-error rule's simple -> complex order; ``default``: tried when a request does
    not name its candidates."""

    name: str
    method: str
    params: dict = field(default_factory=dict)
    rank: int = 0
    default: bool = False
    min_anchors: int | None = None  # also tried by default once the pair has this many anchors

    def __call__(self) -> _AffineMap:
        """A fresh, unfitted estimator of this candidate."""
        return build(self.method, self.params)


@dataclass(frozen=True)
class Method:
    """One fit method.

    build: validated parameters (as :func:`validate_params` returns them) -> an unfitted
    estimator. states: the estimator classes whose stored states this method writes.
    uses_heldout: ``fit_stats(stats, heldout=(X_held, Y_held))`` chooses a hyper-parameter on
    the held-out pairs (the refit on all pairs then uses the chosen one). needs_pairs:
    ``fit_pairs(stats, X, Y)`` also trains on (a sample of) the fitting pairs. refit: False
    serves the map measured on the held-out anchors itself (no second training). extra_memory:
    (params, d_x, d_y) -> bytes beyond the pair statistics. products: the statistics it fits
    from, "full" (float64 X^T X, X^T Y, Y^T Y) or "cross" (sums, squares and a float32-chunk
    X^T Y: the unit matchers, which read only correlations and per-unit variances).
    """

    name: str
    params: type[Params]
    build: Callable[[dict], _AffineMap]
    states: tuple[type[_AffineMap], ...]
    candidates: tuple[Candidate, ...] = ()
    uses_heldout: bool = False
    needs_pairs: bool = False  # trained on anchor pairs (a sample), not on the pair statistics alone
    refit: bool = True  # refitted on all pairs after the held-out measurement (else the measured map is served)
    extra_memory: Callable[[dict, int, int], int] = lambda params, d_x, d_y: 0
    products: str = "full"

    @property
    def summary(self) -> str:
        return FIT_METHODS[self.name]


def _penalties(params: dict) -> dict:
    """``alpha`` -> ``alphas=[alpha]``; the seed belongs to the split, not the estimator."""
    kwargs = {k: v for k, v in params.items() if k not in ("seed", "alpha")}
    if "alpha" in params:
        kwargs["alphas"] = [params["alpha"]]
    return kwargs


def _mlp(params: dict) -> ResidualMLPMap:
    kwargs = {k: v for k, v in params.items() if k != "seed"}
    return ResidualMLPMap(random_state=params.get("seed", 0), **kwargs)


def _mlp_memory(params: dict, d_x: int, d_y: int) -> int:
    """The training sample (float64 copies and float32 tensors) and the network's weights."""
    n, h = params.get("max_train_pairs", 20_000), params.get("hidden", 256)
    return 24 * n * (d_x + d_y) + 64 * h * (d_x + d_y + h * params.get("depth", 1))


def _joint_memory(params: dict, d_x: int, d_y: int) -> int:
    return 8 * (d_x + d_y) ** 2 * 4


def _sparse_memory(params: dict, d_x: int, d_y: int) -> int:
    n_alphas = len(params.get("alphas") or [0]) if "alphas" in params or "alpha" in params else params.get("n_alphas", 12)
    return 8 * d_x * d_y * n_alphas


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ridge", RidgeParams, lambda p: RidgeMap(**_penalties(p)), (RidgeMap,),
           candidates=(Candidate("ridge", "ridge", rank=5, default=True),)),
    Method("procrustes", ProcrustesParams, lambda p: ProcrustesMap(**_penalties(p)), (ProcrustesMap,),
           candidates=(Candidate("procrustes", "procrustes", {"scale": False}, rank=2, default=True),
                       Candidate("procrustes_scaled", "procrustes", {"scale": True}, rank=3, default=True))),
    Method("cca", CCAParams, lambda p: CCAMap(**_penalties(p)), (CCAMap,),
           candidates=(Candidate("cca", "cca", rank=7),), extra_memory=_joint_memory),
    Method("permutation", UnitMatchingParams, lambda p: PermutationMap(**_penalties(p)), (PermutationMap,),
           candidates=(Candidate("permutation", "permutation", rank=0, default=True),), products="cross"),
    Method("semi_matching", UnitMatchingParams, lambda p: SemiMatchingMap(**_penalties(p)), (SemiMatchingMap,),
           candidates=(Candidate("semi_matching", "semi_matching", rank=1),), products="cross"),
    Method("sparse", SparseParams, lambda p: SparseMap(**_penalties(p)), (SparseMap,),
           candidates=(Candidate("sparse", "sparse", rank=6),), uses_heldout=True, extra_memory=_sparse_memory),
    Method("spectral", SpectralParams, lambda p: SpectralMatching(**_penalties(p)), (SpectralMatching,),
           candidates=(Candidate("spectral", "spectral", rank=4),), extra_memory=_joint_memory),
    Method("mlp", MLPParams, _mlp, (ResidualMLPMap,), needs_pairs=True, refit=False, extra_memory=_mlp_memory,
           candidates=(Candidate("mlp", "mlp", rank=8, min_anchors=MLP_AUTO_MIN_ANCHORS),)),
)}
AUTO = "auto"
SHARED = "shared"
COOPERATIVE = "cooperative"
SHARED_CONTRASTIVE = "shared (contrastive)"
OTHER_PARAMS: dict[str, type[Params]] = {SHARED: SharedParams, SHARED_CONTRASTIVE: ContrastiveSharedParams,
                                         COOPERATIVE: CooperativeParams}

#: auto's candidates in the one-standard-error rule's simple -> complex order
CANDIDATES: dict[str, Candidate] = {
    c.name: c for c in sorted((c for m in METHODS.values() for c in m.candidates), key=lambda c: c.rank)
}
DEFAULT_CANDIDATES: tuple[str, ...] = tuple(name for name, c in CANDIDATES.items() if c.default)
PARAMS: dict[str, type[Params]] = {AUTO: AutoParams, **{name: m.params for name, m in METHODS.items()}}

if set(PARAMS) != set(FIT_METHODS):  # the contract's method list and this table are one list
    raise ImportError(f"methods {sorted(set(PARAMS) ^ set(FIT_METHODS))} are in only one of wire.FIT_METHODS and METHODS")
if len({c.rank for c in CANDIDATES.values()}) != len(CANDIDATES):
    raise ImportError("two auto candidates share a rank: the one-SE rule needs a strict order")
_STATE_CLASSES: dict[str, type[_AffineMap]] = {cls.__name__: cls for m in METHODS.values() for cls in m.states}


# ---------------------------------------------------------------- using it
def _checked(model: type[Params], params: dict, what: str) -> dict:
    if not isinstance(params, dict):
        raise InvalidInput(f"parameters of {what} must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - set(model.model_fields))
    if unknown:
        raise InvalidInput(f"unknown parameters {unknown} for {what}; it takes {sorted(model.model_fields)}")
    try:
        return model.model_validate(params).model_dump(exclude_unset=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = f"parameter {error['loc'][0]!r} " if error["loc"] else ""
        shown = "" if not error["loc"] or "got " in error["msg"] else f", got {error['input']!r}"
        raise InvalidInput(f"{where}{error['msg']}{shown}") from None


def validate_params(method: str, params: dict) -> dict:
    """Checked, typed hyper-parameters of ``method`` ("auto" included): the keys given, nothing
    added. :class:`InvalidInput` for an unknown method or key, a wrong type or a value out of range."""
    if method not in PARAMS:
        raise InvalidInput(f"unknown method {method!r}; choose from {list(PARAMS)}")
    return _checked(PARAMS[method], params, f"method {method!r}")


def validate_shared_params(params: dict) -> dict:
    """As :func:`validate_params`, for a shared space (its ``method`` picks the parameter set)."""
    if isinstance(params, dict) and params.get("method") == "contrastive":
        return _checked(ContrastiveSharedParams, params, "a contrastive shared space")
    return _checked(SharedParams, params, "a shared space")


def validate_cooperative_params(params: dict) -> dict:
    """As :func:`validate_params`, for a cooperative head."""
    return _checked(CooperativeParams, params, "a cooperative head")


def build(method: str, params: dict) -> _AffineMap:
    """A fresh estimator of ``method`` with validated ``params``."""
    return METHODS[method].build(params)


def fit(method: str, params: dict, stats, heldout=None, pairs=None) -> _AffineMap:  # noqa: ANN001
    """Fit ``method`` on ``stats`` (PairedStats); a method that ``uses_heldout`` gets ``heldout``,
    one that ``needs_pairs`` trains on ``pairs`` = (X (m, d_x), Y (m, d_y)) too."""
    return _fit_estimator(METHODS[method], build(method, params), stats, heldout, pairs)


def fit_candidate(name: str, stats, pairs=None) -> _AffineMap:  # noqa: ANN001
    """Fit ``auto``'s candidate ``name`` on ``stats`` (and ``pairs`` if it needs them)."""
    c = CANDIDATES[name]
    return _fit_estimator(METHODS[c.method], c(), stats, None, pairs)


def _fit_estimator(method: Method, estimator: _AffineMap, stats, heldout, pairs) -> _AffineMap:  # noqa: ANN001
    if method.needs_pairs:
        if pairs is None:
            raise InvalidInput(f"method {method.name!r} is trained on anchor pairs; none were given")
        return estimator.fit_pairs(stats, *pairs)  # type: ignore[attr-defined]
    if method.uses_heldout:
        return estimator.fit_stats(stats, heldout=heldout)  # type: ignore[call-arg]
    return estimator.fit_stats(stats)


def default_candidates(n_pairs: int) -> tuple[str, ...]:
    """The candidates ``auto`` tries when a request names none, for a pair with ``n_pairs`` anchors."""
    return tuple(name for name, c in CANDIDATES.items()
                 if c.default or (c.min_anchors is not None and n_pairs >= c.min_anchors))


def training_pairs(method: str, params: dict, n_pairs: int) -> int:
    """How many anchor pairs a fit of ``method`` with validated ``params`` trains on beyond the
    statistics (0: the statistics suffice). For ``auto``: what its candidates need."""
    if method == AUTO:
        names = params.get("candidates") or default_candidates(n_pairs)
        wanted = [CANDIDATES[n] for n in names if METHODS[CANDIDATES[n].method].needs_pairs]
        sizes = [PARAMS[c.method].model_validate(c.params).model_dump().get("max_train_pairs", 0) for c in wanted]
        return min(max(sizes, default=0), n_pairs)
    if not METHODS[method].needs_pairs:
        return 0
    return min(PARAMS[method].model_validate(params).model_dump()["max_train_pairs"], n_pairs)


def products(method: str) -> str:
    """The statistics ``method`` fits from ("full" for auto, which tries every candidate)."""
    return METHODS[method].products if method in METHODS else "full"


def fit_memory_bytes(method: str, params: dict, d_x: int, d_y: int, n_models: int = 2) -> int:
    """Estimated peak working memory of a fit, in bytes (float64): the pair statistics and their
    working copies, plus what the method adds (a sparse path's coefficients per alpha; the joint
    (d_x + d_y)^2 matrices of CCA, spectral matching and shared spaces)."""
    stats = 8 * (d_x * d_x + d_x * d_y + d_y * d_y) * 4
    if method == SHARED:
        extra = _joint_memory(params, d_x, d_y) * max(n_models - 1, 1)
    else:
        extra = METHODS[method].extra_memory(params, d_x, d_y) if method in METHODS else 0
    return stats * (n_models * (n_models - 1) // 2) + extra


def estimator_from_state(params: dict, arrays: dict) -> _AffineMap:
    """Rebuild a stored map from its ``get_state()`` output (dispatch on ``params["class"]``)."""
    cls = _STATE_CLASSES.get(params.get("class")) if isinstance(params, dict) else None  # type: ignore[arg-type]
    if cls is None:
        shown = params.get("class") if isinstance(params, dict) else params
        raise InvalidInput(f"unknown estimator class in state: {shown!r}")
    return cls.from_state(params, arrays)


# ---------------------------------------------------------------- describing it
def describe(name: str) -> list[tuple[str, str, str, str]]:
    """(parameter, accepted values, default, meaning) rows of a method, "auto" or "shared";
    ``seed`` last."""
    model = OTHER_PARAMS[name] if name in OTHER_PARAMS else PARAMS[name]
    rows = []
    for key, info in sorted(model.model_fields.items(), key=lambda item: item[0] == "seed"):
        accepted = next((m.text for m in info.metadata if isinstance(m, Range)), "")
        default = "—" if info.default is None else str(info.default).lower()
        rows.append((key, accepted, default, info.description or ""))
    return rows


def markdown_table() -> str:
    """The parameter table of docs/alignment.md (``convergent methods --markdown``; a test
    checks the docs hold exactly this)."""
    lines = ["| method | parameter | accepted values | default | meaning |", "|---|---|---|---|---|"]
    for name in (*PARAMS, *OTHER_PARAMS):
        for i, (key, accepted, default, meaning) in enumerate(describe(name)):
            lines.append(f"| {f'`{name}`' if i == 0 else ''} | `{key}` | {accepted} | {default} | {meaning} |")
    lines.append("")
    order = " < ".join(f"`{c.name}`" + ("*" if c.default else "†" if c.min_anchors else "") for c in CANDIDATES.values())
    lines.append(f"`auto`'s candidates, simple to complex (* = tried by default; † = tried by default from "
                 f"{MLP_AUTO_MIN_ANCHORS:,} anchor pairs on): {order}.")
    return "\n".join(lines)
