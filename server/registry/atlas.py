"""The compatibility atlas of an anchor set: for every ordered pair of its models, the newest fit
of the route on the set and its held-out diagnostics, and the models clustered by how well they
stand in for each other (:mod:`convergent.server.align.atlas`). Reads stored fits; fits nothing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from convergent.server.align.atlas import CLUSTER_DISTANCE, cluster
from convergent.server.errors import NotFound
from convergent.server.records import AtlasEntry, AtlasRecord, FitRecord, ModelRecord
from convergent.server.registry.service import valid_name

if TYPE_CHECKING:
    from convergent.server.registry.alignment import Alignment


def _metric(record: FitRecord, name: str) -> float:
    value = record.metrics.get(name)
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _entry(alignment: Alignment, tenant: str, anchor_set: str, source: ModelRecord, target: ModelRecord) -> AtlasEntry:
    with alignment.store.read_pairs(tenant, anchor_set, source, target) as reader:
        n_pairs = len(reader.pair_ids())
    fit = alignment.fits.latest(tenant, source.name, target.name, anchor_set)
    if fit is None:
        return AtlasEntry(source=source.name, target=target.name, n_pairs=n_pairs)
    fit = alignment.with_staleness(tenant, fit)
    return AtlasEntry(
        source=source.name, target=target.name, n_pairs=n_pairs, fit_id=fit.id, method=fit.method, stale=fit.stale,
        top1=_metric(fit, "top1"), cka=_metric(fit, "cka"), mutual_knn=_metric(fit, "mutual_knn"),
        condition_number=_metric(fit, "condition_number"), n_heldout=int(fit.metrics.get("n_heldout", 0)),
    )


def atlas(alignment: Alignment, tenant: str, anchor_set: str) -> AtlasRecord:
    """The atlas of ``anchor_set`` as stored now; :class:`NotFound` for an unknown set."""
    valid_name(anchor_set, "anchor set name")
    found = alignment.store.list_anchor_sets(tenant, "", 1, name=anchor_set)
    if not found:
        raise NotFound(f"anchor set {anchor_set!r} not found", reason="ANCHOR_SET_NOT_FOUND", metadata={"name": anchor_set})
    record = found[0]
    models = {name: alignment.store.get_model(tenant, name) for name in sorted(record.models) if record.models[name]}
    entries = [_entry(alignment, tenant, anchor_set, models[s], models[t]) for s in models for t in models if s != t]
    current = {(e.source, e.target): e.top1 for e in entries if e.fit_id and not e.stale}
    order, clusters = cluster(list(models), current, CLUSTER_DISTANCE)
    rank = {name: i for i, name in enumerate(order)}
    entries.sort(key=lambda e: (rank[e.source], rank[e.target]))
    return AtlasRecord(anchor_set=anchor_set, data_version=record.data_version, models=order, entries=entries,
                       clusters=clusters, cluster_distance=CLUSTER_DISTANCE)
