"""Use cases of verification: verify row-paired vectors of two models at a threshold calibrated
for a false-accept rate, store labelled calibration pairs, report operating points.

Scores are cosines, higher = more similar; ``accept = score >= threshold``. ``direction``
"a_to_b": the cosine in b's space (a mapped by the fit a -> b); "both": the mean of that and
the cosine in a's space (b mapped by the fit b -> a), which does not depend on which model is
called a; "auto" (the default): "both" when a fit b -> a on the same anchor set exists, else
"a_to_b". Calibration uses labelled pairs when stored for the model pair, else the route's
anchors (:meth:`Verification._pair_scores_anchors`, docs/verification.md), scored the same way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from convergent.server.errors import FailedPrecondition, InvalidInput, SpaceMismatch
from convergent.server.records import FitRecord, ModelRecord
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
DIRECTIONS = ("auto", "a_to_b", "both")


@dataclass(frozen=True)
class PairRoute:
    """How verify scores pairs of (a model, b model): through ``forward`` (a -> b) alone
    (direction "a_to_b") or also through ``reverse`` (b -> a; direction "both")."""

    forward: FitRecord | None
    reverse: FitRecord | None
    direction: str  # "a_to_b" or "both"
    why: str        # why this direction, in words

    @property
    def name(self) -> str:
        if self.reverse is None:
            return _route_name(self.forward)
        return f"{_route_name(self.forward)} + {_route_name(self.reverse)}"


@dataclass(frozen=True)
class VerifyResult:
    scores: np.ndarray     # (n,) float32 cosine: in b's space ("a_to_b"), or the mean of both spaces' ("both")
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
    direction: str = "a_to_b"        # "a_to_b" or "both": the space(s) the scores are cosines in
    direction_reason: str = ""       # why that direction, in words


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
    direction: str = "a_to_b"
    direction_reason: str = ""


class Verification(Routed):
    def __init__(self, store: Store, alignment: Alignment) -> None:
        self.store = store
        self.galleries = store.galleries
        self.alignment = alignment
        # fit id -> its anchor calibration (fits are immutable); the newest few only
        self._anchor_scores: OrderedDict[str, AnchorCalibration] = OrderedDict()
        self._anchor_scores_lock = threading.Lock()

    def _pair_route(self, tenant: str, src: ModelRecord, tgt: ModelRecord, direction: str) -> PairRoute:
        """The route(s) verify scores through; INVALID_ARGUMENT for an unknown direction,
        FAILED_PRECONDITION for "both" without a usable fit b -> a."""
        direction = direction or "auto"
        if direction not in DIRECTIONS:
            raise InvalidInput(f"unknown direction {direction!r}; choose from {list(DIRECTIONS)}", reason="UNKNOWN_OPTION",
                               field="direction")
        forward = self._route(tenant, src, tgt)
        if direction == "a_to_b":
            return PairRoute(forward, None, "a_to_b", "requested")
        reverse, why = self.reverse_fit(tenant, src, tgt, forward)
        if reverse is None:
            if direction == "both":
                raise FailedPrecondition(f"direction \"both\" needs a fit {tgt.name!r} -> {src.name!r}: {why}",
                                         reason="NO_ROUTE", metadata={"source": tgt.name, "target": src.name})
            return PairRoute(forward, None, "a_to_b", f"auto: {why}")
        why = "requested" if direction == "both" else f"auto: fits both ways on anchor set {reverse.anchor_set!r}"
        return PairRoute(forward, reverse, "both", why)

    def reverse_fit(self, tenant: str, src: ModelRecord, tgt: ModelRecord,
                     forward: FitRecord | None) -> tuple[FitRecord | None, str]:
        """(the newest fit tgt -> src on the forward fit's anchor set, None and why not)."""
        if forward is None:
            return None, "a and b are the same model"
        if forward.method == "shared":
            return None, f"the route is the shared space {forward.id} (one space for both models already)"
        reverse = self.alignment.fits.latest(tenant, tgt.name, src.name)
        if reverse is None:
            return None, (f"no fit {tgt.name!r} -> {src.name!r}; one on anchor set {forward.anchor_set!r} "
                          f"(convergent fit --both-ways) would score in both models' spaces")
        if reverse.anchor_set != forward.anchor_set:
            return None, (f"the newest fit {tgt.name!r} -> {src.name!r} ({reverse.id}) is on anchor set "
                          f"{reverse.anchor_set!r}, the fit {src.name!r} -> {tgt.name!r} on {forward.anchor_set!r}")
        try:
            self.alignment.check_versions(reverse, tgt, src)
        except SpaceMismatch as e:
            return None, str(e)
        return reverse, ""

    def _paired(self, tenant: str, route: PairRoute, A: np.ndarray, B: np.ndarray, src: ModelRecord,
                tgt: ModelRecord) -> tuple[np.ndarray, np.ndarray]:
        """Row-paired unit embeddings of prepared a (n, d_a) and b (n, d_b) whose row-wise inner
        product is the route's score."""
        from convergent.server.inference import both_spaces

        A_in_b = self._into(tenant, route.forward, A, src, tgt)
        if route.reverse is None:
            return A_in_b, _unit(B)
        return both_spaces(A_in_b, B, A, self._into(tenant, route.reverse, B, tgt, src))

    def _pair_scores_labelled(self, tenant, src, tgt, route: PairRoute):  # noqa: ANN001, ANN202
        from convergent.server.inference import cosine_scores, labelled_pairs

        stored = self.galleries.load_calibration(tenant, src.name, src.version, src.dim, tgt.name, tgt.version, tgt.dim)
        if stored is None and route.reverse is not None:  # scored in both spaces: pairs given the other way serve too
            swapped = self.galleries.load_calibration(tenant, tgt.name, tgt.version, tgt.dim, src.name, src.version, src.dim)
            if swapped is not None:
                stored = (swapped[1], swapped[0], swapped[2])
        if stored is None:
            return None
        a, b, same = stored
        scores = cosine_scores(*self._paired(tenant, route, prepare_vectors(src, a), prepare_vectors(tgt, b), src, tgt))
        return labelled_pairs(scores, same)

    def _pair_scores_anchors(self, tenant, src, tgt, route: PairRoute) -> AnchorCalibration:  # noqa: ANN001
        """Anchor calibration of a route: genuine = the same anchor in both models, impostors =
        different anchors, on up to 2000 anchors of the fit's set, each mapped out of fold
        (:mod:`.crossfit`); pairs that probably show one subject (:mod:`..inference.repeats`)
        are left out of the impostors."""
        from convergent.server.inference import both_spaces, find_repeated_subjects, pairs_from_anchor_set
        from convergent.server.registry.crossfit import FOLDS, calibration_anchors

        fit = route.forward
        if fit is None:
            raise FailedPrecondition(
                f"no calibration for {src.name!r} against itself: calibrate with labelled pairs first (Calibrate)",
                reason="CALIBRATION_UNAVAILABLE",
            )
        with self._anchor_scores_lock:
            cached = self._anchor_scores.get(route.name)  # fits are immutable: the route names the calibration
        if cached is not None:
            return cached
        anchors = calibration_anchors(self.alignment, tenant, fit, src, tgt, CALIBRATION_ANCHORS)
        mapped, target = _unit(anchors.mapped), _unit(anchors.target)
        ids, source_native, target_native = anchors.ids, anchors.source, anchors.target
        how = f"each mapped by a {FOLDS}-fold refit that never saw it"
        if route.reverse is not None:  # the same anchors mapped the other way, each out of fold too
            back = calibration_anchors(self.alignment, tenant, route.reverse, tgt, src, CALIBRATION_ANCHORS)
            row = {i: k for k, i in enumerate(back.ids)}
            keep = [k for k, i in enumerate(ids) if i in row]
            if len(keep) < 2:
                raise FailedPrecondition(f"the fits {route.name} share fewer than 2 anchors: verify with direction "
                                         f"\"a_to_b\"", reason="TOO_FEW_ANCHORS")
            other = [row[ids[k]] for k in keep]
            ids = [ids[k] for k in keep]
            source_native, target_native = source_native[keep], target_native[keep]
            mapped, target = both_spaces(mapped[keep], target[keep], source_native, back.mapped[other])
            how += " in each direction, scored in both models' spaces"
        repeats = find_repeated_subjects(source_native, target_native)
        scores = pairs_from_anchor_set(mapped, target, max_impostors=CALIBRATION_IMPOSTORS,
                                       same=repeats.same if repeats.detected else None)
        n = len(ids)
        if repeats.detected:
            name = "anchors-repeats-excluded"
            population = (f"{n} anchors of set {fit.anchor_set!r}, {how}; "
                          f"genuine = the same anchor in both models, impostors = pairs of different anchors without "
                          f"the pairs that look like one subject ({repeats.reason})")
        else:
            name = "anchors-distinct"
            population = (f"{n} anchors of set {fit.anchor_set!r}, {how}; "
                          f"genuine = the same anchor in both models, impostors = every pair of different anchors "
                          f"(taken as distinct subjects: {repeats.reason})")
        result = AnchorCalibration(scores, name, population, int(np.count_nonzero(repeats.same)) // 2)
        with self._anchor_scores_lock:
            self._anchor_scores[route.name] = result
            while len(self._anchor_scores) > ANCHOR_CALIBRATIONS_KEPT:
                self._anchor_scores.popitem(last=False)
        return result

    def _calibration_pairs(self, tenant, src, tgt, route: PairRoute) -> AnchorCalibration:  # noqa: ANN001
        """The pairs verify calibrates on: labelled ones when stored for this model pair, else anchors."""
        labelled = self._pair_scores_labelled(tenant, src, tgt, route)
        if labelled is None:
            return self._pair_scores_anchors(tenant, src, tgt, route)
        population = (f"{len(labelled.genuine) + len(labelled.impostor)} labelled pairs given to calibrate, scored "
                      f"through {route.name} (optimistic if the map was fitted on these items)")
        return AnchorCalibration(labelled, "labelled", population, 0)

    def _models(self, tenant: str, a_model: str, b_model: str) -> tuple[ModelRecord, ModelRecord]:
        valid_name(a_model, "a_model")
        valid_name(b_model, "b_model")
        return self.store.get_model(tenant, a_model), self.store.get_model(tenant, b_model)

    def verify(self, tenant: str, a_model: str, a: np.ndarray, b_model: str, b: np.ndarray, far: float,
               direction: str = "auto") -> VerifyResult:
        """Scores of row-paired vectors (cosines in b's space, or in both spaces: ``direction``)
        and accept at the threshold calibrated for ``far`` (labelled pairs when given for this
        model pair, else the anchors), scored the same way."""
        from convergent.server.inference import calibrate_threshold, cosine_scores

        if not (0.0 < far < 1.0):
            raise InvalidInput(f"far must be in (0, 1), got {far}", reason="VALUE_OUT_OF_RANGE", field="far")
        src, tgt = self._models(tenant, a_model, b_model)
        A, B = prepare_vectors(src, a, "a", field="a"), prepare_vectors(tgt, b, "b", field="b")
        if len(A) != len(B):
            raise InvalidInput(f"a has {len(A)} rows and b {len(B)}: they must pair row by row", reason="LENGTH_MISMATCH",
                               field="b")
        route = self._pair_route(tenant, src, tgt, direction)
        pairs = self._calibration_pairs(tenant, src, tgt, route)
        cal = calibrate_threshold(pairs.scores.genuine, pairs.scores.impostor, far)
        scores = cosine_scores(*self._paired(tenant, route, A, B, src, tgt))
        return VerifyResult(
            scores=scores, accept=scores.astype(np.float64) >= cal.threshold, threshold=cal.threshold,
            far_requested=far, far_calibration=cal.far, tar_calibration=cal.tar, calibration=pairs.name,
            n_genuine=cal.n_genuine, n_impostor=cal.n_impostor, route=route.name,
            calibration_pairs=pairs.population, n_excluded=pairs.n_excluded,
            direction=route.direction, direction_reason=route.why,
        )

    def verification_report(self, tenant: str, a_model: str, b_model: str, direction: str = "auto") -> VerificationReport:
        """Operating points of the calibration verify uses for (a_model, b_model) and
        ``direction``: TAR at FAR 1e-2, 1e-3, 1e-4 where the impostor pairs resolve it, and the
        equal error rate."""
        from convergent.server.inference import equal_error_rate, operating_points

        src, tgt = self._models(tenant, a_model, b_model)
        route = self._pair_route(tenant, src, tgt, direction)
        pairs = self._calibration_pairs(tenant, src, tgt, route)
        genuine, impostor = pairs.scores.genuine, pairs.scores.impostor
        return VerificationReport(
            calibration=pairs.name, calibration_pairs=pairs.population, route=route.name,
            points=operating_points(genuine, impostor, REPORT_FARS), eer=equal_error_rate(genuine, impostor),
            n_genuine=len(genuine), n_impostor=len(impostor), n_excluded=pairs.n_excluded,
            direction=route.direction, direction_reason=route.why,
        )

    def calibrate(self, tenant: str, a_model: str, a: np.ndarray, b_model: str, b: np.ndarray, same: np.ndarray) -> tuple[int, int, str]:
        """Store labelled pairs for (a_model, b_model); returns (n_genuine, n_impostor, route)."""
        src, tgt = self._models(tenant, a_model, b_model)
        fit = self._route(tenant, src, tgt)
        A, B = prepare_vectors(src, a, "a", field="a"), prepare_vectors(tgt, b, "b", field="b")
        same = np.asarray(same, dtype=bool)
        if not (len(A) == len(B) == len(same)):
            raise InvalidInput(f"a, b and same must have the same length, got {len(A)}, {len(B)}, {len(same)}",
                               reason="LENGTH_MISMATCH", field="same")
        n_genuine = int(same.sum())
        if n_genuine == 0 or n_genuine == len(same):
            raise InvalidInput("labelled pairs need both genuine (same true) and impostor (same false) pairs",
                               reason="EMPTY_INPUT", field="same")
        self.galleries.save_calibration(tenant, src.name, src.version, tgt.name, tgt.version, A, B, same)
        return n_genuine, len(same) - n_genuine, _route_name(fit)
