"""Use cases of a tenant as a whole: erasure of subjects across anchors and galleries, usage."""

from __future__ import annotations

from convergent.server.registry.galleries import Galleries
from convergent.server.records import ErasureReport
from convergent.server.storage.protocols import Store


class Tenancy:
    def __init__(self, store: Store, galleries: Galleries) -> None:
        self.store = store
        self.galleries = galleries

    def erase(self, tenant: str, ids: list[str]) -> ErasureReport:
        """Delete these ids from every anchor set and gallery of the tenant (one transaction);
        fits on the changed anchor sets turn stale; changed galleries' in-process indexes are
        rebuilt on next use, Milvus collections lose the ids inside the transaction."""
        report = self.store.erase(tenant, ids, before_commit=self.galleries.before_commit(tenant))
        self.galleries.forget_indexes(tenant, report.galleries_changed)
        return report

    def audit_log(self, tenant: str, limit: int, max_limit: int) -> list:
        """The tenant's newest ``limit`` (0: 100, at most ``max_limit``) audit entries, newest first."""
        return self.store.keys.audit_entries(tenant, min(limit or 100, max_limit))

    def usage(self, tenant: str) -> int:
        """Vectors the tenant stores (anchors + gallery items)."""
        return self.store.stored_vectors(tenant)
