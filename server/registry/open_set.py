"""Open-set identify: the top-1 threshold for a requested FPIR, calibrated without labels from the
route's anchors (or, given non-mated probes, from those), cached per (route, gallery version).

Without labels the non-mated searches are the fit's anchors, who are not enrolled: each anchor's
probe-model vector, mapped by a refit that never saw it (:mod:`.crossfit`), is searched against
the gallery exactly as a probe is (same route, direction and scoring; CSLS penalties computed with
the anchor's subject left out of the reference neighbourhoods: its partner, and the anchors that
look like it in both models' own spaces), one search per subject. Where the anchors' repeated
subjects are not detected only the partner is left out, and a CSLS threshold can come out too low
(docs/inference.md). Anchors that look like an enrolled subject in the gallery model's own space
(native cosine to their nearest item at least the median same-subject cosine of the anchors'
repeated subjects, :mod:`..inference.repeats`; 0.999 — a copy — when the anchors show no
repeats) are left out, as verification leaves out anchor pairs of one subject. Measured on LFW
(benchmarks/lfw.py): FPIR achieved vs requested.

The anchors are the pairs the fit was fitted on (:mod:`.crossfit`), kept per fit and version of
those pairs (:func:`~.crossfit.fit_pairs_version`); a threshold per route, scoring, direction,
gallery version and those versions: a function of stored state, whenever and wherever computed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from convergent.server.records import FitRecord, ModelRecord

OPEN_SET_ANCHORS = 20_000  # anchors searched for the unlabeled calibration
COPY_COSINE = 0.999        # an anchor this close to an enrolled item is that item
KEPT = 16
KEPT_ANCHORS = 4  # fits' calibration searches kept (LRU; up to OPEN_SET_ANCHORS rows each)

# search(Q (n, d_g) unit mapped, P (n, d_p) unit native, r_Q, r_P) -> top-1 scores (n,)
Search = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class NonMated:
    """Top-1 scores (m,) of the non-mated searches a threshold is set on, and what they were."""

    top1: np.ndarray
    calibration: str      # "anchors" or "labelled"
    population: str       # in words: which searches, how many, what was left out
    n_excluded: int = 0   # anchors left out as probably enrolled subjects


@dataclass(frozen=True)
class SameSubject:
    """Native cosines above which two items probably show one subject: ``source`` / ``target``
    (the probe's and the gallery's model), each the 5th percentile over the anchor pairs that
    :func:`find_repeated_subjects` marks as one subject, ``enrolled`` the gallery model's median
    over them (an anchor that close to an enrolled item is taken for that subject); all
    :data:`COPY_COSINE` when the anchors show no repeated subjects."""

    source: float
    target: float
    enrolled: float
    reason: str


def same_subject_bounds(source: np.ndarray, target: np.ndarray) -> SameSubject:
    """:class:`SameSubject` of anchors (n, d_src) and (n, d_tgt) (unit rows, up to 2000 used)."""
    from convergent.server.inference import find_repeated_subjects

    n = min(len(source), 2000)
    repeats = find_repeated_subjects(source[:n], target[:n])
    if not repeats.detected:
        return SameSubject(COPY_COSINE, COPY_COSINE, COPY_COSINE,
                           f"copies only (cosine >= {COPY_COSINE}): {repeats.reason}")
    iu = np.triu_indices(n, 1)
    i, j = iu[0][repeats.same[iu]], iu[1][repeats.same[iu]]
    cs = np.einsum("ij,ij->i", source[i], source[j])
    ct = np.einsum("ij,ij->i", target[i], target[j])
    enrolled = float(np.median(ct))
    return SameSubject(float(np.quantile(cs, 0.05)), float(np.quantile(ct, 0.05)), enrolled,
                       f"native cosine >= {enrolled:.3f}, the median of the anchors' same-subject pairs")


def subject_groups(source: np.ndarray, target: np.ndarray, bounds: SameSubject) -> np.ndarray:
    """(n,) group labels of anchors (unit rows): the connected components of the pairs that look
    like one subject in both models (cosines >= ``bounds.source`` and ``bounds.target``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(source)
    rows, cols = [], []
    for start in range(0, n, 2048):
        same = (source[start : start + 2048] @ source.T >= bounds.source) & (target[start : start + 2048] @ target.T >= bounds.target)
        i, j = np.nonzero(same)
        rows.append(i + start)
        cols.append(j)
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


@dataclass(frozen=True)
class Searches:
    """One anchor of each subject of a fit's calibration anchors, row i the same anchor in each:
    Q (m, d_g) mapped out of fold, P (m, d_p) and T (m, d_g) native, all unit."""

    Q: np.ndarray
    P: np.ndarray
    T: np.ndarray
    bounds: SameSubject
    n_photos: int  # calibration anchors they were picked from
    version: int   # fit_pairs_version of the read


class OpenSet:
    def __init__(self, alignment, hubness) -> None:  # noqa: ANN001
        self.alignment, self.hubness = alignment, hubness
        self._cache: OrderedDict[tuple, NonMated] = OrderedDict()
        self._searches: OrderedDict[tuple, Searches] = OrderedDict()
        self._lock = threading.Lock()

    def searches(self, tenant: str, fit: FitRecord, probe_model: ModelRecord, gallery_model: ModelRecord,
                 version: int) -> Searches:
        """The fit's calibration searches (:class:`Searches`), cached per fit and ``version`` of its pairs."""
        from convergent.server.inference import normalize_rows
        from convergent.server.registry.crossfit import calibration_anchors

        key = (tenant, fit.id, probe_model.name, version)
        with self._lock:
            cached = self._searches.get(key)
        if cached is not None:
            return cached
        found: dict = {}

        def subjects(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
            """The anchors' subject groups (folds follow them), kept with their bounds for below."""
            X, Y = normalize_rows(X), normalize_rows(Y)
            found["bounds"] = same_subject_bounds(X, Y)
            found["groups"] = subject_groups(X, Y, found["bounds"])
            return found["groups"]

        anchors = calibration_anchors(self.alignment, tenant, fit, probe_model, gallery_model, OPEN_SET_ANCHORS,
                                      groups=subjects)
        group = found["groups"]  # row i of anchors is row i of the groups
        # one search per subject: photos of one subject are not independent searches, and counting
        # them as such would resolve an FPIR from far fewer subjects than the count says
        order = np.random.default_rng(0).permutation(len(group))
        _, pick = np.unique(group[order], return_index=True)
        one = np.sort(order[pick])
        Q, P, T = (normalize_rows(a[one]) for a in (anchors.mapped, anchors.source, anchors.target))
        built = Searches(Q, P, T, found["bounds"], len(group), anchors.version)
        with self._lock:
            self._searches[(*key[:3], anchors.version)] = built
            while len(self._searches) > KEPT_ANCHORS:
                self._searches.popitem(last=False)
        return built

    def from_anchors(self, tenant: str, key: tuple, fit: FitRecord, reverse: FitRecord | None, probe_model: ModelRecord,
                     gallery_model: ModelRecord, csls: bool, native_top1: Callable[[np.ndarray], np.ndarray],
                     search: Search) -> NonMated:
        """The route's anchors searched as non-mated probes (cached under ``key``: route, scoring,
        direction and gallery version, with the versions of the fits' pairs). ``native_top1``
        (m, d_g) -> (m,): each anchor's cosine to its nearest item in the gallery's own space."""
        from convergent.server.inference.open_set import neighbourhood_mean_excluding
        from convergent.server.registry.crossfit import FOLDS

        version = self.hubness.pairs_version(tenant, fit, probe_model, gallery_model)
        back_version = self.hubness.pairs_version(tenant, reverse, gallery_model, probe_model) if reverse else 0
        key = (*key, version, back_version)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        anchors = self.searches(tenant, fit, probe_model, gallery_model, version)
        Q, P, T, bounds, n_photos = anchors.Q, anchors.P, anchors.T, anchors.bounds, anchors.n_photos
        keep = native_top1(T) < bounds.enrolled
        why = bounds.reason
        r_Q = r_P = None
        if csls:  # each anchor's subject (its partner, its other photos) left out of its neighbourhoods
            refs = self.hubness.references(tenant, fit, probe_model, gallery_model)
            r_Q = neighbourhood_mean_excluding(Q[keep], refs.target, [(P[keep], refs.source, bounds.source),
                                                                      (T[keep], refs.target, bounds.target)])
            if reverse is not None:
                back = self.hubness.references(tenant, reverse, gallery_model, probe_model)
                r_P = neighbourhood_mean_excluding(P[keep], back.mapped, [(T[keep], back.source, bounds.target),
                                                                          (P[keep], back.target, bounds.source)])
        top1 = search(Q[keep], P[keep], r_Q, r_P)
        excluded = int(np.count_nonzero(~keep))
        population = (f"{len(top1)} anchors of set {fit.anchor_set!r} searched as non-mated probes (one of each of the "
                      f"{len(Q)} subjects among {n_photos} anchors), each mapped by a {FOLDS}-fold refit that never saw "
                      f"it nor the anchors that look like its subject; {excluded} left out as probably enrolled ({why})")
        result = NonMated(top1, "anchors", population, excluded)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > KEPT:
                self._cache.popitem(last=False)
        return result

    @staticmethod
    def from_probes(top1: np.ndarray) -> NonMated:
        return NonMated(top1, "labelled", f"{len(top1)} non-mated probes given with the request")
