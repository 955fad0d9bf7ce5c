"""CSLS scoring for identify (see :mod:`convergent.server.inference.csls`): the reference
neighbourhoods of a route and the hubness-corrected gallery indexes, cached in memory.

A route's references are up to ``CSLS_ANCHORS`` anchors (seeded sample) of the pairs its fit was
fitted on (written at or before the fit's data version: anchors uploaded later change nothing,
:mod:`.crossfit`): the gallery model's own vectors (for r_T of the probes) and the probe model's
vectors mapped through the route (for r_S of the gallery items). Cached per fit, probe model and
:func:`~.crossfit.fit_pairs_version` (a delete, overwrite or erasure in the set since the fit
takes the fit's surviving pairs), so the references are a function of stored state: the same
before and after a restart and on every replica. r_S of every gallery item is computed once per
(gallery version, references) and kept in memory (rebuilt from the stored items after a restart,
to the same bits: :func:`penalties`):

* local exact galleries keep it in an augmented exact index [y, -r_S/2], so a query costs one
  search with one extra dimension;
* HNSW and Milvus galleries keep only the table id -> r_S; a query searches the gallery's own
  cosine index for a deeper candidate list (:func:`rerank_depth`) and re-ranks it by CSLS (no
  second graph to build).

A committed enrolment or removal is applied to every cached corrected index of the gallery
that held the version before (:meth:`Hubness.follow`: r_S of the new items only); one that
missed a change (another replica's) is rebuilt on next use.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convergent.server.errors import FailedPrecondition
from convergent.server.records import FitRecord, GalleryRecord, ModelRecord

if TYPE_CHECKING:
    from convergent.server.inference import ExactIndex, HnswIndex
    from convergent.server.storage.protocols import SetVersionLike

CSLS_ANCHORS = 2000
KEPT = 16  # routes' references and corrected indexes kept (LRU)
BLOCK = 4096  # rows of V per product in penalties


def rerank_depth(k: int, size: int) -> int:
    """Cosine candidates re-ranked by CSLS for a top-k on an HNSW or Milvus gallery of ``size``
    items: ``max(3 k, 30)``, at most the gallery (``benchmarks/csls.py``: at 50,000 HNSW items
    depth 100 cost 38% of cosine's throughput, depth 30 about 14%)."""
    return min(size, max(3 * k, 30))


def penalties(V: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """:func:`~convergent.server.inference.csls.neighbourhood_mean` of unit rows V (m, d), each
    row's value the same to the bit whether V holds it alone or among others: BLAS takes another
    path for a single row (matrix-vector), rounded differently, so a lone row is computed as one
    of two (an item enrolled alone gets the r_S it gets in a rebuild of the whole gallery)."""
    from convergent.server.inference.csls import neighbourhood_mean

    if len(V) % BLOCK != 1:
        return neighbourhood_mean(V, reference, block=BLOCK)
    last = neighbourhood_mean(np.vstack([V[-1:], V[-1:]]), reference, block=BLOCK)[:1]
    return np.concatenate([neighbourhood_mean(V[:-1], reference, block=BLOCK), last])


@dataclass(frozen=True)
class References:
    target: np.ndarray  # (r, d_gallery) unit: anchors as the gallery model embedded them
    mapped: np.ndarray  # (r, d_gallery) unit: the same anchors of the probe model, mapped
    source: np.ndarray | None = None  # (r, d_probe) unit: the anchors as the probe model embedded them
    key: str = ""  # fit id / probe model / fit_pairs_version: what they were read from


@dataclass
class CorrectedIndex:
    version: int
    index: ExactIndex | HnswIndex | None  # over [y, -r_S(y)/2]; None: the penalties alone (HNSW, Milvus)
    penalty: dict[str, float]  # gallery id -> r_S(y)
    references: References
    by_label: tuple[tuple[int, int], np.ndarray] | None = None  # ((index generation, version), r_S by HNSW label)

    def penalty_by_label(self, index: HnswIndex) -> np.ndarray:
        """r_S of an HNSW index's labels (+inf for an item the table lacks), (labels,) float32,
        rebuilt when the index or the table changed (a Python lookup per item, once: a
        re-rank then reads r_S by label, not by id string)."""
        key = (index.generation, self.version)  # read first: a change while building leaves it stale
        cached = self.by_label
        if cached is None or cached[0] != key:
            cached = (key, index.label_values(self.penalty))
            self.by_label = cached
        return cached[1]


class Hubness:
    def __init__(self, store, alignment) -> None:  # noqa: ANN001
        self.store, self.alignment = store, alignment
        self._references: OrderedDict[str, References] = OrderedDict()
        self._indexes: OrderedDict[tuple, CorrectedIndex] = OrderedDict()
        self._versions: OrderedDict[tuple[str, str], SetVersionLike] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # corrected indexes built (for tests and metrics)

    def set_version(self, tenant: str, anchor_set: str, src: ModelRecord, tgt: ModelRecord) -> SetVersionLike:
        """The set's data and rewritten versions as stored now: one small read per call (the data
        version); the pair reader (which checks the id index) only when the data version moved."""
        data_version = self.store.anchor_set_version(tenant, anchor_set)
        with self._lock:
            seen = self._versions.get((tenant, anchor_set))
        if seen is not None and seen.data_version == data_version:
            return seen
        with self.store.read_pairs(tenant, anchor_set, src, tgt) as reader:
            seen = reader.version()
        with self._lock:
            self._versions[(tenant, anchor_set)] = seen
            while len(self._versions) > 4 * KEPT:
                self._versions.popitem(last=False)
        return seen

    def pairs_version(self, tenant: str, fit: FitRecord, src: ModelRecord, tgt: ModelRecord) -> int:
        """:func:`~.crossfit.fit_pairs_version` of ``fit`` as stored now (see :meth:`set_version`)."""
        from convergent.server.registry.crossfit import fit_pairs_version

        return fit_pairs_version(self.set_version(tenant, fit.anchor_set, src, tgt), fit)

    def references(self, tenant: str, fit: FitRecord, src: ModelRecord, tgt: ModelRecord) -> References:
        """The route's reference neighbourhoods, from the pairs the fit was fitted on (the sample
        once per fit and version of its pairs, :meth:`pairs_version`)."""
        from convergent.server.inference import normalize_rows
        from convergent.server.registry.crossfit import fit_pairs_version, sample_pairs

        key = f"{fit.id}/{src.name}/{self.pairs_version(tenant, fit, src, tgt)}"
        with self._lock:
            cached = self._references.get(key)
        if cached is not None:
            return cached
        with self.store.read_pairs(tenant, fit.anchor_set, src, tgt) as reader:
            key = f"{fit.id}/{src.name}/{fit_pairs_version(reader.version(), fit)}"  # of this read
            _, X, Y = sample_pairs(reader, CSLS_ANCHORS, written_at_most=fit.data_version)
        if len(X) < 2:
            raise FailedPrecondition(f"anchor set {fit.anchor_set!r} has {len(X)} of the pairs fit {fit.id!r} was fitted on "
                                     f"left: too few for CSLS scoring", reason="TOO_FEW_ANCHORS")
        refs = References(target=normalize_rows(Y), mapped=normalize_rows(self.alignment.map_prepared(tenant, fit, X, src, tgt)),
                          source=normalize_rows(X), key=key)
        with self._lock:
            self._references[key] = refs
            while len(self._references) > KEPT:
                self._references.popitem(last=False)
        return refs

    def follow(self, tenant: str, gallery: str, version: int, added_ids: list[str] | None = None,
               added: np.ndarray | None = None, removed_ids: list[str] | None = None) -> None:
        """Apply a committed change (now at ``version``) of a gallery to its corrected indexes.
        Costs nothing (no import, no math) when the gallery has none: it runs after every commit."""
        with self._lock:
            entries = [(key, c) for key, c in self._indexes.items() if key[:2] == (tenant, gallery)]
        if not entries:
            return
        from convergent.server.inference import normalize_rows
        from convergent.server.inference.csls import augment_gallery

        for key, corrected in entries:
            if corrected.version != version - 1:
                with self._lock:
                    self._indexes.pop(key, None)  # missed a change: rebuilt on next use
                continue
            if added_ids:
                G = normalize_rows(added)
                r_S = penalties(G, corrected.references.mapped)
                if corrected.index is not None:
                    corrected.index.add(added_ids, augment_gallery(G, r_S))
                corrected.penalty.update(zip(added_ids, r_S.tolist()))
            if removed_ids:
                present = [i for i in removed_ids if i in corrected.penalty]
                if present and corrected.index is not None:
                    corrected.index.remove(present)
                for i in present:
                    del corrected.penalty[i]
            corrected.version = version

    def index_size(self) -> int:
        """Vectors held by the augmented (CSLS) indexes of this process (for metrics)."""
        with self._lock:
            entries = list(self._indexes.values())
        return sum(len(c.index) for c in entries if c.index is not None)

    def corrected_index(self, tenant: str, gallery: GalleryRecord, model: ModelRecord, refs: References,
                        route_key: str, device: str = "cpu", *, with_index: bool = True) -> CorrectedIndex:
        """The gallery's items' r_S, at the gallery's version (or newer), with an augmented
        index of them (``with_index``; without: the table alone, for re-ranking). ``route_key``
        names the references (:attr:`References.key`)."""
        from convergent.server.inference import ExactIndex, HnswIndex, normalize_rows
        from convergent.server.inference.csls import augment_gallery

        key = (tenant, gallery.name, gallery.created_at, route_key, with_index)
        with self._lock:
            # the table alone is also served by a current entry that has an index (a superset)
            found = [self._indexes.get(k) for k in ([key] if with_index else [key, (*key[:-1], True)])]
        for cached in found:
            if cached is not None and cached.version >= gallery.version:
                return cached
        version, ids, vectors = self.store.galleries.items(tenant, gallery.name, model.dim)
        G = normalize_rows(vectors) if ids else np.zeros((0, model.dim), np.float32)
        r_S = penalties(G, refs.mapped) if ids else np.zeros(0, np.float32)
        index: ExactIndex | HnswIndex | None = None
        if with_index:
            if gallery.index_kind == "exact":
                index = ExactIndex(model.dim + 1, backend="cuda" if device == "cuda" else "auto")
            else:
                index = HnswIndex(model.dim + 1)
            if ids:
                index.add(ids, augment_gallery(G, r_S))
        built = CorrectedIndex(version, index, dict(zip(ids, r_S.tolist())), refs)
        with self._lock:
            self.builds += 1
            self._indexes[key] = built
            while len(self._indexes) > KEPT:
                self._indexes.popitem(last=False)
        return built


def csls_search(index, corrected: CorrectedIndex, Q: np.ndarray, r_T: np.ndarray, depth: int, keep: int):  # noqa: ANN001, ANN201
    """(ids, CSLS scores (q, <= keep)) best first: one search of the augmented index (local
    exact), or (HNSW, Milvus) a cosine search of ``index`` for ``depth`` candidates re-ranked
    by 2 cos - r_T - r_S, the best ``keep`` returned. Candidates the r_S table lacks (removed
    after the index's snapshot) are dropped ("" / -inf)."""
    from convergent.server.inference.csls import augment_queries, csls_from_augmented

    if corrected.index is not None:
        found, inner = corrected.index.search(augment_queries(Q), depth)
        return found, csls_from_augmented(inner, r_T)
    if hasattr(index, "search_labels"):  # local HNSW: r_S read by graph label, ids mapped for the top `keep` only
        labels, cosines = index.search_labels(Q, depth)
        table = corrected.penalty_by_label(index)
        r_S = np.where(labels >= 0, table[np.maximum(labels, 0)], np.inf)
        scores = 2.0 * cosines - r_T[:, None] - r_S
        scores[~np.isfinite(scores)] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        scores = np.take_along_axis(scores, order, axis=1)
        labels = np.where(np.isfinite(scores), np.take_along_axis(labels, order, axis=1), -1)
        return index.ids_of(labels), scores
    found, cosines = index.search(Q, depth)
    cosines = np.asarray(cosines, np.float32)
    if cosines.size == 0:
        return found, cosines
    flat = list(itertools.chain.from_iterable(found))  # "" pads (never an id) get +inf, so -inf scores
    r_S = np.fromiter(map(corrected.penalty.get, flat, itertools.repeat(np.inf)), np.float32, len(flat))
    scores = 2.0 * cosines - r_T[:, None] - r_S.reshape(cosines.shape)
    scores[~np.isfinite(scores)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, order, axis=1)
    ranked = np.take_along_axis(np.array(found, dtype=object), order, axis=1)
    ranked[~np.isfinite(scores)] = ""
    return ranked[:, :keep].tolist(), scores[:, :keep]
