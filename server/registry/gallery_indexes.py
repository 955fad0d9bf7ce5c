"""Where galleries' searchable indexes live, behind one interface (:class:`GalleryIndexes`).

The database is the source of truth; an index is a copy of a gallery's items that answers
top-k searches. :class:`LocalIndexes` keeps one in-memory index per gallery (exact or HNSW),
built lazily from the stored items and updated after each committed enroll or remove.
:class:`MilvusIndexes` keeps one Milvus collection per gallery, changed *inside* the database's
write transaction, so replicas sharing one Milvus server see changes in commit order. A new
backend is one more class here and a name in ``settings.gallery_backend``.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any, ContextManager, Protocol

import numpy as np

from convergent.server.errors import NotFound
from convergent.server.records import BeforeCommit, GalleryChange, GalleryRecord, ModelRecord
from convergent.server.registry.routes import unit
from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import GalleryStorage

log = logging.getLogger("convergent.galleries")


class GalleryIndexes(Protocol):
    """The galleries' indexes, as the use cases see them.

    ``lock(tenant, name)`` serialises one gallery's writes (and, for in-process indexes, its
    searches); the use cases hold it around a write's transaction and its ``committed`` call.
    An index has ``search(Q (n, d), k) -> (ids, scores)`` (cosine, higher is more similar) and,
    if exact and in process, ``score_all(Q) -> (ids, (n, size) scores)``.
    """

    in_process: bool  # indexes live in this process and follow its commits (CSLS's corrected indexes need that)

    def lock(self, tenant: str, name: str) -> threading.Lock: ...
    def before_commit(self, tenant: str) -> BeforeCommit | None: ...
    def committed(self, tenant: str, name: str, version: int, *, added_ids: list[str] | None = None,
                  added: np.ndarray | None = None, removed_ids: list[str] | None = None) -> None: ...
    def deleted(self, tenant: str, name: str) -> None: ...
    def forget(self, tenant: str, names: builtins.list[str]) -> None: ...
    def searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> ContextManager[Any]: ...
    def size(self, index: Any, gallery: GalleryRecord) -> int: ...
    def index_sizes(self) -> dict[str, int]: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...


class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.index: Any = None  # built on first use (local indexes only)
        self.version = -1       # the gallery version the index reflects


class _PerGallery:
    """One lock (and, for local indexes, one index) per gallery."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._entries_lock = threading.Lock()

    def _entry(self, tenant: str, name: str) -> _Entry:
        with self._entries_lock:
            return self._entries.setdefault((tenant, name), _Entry())

    def lock(self, tenant: str, name: str) -> threading.Lock:
        return self._entry(tenant, name).lock


class LocalIndexes(_PerGallery):
    """In-memory indexes, one per gallery, kept in step with this process's commits; a gallery
    another replica changed (its stored version is newer) is rebuilt from storage on next use."""

    in_process = True

    def __init__(self, galleries: GalleryStorage, device: str) -> None:
        super().__init__()
        self.galleries = galleries
        self.device = device

    def before_commit(self, tenant: str) -> BeforeCommit | None:
        return None

    def committed(self, tenant: str, name: str, version: int, *, added_ids: list[str] | None = None,
                  added: np.ndarray | None = None, removed_ids: list[str] | None = None) -> None:
        """Apply a committed change (the gallery is now at ``version``; the caller holds the
        lock) if the index held the version before; otherwise it missed another replica's
        change and is rebuilt on next use."""
        entry = self._entry(tenant, name)
        if entry.index is not None and entry.version == version - 1:
            if added_ids:
                entry.index.add(added_ids, unit(added))
            if removed_ids:
                entry.index.remove(removed_ids)
            entry.version = version
        else:
            entry.index = None

    def deleted(self, tenant: str, name: str) -> None:
        self._entry(tenant, name).index = None

    def forget(self, tenant: str, names: builtins.list[str]) -> None:
        """Drop these galleries' indexes (rebuilt from storage on next use)."""
        for name in names:
            entry = self._entry(tenant, name)
            with entry.lock:
                entry.index = None

    @contextlib.contextmanager
    def searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> Iterator[Any]:
        """The gallery's index under its lock, built from storage on first use and rebuilt when
        the stored gallery is newer."""
        entry = self._entry(tenant, gallery.name)
        with entry.lock:
            if entry.index is None or entry.version < gallery.version:
                from convergent.server.inference import ExactIndex, HnswIndex

                version, ids, vectors = self.galleries.items(tenant, gallery.name, model.dim)
                if gallery.index_kind == "exact":
                    index = ExactIndex(model.dim, backend="cuda" if self.device == "cuda" else "auto")
                else:
                    index = HnswIndex(model.dim)
                if ids:
                    index.add(ids, unit(vectors))
                entry.index, entry.version = index, version
            yield entry.index

    def size(self, index: Any, gallery: GalleryRecord) -> int:
        return len(index)

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

    def connect(self) -> None:
        return None

    def close(self) -> None:
        return None


