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

from convergent.server.errors import DataLoss, InvalidInput, NotFound, Unavailable
from convergent.server.records import ModelRecord
from convergent.server.storage.protocols import Store

if TYPE_CHECKING:
    from convergent.server.align import PairedStats

log = logging.getLogger("convergent.alignment")

HELDOUT_FRACTION, HELDOUT_CAP = 0.2, 2000


@dataclass
class _Held:
    """The held-out pairs of one split seed: ids sorted, X (m, d_x), Y (m, d_y) float32."""

    seed: int
    ids: list[str]
    X: np.ndarray
    Y: np.ndarray


@dataclass
class _Cached:
    data_version: int
    stats: PairedStats
    held: _Held | None = None  # kept with the statistics: a later fit reads no block for them


class _LowestRanks:
    """Keeps the rows of the ``cap`` lowest-ranked ids (:func:`~convergent.server.align.split.rank_keys`)
    a statistics pass over every pair sees: the held-out split of a cold fit, without reading
    the ids first or the held-out rows again. Memory: ``cap`` rows per side."""

    def __init__(self, seed: int, cap: int, d_x: int, d_y: int) -> None:
        self.seed, self.cap, self.n = seed, cap, 0
        self.keys = np.zeros(0, dtype="S16")
        self.ids: list[str] = []
        self.X, self.Y = np.zeros((0, d_x), np.float32), np.zeros((0, d_y), np.float32)

    def see(self, ids: list[str], X: np.ndarray, Y: np.ndarray) -> None:
        from convergent.server.align.split import rank_keys

        self.n += len(ids)
        if not self.cap or not ids:
            return
        keys = rank_keys(ids, self.seed)
        take = np.flatnonzero(keys < self.keys[-1]) if len(self.keys) >= self.cap else np.arange(len(ids))
        if not len(take):
            return
        order = np.argsort(np.concatenate([self.keys, keys[take]]), kind="stable")[: self.cap]
        all_ids = self.ids + [ids[k] for k in take]
        self.keys = np.concatenate([self.keys, keys[take]])[order]
        self.ids = [all_ids[k] for k in order]
        self.X = np.concatenate([self.X, X[take]])[order]
        self.Y = np.concatenate([self.Y, Y[take]])[order]

    def held(self) -> _Held:
        """The held-out pairs of the ``n`` pairs seen, sorted by id."""
        from convergent.server.align.split import held_count

        m = held_count(self.n, HELDOUT_FRACTION, HELDOUT_CAP)
        order = sorted(range(m), key=lambda k: self.ids[k])
        return _Held(self.seed, [self.ids[k] for k in order], self.X[:m][order], self.Y[:m][order])


