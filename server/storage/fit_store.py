"""Fits: one row of metadata (JSON fields) and one row per learned array (bytes, no pickle)."""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa

from convergent.server.errors import DataLoss, NotFound
from convergent.server.records import FitRecord
from convergent.server.storage.schema import fit_arrays, fits
from convergent.server.storage import db, envelope
from convergent.server.storage.blocks import checksum

_JSON_FIELDS = ("params", "metrics", "warnings")


def _record(row: sa.Row) -> FitRecord:
    data = dict(row._mapping)
    data.pop("tenant")
    data.pop("state")
    for name in _JSON_FIELDS:
        data[name] = json.loads(data[name])
    return FitRecord(**data)


def array_place(fit_id: str, name: str, dtype: str, shape: str) -> envelope.Place:
    """Where a fit array belongs (the associated data of its sealed bytes)."""
    return ("fit_arrays", fit_id, name, dtype, shape)


def _opened(conn: sa.Connection, tenant: str, fit_id: str, row: sa.Row) -> bytes:
    """A fit array's clear bytes if they match their CRC-32 (and, sealed, their tag); :class:`DataLoss`
    naming the fit otherwise."""
    def damaged(detail: str) -> DataLoss:
        return DataLoss(f"fit {fit_id!r} is damaged: its array {row.name!r} {detail}; it is not served. Fit the "
                        "route again, or restore a backup (`convergent check --data-dir DIR` lists the damage)")

    if row.checksum is None or checksum(row.data) != row.checksum:
        raise damaged("fails its checksum")
    return envelope.of(conn).open(conn, tenant, array_place(fit_id, row.name, row.dtype, row.shape), row.data,
                                  row.key_version, lambda detail: damaged(f"is unreadable: {detail}"))


def _sealed_rows(conn: sa.Connection, tenant: str, fit_id: str, arrays: dict[str, np.ndarray]) -> list[dict]:
    sealer, rows = envelope.of(conn), []
    for name, array in arrays.items():
        dtype, shape = _dtype_name(array), json.dumps(list(array.shape))
        data, key_version = sealer.seal(conn, tenant, array_place(fit_id, name, dtype, shape),
                                        np.ascontiguousarray(array, dtype=dtype).tobytes())
        rows.append({"fit_id": fit_id, "name": name, "dtype": dtype, "shape": shape, "data": data,
                     "checksum": checksum(data), "key_version": key_version})
    return rows


class FitStore:
    """Durable fits of every tenant (same engine as the rest of the store)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def insert(self, tenant: str, record: FitRecord, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Store a fit and its arrays in one transaction."""
        row = record.model_dump(exclude={"stale"})
        for name in _JSON_FIELDS:
            row[name] = json.dumps(row[name])
        with db.write_connection(self.engine) as conn, conn.begin():
            conn.execute(fits.insert().values(tenant=tenant, state=json.dumps(state), **row))
            if arrays:
                conn.execute(fit_arrays.insert(), _sealed_rows(conn, tenant, record.id, arrays))

    def _row(self, conn: sa.Connection, tenant: str, fit_id: str) -> sa.Row:
        row = conn.execute(sa.select(fits).where(fits.c.tenant == tenant, fits.c.id == fit_id)).first()
        if row is None:
            raise NotFound(f"fit {fit_id!r} not found", reason="FIT_NOT_FOUND", metadata={"id": fit_id})
        return row

    def get(self, tenant: str, fit_id: str) -> FitRecord:
        with self.engine.connect() as conn:
            return _record(self._row(conn, tenant, fit_id))

    def load(self, tenant: str, fit_id: str) -> tuple[FitRecord, dict, dict[str, np.ndarray]]:
        """The record, the estimator parameters and the arrays of a fit."""
        with self.engine.connect() as conn, conn.begin():
            row = self._row(conn, tenant, fit_id)
            arrays = {
                r.name: np.frombuffer(_opened(conn, tenant, fit_id, r), dtype=r.dtype).reshape(json.loads(r.shape))
                for r in conn.execute(sa.select(fit_arrays).where(fit_arrays.c.fit_id == fit_id))
            }
        return _record(row), json.loads(row.state), arrays

    def latest(self, tenant: str, source: str, target: str, anchor_set: str = "") -> FitRecord | None:
        """The newest fit of the route source -> target (on ``anchor_set`` if given), or None."""
        query = sa.select(fits).where(fits.c.tenant == tenant, fits.c.source == source, fits.c.target == target)
        if anchor_set:
            query = query.where(fits.c.anchor_set == anchor_set)
        with self.engine.connect() as conn:
            row = conn.execute(
                query
                .order_by(fits.c.created_at.desc(), fits.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _record(row)

    def latest_shared(self, tenant: str, models: list[str]) -> FitRecord | None:
        """The newest shared space whose models include all of ``models``, or None."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(fits)
                .where(fits.c.tenant == tenant, fits.c.method == "shared")
                .order_by(fits.c.created_at.desc(), fits.c.id.desc())
            ).all()
        for row in rows:
            record = _record(row)
            if set(models) <= set(record.params["models"]):
                return record
        return None

    def list(self, tenant: str, after: str, limit: int, source: str = "", target: str = "") -> list[FitRecord]:
        """Fits with id > ``after`` (ids sort by creation time), optionally filtered by route."""
        query = sa.select(fits).where(fits.c.tenant == tenant, fits.c.id > after)
        if source:
            query = query.where(fits.c.source == source)
        if target:
            query = query.where(fits.c.target == target)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(fits.c.id).limit(limit)).all()
        return [_record(r) for r in rows]

    def delete(self, tenant: str, fit_id: str) -> None:
        with db.write_connection(self.engine) as conn, conn.begin():
            self._row(conn, tenant, fit_id)
            conn.execute(fit_arrays.delete().where(fit_arrays.c.fit_id == fit_id))
            conn.execute(fits.delete().where(fits.c.id == fit_id))


def _dtype_name(array: np.ndarray) -> str:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return "<i8"
    return "<f8" if array.dtype == np.float64 else "<f4"
