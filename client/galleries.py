"""Galleries and cross-model inference: the SDK's part (mixed into :class:`convergent.client.Client`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from convergent.client import errors
from convergent.client._convert import _INDEX_KINDS, _count, _gallery_info, _joined, _matrix
from convergent.client.types import GalleryInfo, IdentifyResult, OperatingPoint, VerificationReport, VerifyResult
from convergent.v1 import galleries_pb2
from convergent.wire import decode_matrix, encode_matrix, rows_per_chunk


class GalleryMixin:
    """enroll, remove, galleries, identify (fused too), verify, verification_report, calibrate."""

    _galleries: Any
    _max_message_bytes: int

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any: ...  # Client's
    def _pages(self, method: Any, request: Any, field: str) -> Any: ...  # Client's
    def _stream(self, *args: Any, **kwargs: Any) -> Any: ...  # Client's

    def enroll(
        self, gallery: str, model: str, ids: Sequence[str], vectors: np.ndarray, index: str = "exact",
        chunk_size: int = 512, progress: bool = False, model_version: int = 0,
    ) -> int:
        """Enroll ``vectors`` (n, dim) of ``model`` under ``ids`` in one transaction; returns the
        gallery size. The first enroll creates the gallery, bound to ``model``, with ``index``
        ("exact" or "hnsw"). An id already enrolled is ALREADY_EXISTS (nothing is stored)."""
        if index not in _INDEX_KINDS:
            raise errors.InvalidArgument(f"index must be one of {sorted(_INDEX_KINDS)}, got {index!r}")
        header = galleries_pb2.EnrollRequest(
            gallery=gallery, model=model, index=_INDEX_KINDS[index], model_version=_count(model_version, "model_version", 0),
            ends_with_last=True,
        )
        response = self._stream(
            self._galleries.Enroll, galleries_pb2.EnrollRequest, header, ids, vectors, chunk_size,
            progress and f"enroll {gallery}", retry=False,
        )
        return response.size

    def remove(self, gallery: str, ids: Sequence[str]) -> int:
        """Remove ``ids`` from the gallery (e.g. erasure requests); returns how many were removed."""
        request = galleries_pb2.RemoveRequest(gallery=gallery, ids=[str(i) for i in ids])
        return self._call(self._galleries.Remove, request).removed

    def count_gallery(self, gallery: str) -> int:
        return self.get_gallery(gallery).size

    def get_gallery(self, gallery: str) -> GalleryInfo:
        return _gallery_info(self._call(self._galleries.GetGallery, galleries_pb2.GetGalleryRequest(name=gallery)))

    def list_galleries(self) -> list[GalleryInfo]:
        return [_gallery_info(g) for g in self._pages(self._galleries.ListGalleries, galleries_pb2.ListGalleriesRequest(), "galleries")]

    def delete_gallery(self, gallery: str) -> None:
        self._call(self._galleries.DeleteGallery, galleries_pb2.DeleteGalleryRequest(name=gallery))

    def identify(
        self, gallery: str, vectors: np.ndarray | Mapping[str, np.ndarray], model: str | None = None, k: int = 5,
        fit_id: str | None = None, model_version: int = 0, batch_size: int = 4096, scoring: str = "auto",
        direction: str = "auto", fpir: float | None = None, non_mated: np.ndarray | None = None,
    ) -> IdentifyResult:
        """Top-``k`` gallery items for each probe.

        ``vectors`` (n, dim) of ``model`` (``model_version`` 0 = current): probes of another model
        than the gallery's go through the latest ``model`` -> gallery-model fit (or ``fit_id``).
        ``vectors={"dlib": Pd, "facenet": Pf}`` (federated inference): row i of every party is the
        same subject; each party goes through its own route, and the scores are fused
        (z-normalised, weighted by each route's held-out quality); ``result.parties`` holds the
        weights, ``result.contributors`` who counted. Probes go in batches of ``batch_size``
        rows (cut to the message limit), as :meth:`transform`. ``scoring``: "auto" (the default:
        "csls" for probes routed through a map, also for each such party of a fused identify;
        "cosine" for the gallery's own model), "cosine" (scores in [-1, 1]) or "csls" (hubness-corrected
        2 cos - r_T - r_S in [-4, 4], for probes routed through a map); ``result.scoring`` says
        which produced the scores. ``direction``: "auto" (the default: "both" when a fit gallery
        model -> ``model`` on the route's anchor set exists, the gallery is a local exact one and the
        route's held-out anchors retrieve at least as well that way),
        "forward" (scores in the gallery's space) or "both" (the mean of the scores in both
        models' spaces); ``result.direction`` and ``direction_reason`` say which and why.

        Open-set: ``fpir`` in (0, 1) also tests each probe's top-1 against a threshold for that
        false-positive identification rate (``result.accepted``, ``threshold``, what the
        calibration measured on how many non-mated searches), calibrated without labels on the
        route's anchors, or on ``non_mated`` (m, dim): probes of people who are not enrolled.
        """
        k = _count(k, "k")
        batch_size = _count(batch_size, "batch_size")
        if isinstance(vectors, Mapping):
            parties = {m: _matrix(v, f"vectors[{m!r}]") for m, v in vectors.items()}
            n = max((len(v) for v in parties.values()), default=0)
            width = sum(v.shape[1] for v in parties.values()) or 1
            rows = min(batch_size, rows_per_chunk(width, batch_size, self._max_message_bytes))
            replies = [
                self._call(self._galleries.IdentifyFused, galleries_pb2.IdentifyFusedRequest(
                    gallery=gallery, k=k, scoring=scoring,
                    parties=[galleries_pb2.PartyProbes(model=m, vectors=encode_matrix(v[start : start + rows]))
                             for m, v in parties.items()],
                ))
                for start in range(0, max(n, 1), rows)
            ]
            ids, scores = _joined(replies)
            last = replies[-1]
            return IdentifyResult(
                ids=ids, scores=scores, route="fused", parties={p.model: p.weight for p in last.parties},
                party_routes={p.model: p.route for p in last.parties},
                weight_sources={p.model: p.weight_source for p in last.parties}, scoring=last.scoring or "cosine",
            )
        if model is None:
            raise errors.InvalidArgument("give the probes' model (or a dict of party model -> probes)")
        probes = _matrix(vectors, "vectors")
        budget = self._max_message_bytes
        extra: dict[str, Any] = {}
        if fpir is not None:
            extra["fpir"] = float(fpir)
        if non_mated is not None:
            if fpir is None:
                raise errors.InvalidArgument("non_mated probes calibrate an open-set threshold: give fpir too")
            calibration = _matrix(non_mated, "non_mated")
            budget -= 2 * calibration.nbytes  # every batch carries them (the server keeps no state between calls)
            if budget <= 8 * probes.shape[1] * 4:
                raise errors.InvalidArgument(
                    f"non_mated ({calibration.nbytes / 2**20:.1f} MiB) leaves no room for probes in a message of "
                    f"{self._max_message_bytes / 2**20:.0f} MiB: give fewer non-mated probes")
            extra["non_mated"] = encode_matrix(calibration)
        rows = min(batch_size, rows_per_chunk(max(probes.shape[1], 1), batch_size, budget))
        replies = [
            self._call(self._galleries.Identify, galleries_pb2.IdentifyRequest(
                gallery=gallery, model=model, model_version=_count(model_version, "model_version", 0), k=k,
                vectors=encode_matrix(probes[start : start + rows]), fit_id=fit_id or "", scoring=scoring,
                direction=direction, **extra,
            ))
            for start in range(0, max(len(probes), 1), rows)
        ]
        ids, scores = _joined(replies)
        last = replies[-1]
        result = IdentifyResult(ids=ids, scores=scores, route=last.route, scoring=last.scoring or "cosine",
                                direction=last.direction or "forward", direction_reason=last.direction_reason)
        if not last.HasField("open_set"):
            return result
        decision = last.open_set
        return replace(
            result, accepted=np.array([a for r in replies for a in r.open_set.accepted], dtype=bool),
            threshold=decision.threshold, fpir_requested=decision.fpir_requested,
            fpir_calibration=decision.fpir_calibration, n_calibration_searches=decision.n_searches,
            calibration=decision.calibration, calibration_searches=decision.calibration_searches,
            n_excluded=decision.n_excluded,
        )

    def verify(self, a: np.ndarray, a_model: str, b: np.ndarray, b_model: str, far: float = 1e-3,
               direction: str = "auto") -> VerifyResult:
        """Compare row i of ``a`` (model ``a_model``) with row i of ``b`` (``b_model``) at the
        threshold calibrated for false-accept rate ``far``. ``direction``: "a_to_b" scores in
        b's space; "both" averages that with the cosine in a's space (needs a fit b -> a on the
        same anchor set; the score then does not depend on which model is a); "auto": "both"
        when that fit exists, else "a_to_b"."""
        request = galleries_pb2.VerifyRequest(
            a_model=a_model, a=encode_matrix(a), b_model=b_model, b=encode_matrix(b), far=far, direction=direction
        )
        r = self._call(self._galleries.Verify, request)
        return VerifyResult(
            scores=decode_matrix(r.scores)[:, 0].copy(), accept=np.array(r.accept, dtype=bool),
            threshold=r.threshold, far_requested=r.far_requested, far_calibration=r.far_calibration,
            tar_calibration=r.tar_calibration, calibration=r.calibration, n_genuine=r.n_genuine,
            n_impostor=r.n_impostor, route=r.route, calibration_pairs=r.calibration_pairs,
            n_excluded=r.n_excluded, direction=r.direction or "a_to_b", direction_reason=r.direction_reason,
        )

    def verification_report(self, a_model: str, b_model: str, direction: str = "auto") -> VerificationReport:
        """Operating points of the calibration :meth:`verify` uses for ``a_model`` and ``b_model``
        (``direction`` as there): TAR at FAR 1e-2 / 1e-3 / 1e-4 where the calibration pairs
        resolve it, and the EER."""
        r = self._call(self._galleries.VerificationReport,
                       galleries_pb2.VerificationReportRequest(a_model=a_model, b_model=b_model, direction=direction))
        return VerificationReport(
            calibration=r.calibration, calibration_pairs=r.calibration_pairs, route=r.route,
            points=[OperatingPoint(p.requested_far, p.threshold, p.far, p.tar) for p in r.points],
            eer=r.eer, eer_threshold=r.eer_threshold, n_genuine=r.n_genuine, n_impostor=r.n_impostor,
            n_excluded=r.n_excluded, direction=r.direction or "a_to_b", direction_reason=r.direction_reason,
        )

    def calibrate(self, a: np.ndarray, a_model: str, b: np.ndarray, b_model: str, same: Sequence[bool]) -> dict[str, int]:
        """Labelled pairs (row i of ``a`` vs row i of ``b``; ``same[i]``: same subject?) that
        replace the anchor-set calibration of :meth:`verify` for this model pair.
        Returns the counts used: {"genuine": ..., "impostor": ...}."""
        request = galleries_pb2.CalibrateRequest(
            a_model=a_model, a=encode_matrix(a), b_model=b_model, b=encode_matrix(b), same=[bool(x) for x in same]
        )
        r = self._call(self._galleries.Calibrate, request)
        return {"genuine": r.n_genuine, "impostor": r.n_impostor}
