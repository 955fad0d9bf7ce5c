"""Rotating and destroying keys of an encrypted store.

- **Data keys** (:meth:`KeyRotation.rotate_data_key`): a new data key becomes the tenant's newest and
  the older ones are marked retired; :meth:`KeyRotation.step` re-seals rows sealed with a retired
  key under the newest one, a few rows per transaction, while the server serves (a crash leaves each
  row sealed under the old key or the new one, both readable, and the next step goes on), and drops
  a retired key once no row uses it and it has been retired for ``2 * ACTIVE_KEY_TTL_S`` (every
  process seals with the newest key by then).
- **The master key** (:func:`rotate_master_key`): the keyring's tenant keys are sealed again under a
  new master key (seconds: the data keys, wrapped by the tenant keys, do not change).
- **A tenant** (:func:`delete_tenant`): its tenant key is destroyed in the keyring first (its data
  keys, here and in every backup, stop opening: crypto-shredding), then its rows are deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from convergent.server.errors import ConvergentError
from convergent.server.storage import db, envelope
from convergent.server.storage.blocks import checksum
from convergent.server.storage.encrypt_store import SEALED, Sealed
from convergent.server.storage.keyring import Keyring
from convergent.server.storage.master_keys import LocalMasterKey
from convergent.server.storage.schema import data_keys, fits, metadata

ROWS_PER_STEP = 8


@dataclass
class StepReport:
    resealed: int = 0
    dropped_keys: list[tuple[str, int]] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # rows that could not be opened (left as they are)

    @property
    def idle(self) -> bool:
        return not self.resealed and not self.dropped_keys


def _tenant_filter(spec: Sealed, tenant: str) -> sa.ColumnElement:
    t = spec.table
    if "tenant" in t.c:
        return t.c.tenant == tenant
    return t.c.fit_id.in_(sa.select(fits.c.id).where(fits.c.tenant == tenant))


class KeyRotation:
    """Data-key rotation of one store (engine + its envelope)."""

    def __init__(self, engine: sa.Engine, sealer: envelope.Envelope) -> None:
        self.engine, self.sealer = engine, sealer

    def rotate_data_key(self, tenant: str) -> int:
        """Give ``tenant`` a new newest data key (older ones retire); returns its version."""
        c = data_keys.c
        with db.write_connection(self.engine) as conn, conn.begin():
            conn.execute(data_keys.update().where(c.tenant == tenant, c.retired_at.is_(None)).values(retired_at=time.time()))
            self.sealer.forget(tenant)
            version, _ = self.sealer.new_data_key(conn, tenant)
        self.sealer.forget(tenant)
        return version

    def keys(self) -> list[sa.Row]:
        """(tenant, version, created_at, retired_at) of every data key."""
        c = data_keys.c
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(c.tenant, c.version, c.created_at, c.retired_at)
                                     .order_by(c.tenant, c.version)).all())

    def rotate_older_than(self, max_age_s: float) -> list[tuple[str, int]]:
        """Rotate the data key of every tenant whose newest one is older than ``max_age_s``."""
        now, rotated = time.time(), []
        for row in self.keys():
            if row.retired_at is None and now - row.created_at > max_age_s:
                rotated.append((row.tenant, self.rotate_data_key(row.tenant)))
        return rotated

    def step(self, rows: int = ROWS_PER_STEP, grace_s: float = 2 * envelope.ACTIVE_KEY_TTL_S) -> StepReport:
        """Re-seal up to ``rows`` rows sealed with retired keys (one transaction), or, when none is
        left, drop the retired keys no row uses that were retired more than ``grace_s`` ago."""
        report = StepReport()
        retired = [r for r in self.keys() if r.retired_at is not None]
        for tenant in sorted({r.tenant for r in retired}):
            versions = [r.version for r in retired if r.tenant == tenant]
            self.sealer.forget(tenant)  # seal under the newest key in the database, not a cached retired one
            for spec in SEALED:
                with db.write_connection(self.engine) as conn, conn.begin():
                    report.resealed += self._reseal(conn, spec, tenant, versions, rows - report.resealed, report)
                if report.resealed >= rows:
                    return report
        if report.resealed:
            return report
        now = time.time()
        with db.write_connection(self.engine) as conn, conn.begin():
            for row in retired:
                if now - row.retired_at < grace_s or self._in_use(conn, row.tenant, row.version):
                    continue
                conn.execute(data_keys.delete().where(data_keys.c.tenant == row.tenant, data_keys.c.version == row.version))
                report.dropped_keys.append((row.tenant, row.version))
        return report

    @staticmethod
    def _in_use(conn: sa.Connection, tenant: str, version: int) -> bool:
        return any(conn.execute(sa.select(sa.literal(1)).select_from(spec.table).where(
            _tenant_filter(spec, tenant), spec.table.c.key_version == version).limit(1)).first() for spec in SEALED)

    def _reseal(self, conn: sa.Connection, spec: Sealed, tenant: str, versions: list[int], limit: int,
                report: StepReport) -> int:
        t = spec.table
        found = conn.execute(sa.select(t).where(_tenant_filter(spec, tenant), t.c.key_version.in_(versions))
                             .order_by(*(t.c[k] for k in spec.key)).limit(max(limit, 0))).all()
        done = 0
        for row in found:
            try:
                stored = b"".join(bytes(getattr(row, column)) for column in spec.data)
                if "checksum" in t.c and (row.checksum is None or checksum(stored) != row.checksum):
                    raise ConvergentError("fails its checksum")
                clear = [(spec.place(row, column), self.sealer.open(conn, tenant, spec.place(row, column),
                                                                    bytes(getattr(row, column)), row.key_version,
                                                                    ConvergentError)) for column in spec.data]
                sealed, version = self.sealer.seal_many(conn, tenant, clear)
                if version in versions:  # the newest key is retired too (rotated meanwhile): next step
                    return done
            except ConvergentError as exc:  # damaged: left for `convergent check` and a restore
                report.damaged.append(f"{t.name} {tuple(getattr(row, k) for k in spec.key)}: {exc}")
                continue
            spec.rewrite(conn, row, sealed, version)
            done += 1
        return done


def rotate_master_key(keyring_file, old: LocalMasterKey, new: LocalMasterKey) -> Keyring:  # noqa: ANN001 - a Path
    """Seal the keyring's tenant keys under ``new`` (one atomic rewrite of the keyring file)."""
    return Keyring(keyring_file, old).rewrap(new)


def delete_tenant(engine: sa.Engine, keyring: Keyring | None, tenant: str) -> dict[str, int]:
    """Destroy ``tenant``: its key in the keyring first (if the store is encrypted), then every row
    of it in one transaction. Returns rows deleted per table (run it again after a crash)."""
    if keyring is not None:
        keyring.shred(tenant)
    deleted: dict[str, int] = {}
    with db.write_connection(engine) as conn, conn.begin():
        fit_ids = sa.select(fits.c.id).where(fits.c.tenant == tenant)
        fit_arrays = metadata.tables["fit_arrays"]
        deleted["fit_arrays"] = conn.execute(fit_arrays.delete().where(fit_arrays.c.fit_id.in_(fit_ids))).rowcount
        for table in reversed(metadata.sorted_tables):  # children before parents
            if "tenant" in table.c and table.name != "fit_arrays":
                deleted[table.name] = conn.execute(table.delete().where(table.c.tenant == tenant)).rowcount
    return {name: n for name, n in deleted.items() if n}
