"""What an operator reads: the compatibility atlas and the audit log (the SDK's part; gRPC only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convergent.client.types import Atlas, AtlasEntry, AuditEntry, FitInfo
from convergent.v1 import alignment_pb2, tenant_pb2


class OverviewMixin:
    """``atlas``, ``fit_missing_routes`` and ``audit_log`` (mixed into :class:`convergent.client.Client`)."""

    _alignment: Any
    _tenant: Any

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any: ...  # Client's
    def fit_alignment(self, source: str, target: str, anchor_set: str, method: str = "auto", **params: Any) -> FitInfo: ...

    def atlas(self, anchor_set: str) -> Atlas:
        """Which models of ``anchor_set`` can stand in for which: every ordered pair's newest fit
        on the set and its held-out diagnostics, and the models clustered by symmetric top-1.
        Reads stored fits only (:meth:`fit_missing_routes` fits the rest)."""
        r = self._call(self._alignment.GetAtlas, alignment_pb2.GetAtlasRequest(anchor_set=anchor_set))
        entries = [AtlasEntry(source=e.source, target=e.target, n_pairs=e.n_pairs, fit_id=e.fit_id, method=e.method,
                              stale=e.stale, top1=e.top1, cka=e.cka, mutual_knn=e.mutual_knn,
                              condition_number=e.condition_number, n_heldout=e.n_heldout) for e in r.entries]
        return Atlas(anchor_set=r.anchor_set, data_version=r.data_version, models=list(r.models), entries=entries,
                     clusters=[list(c.models) for c in r.clusters], cluster_distance=r.cluster_distance)

    def fit_missing_routes(self, anchor_set: str, method: str = "auto", max_routes: int | None = None,
                           progress: Callable[[AtlasEntry, FitInfo, int, int], None] | None = None,
                           **params: Any) -> list[FitInfo]:
        """Fit (with ``method``) every route of the set's atlas that has no current fit, at most
        ``max_routes`` of them; ``progress(entry, fit, done, total)`` after each. Returns the new fits."""
        todo = self.atlas(anchor_set).missing()[:max_routes]
        fits = []
        for entry in todo:
            fit = self.fit_alignment(entry.source, entry.target, anchor_set=anchor_set, method=method, **params)
            fits.append(fit)
            if progress is not None:
                progress(entry, fit, len(fits), len(todo))
        return fits

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries of the tenant's audit log, newest first (admin keys only:
        PermissionDenied otherwise). Entries are written in the background, within about a second."""
        r = self._call(self._tenant.ListAuditLog, tenant_pb2.ListAuditLogRequest(limit=int(limit)))
        return [AuditEntry(at=e.at.seconds + e.at.nanos / 1e9, key_id=e.key_id, method=e.method, target=e.target,
                           outcome=e.outcome, request_id=e.request_id) for e in r.entries]
