"""Out-of-fold anchors of a fit: every anchor mapped by a map that was not fitted on it.

Verification's default calibration scores anchor pairs through the route's map. Scoring them
through the served map itself would measure the map on its own training pairs (same-item
cosines near 1, a TAR far above what unseen subjects get). Here the calibration anchors are
split into ``FOLDS`` folds and each fold is mapped by the fit's method refitted on the pair's
statistics minus that fold (the chosen hyper-parameters kept; ``auto`` refits its chosen
candidate), so each mapped anchor comes from a map that never saw it.

Everything a cached answer reads of a fit's anchors is pinned to what the fit was fitted on
(:func:`fit_pairs_version`): the pairs written at or before the fit's data version, so anchors
uploaded later change no answer of the fit, before or after a restart, on any replica.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convergent.server.records import FitRecord, ModelRecord

FOLDS = 5


@dataclass(frozen=True)
class CalibrationAnchors:
    """Up to ``max_anchors`` anchors of a fit's set, row i of every array the same anchor.

    mapped (n, d_tgt): source vectors through the fit's method refitted without the anchor's fold;
    source (n, d_src), target (n, d_tgt): the stored (prepared) vectors; ids (n,).
    """

    ids: list[str]
    mapped: np.ndarray
    source: np.ndarray
    target: np.ndarray
    version: int = 0  # fit_pairs_version of the read


def fit_pairs_version(version, record: FitRecord) -> int:  # noqa: ANN001 - a SetVersionLike
    """What the stored pairs of ``record``'s fit (those written at or before its data version)
    are as of, for cache keys: 0 while they are all stored as fitted; after a delete, overwrite
    or erasure in the set since the fit, the set's version of that change (the fit's surviving
    pairs are used then, so the answer stays a function of what is stored)."""
    return int(version.rewritten_version) if version.rewritten_version > record.data_version else 0


def sample_pairs(reader, max_anchors: int, seed: int = 0,  # noqa: ANN001
                 written_at_most: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Up to ``max_anchors`` pairs of a pair reader (``written_at_most``: those written at that
    data version or before), a seeded uniform sample: (ids, X, Y)."""
    ids = reader.pair_ids(written_at_most=written_at_most)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(ids), size=min(len(ids), max_anchors), replace=False)) if ids else []
    return reader.pairs_by_id([ids[i] for i in chosen])


def fit_stats(reader, record: FitRecord, src: ModelRecord, tgt: ModelRecord, device: str = "cpu"):  # noqa: ANN001, ANN201
    """Full statistics of the fit's stored pairs (written at or before its data version), read
    in one pass in storage order: the same sums, to the bit, whenever and wherever they are read."""
    from convergent.server.align import PairedStats

    stats = PairedStats.empty(src.dim, tgt.dim)
    for _, X, Y in reader.iter_pairs(written_at_most=record.data_version):
        stats.update(X, Y, device=device)
    return stats


def refit_method(record: FitRecord) -> str:
    """The method a refit of ``record``'s map uses (``auto``'s chosen candidate's)."""
    from convergent.server.align import methods

    name = record.params.get("candidate") if record.requested_method == "auto" else None
    return methods.CANDIDATES[name].method if name else record.method


def _trains_on_pairs(record: FitRecord) -> int:
    """How many pairs a refit of ``record``'s map trains on beyond the statistics (0: none)."""
    from convergent.server.align import methods

    if record.method == "shared":
        return 0
    method = refit_method(record)
    if not methods.METHODS[method].needs_pairs:
        return 0
    return int(record.params.get("max_train_pairs", methods.PARAMS[method].model_fields["max_train_pairs"].default))


def _refit(record: FitRecord, stats, src: ModelRecord, tgt: ModelRecord, pairs=None):  # noqa: ANN001, ANN202
    """A map of ``record``'s method and chosen hyper-parameters fitted on ``stats`` (and
    ``pairs`` for a map trained on pairs); returns a function (m, d_src) -> (m, d_tgt)."""
    if record.method == "shared":
        from convergent.server.align import SharedSpace
        from convergent.server.errors import FailedPrecondition

        if record.params.get("method") == "contrastive":
            raise FailedPrecondition(
                f"verification without labels routes through the contrastive shared space {record.id!r}, which cannot "
                f"be refitted out of fold from pair statistics: calibrate with labels (Calibrate), or fit a "
                f"direct map or a gcca shared space for this pair", reason="CALIBRATION_UNAVAILABLE",
            )
        params = {k: record.params[k] for k in ("n_components", "reg") if k in record.params}
        space = SharedSpace(**params).fit_stats({(src.name, tgt.name): stats})
        return lambda X: space.translate(src.name, tgt.name, X)
    from convergent.server.align import methods

    if record.requested_method == "auto":
        estimator = methods.fit_candidate(record.params["candidate"], stats, pairs)
    else:
        known = methods.PARAMS[record.method].model_fields
        chosen = {k: v for k, v in record.params.items() if k in known and k != "alphas"}
        estimator = methods.fit(record.method, methods.validate_params(record.method, chosen), stats, pairs=pairs)
    return estimator.transform


def calibration_anchors(alignment, tenant: str, record: FitRecord, src: ModelRecord, tgt: ModelRecord,  # noqa: ANN001
                        max_anchors: int, seed: int = 0, groups=None) -> CalibrationAnchors:  # noqa: ANN001
    """The out-of-fold calibration anchors of ``record`` (src -> tgt) among the pairs it was
    fitted on (:func:`fit_stats`), from one consistent read.
    ``groups(X, Y) -> (n,) int``: anchors of one group (one subject's photos) share a fold, so the
    refit that maps an anchor never saw its subject either."""
    from convergent.server.errors import FailedPrecondition

    pinned = record.data_version
    with alignment.store.read_pairs(tenant, record.anchor_set, src, tgt) as reader:
        version = fit_pairs_version(reader.version(), record)
        ids, X, Y = sample_pairs(reader, max_anchors, seed, written_at_most=pinned)
        n_train = _trains_on_pairs(record)
        train = sample_pairs(reader, n_train, seed + 1, written_at_most=pinned) if n_train else None
        stats = fit_stats(reader, record, src, tgt, alignment.device) if len(ids) >= 2 * FOLDS else None
    if stats is None:
        raise FailedPrecondition(f"anchor set {record.anchor_set!r} has {len(ids)} of the pairs fit {record.id!r} was fitted "
                                 f"on left: too few to calibrate on", reason="TOO_FEW_ANCHORS",
                                 metadata={"anchor_set": record.anchor_set, "have": len(ids), "need": 2 * FOLDS})
    if groups is None:
        fold = np.random.default_rng(seed).permutation(len(ids)) % FOLDS
    else:
        _, group = np.unique(groups(X, Y), return_inverse=True)
        fold = (np.random.default_rng(seed).permutation(group.max() + 1) % FOLDS)[group]
    mapped = np.empty((len(ids), tgt.dim), dtype=np.float32)
    for f in range(FOLDS):
        rows = fold == f
        pairs = None
        if train is not None:  # the map's training pairs without this fold's anchors
            left_out = {ids[i] for i in np.flatnonzero(rows)}
            keep = np.array([i not in left_out for i in train[0]], dtype=bool)
            pairs = (train[1][keep], train[2][keep])
        transform = _refit(record, stats.copy().subtract(X[rows], Y[rows]), src, tgt, pairs)
        mapped[rows] = np.asarray(transform(X[rows]), dtype=np.float32)
    return CalibrationAnchors(ids=list(ids), mapped=mapped, source=X, target=Y, version=version)
