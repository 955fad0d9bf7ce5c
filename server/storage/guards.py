"""Checks inside write transactions: tenant quotas, and callers that went away."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from convergent.server.errors import Cancelled, ResourceExhausted
from convergent.server.storage.schema import anchor_ids, galleries


def stored_vectors(conn: sa.Connection, tenant: str) -> int:
    """Anchors + gallery items the tenant stores (what its quota counts)."""
    anchor_count = conn.execute(sa.select(sa.func.count()).select_from(anchor_ids).where(anchor_ids.c.tenant == tenant)).scalar()
    item_count = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(galleries.c.size), 0)).where(galleries.c.tenant == tenant)).scalar()
    return int(anchor_count) + int(item_count)


def check_quota(conn: sa.Connection, tenant: str, added: int, quota: int | None) -> None:
    """Call inside a write transaction after adding ``added`` vectors: :class:`ResourceExhausted`
    (which rolls the write back) if the tenant now holds more than ``quota``."""
    if quota is None or added == 0:
        return
    held = stored_vectors(conn, tenant)
    if held > quota:
        raise ResourceExhausted(
            f"quota max_vectors_per_tenant={quota}: the tenant stores {held - added} vectors and this would add {added}",
            reason="QUOTA_EXCEEDED", metadata={"limit": "max_vectors_per_tenant", "value": quota, "stored": held - added,
                                               "added": added},
        )


def ensure_wanted(still_wanted: Callable[[], bool] | None) -> None:
    """Raise :class:`Cancelled` (rolling the transaction back) if the caller has gone away."""
    if still_wanted is not None and not still_wanted():
        raise Cancelled("the call was cancelled before its data was committed; nothing was stored")
