"""Use cases of shared spaces for N models: MAXVAR generalised CCA from every pair's statistics
(``method="gcca"``, the default) or a learned consensus space (``method="contrastive"``)."""

from __future__ import annotations

import time

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.records import FitRecord, ModelRecord
from convergent.server.registry.alignment import MIN_PAIRS, Alignment, check_fit_memory, new_fit_id
from convergent.server.registry.service import valid_name


def fit_shared(alignment: Alignment, tenant: str, models: list[str], anchor_set: str, params: dict) -> FitRecord:
    """One MAXVAR shared space for N >= 2 models from every pair's statistics.

    Held-out anchors (per pair) measure every ordered pair's A -> shared -> B map; the
    space is then refitted on all pairs. Metrics: ``<A>-><B>.top1`` etc. and their means.
    """
    from convergent.server.align import SharedSpace, methods

    params = methods.validate_shared_params(params)
    if len(models) < 2 or len(set(models)) != len(models):
        raise InvalidInput(f"a shared space needs at least 2 different models, got {models}", reason="MODELS_NOT_DISTINCT",
                           field="models")
    valid_name(anchor_set, "anchor set name")
    records = {}
    for name in models:
        valid_name(name, "model name")
        records[name] = alignment.store.get_model(tenant, name)
    widest = max(r.dim for r in records.values())
    check_fit_memory("shared", params, widest, widest, alignment.settings.max_fit_bytes, n_models=len(models))
    if params.get("method") == "contrastive":
        return _fit_contrastive(alignment, tenant, models, records, anchor_set, params)
    started = time.perf_counter()
    snaps = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            snap = alignment.snapshot(tenant, anchor_set, records[a], records[b], seed=params.get("seed", 0))
            if snap.stats.n < MIN_PAIRS:
                raise FailedPrecondition(
                    f"anchor set {anchor_set!r} holds {snap.stats.n} anchors embedded by both {a!r} and "
                    f"{b!r}; a shared space needs at least {MIN_PAIRS} for every pair", reason="TOO_FEW_ANCHORS",
                    metadata={"anchor_set": anchor_set, "have": snap.stats.n, "need": MIN_PAIRS},
                )
            snaps[(a, b)] = snap
    space_kwargs = {k: v for k, v in params.items() if k not in ("seed", "method")}
    held_out_space = SharedSpace(**space_kwargs).fit_stats(
        {pair: snap.stats.copy().subtract(snap.X_held, snap.Y_held) for pair, snap in snaps.items()}
    )
    metrics, warnings = _pair_metrics(held_out_space, records, [
        (a, b, snap.X_held, snap.Y_held, snap.stats.n - len(snap.X_held)) for (a, b), snap in snaps.items()
    ])
    metrics["n_heldout"] = float(min(len(s.X_held) for s in snaps.values()))
    metrics["n_anchors"] = float(min(s.stats.n for s in snaps.values()))
    space = SharedSpace(**space_kwargs).fit_stats({pair: snap.stats for pair, snap in snaps.items()})
    metrics["n_components"] = float(space.n_components_)
    metrics["fit_seconds"] = time.perf_counter() - started
    state, arrays = space.get_state()
    record = FitRecord(
        id=new_fit_id(), method="shared", requested_method="shared", source="", source_version=0,
        target="", target_version=0, anchor_set=anchor_set,
        data_version=max(s.data_version for s in snaps.values()),
        params={**params, "seed": params.get("seed", 0), "models": list(models), "model_versions": {m: r.version for m, r in records.items()},
                "n_components": int(space.n_components_)},
        metrics=metrics, warnings=warnings, converged=True, created_at=time.time(),
    )
    alignment.fits.insert(tenant, record, state, arrays)
    for snap in snaps.values():
        alignment.pairs.store_computed(snap)
    return record

