"""Pair statistics of (source, target, anchor set): cached per model versions, stored in the
database for restarts and other replicas, updated incrementally with the anchors written since
(recomputed after a delete, an overwrite or an erasure), read with the held-out pairs of a fit
in one consistent snapshot."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convergent.server.errors import InvalidInput, NotFound, Unavailable
from convergent.server.records import ModelRecord
from convergent.server.storage.protocols import Store

if TYPE_CHECKING:
    from convergent.server.align import PairedStats

log = logging.getLogger("convergent.alignment")

HELDOUT_FRACTION, HELDOUT_CAP = 0.2, 2000


@dataclass
class _Cached:
    data_version: int
    stats: PairedStats


class StatsCache:
    """Statistics of all pairs per (tenant, set, source@version, target@version), LRU-bounded."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self.incremental_updates = 0  # how many times new anchors were added to a cached entry
        self.full_reads = 0
        self.stored_reads = 0  # statistics loaded from the database (a restart, another replica)

    def get(self, key: tuple) -> _Cached | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: _Cached) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is None or current.data_version <= entry.data_version:
                self._entries[key] = entry
                self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


@dataclass
class PairSnapshot:
    data_version: int
    stats: PairedStats  # of all pairs
    held_ids: list[str]
    X_held: np.ndarray
    Y_held: np.ndarray
    key: tuple = ()         # (tenant, set, source, source version, target, target version)
    computed: bool = False  # the statistics were brought to data_version by this read: worth storing
    train: tuple[np.ndarray, np.ndarray] | None = None  # a seeded sample of the other (fitting) pairs, if asked for


class PairStatistics:
    """Snapshots of a pair's statistics and held-out anchors (one per fit), and their storage."""

    def __init__(self, store: Store, device: str) -> None:
        self.store = store
        self.device = device
        self.cache = StatsCache()

    def snapshot(self, tenant: str, anchor_set: str, source: ModelRecord, target: ModelRecord, seed: int,
                 train_pairs: Callable[[int], int] | None = None) -> PairSnapshot:
        """Statistics of all pairs and the held-out pairs, from one consistent read.

        Statistics come from this server's cache, else from the database (stored by the last
        fit of the pair on any replica, before a restart too), else from reading every pair;
        anchors written since are added. The caller stores new ones (:meth:`store_computed`).
        ``train_pairs(n_pairs)``: how many of the pairs that are not held out to read as
        ``snapshot.train`` (a seeded sample; 0 or None: none), for maps trained on pairs.
        """
        from convergent.server.align import heldout_split

        key = (tenant, anchor_set, source.name, source.version, target.name, target.version)
        with self.store.read_pairs(tenant, anchor_set, source, target) as reader:
            version = reader.version()
            if version.data_version == 0:
                raise NotFound(f"anchor set {anchor_set!r} not found")

            def usable(entry: _Cached | None) -> bool:
                # No delete/overwrite happened after it, and it is not newer than this snapshot
                # (a concurrent fit may have cached or stored a later version than we read).
                return entry is not None and version.rewritten_version <= entry.data_version <= version.data_version

            cached = self.cache.get(key)
            if not usable(cached):
                cached = self._stored_stats(tenant, key, source, target)
                self.cache.stored_reads += usable(cached)
            stats, since = self._stats_since(cached if usable(cached) else None, reader, version.data_version, source, target)
            ids = reader.pair_ids()
            if stats.n != len(ids):  # what we started from disagrees with the table: read everything
                log.error("statistics of %s hold %d pairs, the anchor set %d: reading every pair", key, stats.n, len(ids))
                stats, since = self._stats_since(None, reader, version.data_version, source, target)
                if stats.n != len(ids):
                    raise RuntimeError(f"statistics hold {stats.n} pairs, the anchor set {len(ids)}")
            held = heldout_split(ids, seed=seed, fraction=HELDOUT_FRACTION, cap=HELDOUT_CAP)
            held_ids, X_held, Y_held = reader.pairs_by_id([i for i, h in zip(ids, held) if h])
            train = None
            wanted = train_pairs(len(ids)) if train_pairs is not None else 0
            if wanted:
                others = [i for i, h in zip(ids, held) if not h]
                rng = np.random.default_rng(seed)
                chosen = sorted(rng.choice(len(others), size=min(wanted, len(others)), replace=False))
                _, X_train, Y_train = reader.pairs_by_id([others[i] for i in chosen])
                train = (X_train, Y_train)
        self.cache.put(key, _Cached(version.data_version, stats.copy()))
        return PairSnapshot(version.data_version, stats, held_ids, X_held, Y_held, key, since < version.data_version, train)

    def store_computed(self, snap: PairSnapshot) -> None:
        """Store statistics a fit computed, for restarts and other replicas (after the fit is
        stored: a rejected fit writes nothing)."""
        if snap.computed:
            params, arrays = snap.stats.get_state()
            self.store.pair_stats.save(snap.key[0], snap.key[1:], snap.data_version, params["n"], arrays)

    def _stats_since(self, start: _Cached | None, reader, data_version: int, source: ModelRecord, target: ModelRecord):  # noqa: ANN001, ANN202
        """(statistics at ``data_version``, the version they started from): ``start`` plus the
        pairs written after it, or every pair."""
        from convergent.server.align import PairedStats

        if start is not None:
            stats, since = start.stats.copy(), start.data_version
            self.cache.incremental_updates += since < data_version
        else:
            stats, since = PairedStats.empty(source.dim, target.dim), 0
            self.cache.full_reads += 1
        if since < data_version:
            for _, X, Y in reader.iter_pairs(written_after=since):
                stats.update(X, Y, device=self.device)
        return stats, since

    def _stored_stats(self, tenant: str, key: tuple, source: ModelRecord, target: ModelRecord) -> _Cached | None:
        """The pair's statistics stored in the database, if they fit the models."""
        from convergent.server.align import PairedStats

        stored = self.store.pair_stats.load(tenant, key[1:])
        if stored is None:
            return None
        data_version, n, arrays = stored
        try:
            stats = PairedStats.from_state({"n": n, "d_x": source.dim, "d_y": target.dim}, arrays)
        except InvalidInput as exc:
            log.error("stored statistics of %s are ignored: %s", key, exc)
            return None
        return _Cached(data_version, stats)


def aligned_anchors(store: Store, tenant: str, anchor_set: str, models: list[ModelRecord]) -> tuple[int, list[str], list[np.ndarray]]:
    """(anchor set version, ids, one (n, d_m) array per model) of the anchors every model
    embedded, row i the same anchor in every array, from reads of one set version."""
    base, others = models[0], models[1:]
    for _ in range(3):  # re-read when anchors are written in between
        versions, common = set(), None
        for other in others:
            with store.read_pairs(tenant, anchor_set, base, other) as reader:
                versions.add(reader.version().data_version)
                ids = set(reader.pair_ids())
            common = ids if common is None else common & ids
        if versions == {0}:
            raise NotFound(f"anchor set {anchor_set!r} not found")
        wanted = sorted(common or ())
        arrays: list[np.ndarray] = []
        for other in others:
            with store.read_pairs(tenant, anchor_set, base, other) as reader:
                versions.add(reader.version().data_version)
                got, X, Y = reader.pairs_by_id(wanted)
            if list(got) != wanted:
                break
            if not arrays:
                arrays.append(X)
            arrays.append(Y)
        else:
            if len(versions) == 1:
                return versions.pop(), wanted, arrays
    raise Unavailable(f"anchor set {anchor_set!r} is being written: try again")
