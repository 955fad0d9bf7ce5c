"""The fit methods, in one table: each method's estimator, parameters, ranges and role in ``auto``.

Everything that needs to know the methods reads :data:`METHODS`: parameter validation
(:func:`validate_params`, ``INVALID_ARGUMENT`` before any math runs), ``auto``'s candidates and
their simplicity order (:data:`CANDIDATES`), the memory estimate of a fit, the state dispatch
of a stored fit (:func:`estimator_from_state`), ``convergent methods`` and the table in
``docs/alignment.md`` (:func:`markdown_table`, checked by a test), the ``ListMethods``
catalogue with each method's JSON Schema (:func:`convergent.server.align.catalogue.catalogue`). Adding a method is one
:class:`Method` entry here, its estimator, and its name in the contract
(``convergent.wire.FIT_METHODS``, which the CLI's help shows without loading the server).

The parameter models and their ranges live in :mod:`convergent.server.align.params`.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from convergent.server.align.maps import CCAMap, ProcrustesMap, RidgeMap, _AffineMap
from convergent.server.align.matching import PermutationMap, SemiMatchingMap
from convergent.server.align.mlp import ResidualMLPMap
from convergent.server.align.params import (
    MLP_AUTO_MIN_ANCHORS,
    AutoParams,
    CCAParams,
    ContrastiveSharedParams,
    CooperativeParams,
    MLPParams,
    Params,
    ProcrustesParams,
    Range,
    RidgeParams,
    SharedParams,
    SparseParams,
    SpectralParams,
    UnitMatchingParams,
)
from convergent.server.align.sparse import SparseMap
from convergent.server.align.spectral import SpectralMatching
from convergent.server.errors import InvalidInput
from convergent.wire import FIT_METHODS


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
def _kind(value: object) -> str:
    """The JSON kind of a parameter value ("integer" for an integral number)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "integer" if float(value).is_integer() else "number"
    return "string" if isinstance(value, str) else "list" if isinstance(value, (list, tuple)) else "other"


def _expected_kinds(annotation: object) -> set[str]:
    """The JSON kinds a parameter of this type accepts (a given value is never null)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = set()
    for part in typing.get_args(annotation) if union else (annotation,):
        base = typing.get_origin(part) or part
        kinds |= {bool: {"boolean"}, int: {"integer"}, float: {"number", "integer"}, str: {"string"},
                  list: {"list"}}.get(base, set())  # type: ignore[call-overload]
    return kinds


def _shown(value: object) -> str:
    """A parameter value as JSON, cut to 60 characters."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _checked(model: type[Params], params: dict, what: str) -> dict:
    if not isinstance(params, dict):
        raise InvalidInput(f"parameters of {what} must be an object (a Struct), got {type(params).__name__}",
                           reason="PARAMETER_WRONG_TYPE", field="params")
    unknown = sorted(set(params) - set(model.model_fields))
    if unknown:
        raise InvalidInput(f"unknown parameters {unknown} for {what}; it takes {sorted(model.model_fields)}",
                           reason="UNKNOWN_PARAMETER", field=f"params.{unknown[0]}",
                           metadata={"parameters": ",".join(unknown), "accepted": ",".join(sorted(model.model_fields))})
    try:
        return model.model_validate(params).model_dump(exclude_unset=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error["loc"]:
            raise InvalidInput(error["msg"], reason="CONFLICTING_PARAMETERS", field="params") from None
        key = str(error["loc"][0])
        info = model.model_fields.get(key)
        expected = _expected_kinds(info.annotation) if info is not None else set()
        shown = "" if "got " in error["msg"] else f", got {_shown(error['input'])}"
        raise InvalidInput(f"parameter {key!r} {error['msg']}{shown}", field=f"params.{key}", metadata={"parameter": key},
                           reason="PARAMETER_OUT_OF_RANGE" if _kind(error["input"]) in expected else "PARAMETER_WRONG_TYPE",
                           ) from None


def validate_params(method: str, params: dict) -> dict:
    """Checked, typed hyper-parameters of ``method`` ("auto" included): the keys given, nothing
    added. :class:`InvalidInput` for an unknown method or key, a wrong type or a value out of range."""
    if method not in PARAMS:
        raise InvalidInput(f"unknown method {method!r}; choose from {list(PARAMS)}", reason="UNKNOWN_METHOD",
                           field="method", metadata={"accepted": ",".join(PARAMS)})
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
