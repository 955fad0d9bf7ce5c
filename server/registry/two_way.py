"""Identify scored in both models' spaces: the probe mapped into the gallery's space *and* the
gallery mapped into the probe's space (the fit gallery model -> probe model on the same anchor
set), the two scores averaged.

Each space keeps one side at full native quality: in the gallery's space the gallery items are
native and the probes mapped, in the probe's space the probes are native and the items mapped.
On LFW (benchmarks/lfw.py, docs/inference.md) this lifts FaceNet probes against a dlib gallery
from 0.82 to 0.88 rank-1; a weak map in one direction is helped by a better one in the other.

Scores, higher = more similar: "cosine" (cos_G + cos_P) / 2 in [-1, 1]; "csls" the mean of the
two spaces' 2 cos - r_T - r_S in [-4, 4]. Served on local exact galleries (every item scored:
the gallery is read once per version and its mapped copy kept in memory, LRU). identify's "auto"
takes this way where the route's held-out anchors retrieve at least as well in both spaces
(:meth:`TwoWay.judge`, :func:`held_out_top1`): on AT&T one direction does better forward.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from convergent.server.records import FitRecord, GalleryRecord, ModelRecord

KEPT = 8             # galleries' two-way copies kept (LRU)
JUDGE_ANCHORS = 2000  # held-out anchors that judge "both" against "forward" (as verification's calibration)
SCORE_BLOCK = 1 << 25  # score-matrix cells per block of probes (128 MiB of float32)


@dataclass(frozen=True)
class TwoWayGallery:
    """A gallery at ``version`` in both spaces, row i of every array the same item.

    native (N, d_g): unit items in the gallery's space; mapped (N, d_p): unit items mapped into
    the probe model's space by the reverse fit; r_native / r_mapped (N,): their CSLS penalties
    (mean cosine to the k nearest reference anchors of each space; zeros for cosine scoring).
    """

    version: int
    ids: list[str]
    native: np.ndarray
    mapped: np.ndarray
    r_native: np.ndarray
    r_mapped: np.ndarray


class TwoWay:
    """The galleries' copies mapped into probe spaces, per (gallery version, reverse fit)."""

    def __init__(self, store, alignment, hubness) -> None:  # noqa: ANN001
        self.store, self.alignment, self.hubness = store, alignment, hubness
        self._copies: OrderedDict[tuple, TwoWayGallery] = OrderedDict()
        self._judged: OrderedDict[tuple, tuple[bool, str]] = OrderedDict()
        self._lock = threading.Lock()

    def gallery(self, tenant: str, gallery: GalleryRecord, gallery_model: ModelRecord, probe_model: ModelRecord,
                forward: FitRecord, reverse: FitRecord, csls: bool) -> TwoWayGallery:
        """The gallery's two-way copy at its current version (read from storage when newer)."""
        from convergent.server.inference import normalize_rows
        from convergent.server.inference.csls import neighbourhood_mean

        forward_refs = reverse_refs = None
        if csls:  # the references name what they were read from (a fit's pairs may lose some: :mod:`.hubness`)
            forward_refs = self.hubness.references(tenant, forward, probe_model, gallery_model)
            reverse_refs = self.hubness.references(tenant, reverse, gallery_model, probe_model)
        key = (tenant, gallery.name, gallery.created_at, forward.id, reverse.id, csls,
               forward_refs.key if forward_refs else "", reverse_refs.key if reverse_refs else "")
        with self._lock:
            cached = self._copies.get(key)
        if cached is not None and cached.version >= gallery.version:
            return cached
        version, ids, vectors = self.store.galleries.items(tenant, gallery.name, gallery_model.dim)
        if not ids:
            empty = np.zeros(0, np.float32)
            return TwoWayGallery(version, [], np.zeros((0, gallery_model.dim), np.float32),
                                 np.zeros((0, probe_model.dim), np.float32), empty, empty)
        native = normalize_rows(vectors)
        mapped = normalize_rows(self.alignment.map_prepared(tenant, reverse, vectors, gallery_model, probe_model))
        if forward_refs is not None and reverse_refs is not None:
            r_native = neighbourhood_mean(native, forward_refs.mapped)
            r_mapped = neighbourhood_mean(mapped, reverse_refs.target)
        else:
            r_native = r_mapped = np.zeros(len(ids), np.float32)
        built = TwoWayGallery(version, ids, native, mapped, r_native, r_mapped)
        with self._lock:
            self._copies[key] = built
            while len(self._copies) > KEPT:
                self._copies.popitem(last=False)
        return built

    def judge(self, tenant: str, forward: FitRecord, reverse: FitRecord, probe_model: ModelRecord,
              gallery_model: ModelRecord) -> tuple[bool, str]:
        """(score in both spaces?, why): :func:`held_out_top1` of the fits' anchors, each mapped
        both ways by refits that never saw it; "both" unless "forward" retrieves better by more than
        one standard error of the difference (the one-standard-error rule: Hastie, Tibshirani and
        Friedman, *Elements of Statistical Learning*, 7.10; small anchor sets flip otherwise). Judged
        on the pairs the fits were fitted on (:mod:`.crossfit`), cached per fit pair and versions of
        those pairs; too few anchors to judge, or anchors being written: "both", and the reason
        says so (not cached)."""
        from convergent.server.errors import FailedPrecondition, Unavailable
        from convergent.server.inference import normalize_rows
        from convergent.server.registry.crossfit import calibration_anchors

        key = (tenant, forward.id, reverse.id, self.hubness.pairs_version(tenant, forward, probe_model, gallery_model),
               self.hubness.pairs_version(tenant, reverse, gallery_model, probe_model))
        with self._lock:
            cached = self._judged.get(key)
        if cached is not None:
            return cached
        try:
            there = calibration_anchors(self.alignment, tenant, forward, probe_model, gallery_model, JUDGE_ANCHORS)
            back = calibration_anchors(self.alignment, tenant, reverse, gallery_model, probe_model, JUDGE_ANCHORS)
        except (FailedPrecondition, Unavailable) as exc:
            return True, f"not judged on held-out anchors ({exc})"
        row = {i: k for k, i in enumerate(back.ids)}
        keep = [k for k, i in enumerate(there.ids) if i in row]
        if len(keep) < 2:
            return True, f"not judged: the fits share {len(keep)} sampled anchors"
        other = [row[there.ids[k]] for k in keep]
        one, two, error = held_out_top1(*(normalize_rows(a) for a in (there.mapped[keep], there.target[keep],
                                                                         there.source[keep], back.mapped[other])))
        both = one - two <= error  # one-standard-error rule: forward only where it is clearly better
        verdict = (both, f"held-out top-1 among {len(keep)} anchors of {forward.anchor_set!r}, each mapped by refits "
                         f"that never saw it: both spaces {two:.3f}, forward {one:.3f} (standard error of the "
                         f"difference {error:.3f}; forward only when better by more)")
        with self._lock:
            self._judged[key] = verdict
            while len(self._judged) > KEPT:
                self._judged.popitem(last=False)
        return verdict

    def forget(self, tenant: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._copies if k[:2] == (tenant, name)]:
                del self._copies[key]


