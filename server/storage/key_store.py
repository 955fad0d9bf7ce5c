"""API keys and the audit log in the SQL store."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence

import sqlalchemy as sa

from convergent.server.errors import AlreadyExists, NotFound
from convergent.server.storage.schema import api_keys, audit_log
from convergent.server.storage import db


class KeyStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def insert(self, key_id: str, tenant: str, name: str, role: str, secret_sha256: str) -> None:
        with db.write_connection(self.engine) as conn, conn.begin():
            if conn.execute(sa.select(api_keys.c.key_id).where(api_keys.c.key_id == key_id)).first():
                raise AlreadyExists(f"key {key_id!r} already exists", reason="NAME_TAKEN")
            conn.execute(api_keys.insert().values(
                key_id=key_id, tenant=tenant, name=name, role=role, secret_sha256=secret_sha256,
                created_at=time.time(), revoked_at=None,
            ))

    def get(self, key_id: str) -> sa.Row | None:
        """The key's row (revoked or not), or None."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()

    def list(self, tenant: str | None = None) -> builtins.list[sa.Row]:
        query = sa.select(api_keys).order_by(api_keys.c.tenant, api_keys.c.created_at)
        if tenant:
            query = query.where(api_keys.c.tenant == tenant)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def revoke(self, key_id: str) -> None:
        with db.write_connection(self.engine) as conn, conn.begin():
            if conn.execute(sa.select(api_keys.c.key_id).where(api_keys.c.key_id == key_id)).first() is None:
                raise NotFound(f"key {key_id!r} not found")
            conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=time.time()))

    def audit_many(self, entries: Sequence[tuple[float, str, str, str, str, str, str]]) -> None:
        """Write ``(at, tenant, key_id, method, target, outcome, request_id)`` entries in one transaction."""
        columns = ("at", "tenant", "key_id", "method", "target", "outcome", "request_id")
        rows: list[dict[str, object]] = [dict(zip(columns, (*entry[:4], entry[4][:512], *entry[5:]))) for entry in entries]
        if rows:
            with db.write_connection(self.engine) as conn, conn.begin():
                conn.execute(audit_log.insert(), rows)

    def audit_entries(self, tenant: str | None = None, limit: int = 100) -> builtins.list[sa.Row]:
        query = sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if tenant:
            query = query.where(audit_log.c.tenant == tenant)
        with self.engine.connect() as conn:
            return list(conn.execute(query))