def _fit_contrastive(alignment: Alignment, tenant: str, models: list[str], records: dict[str, ModelRecord], anchor_set: str,
                     params: dict) -> FitRecord:
    """A learned (InfoNCE) shared space on the anchors every model embedded. It is trained
    without the held-out anchors and served as measured on them (no second training)."""
    from convergent.server.align import heldout_split
    from convergent.server.align.contrastive import ContrastiveSpace
    from convergent.server.registry.pair_stats import HELDOUT_CAP, HELDOUT_FRACTION, aligned_anchors

    started = time.perf_counter()
    version, ids, arrays = aligned_anchors(alignment.store, tenant, anchor_set, [records[m] for m in models])
    if len(ids) < MIN_PAIRS:
        raise FailedPrecondition(f"anchor set {anchor_set!r} holds {len(ids)} anchors embedded by every model; "
                                 f"a shared space needs at least {MIN_PAIRS}", reason="TOO_FEW_ANCHORS",
                                 metadata={"anchor_set": anchor_set, "have": len(ids), "need": MIN_PAIRS})
    held = heldout_split(ids, seed=params.get("seed", 0), fraction=HELDOUT_FRACTION, cap=HELDOUT_CAP)
    kwargs = {k: v for k, v in params.items() if k not in ("method", "seed")}
    space = ContrastiveSpace(random_state=params.get("seed", 0), **kwargs).fit(
        {m: a[~held] for m, a in zip(models, arrays)})
    by_model = dict(zip(models, arrays))
    metrics, warnings = _pair_metrics(space, records, [
        (a, b, by_model[a][held], by_model[b][held], int((~held).sum())) for i, a in enumerate(models) for b in models[i + 1 :]
    ])
    metrics.update(n_heldout=float(held.sum()), n_anchors=float(len(ids)), n_components=float(space.n_components_),
                   fit_seconds=time.perf_counter() - started, training_loss=space.loss_)
    state, state_arrays = space.get_state()
    record = FitRecord(
        id=new_fit_id(), method="shared", requested_method="shared", source="", source_version=0,
        target="", target_version=0, anchor_set=anchor_set, data_version=version,
        params={**params, "seed": params.get("seed", 0), "models": list(models), "model_versions": {m: r.version for m, r in records.items()},
                "n_components": int(space.n_components_)},
        metrics=metrics, warnings=warnings, converged=True, created_at=time.time(),
    )
    alignment.fits.insert(tenant, record, state, state_arrays)
    return record


def _pair_metrics(space, records: dict[str, ModelRecord], pairs: list) -> tuple[dict[str, float], list[str]]:  # noqa: ANN001
    """Held-out diagnostics of every ordered pair through a shared space: ``<A>-><B>.<key>`` and
    the mean of each key over the pairs. pairs: (a, b, X_a held (m, d_a), X_b held (m, d_b), n_fit)."""
    from convergent.server.align import diagnostics

    metrics: dict[str, float] = {}
    warnings: list[str] = []
    per_key: dict[str, list[float]] = {}
    for a, b, Xa, Xb, n_fit in pairs:
        for src, tgt, X, Y in ((a, b, Xa, Xb), (b, a, Xb, Xa)):
            diag = diagnostics(_Translate(space, src, tgt), X, Y, n_fit, records[src].dim)
            warnings += [f"{src}->{tgt}: {w}" for w in diag.pop("warnings", [])]
            for key in ("r2", "r2_variance_weighted", "cka", "mutual_knn", "top1", "top5", "margin"):
                if diag.get(key) is not None:
                    metrics[f"{src}->{tgt}.{key}"] = float(diag[key])
                    per_key.setdefault(key, []).append(float(diag[key]))
    metrics.update({key: float(np.mean(values)) for key, values in per_key.items()})
    return metrics, warnings


class _Translate:
    """A shared space seen as a source -> target map (for :func:`diagnostics`)."""

    def __init__(self, space, source: str, target: str) -> None:  # noqa: ANN001
        self.space, self.source, self.target = space, source, target

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.space.translate(self.source, self.target, X)