def held_out_top1(Q: np.ndarray, T: np.ndarray, P: np.ndarray, T_mapped: np.ndarray) -> tuple[float, float, float]:
    """(forward, both, standard error of forward - both): top-1 retrieval rates of n held-out
    anchors among themselves, row i of every array the same anchor (unit rows): Q (n, d_g) its
    probe-model vector mapped into the gallery's space, T (n, d_g) its gallery-model vector, P
    (n, d_p) its probe-model vector, T_mapped (n, d_p) its gallery-model vector mapped into the
    probe's space. Forward ranks cos(Q_i, T_j), both the mean of that and cos(P_i, T_mapped_j);
    a hit: j = i ranks first. The error is of the paired per-anchor differences."""
    truth = np.arange(len(Q))
    forward = Q @ T.T
    hit_forward = forward.argmax(axis=1) == truth
    hit_both = (forward + P @ T_mapped.T).argmax(axis=1) == truth
    difference = hit_forward.astype(np.float64) - hit_both
    return float(hit_forward.mean()), float(hit_both.mean()), float(difference.std(ddof=1) / np.sqrt(len(Q)))


def two_way_search(copy: TwoWayGallery, Q: np.ndarray, P: np.ndarray, k: int,
                   r_Q: np.ndarray | None = None, r_P: np.ndarray | None = None) -> tuple[list[list[str]], np.ndarray]:
    """Top-``k`` items of ``copy`` for probes given in both spaces: Q (n, d_g) unit, mapped into
    the gallery's space, and P (n, d_p) unit, native. With r_Q, r_P (n,) (the probes' CSLS
    penalties in each space) the score is CSLS, else cosine; both spaces averaged. Returns
    (ids (n, k'), scores (n, k') float32, best first), k' = min(k, N)."""
    n, size = len(Q), len(copy.ids)
    width = min(k, size)
    ids_out: list[list[str]] = []
    scores_out = np.empty((n, width), np.float32)
    order_ids = np.array(copy.ids, dtype=object)
    step = max(1, SCORE_BLOCK // max(size, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        S = Q[start:stop] @ copy.native.T + P[start:stop] @ copy.mapped.T
        if r_Q is not None and r_P is not None:  # (2 cos_G - r_Q - r_native + 2 cos_P - r_P - r_mapped) / 2
            S -= 0.5 * (r_Q[start:stop] + r_P[start:stop])[:, None] + 0.5 * (copy.r_native + copy.r_mapped)[None, :]
        else:
            S *= 0.5
        top = np.argpartition(-S, width - 1, axis=1)[:, :width] if width < size else np.tile(np.arange(size), (stop - start, 1))
        top_scores = np.take_along_axis(S, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        scores_out[start:stop] = np.take_along_axis(top_scores, order, axis=1)
        ids_out.extend(order_ids[top].tolist())
    return ids_out, scores_out
