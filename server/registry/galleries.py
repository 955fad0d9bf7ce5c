"""Use cases of galleries and cross-model inference: enroll, remove, identify (verify and
calibrate: :mod:`.verification`).

A gallery is bound to one model (version) when created. Probes of another model reach it
through the latest probe-model -> gallery-model fit. Every similarity is a cosine: higher is
more similar; verification accepts ``score >= threshold``.

The database is the source of truth. With ``gallery_backend="local"`` indexes live in memory,
one per gallery, built lazily from the stored items and updated after each committed enroll or
remove; a per-gallery lock keeps the database and the index in step. With ``"milvus"`` each
gallery is a Milvus collection changed inside the database's write transaction (see
:meth:`Galleries._sync_milvus`), so replicas sharing one Milvus server stay consistent.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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
from convergent.server.registry.routes import Routed, route_name as _route_name, unit as _unit
from convergent.server.records import BeforeCommit, FitRecord, GalleryChange, GalleryRecord, ModelRecord, Page
from convergent.server.registry.service import (
    check_message_size,
    check_model_version,
    check_stream_complete,
    check_stream_ids,
    check_stream_order,
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


SCORINGS = ("cosine", "csls")


@dataclass(frozen=True)
class IdentifyResult:
    ids: list[list[str]]   # (n, k') gallery ids, best first; "" pads
    scores: np.ndarray     # (n, k') float32, higher = more similar; -inf pads: cosine in [-1, 1] or CSLS in [-4, 4]
    route: str             # "direct" or "fit:<id>"
    scoring: str = "cosine"


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



class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.index = None  # built on first use
        self.version = -1  # the gallery version the index reflects


class Galleries(Routed):
    def __init__(self, store: Store, alignment: Alignment, settings: ServerSettings) -> None:
        self.store = store
        self.galleries = store.galleries
        self.alignment = alignment
        self.settings = settings
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._entries_lock = threading.Lock()
        self._milvus = None  # MilvusCatalog, when gallery_backend is "milvus"
        self._connecting: threading.Thread | None = None
        from convergent.server.registry.hubness import Hubness
        from convergent.server.registry.verification import Verification

        self.hubness = Hubness(store, alignment)
        self.verification = Verification(store, alignment)

    def _entry(self, tenant: str, name: str) -> _Entry:
        with self._entries_lock:
            return self._entries.setdefault((tenant, name), _Entry())

    # ------------------------------------------------------------ gallery records
    def get(self, tenant: str, name: str) -> GalleryRecord:
        valid_name(name, "gallery name")
        return self.galleries.get(tenant, name)

    def list(self, tenant: str, page_size: int, page_token: str) -> Page:
        limit = paging.page_size(page_size, self.settings.default_page_size, self.settings.max_page_size)
        return paging.make_page(self.galleries.list(tenant, paging.decode_token(page_token), limit + 1), limit)

    def delete(self, tenant: str, name: str) -> None:
        valid_name(name, "gallery name")
        entry = self._entry(tenant, name)
        with entry.lock:
            self.galleries.delete(tenant, name, before_commit=self.before_commit(tenant))
            entry.index = None

    # ------------------------------------------------------------ enrol / remove
    def enroll(
        self, tenant: str, chunks: Iterable[EnrollChunk], still_wanted: Callable[[], bool] | None = None
    ) -> tuple[int, int]:
        """Validate the whole stream, then add it in one transaction; returns (enrolled, size)."""
        header: EnrollChunk | None = None
        model: ModelRecord | None = None
        ids: builtins.list[str] = []
        blocks: builtins.list[np.ndarray] = []
        seen: set[str] = set()
        seen_last = False
        for number, chunk in enumerate(chunks):
            seen_last = check_stream_order(number, chunk.last, seen_last)
            if header is None:
                header = chunk
                valid_name(chunk.gallery, "gallery name")
                valid_name(chunk.model, "model name")
                if chunk.index_kind not in INDEX_KINDS:
                    raise InvalidInput(f"unknown index {chunk.index_kind!r}; choose from {list(INDEX_KINDS)}")
                model = check_model_version(self.store.get_model(tenant, chunk.model), chunk.model_version)
            elif (chunk.gallery, chunk.model) not in (("", ""), (header.gallery, header.model)):
                raise InvalidInput(f"message {number} names another gallery or model than the first message")
            check_message_size(number, len(chunk.ids), chunk.vectors.shape[0], self.settings.max_vectors_per_message)
            check_stream_ids(chunk.ids, seen, self.settings.max_id_length, "id", "enroll", AlreadyExists)
            if chunk.ids:
                blocks.append(prepare_vectors(model, chunk.vectors, f"message {number}: vectors"))
                ids += chunk.ids
        if header is None or model is None:
            raise InvalidInput("the enroll stream is empty: send at least one message")
        check_stream_complete(seen_last)
        if not ids:
            raise InvalidInput("the enroll holds no vectors")
        vectors = np.vstack(blocks)
        entry = self._entry(tenant, header.gallery)
        with entry.lock:
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
            if not self._milvus_backend:  # (a Milvus collection changed inside the transaction)
                self._follow(entry, record.version, lambda index: index.add(added_ids, _unit(added)))
                self.hubness.follow(tenant, header.gallery, record.version, added_ids=added_ids, added=added)
        return len(added_ids), record.size

    @staticmethod
    def _follow(entry: _Entry, version: int, change: Callable[[Any], None]) -> None:
        """Apply a committed change (now at ``version``) to this process's index if it held the
        version before; otherwise it missed another replica's change: rebuilt on next use."""
        if entry.index is not None and entry.version == version - 1:
            change(entry.index)
            entry.version = version
        else:
            entry.index = None

    @staticmethod
    def _check_gallery_model(gallery: GalleryRecord, model: ModelRecord) -> None:
        if gallery.model != model.name:
            raise FailedPrecondition(
                f"gallery {gallery.name!r} holds model {gallery.model!r}; enroll {model.name!r} vectors in another gallery"
            )
        if gallery.model_version != model.version:
            raise SpaceMismatch(
                f"gallery {gallery.name!r} was enrolled with {gallery.model!r} v{gallery.model_version}; "
                f"the model is now v{model.version}"
            )

    def index_sizes(self) -> dict[str, int]:
        """Vectors held by the in-memory indexes, by index kind (for metrics)."""
        kinds = {"ExactIndex": "exact", "HnswIndex": "hnsw"}
        sizes = {"exact": 0, "hnsw": 0}
        with self._entries_lock:
            entries = list(self._entries.values())
        for entry in entries:
            index = entry.index
            if index is not None:
                kind = kinds.get(type(index).__name__, "other")
                sizes[kind] = sizes.get(kind, 0) + len(index)
        return sizes

    def forget_indexes(self, tenant: str, names: builtins.list[str]) -> None:
        """Drop the in-memory indexes of these galleries (rebuilt from storage on next use)."""
        for name in names:
            entry = self._entry(tenant, name)
            with entry.lock:
                entry.index = None

    def remove(self, tenant: str, name: str, ids: builtins.list[str]) -> tuple[int, int]:
        valid_name(name, "gallery name")
        if not ids:
            raise InvalidInput("give the ids to remove")
        entry = self._entry(tenant, name)
        with entry.lock:
            removed, size, version = self.galleries.remove(tenant, name, ids, before_commit=self.before_commit(tenant))
            if removed and not self._milvus_backend:  # (Milvus changed inside the transaction)
                self._follow(entry, version, lambda index: index.remove(ids))
                self.hubness.follow(tenant, name, version, removed_ids=ids)
        return removed, size

    def _index(self, tenant: str, gallery: GalleryRecord, model: ModelRecord, entry: _Entry):  # noqa: ANN202
        """The gallery's in-process index (caller holds entry.lock), built from storage on first
        use and rebuilt when the stored gallery has a newer version (another replica changed it)."""
        if entry.index is None or entry.version < gallery.version:
            from convergent.server.inference import ExactIndex, HnswIndex

            version, ids, vectors = self.galleries.items(tenant, gallery.name, model.dim)
            if gallery.index_kind == "exact":
                index = ExactIndex(model.dim, backend="cuda" if self.alignment.device == "cuda" else "auto")
            else:
                index = HnswIndex(model.dim)
            if ids:
                index.add(ids, _unit(vectors))
            entry.index, entry.version = index, version
        return entry.index

    # ------------------------------------------------------------ Milvus backend
    @property
    def _milvus_backend(self) -> bool:
        return self.settings.gallery_backend == "milvus"

    def before_commit(self, tenant: str) -> BeforeCommit | None:
        """The hook that keeps Milvus collections in step with gallery writes (None for local indexes)."""
        if not self._milvus_backend:
            return None
        return lambda change: self._sync_milvus(tenant, change)

    def _catalog(self):  # noqa: ANN202
        """The server's :class:`MilvusCatalog` (one client; milvus-lite allows one process per file)."""
        from convergent.server.inference.milvus_index import MilvusCatalog, milvus_errors

        with self._entries_lock:
            if self._milvus is None:
                with milvus_errors():
                    token = self.settings.milvus_token
                    self._milvus = MilvusCatalog(
                        self.settings.resolved_milvus_uri(), token=token.get_secret_value() if token else None
                    )
            return self._milvus

    def connect_backend(self) -> None:
        """Milvus only: connect in the background now (not on the first gallery call) and log
        whether it answered, so a wrong URI shows in the log at start-up. Gallery calls answer
        UNAVAILABLE while Milvus cannot be reached; everything else serves."""
        if not self._milvus_backend:
            return

        def connect() -> None:
            try:
                catalog = self._catalog()
            except Exception as exc:  # noqa: BLE001 - reported, retried on the next gallery call
                log.warning("Milvus at %s is not reachable (%s): gallery calls answer UNAVAILABLE until it is",
                            self.settings.resolved_milvus_uri(), exc.__cause__ or exc)
                return
            log.info("galleries in Milvus at %s (%d gallery collections)", catalog.uri, len(catalog.galleries()))

        self._connecting = threading.Thread(target=connect, name="milvus-connect", daemon=True)
        self._connecting.start()

    def close(self) -> None:
        """Close the Milvus client, if one was opened (the server is stopping)."""
        if self._connecting is not None:
            self._connecting.join(timeout=30)
        with self._entries_lock:
            catalog, self._milvus = self._milvus, None
        if catalog is not None:
            catalog.close()

    @staticmethod
    def _milvus_state(gallery: GalleryRecord) -> str:
        """The state token of a gallery's collection: its creation time and version (a gallery
        deleted and created again under the same name gets a new token)."""
        return f"{gallery.created_at!r}/{gallery.version}"

    def _sync_milvus(self, tenant: str, change: GalleryChange) -> None:
        """Bring the gallery's collection to ``change.after``; runs inside the database's write
        transaction, so every replica's changes reach Milvus in commit order.

        The collection is marked dirty before it is touched and given the new state token last;
        if the transaction then fails, the token matches no committed version and the next use
        rebuilds the collection from the database. Incremental when the collection held
        ``change.before``, a rebuild from the transaction's view otherwise.
        """
        from convergent.server.inference.milvus_index import DIRTY as MILVUS_DIRTY
        from convergent.server.inference.milvus_index import collection_name, milvus_errors

        gallery = change.after or change.before
        if gallery is None:
            return
        name = collection_name(tenant, gallery.name)
        with milvus_errors():
            catalog = self._catalog()
            if change.after is None:
                catalog.drop(name)
                return
            state, target = catalog.state(name), self._milvus_state(change.after)
            if change.before is change.after:  # nothing changes: rebuild only if stale
                if state == target:
                    return
                incremental = False
            else:
                incremental = change.before is not None and state == self._milvus_state(change.before)
            kind = "FLAT" if gallery.index_kind == "exact" else "HNSW"
            if not incremental:
                ids, vectors = change.items()
                catalog.rebuild(name, kind, ids, _unit(vectors) if ids else None, target)
                return
            catalog.set_state(name, MILVUS_DIRTY)
            if change.removed_ids:
                catalog.delete(name, change.removed_ids)
            if change.added_ids:
                catalog.index(name, change.added.shape[1], kind).add(change.added_ids, _unit(change.added))
            catalog.set_state(name, target)

    def _milvus_index(self, tenant: str, gallery: GalleryRecord, model: ModelRecord):  # noqa: ANN202
        """The gallery's collection, rebuilt first (under the write lock) if its state token is
        not the database's: a write that failed half-way, or a database restored from a backup."""
        from convergent.server.inference.milvus_index import collection_name, milvus_errors

        name = collection_name(tenant, gallery.name)
        with milvus_errors():
            catalog = self._catalog()
            if catalog.state(name) != self._milvus_state(gallery):
                self.galleries.hold(tenant, gallery.name, lambda change: self._sync_milvus(tenant, change))
                if catalog.state(name) is None:
                    raise NotFound(f"gallery {gallery.name!r} not found")
            return catalog.index(name, model.dim, "FLAT" if gallery.index_kind == "exact" else "HNSW")

    def _size(self, index, gallery: GalleryRecord) -> int:  # noqa: ANN001
        """Items in the index: the in-process index's own count; for Milvus the database's (a
        Milvus count(*) scans the collection)."""
        return gallery.size if self._milvus_backend else len(index)

    @contextlib.contextmanager
    def _searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> Iterator:
        """The gallery's index, held for searching: an in-process index under its gallery lock;
        a Milvus collection needs none (Milvus serves concurrent reads)."""
        if self._milvus_backend:
            from convergent.server.inference.milvus_index import milvus_errors

            with milvus_errors():
                yield self._milvus_index(tenant, gallery, model)
            return
        entry = self._entry(tenant, gallery.name)
        with entry.lock:
            yield self._index(tenant, gallery, model, entry)

    # ------------------------------------------------------------ identify
    def identify(
        self, tenant: str, name: str, model_name: str, model_version: int, vectors: np.ndarray, k: int, fit_id: str = "",
        scoring: str = "cosine",
    ) -> IdentifyResult:
        """Top-k gallery items per probe; probes of another model go through its latest fit
        (or the fit ``fit_id``, which must map the probe model into the gallery model).
        ``scoring``: "cosine" or "csls" (hubness-corrected, routes through a map only)."""
        self._check_k(k)
        scoring = self._check_scoring(scoring)
        gallery = self.get(tenant, name)
        valid_name(model_name, "model name")
        probe_model = check_model_version(self.store.get_model(tenant, model_name), model_version)
        gallery_model = self.store.get_model(tenant, gallery.model)
        self._check_gallery_model(gallery, gallery_model)
        if fit_id:
            fit = self.alignment.fits.get(tenant, fit_id)
            if fit.method != "shared" and (fit.source, fit.target) != (probe_model.name, gallery_model.name):
                raise InvalidInput(
                    f"fit {fit_id!r} maps {fit.source!r} -> {fit.target!r}, not {probe_model.name!r} -> {gallery_model.name!r}"
                )
            self.alignment.check_versions(fit, probe_model, gallery_model)
        else:
            fit = self._route(tenant, probe_model, gallery_model)
        Q = self._into(tenant, fit, prepare_vectors(probe_model, vectors, "probes"), probe_model, gallery_model)
        if scoring == "csls":
            return self._identify_csls(tenant, gallery, gallery_model, probe_model, fit, Q, k)
        with self._searchable(tenant, gallery, gallery_model) as index:
            size = self._size(index, gallery)
            if size == 0:
                return IdentifyResult([[] for _ in range(len(Q))], np.zeros((len(Q), 0), np.float32), _route_name(fit))
            ids, scores = index.search(Q, min(k, size))
        width = min(k, size)
        return IdentifyResult([row[:width] for row in ids], np.asarray(scores, np.float32)[:, :width], _route_name(fit))

    def _csls_route(self, tenant: str, gallery: GalleryRecord, probe_model: ModelRecord, fit: FitRecord | None):  # noqa: ANN202
        """(references, route key) of a CSLS identify; errors for routes and backends without it."""
        if fit is None:
            raise InvalidInput(
                f"scoring='csls' needs a route through a map: {probe_model.name!r} is the gallery's own model "
                f"(the route's anchors are CSLS's reference neighbourhoods); use scoring='cosine'"
            )
        if self._milvus_backend:
            raise FailedPrecondition("scoring='csls' runs on local gallery indexes in this release; use scoring='cosine' with Milvus")
        gallery_model = self.store.get_model(tenant, gallery.model)
        return self.hubness.references(tenant, fit, probe_model, gallery_model), f"{fit.id}/{probe_model.name}"

    def _identify_csls(self, tenant: str, gallery: GalleryRecord, gallery_model: ModelRecord, probe_model: ModelRecord,
                       fit: FitRecord | None, Q: np.ndarray, k: int) -> IdentifyResult:
        from convergent.server.inference.csls import augment_queries, csls_from_augmented, neighbourhood_mean

        refs, route_key = self._csls_route(tenant, gallery, probe_model, fit)
        with self._entry(tenant, gallery.name).lock:  # enrolments update the corrected index under it
            corrected = self.hubness.corrected_index(tenant, gallery, gallery_model, refs, route_key, self.alignment.device)
            size = len(corrected.index)
            if size == 0:
                return IdentifyResult([[] for _ in range(len(Q))], np.zeros((len(Q), 0), np.float32), _route_name(fit), "csls")
            ids, inner = corrected.index.search(augment_queries(Q), min(k, size))
        scores = csls_from_augmented(inner, neighbourhood_mean(Q, refs.target))
        width = min(k, size)
        return IdentifyResult([row[:width] for row in ids], scores[:, :width], _route_name(fit), "csls")

    @staticmethod
    def _check_scoring(scoring: str) -> str:
        scoring = scoring or "cosine"
        if scoring not in SCORINGS:
            raise InvalidInput(f"unknown scoring {scoring!r}; choose from {list(SCORINGS)}")
        return scoring

    def _check_k(self, k: int) -> None:
        if k <= 0 or k > self.settings.max_k:
            raise InvalidInput(f"k must be in 1..{self.settings.max_k}, got {k}")

    # ------------------------------------------------------------ federated identify
    def route_weight(self, fit: FitRecord | None, src: ModelRecord, tgt: ModelRecord) -> tuple[float, str]:
        """Weight of a party in fusion: the share of the gallery model's variance its route
        explains on held-out anchors, ``max(R^2 variance-weighted, 0)``; 1 for the gallery's own model.

        Validated on the real faces (README): plain held-out top-1 let a weak party (raw
        pixels) drag dlib + FaceNet fusion from 0.61 to 0.54 rank-1; this weight ignores it.
        """
        if fit is None:
            return 1.0, "direct route"
        key = "r2_variance_weighted" if fit.method != "shared" else f"{src.name}->{tgt.name}.r2_variance_weighted"
        value = fit.metrics.get(key)
        if value is None:
            return 0.0, f"fit {fit.id} has no {key}"
        return max(float(value), 0.0), f"held-out {key} of fit {fit.id}"

    def identify_fused(self, tenant: str, name: str, parties: builtins.list[tuple[str, int, np.ndarray]], k: int,
                       scoring: str = "cosine") -> FusedIdentifyResult:
        """Fuse several parties' probes (model, version, (n, d_model)) of the same n subjects.
        ``scoring="csls"``: parties routed through a map are CSLS-scored before the per-party
        z-normalisation; the gallery model's own party keeps cosine."""
        from convergent.server.inference import fuse_dense, fuse_scores

        self._check_k(k)
        scoring = self._check_scoring(scoring)
        if not parties:
            raise InvalidInput("give at least one party's probes")
        models = [p[0] for p in parties]
        if len(set(models)) != len(models):
            raise InvalidInput(f"each party must use a different model, got {models}")
        rows = {len(v) for _, _, v in parties}
        if len(rows) != 1:
            raise InvalidInput(f"every party must send the same number of probes, got {sorted(rows)}")
        gallery = self.get(tenant, name)
        gallery_model = self.store.get_model(tenant, gallery.model)
        self._check_gallery_model(gallery, gallery_model)
        queries, weights, routed, corrections = {}, [], {}, {}
        for model_name, version, vectors in parties:
            valid_name(model_name, "model name")
            model = check_model_version(self.store.get_model(tenant, model_name), version)
            fit = self._route(tenant, model, gallery_model)
            weight, source = self.route_weight(fit, model, gallery_model)
            queries[model_name] = self._into(tenant, fit, prepare_vectors(model, vectors, f"{model_name} probes"), model, gallery_model)
            weights.append(PartyWeight(model_name, _route_name(fit), weight, source))
            if scoring == "csls" and fit is not None:
                routed[model_name] = self._csls_route(tenant, gallery, model, fit)
        if sum(w.weight for w in weights) <= 0:  # nobody measured well: fall back to equal weights
            weights = [PartyWeight(w.model, w.route, 1.0, "equal (no party had a positive weight)") for w in weights]
        weight_of = {w.model: w.weight for w in weights}
        with self._searchable(tenant, gallery, gallery_model) as index:
            if routed:  # under the gallery's lock: the corrected indexes hold the same items as ``index``
                from convergent.server.inference.csls import neighbourhood_mean

                current = self.get(tenant, name)
                for model_name, (refs, route_key) in routed.items():
                    corrected = self.hubness.corrected_index(tenant, current, gallery_model, refs, route_key, self.alignment.device)
                    corrections[model_name] = (corrected, neighbourhood_mean(queries[model_name], refs.target))
            size = self._size(index, gallery)
            if size == 0:
                n = next(iter(rows))
                return FusedIdentifyResult([[] for _ in range(n)], np.zeros((n, 0), np.float32), weights, scoring)
            if hasattr(index, "score_all") and size <= DENSE_FUSION_MAX:  # exact, in process
                per_party = {}
                for model_name, Q in queries.items():
                    ids, per_party[model_name] = index.score_all(Q)
                    if model_name in corrections:  # 2 cos - r_T - r_S
                        corrected, r_T = corrections[model_name]
                        r_S = np.array([corrected.penalty[i] for i in ids], dtype=np.float32)
                        per_party[model_name] = 2 * per_party[model_name] - r_T[:, None] - r_S[None, :]
                fused = fuse_dense(per_party, weight_of, k=min(k, size), ids=ids)
            else:
                from convergent.server.inference.csls import augment_queries, csls_from_augmented

                depth = min(size, max(10 * k, 100))
                per_party = {}
                for model_name, Q in queries.items():
                    if model_name in corrections:
                        corrected, r_T = corrections[model_name]
                        found, inner = corrected.index.search(augment_queries(Q), depth)
                        per_party[model_name] = (found, csls_from_augmented(inner, r_T))
                    else:
                        per_party[model_name] = index.search(Q, depth)
                fused = fuse_scores(per_party, weight_of, k=min(k, size))
        width = min(k, size)
        return FusedIdentifyResult([row[:width] for row in fused.ids], np.asarray(fused.scores, np.float32)[:, :width], weights,
                                   scoring)

