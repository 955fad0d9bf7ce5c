"""Use cases of verification: verify row-paired vectors of two models at a threshold calibrated
for a false-accept rate, store labelled calibration pairs, report operating points.

Scores are cosines in b's space, higher = more similar; ``accept = score >= threshold``.
Calibration uses labelled pairs when stored for the model pair, else the route's anchors
(:meth:`Verification._pair_scores_anchors`, docs/verification.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput
from convergent.server.registry.routes import Routed, route_name as _route_name, unit as _unit
from convergent.server.registry.service import prepare_vectors, valid_name
from convergent.server.storage.protocols import Store

if TYPE_CHECKING:
    from convergent.server.inference.calibration import EqualErrorRate, PairScores
    from convergent.server.registry.alignment import Alignment

CALIBRATION_ANCHORS = 2000     # anchors sampled for the default (anchor-set) calibration
CALIBRATION_IMPOSTORS = 400_000
ANCHOR_CALIBRATIONS_KEPT = 16  # cached anchor-calibration score sets (each up to ~2 MB)
REPORT_FARS = (1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class VerifyResult:
    scores: np.ndarray     # (n,) float32 cosine in b's space
    accept: np.ndarray     # (n,) bool: score >= threshold
    threshold: float
    far_requested: float
    far_calibration: float
    tar_calibration: float
    calibration: str       # "labelled", "anchors-repeats-excluded" or "anchors-distinct"
    n_genuine: int
    n_impostor: int
    route: str
    calibration_pairs: str = ""      # what population far/tar_calibration were measured on, in words
    n_excluded: int = 0              # anchor pairs left out of the impostors as probably one subject


@dataclass(frozen=True)
class AnchorCalibration:
    """The pairs verify calibrates on, with their name and population in words."""

    scores: PairScores
    name: str
    population: str
    n_excluded: int


@dataclass(frozen=True)
class VerificationReport:
    calibration: str
    calibration_pairs: str
    route: str
    points: list              # [OperatingPoint]: only the FARs the impostor pairs resolve
    eer: EqualErrorRate
    n_genuine: int
    n_impostor: int
    n_excluded: int


class Verification(Routed):
    def __init__(self, store: Store, alignment: Alignment) -> None:
        self.store = store
        self.galleries = store.galleries
        self.alignment = alignment
        # fit id -> its anchor calibration (fits are immutable); the newest few only
        self._anchor_scores: OrderedDict[str, AnchorCalibration] = OrderedDict()
        self._anchor_scores_lock = threading.Lock()

    def _pair_scores_labelled(self, tenant, src, tgt, fit):  # noqa: ANN001, ANN202
        from convergent.server.inference import cosine_scores, labelled_pairs

        stored = self.galleries.load_calibration(tenant, src.name, src.version, src.dim, tgt.name, tgt.version, tgt.dim)
        if stored is None:
            return None
        a, b, same = stored
        scores = cosine_scores(self._into(tenant, fit, prepare_vectors(src, a), src, tgt), _unit(prepare_vectors(tgt, b)))
        return labelled_pairs(scores, same)

    def _pair_scores_anchors(self, tenant, src, tgt, fit) -> AnchorCalibration:  # noqa: ANN001
        """Anchor calibration of a route: genuine = the same anchor in both models, impostors =
        different anchors, on up to 2000 anchors of the fit's set, each mapped out of fold
        (:mod:`.crossfit`); pairs that probably show one subject (:mod:`..inference.repeats`)
        are left out of the impostors."""
        from convergent.server.inference import find_repeated_subjects, pairs_from_anchor_set
        from convergent.server.registry.crossfit import FOLDS, calibration_anchors

        if fit is None:
            raise FailedPrecondition(
                f"no calibration for {src.name!r} against itself: send labelled pairs with calibrate() first"
            )
        with self._anchor_scores_lock:
            cached = self._anchor_scores.get(fit.id)
        if cached is not None:
            return cached
        anchors = calibration_anchors(self.alignment, tenant, fit, src, tgt, CALIBRATION_ANCHORS)
        repeats = find_repeated_subjects(anchors.source, anchors.target)
        scores = pairs_from_anchor_set(_unit(anchors.mapped), _unit(anchors.target), max_impostors=CALIBRATION_IMPOSTORS,
                                       same=repeats.same if repeats.detected else None)
        n = len(anchors.ids)
        if repeats.detected:
            name = "anchors-repeats-excluded"
            population = (f"{n} anchors of set {fit.anchor_set!r}, each mapped by a {FOLDS}-fold refit that never saw it; "
                          f"genuine = the same anchor in both models, impostors = pairs of different anchors without "
                          f"the pairs that look like one subject ({repeats.reason})")
        else:
            name = "anchors-distinct"
            population = (f"{n} anchors of set {fit.anchor_set!r}, each mapped by a {FOLDS}-fold refit that never saw it; "
                          f"genuine = the same anchor in both models, impostors = every pair of different anchors "
                          f"(taken as distinct subjects: {repeats.reason})")
        result = AnchorCalibration(scores, name, population, int(np.count_nonzero(repeats.same)) // 2)
        with self._anchor_scores_lock:
            self._anchor_scores[fit.id] = result
            while len(self._anchor_scores) > ANCHOR_CALIBRATIONS_KEPT:
                self._anchor_scores.popitem(last=False)
        return result

    def _calibration_pairs(self, tenant, src, tgt, fit) -> AnchorCalibration:  # noqa: ANN001
        """The pairs verify calibrates on: labelled ones when stored for this model pair, else anchors."""
        labelled = self._pair_scores_labelled(tenant, src, tgt, fit)
        if labelled is None:
            return self._pair_scores_anchors(tenant, src, tgt, fit)
        population = (f"{len(labelled.genuine) + len(labelled.impostor)} labelled pairs given to calibrate, scored "
                      f"through {_route_name(fit)} (optimistic if the map was fitted on these items)")
        return AnchorCalibration(labelled, "labelled", population, 0)

    def _models_and_route(self, tenant, a_model, b_model):  # noqa: ANN001, ANN202
        valid_name(a_model, "a_model")
        valid_name(b_model, "b_model")
        src, tgt = self.store.get_model(tenant, a_model), self.store.get_model(tenant, b_model)
        return src, tgt, self._route(tenant, src, tgt)

    def verify(self, tenant: str, a_model: str, a: np.ndarray, b_model: str, b: np.ndarray, far: float) -> VerifyResult:
        """Scores of row-paired vectors (a's mapped into b's space) and accept at the threshold
        calibrated for ``far`` (labelled pairs when given for this model pair, else the anchors)."""
        from convergent.server.inference import calibrate_threshold, cosine_scores

        if not (0.0 < far < 1.0):
            raise InvalidInput(f"far must be in (0, 1), got {far}")
        src, tgt, fit = self._models_and_route(tenant, a_model, b_model)
        A, B = prepare_vectors(src, a, "a"), prepare_vectors(tgt, b, "b")
        if len(A) != len(B):
            raise InvalidInput(f"a has {len(A)} rows and b {len(B)}: they must pair row by row")
        pairs = self._calibration_pairs(tenant, src, tgt, fit)
        cal = calibrate_threshold(pairs.scores.genuine, pairs.scores.impostor, far)
        scores = cosine_scores(self._into(tenant, fit, A, src, tgt), _unit(B))
        return VerifyResult(
            scores=scores, accept=scores.astype(np.float64) >= cal.threshold, threshold=cal.threshold,
            far_requested=far, far_calibration=cal.far, tar_calibration=cal.tar, calibration=pairs.name,
            n_genuine=cal.n_genuine, n_impostor=cal.n_impostor, route=_route_name(fit),
            calibration_pairs=pairs.population, n_excluded=pairs.n_excluded,
        )

    def verification_report(self, tenant: str, a_model: str, b_model: str) -> VerificationReport:
        """Operating points of the calibration verify uses for (a_model, b_model): TAR at FAR 1e-2,
        1e-3, 1e-4 where the impostor pairs resolve it, and the equal error rate."""
        from convergent.server.inference import equal_error_rate, operating_points

        src, tgt, fit = self._models_and_route(tenant, a_model, b_model)
        pairs = self._calibration_pairs(tenant, src, tgt, fit)
        genuine, impostor = pairs.scores.genuine, pairs.scores.impostor
        return VerificationReport(
            calibration=pairs.name, calibration_pairs=pairs.population, route=_route_name(fit),
            points=operating_points(genuine, impostor, REPORT_FARS), eer=equal_error_rate(genuine, impostor),
            n_genuine=len(genuine), n_impostor=len(impostor), n_excluded=pairs.n_excluded,
        )

    def calibrate(self, tenant: str, a_model: str, a: np.ndarray, b_model: str, b: np.ndarray, same: np.ndarray) -> tuple[int, int, str]:
        """Store labelled pairs for (a_model, b_model); returns (n_genuine, n_impostor, route)."""
        src, tgt, fit = self._models_and_route(tenant, a_model, b_model)
        A, B = prepare_vectors(src, a, "a"), prepare_vectors(tgt, b, "b")
        same = np.asarray(same, dtype=bool)
        if not (len(A) == len(B) == len(same)):
            raise InvalidInput(f"a, b and same must have the same length, got {len(A)}, {len(B)}, {len(same)}")
        n_genuine = int(same.sum())
        if n_genuine == 0 or n_genuine == len(same):
            raise InvalidInput("labelled pairs need both genuine (same=True) and impostor (same=False) pairs")
        self.galleries.save_calibration(tenant, src.name, src.version, tgt.name, tgt.version, A, B, same)
        return n_genuine, len(same) - n_genuine, _route_name(fit)
