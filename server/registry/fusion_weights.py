"""Fusion weights of parties routed through maps: an out-of-fold forecast combination.

Each routed party's map predicts the gallery model's embedding of an anchor from the party's
own. On the anchors every party's fit shares, each map is refitted without the anchor's fold
(:func:`.crossfit.calibration_anchors`, as verification does), and the weights are the
non-negative weights summing to 1 whose combination of the parties' unit mapped anchors lies
closest to the gallery model's unit anchors (:func:`..inference.fusion.combination_weights`).
A party that repeats another one's view plus noise of its own, or that maps onto the gallery
only coarsely, then gets little weight: a held-out R^2 per party cannot see redundancy.
Measured (docs/inference.md, `benchmarks/fusion_weak_parties.py`): with R^2 weights one weak
party of 14 cost dlib + FaceNet up to 0.040 rank-1; with these, at most 0.017 on both splits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from convergent.server.records import FitRecord, ModelRecord

COMBINATION_ANCHORS = 2000  # anchors sampled per party's fit (all of a smaller set)
SLOW_REFITS = ("sparse", "mlp")  # a Lasso path per output unit / a network trained per fold: too slow for a query
MIN_SHARED_ANCHORS = 20     # fewer common out-of-fold anchors than this: keep the per-party weights
KEPT = 32                   # cached weight sets (fits are immutable: keyed by their ids)


def route_weight(fit: FitRecord | None, src: ModelRecord, tgt: ModelRecord) -> tuple[float, str]:
    """Weight of one party in fusion: the share of the gallery model's variance its route
    explains on held-out anchors, ``max(R^2 variance-weighted, 0)``; 1 for the gallery's own
    model. With two or more routed parties on one anchor set their weights are then
    re-divided by the out-of-fold combination (:class:`CombinationWeights`).

    Validated on the real faces (docs/inference.md): plain held-out top-1 let a weak party
    (raw pixels) drag dlib + FaceNet fusion from 0.61 to 0.54 rank-1; this weight ignores it.
    """
    if fit is None:
        return 1.0, "direct route"
    key = "r2_variance_weighted" if fit.method != "shared" else f"{src.name}->{tgt.name}.r2_variance_weighted"
    value = fit.metrics.get(key)
    if value is None:
        return 0.0, f"fit {fit.id} has no {key}"
    return max(float(value), 0.0), f"held-out {key} of fit {fit.id}"


class CombinationWeights:
    def __init__(self, alignment) -> None:  # noqa: ANN001
        self.alignment = alignment
        self._cache: OrderedDict[tuple, tuple[dict[str, float] | None, str]] = OrderedDict()
        self._lock = threading.Lock()

    def weights(self, tenant: str, parties: list[tuple[ModelRecord, FitRecord]],
                gallery_model: ModelRecord) -> tuple[dict[str, float] | None, str]:
        """({party model: weight >= 0, summing to 1}, how), or (None, why not) when the parties'
        fits are not pairwise fits on one anchor set or share too few anchors."""
        if len(parties) < 2:
            return None, "one routed party"
        from convergent.server.registry.crossfit import refit_method

        sets = {fit.anchor_set for _, fit in parties}
        if any(fit.method == "shared" for _, fit in parties) or len(sets) != 1:
            return None, "the parties' routes are not pairwise fits on one anchor set"
        slow = sorted({refit_method(fit) for _, fit in parties} & set(SLOW_REFITS))
        if slow:
            return None, f"a route is a {slow[0]} map, whose per-fold refits are too slow for a query"
        key = (tenant, gallery_model.name, *sorted(fit.id for _, fit in parties))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        from convergent.server.errors import Unavailable

        try:
            result = self._compute(tenant, parties, gallery_model, sets.pop())
        except Unavailable as exc:  # anchors being written: per-party weights this time, try again next
            return None, f"the anchors are being written ({exc})"
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > KEPT:
                self._cache.popitem(last=False)
        return result

    def _compute(self, tenant: str, parties: list[tuple[ModelRecord, FitRecord]], gallery_model: ModelRecord,
                 anchor_set: str) -> tuple[dict[str, float] | None, str]:
        from convergent.server.inference import combination_weights, normalize_rows
        from convergent.server.registry.crossfit import calibration_anchors

        from convergent.server.errors import FailedPrecondition

        out_of_fold = {}
        for model, fit in parties:
            try:
                anchors = calibration_anchors(self.alignment, tenant, fit, model, gallery_model, COMBINATION_ANCHORS)
            except FailedPrecondition as exc:  # too few pairs left: per-party weights
                return None, f"no out-of-fold anchors for {model.name!r}: {exc}"
            out_of_fold[model.name] = dict(zip(anchors.ids, range(len(anchors.ids)))), anchors
        common = sorted(set.intersection(*(set(rows) for rows, _ in out_of_fold.values())))
        if len(common) < MIN_SHARED_ANCHORS:
            return None, f"the parties' fits share {len(common)} sampled anchors of {anchor_set!r} (< {MIN_SHARED_ANCHORS})"
        residuals = []
        for rows, anchors in out_of_fold.values():
            take = np.array([rows[i] for i in common])
            residuals.append(normalize_rows(anchors.mapped[take]) - normalize_rows(anchors.target[take]))
        w = combination_weights(residuals)
        how = (f"out-of-fold combination on {len(common)} anchors of {anchor_set!r} (non-negative weights summing to 1 "
               f"whose mix of the parties' mapped anchors is closest to the gallery model's)")
        return dict(zip(out_of_fold, w.tolist())), how
