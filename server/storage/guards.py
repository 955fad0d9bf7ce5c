"""Checks inside write transactions: tenant quotas, and callers that went away."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from convergent.server.errors import Cancelled, ResourceExhausted
from convergent.server.storage.schema import anchors, gallery_items


def stored_vectors(conn: sa.Connection, tenant: str) -> int:
    """Anchors + gallery items the tenant stores (what its quota counts)."""
    count = 0
    for table in (anchors, gallery_items):
        count += int(conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.tenant == tenant)).scalar())
    return count


def check_quota(conn: sa.Connection, tenant: str, added: int, quota: int | None) -> None:
    """Call inside a write transaction after adding ``added`` vectors: :class:`ResourceExhausted`
    (which rolls the write back) if the tenant now holds more than ``quota``."""
    if quota is None or added == 0:
        return
    held = stored_vectors(conn, tenant)
    if held > quota:
        raise ResourceExhausted(
            f"quota max_vectors_per_tenant={quota}: the tenant stores {held - added} vectors and this would add {added}"
        )


def ensure_wanted(still_wanted: Callable[[], bool] | None) -> None:
    """Raise :class:`Cancelled` (rolling the transaction back) if the caller has gone away."""
    if still_wanted is not None and not still_wanted():
        raise Cancelled("the call was cancelled before its data was committed; nothing was stored")
