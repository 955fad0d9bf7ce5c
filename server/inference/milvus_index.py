"""A gallery index in Milvus (pymilvus ``MilvusClient``): a Milvus server URI in production,
a local milvus-lite ``.db`` file for tests and single-node trials (one process per file).

Same contract as :class:`~convergent.server.inference.index.ExactIndex`: inner product on the
caller's unit vectors (cosine), scores higher = more similar, results sorted best first.
``index="FLAT"`` is exact; ``"HNSW"`` approximate (``M``, ``ef_construction``, ``ef_search``).

Consistency: a search waits only for what it must see. Writes return Milvus timestamps
(``add``; :meth:`MilvusCatalog.set_state`), and a search given ``guarantee`` (such a timestamp)
sees every change up to it (Milvus' guarantee timestamp, "Customized" consistency) without
Strong consistency's wait for the newest time tick. Without one, a search is Strong.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from convergent.server.errors import InvalidInput, Unavailable
from convergent.server.inference._validate import as_vectors, new_entries, positive_int, removal_ids

log = logging.getLogger("convergent.milvus")

INDEX_TYPES = ("FLAT", "HNSW")
_ID_LENGTH = 512


def collection_name(*parts: str) -> str:
    """A valid Milvus collection name for e.g. (tenant, gallery): Milvus allows letters, digits
    and underscores, so the parts are hashed (stable, collision-resistant)."""
    return "g_" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


class MilvusIndex:
    """Gallery vectors in one Milvus collection (created on first use)."""

    def __init__(self, dim: int, uri: str, collection: str, *, index: str = "FLAT", M: int = 32,
                 ef_construction: int = 200, ef_search: int = 128, client=None, versioned: bool = False) -> None:  # noqa: ANN001
        """``versioned``: rows carry the gallery version that added them (field ``v``), so a
        search can leave out rows of versions not yet committed (:meth:`search`'s ``max_version``)."""
        from pymilvus import DataType, MilvusClient

        self.dim = positive_int(dim, "dim")
        if index not in INDEX_TYPES:
            raise InvalidInput(f"Milvus index must be one of {list(INDEX_TYPES)}, got {index!r}")
        self.index_type, self.collection, self.ef_search, self.versioned = index, collection, ef_search, versioned
        self.client = client if client is not None else MilvusClient(uri)
        if not self.client.has_collection(collection):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_ID_LENGTH)
            if versioned:
                schema.add_field("v", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            params = self.client.prepare_index_params()
            extra = {"M": M, "efConstruction": ef_construction} if index == "HNSW" else {}
            params.add_index(field_name="vector", index_type=index, metric_type="IP", params=extra)
            # Bounded by default: searches that need more pass a guarantee timestamp, and the
            # lookups that writes depend on ask for Strong.
            self.client.create_collection(collection, schema=schema, index_params=params, consistency_level="Bounded")

    def drop(self) -> None:
        """Delete the collection (the gallery is gone, or is rebuilt from the database)."""
        self.client.drop_collection(self.collection)

    def _present(self, ids: Sequence[str]) -> list[str]:
        found = []
        for start in range(0, len(ids), 1000):
            found += [row["id"] for row in self.client.get(self.collection, ids=list(ids[start : start + 1000]), output_fields=["id"],
                                                           consistency_level="Strong")]
        return found

    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, str) and bool(self._present([id_]))

    def add(self, ids: Sequence[str], vectors: np.ndarray, *, empty: bool = False, version: int = 0) -> int:
        """Insert (ids, (n, dim) vectors); :class:`AlreadyExists` if an id is present. ``empty``:
        the caller just created the collection, so no id is looked up (0.6 s per 100k ids).
        ``version``: the gallery version the rows belong to (versioned collections). Returns the
        Milvus timestamp of the last insert (0 where the server reports none, e.g. milvus-lite)."""
        ids, X = new_entries(ids, vectors, self.dim, (lambda _: []) if empty else self._present)
        connection, ts = self.client._get_connection(), 0  # MilvusClient.insert drops the timestamp; the same call with it
        for start in range(0, len(ids), 2000):
            rows = [{"id": i, "vector": v} for i, v in zip(ids[start : start + 2000], X[start : start + 2000].tolist())]
            if self.versioned:
                for row in rows:
                    row["v"] = version
            result = connection.insert_rows(self.collection, rows, context=self.client._generate_call_context())
            ts = max(ts, int(result.timestamp or 0))
        return ts

    def remove(self, ids: Iterable[str]) -> int:
        """Delete ids (unknown ones are ignored); returns how many were removed."""
        present = self._present(removal_ids(ids))
        if present:
            self.client.delete(self.collection, ids=present)
        return len(present)

    def search(self, queries: np.ndarray, k: int, *, guarantee: int = 0,
               max_version: int | None = None) -> tuple[list[list[str]], np.ndarray]:
        """Top-k by inner product: (ids, scores (q, min(k, len)) float32), best first; a row with
        fewer hits (HNSW) is padded with "" / -inf. No count query: Milvus' count(*) is a scan
        (1.4 s at 100k rows on milvus-lite), so the width is what the search returns.
        ``guarantee``: a Milvus timestamp whose changes the search must see (0: Strong).
        ``max_version``: leave out rows added by later gallery versions (versioned collections)."""
        Q = as_vectors(queries, "queries", dim=self.dim)
        k = positive_int(k, "k")
        params = {"metric_type": "IP", "params": {"ef": max(self.ef_search, k)} if self.index_type == "HNSW" else {}}
        extra: dict = {"consistency_level": "Customized", "guarantee_timestamp": guarantee} if guarantee else {"consistency_level": "Strong"}
        if max_version is not None and self.versioned:
            extra["filter"] = f"v <= {int(max_version)}"
        hits = self.client.search(self.collection, data=Q.tolist(), limit=k, search_params=params, output_fields=["id"], **extra)
        width = max((len(row) for row in hits), default=0)
        ids = [[hit["id"] for hit in row] + [""] * (width - len(row)) for row in hits]
        scores = np.full((len(Q), width), -np.inf, dtype=np.float32)
        for r, row in enumerate(hits):
            scores[r, : len(row)] = [hit["distance"] for hit in row]
        return ids, scores