class _HeldRows:
    """Collects the rows of the wanted (held-out) ids from the batches a statistics pass reads,
    so a cold fit reads every block once (the held-out ids are spread over all blocks)."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def see(self, ids: list[str], X: np.ndarray, Y: np.ndarray) -> None:
        for k in [k for k, i in enumerate(ids) if i in self.wanted]:
            self.rows[ids[k]] = (X[k].copy(), Y[k].copy())


class StatsCache:
    """Statistics of all pairs per (tenant, set, source@version, target@version, products),
    LRU-bounded; full and cross-product statistics of a pair are separate entries."""

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

    def snapshot(
        self, tenant: str, anchor_set: str, source: ModelRecord, target: ModelRecord, seed: int,
        products: str = "full", train_pairs: Callable[[int], int] | None = None,
    ) -> PairSnapshot:
        """Statistics of all pairs and the held-out pairs, from one consistent read.

        Statistics come from this server's cache, else from the database (stored by the last
        fit of the pair on any replica, before a restart too), else from reading every pair;
        anchors written since are added. The caller stores new ones (:meth:`store_computed`).
        ``products="cross"`` (unit matching) is served by full statistics when those are at
        hand, else builds only the cross products (:class:`PairedStats`).
        ``train_pairs(n_pairs)``: how many of the pairs that are not held out to read as
        ``snapshot.train`` (a seeded sample; 0 or None: none), for maps trained on pairs.
        """
        from convergent.server.align import heldout_split

        key = (tenant, anchor_set, source.name, source.version, target.name, target.version)
        with self.store.read_pairs(tenant, anchor_set, source, target) as reader:
            version = reader.version()
            if version.data_version == 0:
                raise NotFound(f"anchor set {anchor_set!r} not found", reason="ANCHOR_SET_NOT_FOUND", metadata={"name": anchor_set})

            def usable(entry: _Cached | None) -> bool:
                # No delete/overwrite happened after it, and it is not newer than this snapshot
                # (a concurrent fit may have cached or stored a later version than we read).
                return (entry is not None and entry.stats.covers(products)
                        and version.rewritten_version <= entry.data_version <= version.data_version)

            entries = [self.cache.get((*key, kind)) for kind in ("full", "cross")]
            found = [e for e in entries if e is not None and usable(e)]
            cached = max(found, key=lambda e: (e.data_version, e.stats.products == "full")) if found else None
            if cached is None:
                cached = self._stored_stats(tenant, key, source, target)
                self.cache.stored_reads += usable(cached)
            start = cached if usable(cached) else None
            if start is not None and start.held is not None and start.held.seed == seed and (
                start.data_version == version.data_version
            ):  # nothing written since: the statistics and held-out pairs of the cache as they are
                stats, since, held = start.stats.copy(), start.data_version, start.held
            elif start is None:
                stats, since, held = self._cold(reader, version.data_version, source, target, products, seed)
            else:
                ids = reader.pair_ids()
                held_mask = heldout_split(ids, seed=seed, fraction=HELDOUT_FRACTION, cap=HELDOUT_CAP)
                collect = _HeldRows({i for i, h in zip(ids, held_mask) if h})
                stats, since = self._stats_since(start, reader, version.data_version, source, target, products, collect)
                if stats.n == len(ids):
                    held = self._held(reader, seed, collect, start.held)
                else:  # what we started from disagrees with the table: read everything
                    log.error("statistics of %s hold %d pairs, the anchor set %d: reading every pair", key, stats.n, len(ids))
                    stats, since, held = self._cold(reader, version.data_version, source, target, products, seed)
                    if stats.n != len(ids):
                        raise RuntimeError(f"statistics hold {stats.n} pairs, the anchor set {len(ids)}")
            train = None
            wanted = train_pairs(stats.n) if train_pairs is not None else 0
            if wanted:  # a seeded sample of the pairs that are not held out, for maps trained on pairs
                held_set = set(held.ids)
                others = [i for i in reader.pair_ids() if i not in held_set]
                rng = np.random.default_rng(seed)
                chosen = sorted(rng.choice(len(others), size=min(wanted, len(others)), replace=False))
                _, X_train, Y_train = reader.pairs_by_id([others[i] for i in chosen])
                train = (X_train, Y_train)
        self.cache.put((*key, stats.products), _Cached(version.data_version, stats.copy(), held))
        return PairSnapshot(version.data_version, stats, list(held.ids), held.X.copy(), held.Y.copy(), key,
                            since < version.data_version, train)

    def _cold(self, reader, data_version: int, source: ModelRecord, target: ModelRecord, products: str,  # noqa: ANN001
              seed: int) -> tuple[PairedStats, int, _Held]:
        """Statistics of every pair and the held-out pairs, in one pass over the blocks."""
        ranks = _LowestRanks(seed, HELDOUT_CAP, source.dim, target.dim)
        stats, since = self._stats_since(None, reader, data_version, source, target, products, ranks)
        return stats, since, ranks.held()

    @staticmethod
    def _held(reader, seed: int, collect: _HeldRows, cached: _Held | None) -> _Held:  # noqa: ANN001
        """The held-out pairs: rows read by this pass (the newest), else kept with the cached
        statistics (unchanged since: no rewrite after them), else read by id."""
        rows = collect.rows
        if cached is not None and cached.seed == seed:
            for k, i in enumerate(cached.ids):
                if i in collect.wanted and i not in rows:
                    rows[i] = (cached.X[k], cached.Y[k])
        missing = [i for i in collect.wanted if i not in rows]
        if missing:
            for i, x, y in zip(*reader.pairs_by_id(missing)):
                rows[i] = (x, y)
        ids = sorted(collect.wanted)
        if not ids:
            return _Held(seed, [], np.zeros((0, reader.d_x), np.float32), np.zeros((0, reader.d_y), np.float32))
        return _Held(seed, ids, np.stack([rows[i][0] for i in ids]), np.stack([rows[i][1] for i in ids]))

    def store_computed(self, snap: PairSnapshot) -> None:
        """Store statistics a fit computed, for restarts and other replicas (after the fit is
        stored: a rejected fit writes nothing)."""
        if snap.computed:
            params, arrays = snap.stats.get_state()
            self.store.pair_stats.save(snap.key[0], snap.key[1:], snap.data_version, params["n"], arrays,
                                       snap.stats.products)

    def _stats_since(self, start: _Cached | None, reader, data_version: int, source: ModelRecord,  # noqa: ANN001, ANN202
                     target: ModelRecord, products: str = "full", collect: _HeldRows | _LowestRanks | None = None):
        """(statistics at ``data_version``, the version they started from): ``start`` plus the
        pairs written after it (in ``start``'s products), or every pair (in ``products``)."""
        from convergent.server.align import PairedStats

        if start is not None:
            stats, since = start.stats.copy(), start.data_version
            self.cache.incremental_updates += since < data_version
        else:
            stats, since = PairedStats.empty(source.dim, target.dim, products), 0
            self.cache.full_reads += 1
        if since < data_version:
            for ids, X, Y in reader.iter_pairs(written_after=since):
                stats.update(X, Y, device=self.device)
                if collect is not None:
                    collect.see(ids, X, Y)
        return stats, since

    def _stored_stats(self, tenant: str, key: tuple, source: ModelRecord, target: ModelRecord) -> _Cached | None:
        """The pair's statistics stored in the database, if they fit the models."""
        from convergent.server.align import PairedStats

        try:
            stored = self.store.pair_stats.load(tenant, key[1:])
        except DataLoss as exc:  # a cache of the anchors: computed from them again
            log.error("stored statistics of %s are ignored: %s", key, exc)
            return None
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
            raise NotFound(f"anchor set {anchor_set!r} not found", reason="ANCHOR_SET_NOT_FOUND", metadata={"name": anchor_set})
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
