"""How an identify searches a gallery: the plan (route, fit back, scoring, direction and why),
the search in the gallery's space (cosine or CSLS, exact or re-ranked) or in both spaces
(:mod:`.two_way`), and the open-set decision on the top-1 (:mod:`.open_set`).

Scores are similarities, higher = more similar. A mixin of
:class:`~convergent.server.registry.galleries.Galleries`, which holds the stores, indexes and caches
named below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.records import FitRecord, GalleryRecord, ModelRecord
from convergent.server.registry.hubness import csls_search
from convergent.server.registry.routes import Routed
from convergent.server.registry.service import prepare_vectors

if TYPE_CHECKING:
    from convergent.server.registry.galleries import IdentifyResult
    from convergent.server.registry.hubness import Hubness
    from convergent.server.registry.open_set import OpenSet
    from convergent.server.registry.two_way import TwoWay
    from convergent.server.registry.verification import Verification

IDENTIFY_DIRECTIONS = ("auto", "forward", "both")


def no_hits(n: int) -> tuple[list[list[str]], np.ndarray]:
    """The answer of a search of an empty gallery for n probes: no ids, (n, 0) scores."""
    return [[] for _ in range(n)], np.zeros((n, 0), np.float32)


@dataclass(frozen=True)
class SearchPlan:
    """How an identify searches: the route ``fit`` (None: the gallery's own model), the
    ``reverse`` fit gallery model -> probe model when both spaces are scored, and why."""

    gallery: GalleryRecord
    gallery_model: ModelRecord
    probe_model: ModelRecord
    fit: FitRecord | None
    reverse: FitRecord | None
    scoring: str           # "cosine" or "csls"
    direction: str         # "forward" or "both"
    why: str


class Searching(Routed):
    """identify's search: :meth:`_plan`, then :meth:`_search` (and :meth:`_open_set` with an FPIR)."""

    indexes: Any  # GalleryIndexes
    hubness: Hubness
    two_way: TwoWay
    open_set: OpenSet
    verification: Verification

    def _plan(self, tenant: str, gallery: GalleryRecord, gallery_model: ModelRecord, probe_model: ModelRecord,
              fit: FitRecord | None, scoring: str, direction: str) -> SearchPlan:
        """How identify searches: which fits, which scoring, which space(s), and why."""
        direction = direction or "auto"
        if direction not in IDENTIFY_DIRECTIONS:
            raise InvalidInput(f"unknown direction {direction!r}; choose from {list(IDENTIFY_DIRECTIONS)}",
                               reason="UNKNOWN_OPTION", field="direction")
        base = SearchPlan(gallery, gallery_model, probe_model, fit, None, scoring, "forward", "requested")
        if direction == "forward":
            return base
        if fit is None:
            reverse, why = None, f"{probe_model.name!r} is the gallery's own model: one space"
        else:
            reverse, why = self.verification.reverse_fit(tenant, probe_model, gallery_model, fit)
        if reverse is not None and not self._augmented(gallery):
            reverse, why = None, (f"gallery {gallery.name!r} is a {gallery.index_kind} gallery"
                                  f"{'' if self.indexes.in_process else ' on Milvus'}: both spaces are scored on local "
                                  f"exact galleries only")
        if reverse is None:
            if direction == "both":
                raise FailedPrecondition(f"direction \"both\" for {probe_model.name!r} probes: {why}", reason="NO_ROUTE",
                                         metadata={"source": gallery_model.name, "target": probe_model.name})
            return SearchPlan(gallery, gallery_model, probe_model, fit, None, scoring, "forward", f"auto: {why}")
        if direction == "both":
            return SearchPlan(gallery, gallery_model, probe_model, fit, reverse, scoring, "both", "requested")
        assert fit is not None
        both, judged = self.two_way.judge(tenant, fit, reverse, probe_model, gallery_model)
        why = f"auto: fits both ways on anchor set {reverse.anchor_set!r}; {judged}"
        if not both:
            return SearchPlan(gallery, gallery_model, probe_model, fit, None, scoring, "forward", why)
        return SearchPlan(gallery, gallery_model, probe_model, fit, reverse, scoring, "both", why)

    def _search(self, tenant: str, plan: SearchPlan, P: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """(ids, scores) of prepared probes P (n, d_probe) as the plan says."""
        Q = self._into(tenant, plan.fit, P, plan.probe_model, plan.gallery_model)
        return self._search_mapped(tenant, plan, Q, P, k)

    def _search_mapped(self, tenant: str, plan: SearchPlan, Q: np.ndarray, P: np.ndarray, k: int,
                       r_Q: np.ndarray | None = None, r_P: np.ndarray | None = None,
                       ) -> tuple[list[list[str]], np.ndarray]:
        """(ids, scores (n, k') float32) of probes given mapped, Q (n, d_g) unit, and native, P
        (n, d_p); r_Q / r_P: their CSLS penalties when the caller computed them (calibration)."""
        from convergent.server.inference import normalize_rows
        from convergent.server.inference.csls import neighbourhood_mean
        from convergent.server.registry.two_way import two_way_search

        csls = plan.scoring == "csls"
        if plan.reverse is not None:
            assert plan.fit is not None
            copy = self.two_way.gallery(tenant, plan.gallery, plan.gallery_model, plan.probe_model, plan.fit, plan.reverse, csls)
            if not copy.ids:
                return no_hits(len(Q))
            P = normalize_rows(P)
            if csls:
                if r_Q is None:
                    r_Q = neighbourhood_mean(Q, self.hubness.references(tenant, plan.fit, plan.probe_model, plan.gallery_model).target)
                if r_P is None:
                    r_P = neighbourhood_mean(P, self.hubness.references(tenant, plan.reverse, plan.gallery_model, plan.probe_model).mapped)
            return two_way_search(copy, Q, P, k, r_Q, r_P)
        if csls:
            return self._identify_csls(tenant, plan, Q, k, r_Q)
        with self.indexes.searchable(tenant, plan.gallery, plan.gallery_model) as index:
            size = self.indexes.size(index, plan.gallery)
            if size == 0:
                return no_hits(len(Q))
            ids, scores = index.search(Q, min(k, size))
        width = min(k, size)
        return [row[:width] for row in ids], np.asarray(scores, np.float32)[:, :width]

    def _open_set(self, tenant: str, plan: SearchPlan, result: IdentifyResult, fpir: float,
                  non_mated: np.ndarray | None) -> IdentifyResult:
        """``result`` with each top-1 tested against the threshold for ``fpir``."""
        from dataclasses import replace

        from convergent.server.inference.open_set import open_set_threshold

        if non_mated is not None:
            _, top = self._search(tenant, plan, prepare_vectors(plan.probe_model, non_mated, "non_mated probes", field="non_mated"), 1)
            searches = self.open_set.from_probes(top[:, 0] if top.size else np.zeros(0, np.float32))
        elif plan.fit is None:
            raise FailedPrecondition(
                f"open-set identify of {plan.probe_model.name!r} probes on its own gallery has no anchors to calibrate on: "
                f"give non_mated probes (people who are not enrolled)", reason="CALIBRATION_UNAVAILABLE", field="non_mated",
            )
        else:
            gallery = plan.gallery
            key = (tenant, gallery.name, gallery.created_at, gallery.version, plan.fit.id,
                   plan.reverse.id if plan.reverse else "", plan.scoring)

            def native_top1(T: np.ndarray) -> np.ndarray:
                with self.indexes.searchable(tenant, gallery, plan.gallery_model) as index:
                    if self.indexes.size(index, gallery) == 0:
                        return np.full(len(T), -np.inf, np.float32)
                    return np.asarray(index.search(T, 1)[1], np.float32)[:, 0]

            def search(Q: np.ndarray, P: np.ndarray, r_Q: np.ndarray | None, r_P: np.ndarray | None) -> np.ndarray:
                _, top = self._search_mapped(tenant, plan, Q, P, 1, r_Q, r_P)
                return top[:, 0] if top.size else np.zeros(0, np.float32)

            searches = self.open_set.from_anchors(tenant, key, plan.fit, plan.reverse, plan.probe_model, plan.gallery_model,
                                                  plan.scoring == "csls", native_top1, search)
        if searches.top1.size == 0:
            raise FailedPrecondition(f"gallery {plan.gallery.name!r} is empty: nothing to calibrate an open-set threshold on",
                                     reason="CALIBRATION_UNAVAILABLE")
        cal = open_set_threshold(searches.top1, fpir)
        top1 = result.scores[:, 0].astype(np.float64) if result.scores.shape[1] else np.full(len(result.ids), -np.inf)
        return replace(result, accepted=top1 >= cal.threshold, threshold=cal.threshold, fpir_requested=fpir,
                       fpir_calibration=cal.fpir, n_calibration_searches=cal.n_searches,
                       calibration=searches.calibration, calibration_searches=searches.population,
                       n_excluded=searches.n_excluded)

    def _csls_route(self, tenant: str, gallery_model: ModelRecord, probe_model: ModelRecord, fit: FitRecord | None):  # noqa: ANN202
        """(references, route key) of a CSLS identify; INVALID_ARGUMENT for a direct route."""
        if fit is None:
            raise InvalidInput(
                f"scoring \"csls\" needs a route through a map: {probe_model.name!r} is the gallery's own model "
                f"(the route's anchors are CSLS's reference neighbourhoods); use scoring \"cosine\"",
                field="scoring",
            )
        refs = self.hubness.references(tenant, fit, probe_model, gallery_model)
        return refs, refs.key

    def _corrected(self, tenant: str, gallery: GalleryRecord, gallery_model: ModelRecord, refs, route_key: str,  # noqa: ANN001, ANN202
                   with_index: bool | None = None):
        """The route's r_S of the gallery's items: with an augmented index for local exact
        galleries; the table alone for HNSW and Milvus ones (their cosine candidates are
        re-ranked) or when ``with_index`` is False."""
        if with_index is None:
            with_index = self._augmented(gallery)
        return self.hubness.corrected_index(tenant, gallery, gallery_model, refs, route_key, self.alignment.device,
                                            with_index=with_index)

    def _augmented(self, gallery: GalleryRecord) -> bool:
        """Whether CSLS searches an augmented index of the gallery (local exact) rather than
        re-ranking the gallery's own cosine candidates (HNSW, Milvus)."""
        return self.indexes.in_process and gallery.index_kind == "exact"

    def _identify_csls(self, tenant: str, plan: SearchPlan, Q: np.ndarray, k: int,
                       r_T: np.ndarray | None = None) -> tuple[list[list[str]], np.ndarray]:
        from convergent.server.inference.csls import neighbourhood_mean
        from convergent.server.registry.hubness import rerank_depth

        gallery, gallery_model = plan.gallery, plan.gallery_model
        refs, route_key = self._csls_route(tenant, gallery_model, plan.probe_model, plan.fit)
        if r_T is None:
            r_T = neighbourhood_mean(Q, refs.target)
        if self._augmented(gallery):
            # the augmented index alone (no cosine index needed), under the gallery's lock, where
            # enrolments update it
            with self.indexes.lock(tenant, gallery.name):
                corrected = self._corrected(tenant, gallery, gallery_model, refs, route_key)
                size = len(corrected.penalty)
                if size:
                    ids, scores = csls_search(None, corrected, Q, r_T, min(k, size), min(k, size))
        else:  # re-rank the gallery's own cosine candidates (local: under its lock, as above)
            with self.indexes.searchable(tenant, gallery, gallery_model) as index:
                size = self.indexes.size(index, gallery)
                if size:
                    corrected = self._corrected(tenant, gallery, gallery_model, refs, route_key)
                    ids, scores = csls_search(index, corrected, Q, r_T, rerank_depth(k, size), min(k, size))
        if not size:
            return no_hits(len(Q))
        width = min(k, size)
        return [row[:width] for row in ids], scores[:, :width]