class MilvusIndexes(_PerGallery):
    """One Milvus collection per gallery, changed inside the database's write transaction.

    A small state collection records, per gallery collection, which gallery state it holds
    (creation time + version): set to dirty before a change, to the new state last. A write
    that dies after changing Milvus leaves a state that matches no committed version, and the
    next use rebuilds the collection from the database under the write lock.
    """

    in_process = False

    def __init__(self, galleries: GalleryStorage, settings: ServerSettings) -> None:
        super().__init__()
        self.galleries = galleries
        self.settings = settings
        self._catalog_lock = threading.Lock()
        self._milvus = None  # MilvusCatalog, opened on first use
        self._connecting: threading.Thread | None = None

    def before_commit(self, tenant: str) -> BeforeCommit | None:
        """The hook that keeps the collection in step with the write (runs in its transaction)."""
        return lambda change: self._sync(tenant, change)

    def committed(self, tenant: str, name: str, version: int, *, added_ids: list[str] | None = None,
                  added: np.ndarray | None = None, removed_ids: list[str] | None = None) -> None:
        return None  # the collection changed inside the transaction

    def deleted(self, tenant: str, name: str) -> None:
        return None

    def forget(self, tenant: str, names: builtins.list[str]) -> None:
        return None

    def _catalog(self):  # noqa: ANN202
        """The server's :class:`MilvusCatalog` (one client; milvus-lite allows one process per file)."""
        from convergent.server.inference.milvus_index import MilvusCatalog, milvus_errors

        with self._catalog_lock:
            if self._milvus is None:
                with milvus_errors():
                    token = self.settings.milvus_token
                    self._milvus = MilvusCatalog(
                        self.settings.resolved_milvus_uri(), token=token.get_secret_value() if token else None
                    )
            return self._milvus

    def connect(self) -> None:
        """Connect in the background now (not on the first gallery call) and log whether Milvus
        answered, so a wrong URI shows in the log at start-up. Gallery calls answer
        UNAVAILABLE while Milvus cannot be reached; everything else serves."""

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
        with self._catalog_lock:
            catalog, self._milvus = self._milvus, None
        if catalog is not None:
            catalog.close()

    @staticmethod
    def _state(gallery: GalleryRecord) -> str:
        """The state token of a gallery's collection: its creation time and version (a gallery
        deleted and created again under the same name gets a new token). "v2": collections
        whose rows carry their version; older ones match no token and are rebuilt once."""
        return f"v2:{gallery.created_at!r}/{gallery.version}"

    def _sync(self, tenant: str, change: GalleryChange) -> None:
        """Bring the gallery's collection to ``change.after``; runs inside the database's write
        transaction, so every replica's changes reach Milvus in commit order.

        The collection is marked dirty before it is touched and given the new state token last;
        if the transaction then fails, the token matches no committed version and the next use
        rebuilds the collection from the database. Incremental when the collection held
        ``change.before``, a rebuild from the transaction's view otherwise.
        """
        from convergent.server.inference.milvus_index import DIRTY, collection_name, milvus_errors

        gallery = change.after or change.before
        if gallery is None:
            return
        name = collection_name(tenant, gallery.name)
        with milvus_errors():
            catalog = self._catalog()
            if change.after is None:
                catalog.drop(name)
                return
            state, target = catalog.state(name)[0], self._state(change.after)
            if change.before is change.after:  # nothing changes: rebuild only if stale
                if state == target:
                    return
                incremental = False
            else:
                incremental = change.before is not None and state == self._state(change.before)
            kind = "FLAT" if gallery.index_kind == "exact" else "HNSW"
            if not incremental:
                ids, vectors = change.items()
                catalog.rebuild(name, kind, ids, unit(vectors) if ids else None, target, change.after.version)
                return
            catalog.set_state(name, DIRTY)
            if change.removed_ids:
                catalog.delete(name, change.removed_ids)
            if change.added_ids:
                catalog.index(name, change.added.shape[1], kind).add(change.added_ids, unit(change.added), version=change.after.version)
            catalog.settle(name, target)

    @contextlib.contextmanager
    def searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> Iterator[Any]:
        """The gallery's collection at the database's version (no lock: Milvus serves concurrent
        reads), rebuilt first (under the write lock) if its state token is not the database's:
        a write that failed half-way, or a database restored from a backup.

        Read-your-writes without Strong consistency: the state is read as Milvus has it now
        (no wait); when it is older than the database's version (a change just committed,
        perhaps by another replica) it is read again with Strong. Its timestamp covers the
        version's changes, and searches pass it as their guarantee timestamp, so they see every
        committed change and wait only while Milvus has not applied them yet. Rows of a later,
        uncommitted version (a write in flight, or one that died before its commit) are left
        out by version."""
        from convergent.server.inference.milvus_index import collection_name, milvus_errors

        name, target = collection_name(tenant, gallery.name), self._state(gallery)
        with milvus_errors():
            catalog = self._catalog()
            state, ts = catalog.state(name, fresh=False)
            if state != target:
                state, ts = catalog.state(name)
            if state != target:
                self.galleries.hold(tenant, gallery.name, lambda change: self._sync(tenant, change))
                state, ts = catalog.state(name)
                if state is None:
                    raise NotFound(f"gallery {gallery.name!r} not found")
            index = catalog.index(name, model.dim, "FLAT" if gallery.index_kind == "exact" else "HNSW")
            yield _AtVersion(index, ts, int(state.rpartition("/")[2]))  # the version the collection holds

    def size(self, index: Any, gallery: GalleryRecord) -> int:
        """The database's count (a Milvus count(*) scans the collection)."""
        return gallery.size

    def index_sizes(self) -> dict[str, int]:
        return {"exact": 0, "hnsw": 0}  # nothing in this process


class _AtVersion:
    """A gallery collection searched as of one committed version (see ``MilvusIndexes.searchable``)."""

    def __init__(self, index: Any, ts: int, version: int) -> None:
        self.index, self.ts, self.version = index, ts, version

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        return self.index.search(queries, k, guarantee=self.ts, max_version=self.version)


def gallery_indexes(galleries: GalleryStorage, settings: ServerSettings, device: str) -> GalleryIndexes:
    """The backend ``settings.gallery_backend`` names ("local" or "milvus")."""
    if settings.gallery_backend == "milvus":
        return MilvusIndexes(galleries, settings)
    return LocalIndexes(galleries, device)
