"""Galleries in Milvus (``settings.gallery_backend="milvus"``): :class:`MilvusIndexes`, one
collection per gallery changed inside the database's write transaction, searched with
read-your-writes consistency and rebuilt blue-green off the write lock."""

from __future__ import annotations

import builtins
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from convergent.server.errors import NotFound
from convergent.server.records import BeforeCommit, GalleryChange, GalleryRecord, ModelRecord
from convergent.server.registry.gallery_indexes import _PerGallery
from convergent.server.registry.routes import unit
from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import GalleryStorage

log = logging.getLogger("convergent.galleries")


class MilvusIndexes(_PerGallery):
    """One Milvus collection per gallery, changed inside the database's write transaction.

    A small state collection records, per gallery, which gallery state its collection holds
    (creation time + version): set to dirty before a change, to the new state last. A write
    that dies after changing Milvus leaves a state that matches no committed version, and the
    next search rebuilds the collection from the database: blue-green, off the write lock
    (:meth:`_rebuild_aside`), so writes, of this gallery and of every other, go on meanwhile.
    """

    in_process = False

    def __init__(self, galleries: GalleryStorage, settings: ServerSettings) -> None:
        super().__init__()
        self.galleries = galleries
        self.settings = settings
        self._catalog_lock = threading.Lock()
        self._milvus = None  # MilvusCatalog, opened on first use
        self._connecting: threading.Thread | None = None
        self._rebuilds: dict[tuple[str, str], threading.Lock] = {}  # one rebuild per gallery in this process

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
        if the transaction then fails, the token matches no committed version and the next
        search rebuilds the collection. Incremental when the collection held ``change.before``;
        a new gallery's collection is made with this write's items; a stale one (a failed write,
        a restored backup, a switch from local indexes) is only marked dirty here and rebuilt
        by the next search, off the write lock.
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
            target, kind = self._state(change.after), "FLAT" if gallery.index_kind == "exact" else "HNSW"
            if change.before is None:
                ids, vectors = change.items()
                catalog.rebuild(name, kind, ids, unit(vectors) if ids else None, target, change.after.version)
                return
            state = catalog.state(name)
            catalog.set_state(name, DIRTY, physical=state.physical)
            if state.token != self._state(change.before):
                return  # stale: left dirty (a later version's token could match a dying write's)
            if change.removed_ids:
                catalog.delete(state.physical, change.removed_ids)
            if change.added_ids:
                catalog.index(state.physical, change.added.shape[1], kind).add(
                    change.added_ids, unit(change.added), version=change.after.version)
            catalog.settle(name, target, state.physical)

    def _rebuild_aside(self, tenant: str, gallery: GalleryRecord, dim: int):  # noqa: ANN202
        """Blue-green: fill a new collection from a snapshot of the gallery without any lock,
        then, under the write lock, catch up on the items enrolled since (by enrolment number)
        and removed since, and switch the gallery to it. Returns the new state."""
        from convergent.server.inference.milvus_index import collection_name

        name, catalog = collection_name(tenant, gallery.name), self._catalog()
        with self._entries_lock:
            rebuilding = self._rebuilds.setdefault((tenant, gallery.name), threading.Lock())
        with rebuilding:
            state = catalog.state(name)
            if state.token == self._state(self.galleries.get(tenant, gallery.name)):
                return state  # rebuilt meanwhile, or a newer version was committed meanwhile
            # A write in flight (its state already in Milvus, its commit not yet in the
            # database) needs no rebuild: wait for it under the write lock, doing nothing, and look again.
            self.galleries.hold_since(tenant, gallery.name, 2**62, dim, lambda *_: None)
            state = catalog.state(name)
            if state.token == self._state(self.galleries.get(tenant, gallery.name)):
                return state
            record, seq, ids, vectors = self.galleries.snapshot(tenant, gallery.name, dim)
            if record is None:
                raise NotFound(f"gallery {gallery.name!r} not found", reason="GALLERY_NOT_FOUND", metadata={"name": gallery.name})
            kind = "FLAT" if record.index_kind == "exact" else "HNSW"
            built = catalog.build_aside(name, dim, kind, ids, unit(vectors) if ids else None, record.version)
            switched: list[bool] = []

            def switch(current: GalleryRecord | None, added_ids: list[str], added: np.ndarray, current_ids) -> None:  # noqa: ANN001
                if current is None or current.created_at != record.created_at:
                    return  # deleted (and perhaps created again) meanwhile
                if current.version != record.version:
                    if added_ids:
                        built.add(added_ids, unit(added), empty=True, version=current.version)
                    gone = set(ids) - set(current_ids())
                    if gone:
                        catalog.delete(built.collection, sorted(gone))
                catalog.switch(name, self._state(current), built.collection)
                switched.append(True)

            try:
                self.galleries.hold_since(tenant, gallery.name, seq, dim, switch)
            finally:
                if not switched:  # deleted meanwhile, or Milvus or the database failed: nothing switched
                    catalog.discard(built.collection)
            if not switched:
                raise NotFound(f"gallery {gallery.name!r} not found", reason="GALLERY_NOT_FOUND", metadata={"name": gallery.name})
            log.info("gallery %r rebuilt in Milvus (%d items at version %d, then caught up)", gallery.name, len(ids), record.version)
            return catalog.state(name)

    @contextlib.contextmanager
    def searchable(self, tenant: str, gallery: GalleryRecord, model: ModelRecord) -> Iterator[Any]:
        """The gallery's collection at the version it holds (no lock: Milvus serves concurrent
        reads), rebuilt first (blue-green, :meth:`_rebuild_aside`) if its state token is not the
        database's: a write that failed half-way, a restored backup, a switch from local indexes.

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
            state = catalog.state(name, fresh=False)
            if state.token != target:
                state = catalog.state(name)
            if state.token != target:
                state = self._rebuild_aside(tenant, gallery, model.dim)
            index = catalog.index(state.physical, model.dim, "FLAT" if gallery.index_kind == "exact" else "HNSW")
            yield _AtVersion(index, state.ts, int(state.token.rpartition("/")[2]))  # the version the collection holds

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
