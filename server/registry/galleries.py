"""Use cases of galleries and cross-model inference: enroll, remove, identify (how it searches:
:mod:`.searching`), fused identify (verify and calibrate: :mod:`.verification`).

A gallery is bound to one model (version) when created. Probes of another model reach it
through the latest probe-model -> gallery-model fit. Every similarity is a cosine: higher is
more similar; verification accepts ``score >= threshold``.

The database is the source of truth; the searchable copies live behind
:class:`~convergent.server.registry.gallery_indexes.GalleryIndexes` (in-memory indexes or
Milvus collections), whose per-gallery lock keeps the database and the index in step.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from convergent.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    SpaceMismatch,
)
from convergent.server.registry import paging
from convergent.server.registry.alignment import Alignment
from convergent.server.registry.fusion_weights import route_weight
from convergent.server.registry.gallery_indexes import gallery_indexes
from convergent.server.registry.hubness import csls_search
from convergent.server.registry.routes import route_name as _route_name
from convergent.server.registry.searching import Searching, no_hits
from convergent.server.records import BeforeCommit, FitRecord, GalleryRecord, ModelRecord, Page
from convergent.server.registry.service import (
    check_model_version,
    prepare_vectors,
    valid_name,
)
from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import Store

log = logging.getLogger("convergent.galleries")

INDEX_KINDS = ("exact", "hnsw")
DENSE_FUSION_MAX = 200_000     # exact galleries up to this size are fused on full score rows


@dataclass(frozen=True)
class EnrollChunk:
    """One decoded message of an enroll stream (header fields may be empty after the first)."""

    gallery: str
    model: str
    model_version: int
    index_kind: str
    ids: list[str]
    vectors: np.ndarray
    last: bool = False
    ends_with_last: bool = False  # first message: the stream promises a final last=true message


SCORINGS = ("auto", "cosine", "csls")  # auto: csls through a map, cosine for the gallery's own model (identify)


@dataclass(frozen=True)
class IdentifyResult:
    ids: list[list[str]]   # (n, k') gallery ids, best first; "" pads
    scores: np.ndarray     # (n, k') float32, higher = more similar; -inf pads: cosine in [-1, 1] or CSLS in [-4, 4]
    route: str             # "direct" or "fit:<id>"
    scoring: str = "cosine"
    direction: str = "forward"         # "forward" (the gallery's space) or "both" (both models' spaces averaged)
    direction_reason: str = ""         # why that direction, in words
    # open-set (fpir given) only: accepted[i] = scores[i, 0] >= threshold
    accepted: np.ndarray | None = None
    threshold: float = 0.0
    fpir_requested: float = 0.0
    fpir_calibration: float = 0.0      # FPIR achieved on the calibration's non-mated searches
    n_calibration_searches: int = 0
    calibration: str = ""              # "anchors" (no labels) or "labelled" (non-mated probes given)
    calibration_searches: str = ""     # which searches, in words
    n_excluded: int = 0                # anchors left out as probably enrolled subjects


@dataclass(frozen=True)
class PartyWeight:
    model: str
    route: str
    weight: float
    weight_source: str


@dataclass(frozen=True)
class FusedIdentifyResult:
    ids: list[list[str]]   # (n, k') gallery ids, best first
    scores: np.ndarray     # (n, k') fused z-scores, higher = better match
    parties: list[PartyWeight]
    scoring: str = "cosine"



class Galleries(Searching):
    def __init__(self, store: Store, alignment: Alignment, settings: ServerSettings) -> None:
        self.store = store
        self.galleries = store.galleries
        self.alignment = alignment
        self.settings = settings
        self.indexes = gallery_indexes(store.galleries, settings, alignment.device)
        from convergent.server.registry.hubness import Hubness
        from convergent.server.registry.verification import Verification

        self.hubness = Hubness(store, alignment)
        from convergent.server.registry.fusion_weights import CombinationWeights

        self.fusion_weights = CombinationWeights(alignment)
        self.verification = Verification(store, alignment)
        from convergent.server.registry.open_set import OpenSet
        from convergent.server.registry.two_way import TwoWay

        self.two_way = TwoWay(store, alignment, self.hubness)
        self.open_set = OpenSet(alignment, self.hubness)

    # ------------------------------------------------------------ gallery records
    def get(self, tenant: str, name: str) -> GalleryRecord:
        valid_name(name, "gallery name")
        return self.galleries.get(tenant, name)

    def list(self, tenant: str, page_size: int, page_token: str) -> Page:
        limit = paging.page_size(page_size, self.settings.default_page_size, self.settings.max_page_size)
        return paging.make_page(self.galleries.list(tenant, paging.decode_token(page_token), limit + 1), limit)

    def delete(self, tenant: str, name: str) -> None:
        valid_name(name, "gallery name")
        with self.indexes.lock(tenant, name):
            self.galleries.delete(tenant, name, before_commit=self.before_commit(tenant))
            self.indexes.deleted(tenant, name)
            self.two_way.forget(tenant, name)

    # ------------------------------------------------------------ enrol / remove
    def enroll(
        self, tenant: str, chunks: Iterable[EnrollChunk], still_wanted: Callable[[], bool] | None = None
    ) -> tuple[int, int]:
        """Validate the whole stream, then add it in one transaction; returns (enrolled, size)."""
        from convergent.server.registry.streams import StreamRules, read_vector_stream

        def open_header(chunk: EnrollChunk) -> ModelRecord:
            valid_name(chunk.gallery, "gallery name")
            valid_name(chunk.model, "model name")
            if chunk.index_kind not in INDEX_KINDS:
                raise InvalidInput(f"unknown index {chunk.index_kind!r}; choose from {list(INDEX_KINDS)}",
                                   reason="UNKNOWN_OPTION", field="index")
            return check_model_version(self.store.get_model(tenant, chunk.model), chunk.model_version)

        def same_header(chunk: EnrollChunk, first: EnrollChunk) -> bool:
            return (chunk.gallery, chunk.model) in (("", ""), (first.gallery, first.model))

        blocks: builtins.list[np.ndarray] = []
        header, model, ids = read_vector_stream(
            chunks, StreamRules("enroll", "gallery or model", "id", AlreadyExists),
            self.settings.max_vectors_per_message, self.settings.max_id_length, open_header, same_header,
            lambda model, vectors, number, _: prepare_vectors(model, vectors, f"message {number}: vectors"), blocks.append,
        )
        vectors = np.vstack(blocks)
        with self.indexes.lock(tenant, header.gallery):
            try:
                existing = self.galleries.get(tenant, header.gallery)
            except NotFound:
                existing = None  # created by this enroll
            if existing is not None:
                self._check_gallery_model(existing, model)
            record, _, added_ids, added = self.galleries.enroll(
                tenant, header.gallery, model.name, model.version, existing.index_kind if existing else header.index_kind,
                [(ids, vectors)], quota=self.settings.max_vectors_per_tenant, still_wanted=still_wanted,
                before_commit=self.before_commit(tenant),
            )
            self.indexes.committed(tenant, header.gallery, record.version, added_ids=added_ids, added=added)
            self.hubness.follow(tenant, header.gallery, record.version, added_ids=added_ids, added=added)
        return len(added_ids), record.size

    @staticmethod
    def _check_gallery_model(gallery: GalleryRecord, model: ModelRecord) -> None:
        if gallery.model != model.name:
            raise FailedPrecondition(
                f"gallery {gallery.name!r} holds model {gallery.model!r}; enroll {model.name!r} vectors in another gallery",
                reason="GALLERY_MODEL_MISMATCH", field="model", metadata={"gallery": gallery.name, "model": gallery.model},
            )
        if gallery.model_version != model.version:
            raise SpaceMismatch(
                f"gallery {gallery.name!r} was enrolled with {gallery.model!r} v{gallery.model_version}; "
                f"the model is now v{model.version}", reason="STALE_GALLERY",
                metadata={"gallery": gallery.name, "model": gallery.model, "enrolled": gallery.model_version,
                          "current": model.version},
            )

    def index_sizes(self) -> dict[str, int]:
        """Vectors held by this process's indexes, by index kind (for metrics); "csls" counts
        the augmented indexes ``[y, -r_S/2]`` that CSLS identify through a map searches."""
        return {**self.indexes.index_sizes(), "csls": self.hubness.index_size()}

    def forget_indexes(self, tenant: str, names: builtins.list[str]) -> None:
        """Drop the in-memory indexes of these galleries (rebuilt from storage on next use)."""
        self.indexes.forget(tenant, names)

    def remove(self, tenant: str, name: str, ids: builtins.list[str]) -> tuple[int, int]:
        valid_name(name, "gallery name")
        if not ids:
            raise InvalidInput("give the ids to remove", reason="EMPTY_INPUT", field="ids")
        with self.indexes.lock(tenant, name):
            removed, size, version = self.galleries.remove(tenant, name, ids, before_commit=self.before_commit(tenant))
            if removed:
                self.indexes.committed(tenant, name, version, removed_ids=ids)
                self.hubness.follow(tenant, name, version, removed_ids=ids)
        return removed, size

    # ------------------------------------------------------------ index backend
    def before_commit(self, tenant: str) -> BeforeCommit | None:
        """The hook a gallery write runs inside its transaction (Milvus: change the collection)."""
        return self.indexes.before_commit(tenant)

    def connect_backend(self) -> None:
        """Connect the index backend now (Milvus: in the background, logging whether it answered)."""
        self.indexes.connect()

    def close(self) -> None:
        """Release the index backend (the server is stopping)."""
        self.indexes.close()

    # ------------------------------------------------------------ identify
    def identify(
        self, tenant: str, name: str, model_name: str, model_version: int, vectors: np.ndarray, k: int, fit_id: str = "",
        scoring: str = "auto", direction: str = "auto", fpir: float = 0.0, non_mated: np.ndarray | None = None,
    ) -> IdentifyResult:
        """Top-k gallery items per probe; probes of another model go through its latest fit
        (or the fit ``fit_id``, which must map the probe model into the gallery model).
        ``scoring``: "auto" (default: "csls" through a map, "cosine" for the gallery's own model),
        "cosine", or "csls" (hubness-corrected, routes through a map only). ``direction``: "auto"
        (default: "both" where a fit gallery model -> probe model on the same anchor set exists, the
        gallery is a local exact one and held-out anchors retrieve at least as well that way, else
        "forward"), "forward" (scores in the gallery's space)
        or "both" (:mod:`.two_way`). ``fpir`` in (0, 1): open-set, each top-1 is also tested against a
        threshold for that false-positive identification rate, calibrated on ``non_mated`` probes
        (n, d) when given, else on the route's anchors (:mod:`.open_set`)."""
        self._check_k(k)
        scoring = self._check_scoring(scoring)
        if fpir and not (0.0 < fpir < 1.0):
            raise InvalidInput(f"fpir must be in (0, 1) (0: closed-set identify), got {fpir}", reason="VALUE_OUT_OF_RANGE",
                               field="fpir")
        if non_mated is not None and not fpir:
            raise InvalidInput("non_mated probes calibrate an open-set threshold: give fpir too", reason="EMPTY_INPUT",
                               field="fpir")
        gallery = self.get(tenant, name)
        valid_name(model_name, "model name")
        probe_model = check_model_version(self.store.get_model(tenant, model_name), model_version)
        gallery_model = self.store.get_model(tenant, gallery.model)
        self._check_gallery_model(gallery, gallery_model)
        if fit_id:
            fit = self.alignment.fits.get(tenant, fit_id)
            if fit.method != "shared" and (fit.source, fit.target) != (probe_model.name, gallery_model.name):
                raise InvalidInput(
                    f"fit {fit_id!r} maps {fit.source!r} -> {fit.target!r}, not {probe_model.name!r} -> {gallery_model.name!r}",
                    reason="WRONG_FIT", field="fit_id",
                )
            self.alignment.check_versions(fit, probe_model, gallery_model)
        else:
            fit = self._route(tenant, probe_model, gallery_model)
        if scoring == "auto":
            scoring = "csls" if fit is not None else "cosine"
        if scoring == "csls":
            self._csls_route(tenant, gallery_model, probe_model, fit)  # INVALID_ARGUMENT on a direct route
        plan = self._plan(tenant, gallery, gallery_model, probe_model, fit, scoring, direction)
        P = prepare_vectors(probe_model, vectors, "probes")
        ids, scores = self._search(tenant, plan, P, k)
        result = IdentifyResult(ids, scores, _route_name(fit), scoring, plan.direction, plan.why)
        if not fpir:
            return result
        return self._open_set(tenant, plan, result, fpir, non_mated)

    @staticmethod
    def _check_scoring(scoring: str) -> str:
        scoring = scoring or "auto"
        if scoring not in SCORINGS:
            raise InvalidInput(f"unknown scoring {scoring!r}; choose from {list(SCORINGS)}", reason="UNKNOWN_OPTION",
                               field="scoring")
        return scoring

    def _check_k(self, k: int) -> None:
        if k <= 0 or k > self.settings.max_k:
            raise InvalidInput(f"k must be in 1..{self.settings.max_k}, got {k}", reason="VALUE_OUT_OF_RANGE", field="k",
                               metadata={"limit": "max_k", "value": self.settings.max_k})

    # ------------------------------------------------------------ federated identify
    def _combined(self, tenant: str, weights: builtins.list[PartyWeight], mapped: builtins.list[tuple[ModelRecord, FitRecord]],
                  gallery_model: ModelRecord) -> builtins.list[PartyWeight]:
        """The routed parties' weights from their out-of-fold combination (:mod:`.fusion_weights`),
        with the total of their per-party weights (a direct party keeps 1); unchanged when the
        combination does not apply."""
        combo, how = self.fusion_weights.weights(tenant, mapped, gallery_model)
        if combo is None:
            return weights
        mass = sum(w.weight for w in weights if w.model in combo) or 1.0
        return [PartyWeight(w.model, w.route, combo[w.model] * mass, how) if w.model in combo else w for w in weights]

    def identify_fused(self, tenant: str, name: str, parties: builtins.list[tuple[str, int, np.ndarray]], k: int,
                       scoring: str = "auto") -> FusedIdentifyResult:
        """Fuse several parties' probes (model, version, (n, d_model)) of the same n subjects.
        ``scoring="csls"``: parties routed through a map are CSLS-scored before the per-party
        z-normalisation; the gallery model's own party keeps cosine. "auto" (the default) is
        "csls" here (measured on the real faces: fused 0.607 cosine, 0.688 CSLS; docs/inference.md)."""
        from convergent.server.inference import fuse_dense, fuse_scores

        self._check_k(k)
        scoring = self._check_scoring(scoring)
        if scoring == "auto":
            scoring = "csls"
        if not parties:
            raise InvalidInput("give at least one party's probes", reason="EMPTY_INPUT", field="parties")
        models = [p[0] for p in parties]
        if len(set(models)) != len(models):
            raise InvalidInput(f"each party must use a different model, got {models}", reason="MODELS_NOT_DISTINCT",
                               field="parties.model")
        rows = {len(v) for _, _, v in parties}
        if len(rows) != 1:
            raise InvalidInput(f"every party must send the same number of probes, got {sorted(rows)}",
                               reason="LENGTH_MISMATCH", field="parties.vectors")
        gallery = self.get(tenant, name)
        gallery_model = self.store.get_model(tenant, gallery.model)
        self._check_gallery_model(gallery, gallery_model)
        queries, weights, routed, corrections, mapped = {}, [], {}, {}, []
        for model_name, version, vectors in parties:
            valid_name(model_name, "model name")
            model = check_model_version(self.store.get_model(tenant, model_name), version)
            fit = self._route(tenant, model, gallery_model)
            weight, source = route_weight(fit, model, gallery_model)
            probes = prepare_vectors(model, vectors, f"{model_name} probes", field="parties.vectors")
            queries[model_name] = self._into(tenant, fit, probes, model, gallery_model)
            weights.append(PartyWeight(model_name, _route_name(fit), weight, source))
            if fit is not None:
                mapped.append((model, fit))
                if scoring == "csls":
                    routed[model_name] = self._csls_route(tenant, gallery_model, model, fit)
        weights = self._combined(tenant, weights, mapped, gallery_model)
        if sum(w.weight for w in weights) <= 0:  # nobody measured well: fall back to equal weights
            weights = [PartyWeight(w.model, w.route, 1.0, "equal (no party had a positive weight)") for w in weights]
        weight_of = {w.model: w.weight for w in weights}
        with self.indexes.searchable(tenant, gallery, gallery_model) as index:
            size = self.indexes.size(index, gallery)
            dense = hasattr(index, "score_all") and size <= DENSE_FUSION_MAX  # exact, in process: every item scored
            if routed:  # under the gallery's lock: the corrected indexes hold the same items as ``index``
                from convergent.server.inference.csls import neighbourhood_mean

                current = self.get(tenant, name)
                for model_name, (refs, route_key) in routed.items():
                    # dense fusion reads r_S of every item from the table: no augmented index needed
                    corrected = self._corrected(tenant, current, gallery_model, refs, route_key,
                                                with_index=not dense and self._augmented(current))
                    corrections[model_name] = (corrected, neighbourhood_mean(queries[model_name], refs.target))
            if size == 0:
                n = next(iter(rows))
                empty_ids, empty_scores = no_hits(n)
                return FusedIdentifyResult(empty_ids, empty_scores, weights, scoring)
            if dense:
                per_party = {}
                for model_name, Q in queries.items():
                    ids, per_party[model_name] = index.score_all(Q)
                    if model_name in corrections:  # 2 cos - r_T - r_S
                        corrected, r_T = corrections[model_name]
                        r_S = np.array([corrected.penalty[i] for i in ids], dtype=np.float32)
                        per_party[model_name] = 2 * per_party[model_name] - r_T[:, None] - r_S[None, :]
                fused = fuse_dense(per_party, weight_of, k=min(k, size), ids=ids)
            else:
                depth = min(size, max(10 * k, 100))  # each party's candidates (a CSLS party's re-ranked among them)
                per_party = {}
                for model_name, Q in queries.items():
                    if model_name in corrections:
                        corrected, r_T = corrections[model_name]
                        per_party[model_name] = csls_search(index, corrected, Q, r_T, depth, depth)
                    else:
                        per_party[model_name] = index.search(Q, depth)
                fused = fuse_scores(per_party, weight_of, k=min(k, size))
        width = min(k, size)
        return FusedIdentifyResult([row[:width] for row in fused.ids], np.asarray(fused.scores, np.float32)[:, :width], weights,
                                   scoring)