STATE_COLLECTION = "convergent_index_state"
DIRTY = "dirty"
RETIRE_S = 30.0  # a collection replaced by a rebuild is dropped this long after, once searches on it are done


class State(NamedTuple):
    """What the state collection records for a gallery: its token (None: never built or
    dropped), a Milvus timestamp covering the changes the token stands for (0: unknown), and
    the collection that holds the gallery now (its own name, or a rebuild's; "" if none)."""

    token: str | None
    ts: int
    physical: str


class MilvusCatalog:
    """A server's galleries in Milvus: one client, a collection per gallery, and a small state
    collection that records which gallery state each collection holds.

    The state is an opaque token chosen by the caller (convergent uses the gallery's creation
    time and version, both from its database), with the name of the collection that holds the
    gallery (a rebuild fills a new one and switches to it: :meth:`build_aside`, :meth:`switch`). A collection whose state does not equal the
    token the database implies is stale and must be rebuilt; :data:`DIRTY` marks one being
    changed, so a crash half-way through a change is never mistaken for a clean collection.
    Several server replicas may share one Milvus server: the tokens live in Milvus beside the
    collections and every change is made under the database's write lock.
    """

    def __init__(self, uri: str, *, token: str | None = None, M: int = 32, ef_construction: int = 200,
                 ef_search: int = 128, client=None) -> None:  # noqa: ANN001
        from pymilvus import DataType, MilvusClient

        self.uri = uri
        if uri.endswith(".db") and "://" not in uri:  # milvus-lite: a local file
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.options = {"M": M, "ef_construction": ef_construction, "ef_search": ef_search}
        self._indexes: dict[tuple[str, int, str], MilvusIndex] = {}
        self._indexes_lock = threading.Lock()  # one creation per collection among a server's threads
        self._retiring: dict[str, threading.Timer] = {}
        self.client = client if client is not None else MilvusClient(uri, **({"token": token} if token else {}))
        if not self.client.has_collection(STATE_COLLECTION):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("state", DataType.VARCHAR, max_length=256)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
            params = self.client.prepare_index_params()
            params.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
            self.client.create_collection(STATE_COLLECTION, schema=schema, index_params=params, consistency_level="Strong")

    def close(self) -> None:
        with self._indexes_lock:
            self._indexes.clear()
            retiring, self._retiring = self._retiring, {}
        for physical, timer in retiring.items():  # no search of this process uses them any more
            timer.cancel()
            self._drop_quietly(physical)
        self.client.close()

    def galleries(self) -> list[str]:
        """Names of the gallery collections (all but the state collection; a gallery being
        rebuilt has two for a while)."""
        return [name for name in self.client.list_collections() if name != STATE_COLLECTION]

    def state(self, collection: str, *, fresh: bool = True) -> State:
        """The :class:`State` recorded for gallery ``collection``. ``fresh=False`` reads without
        waiting (Eventually: what Milvus has applied now, perhaps an older state)."""
        rows = self.client.get(STATE_COLLECTION, ids=[collection], output_fields=["state"],
                               consistency_level="Strong" if fresh else "Eventually")
        if not rows:
            return State(None, 0, "")
        rest, sep, physical = rows[0]["state"].rpartition("#")
        if not sep:  # written before rebuilds switched collections
            rest, physical = physical, collection
        token, sep, ts = rest.rpartition("@")
        return State(token, int(ts), physical) if sep and ts.isdigit() else State(rest, 0, physical)

    def set_state(self, collection: str, token: str, ts: int = 0, physical: str | None = None) -> int:
        """Record ``token``, the timestamp that covers its changes and the collection that holds
        the gallery (default: ``collection`` itself); returns this write's Milvus timestamp,
        later than every change made before it (0 on milvus-lite)."""
        state = f"{token}@{ts}#{collection if physical is None else physical}"
        row = {"id": collection, "state": state, "unused": [0.0, 0.0]}
        result = self.client._get_connection().upsert_rows(STATE_COLLECTION, [row], context=self.client._generate_call_context())
        return int(result.timestamp or 0)

    def settle(self, collection: str, token: str, physical: str | None = None) -> int:
        """Record ``token`` once its changes are made, with a timestamp that covers them (a
        delete reports no timestamp; a state write after it does). Returns that timestamp."""
        ts = self.set_state(collection, DIRTY, physical=physical)
        self.set_state(collection, token, ts, physical)
        return ts

    def build_aside(self, collection: str, dim: int, index: str, ids: Sequence[str], vectors: np.ndarray | None,
                    version: int) -> MilvusIndex:
        """A new collection for gallery ``collection`` filled with (ids, unit vectors) of
        ``version``; searches and writes go on using the current one until :meth:`switch`."""
        built = self.index(f"{collection}_{uuid.uuid4().hex[:12]}", dim, index)
        try:
            if len(ids):
                built.add(ids, vectors, empty=True, version=version)
        except BaseException:
            self._drop_quietly(built.collection)  # half filled: of no use
            raise
        return built

    def switch(self, collection: str, token: str, physical: str) -> None:
        """Make ``physical`` the gallery's collection, at ``token``; the one it replaces is
        dropped :data:`RETIRE_S` later (searches that read the old state may still use it)."""
        old = self.state(collection).physical
        self.settle(collection, token, physical)
        if old and old != physical:
            timer = threading.Timer(RETIRE_S, self._retire, [old])
            timer.daemon = True
            with self._indexes_lock:
                self._retiring[old] = timer
            timer.start()

    def _retire(self, physical: str) -> None:
        with self._indexes_lock:
            if self._retiring.pop(physical, None) is None:
                return  # closed meanwhile
        self._drop_quietly(physical)

    def _drop_quietly(self, physical: str) -> None:
        self._forget(physical)
        try:
            self.client.drop_collection(physical)
        except Exception as exc:  # noqa: BLE001 - a leftover collection is harmless; logged
            log.warning("could not drop the replaced Milvus collection %s: %s", physical, exc)

    def discard(self, physical: str) -> None:
        """Drop a collection built aside that was not switched to."""
        self._forget(physical)
        self.client.drop_collection(physical)

    def index(self, collection: str, dim: int, index: str) -> MilvusIndex:
        """The collection as an index (created empty, versioned, if missing)."""
        key = (collection, dim, index)
        with self._indexes_lock:
            found = self._indexes.get(key)
            if found is None:
                found = self._indexes[key] = MilvusIndex(dim, self.uri, collection, index=index, client=self.client,
                                                         versioned=True, **self.options)
            return found

    def _forget(self, collection: str) -> None:
        with self._indexes_lock:
            for key in [key for key in self._indexes if key[0] == collection]:
                del self._indexes[key]

    def drop(self, collection: str) -> None:
        """Delete the gallery's collection and its state."""
        physical = self.state(collection).physical
        self.set_state(collection, DIRTY, physical=physical)
        for name in sorted({collection, physical} - {""}):
            self._forget(name)
            self.client.drop_collection(name)
        self.client.delete(STATE_COLLECTION, ids=[collection])

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Delete these ids from the collection (absent ones and a missing collection are fine)."""
        if ids and self.client.has_collection(collection):
            for start in range(0, len(ids), 1000):
                self.client.delete(collection, ids=list(ids[start : start + 1000]))

    def rebuild(self, collection: str, index: str, ids: Sequence[str], vectors: np.ndarray | None, token: str,
                version: int = 0) -> None:
        """Replace the collection's contents with (ids, (n, dim) unit vectors) of gallery
        ``version`` and record ``token``. With no ids it is recreated empty (same dimension), or
        left for :meth:`index` to create."""
        physical = self.state(collection).physical
        self.set_state(collection, DIRTY, physical=physical)
        dim = vectors.shape[1] if len(ids) else self._dim(physical or collection)
        for name in sorted({collection, physical} - {""}):
            self._forget(name)
            self.client.drop_collection(name)
        if dim:
            rebuilt = self.index(collection, dim, index)
            if len(ids):
                rebuilt.add(ids, vectors, empty=True, version=version)
        self.settle(collection, token)

    def _dim(self, collection: str) -> int | None:
        """The vector dimension of an existing collection (None if it does not exist)."""
        if not self.client.has_collection(collection):
            return None
        fields = self.client.describe_collection(collection)["fields"]
        return next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")


@contextmanager
def milvus_errors() -> Iterator[None]:
    """Report a failed Milvus call (server down, timeout, collection gone) as :class:`Unavailable`:
    the caller may retry; the details go to the server log, not to the caller."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        log.warning("Milvus call failed: %s", exc)
        raise Unavailable("the gallery index service (Milvus) is unavailable; retry later", reason="INDEX_UNAVAILABLE") from exc
