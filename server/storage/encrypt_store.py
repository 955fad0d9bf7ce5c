"""Encrypting a store in clear, in place (``convergent encrypt``): crash-safe and resumable.

1. The store is checked (:func:`~convergent.server.storage.integrity.full_check`); damage is refused
   (sealing damaged bytes would make their damage unreadable).
2. ``store_settings.encryption`` is written with ``complete: false``: from here on a server
   refuses the store until the encryption finishes (it would write new rows in clear).
3. Every row in clear (``key_version`` NULL) of every sealed table is sealed, a few rows per
   transaction: a crash leaves each row either in clear or sealed, never half, and a rerun goes
   on with the rows still in clear.
4. The file is rewritten so that no page of it, nor of its WAL, still holds the clear bytes
   (SQLite: ``VACUUM`` and a truncating checkpoint; PostgreSQL: ``VACUUM FULL`` of the sealed
   tables, whose old files are unlinked); only then ``complete: true`` (a crash before it: the
   next run seals nothing more and scrubs again). Copies outside the database
   (backups taken before, PostgreSQL's WAL archive, the file system's freed blocks) are not
   reached: docs/operations.md says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from convergent.server.errors import StartupError
from convergent.server.storage import db, envelope
from convergent.server.storage.blocks import BlockTable, checksum
from convergent.server.storage.anchor_blocks import ANCHOR_BLOCKS
from convergent.server.storage.fit_store import array_place
from convergent.server.storage.gallery_store import GALLERY_BLOCKS, calibration_place
from convergent.server.storage.pair_stats import stats_place
from convergent.server.storage.keyring import Keyring
from convergent.server.storage.master_keys import LocalMasterKey
from convergent.server.storage.schema import (
    anchor_blocks,
    calibrations,
    fit_arrays,
    fits,
    gallery_blocks,
    pair_stats,
    store_settings,
)

ROWS_PER_TRANSACTION = 8  # blocks are up to 2 MiB: a transaction of at most ~16 MiB


@dataclass(frozen=True)
class Sealed:
    """One table of sealed bytes: its key columns, its byte columns, where a row's bytes belong."""

    table: sa.Table
    key: tuple[str, ...]
    data: tuple[str, ...]
    place: Callable[[sa.Row, str], envelope.Place]
    tenant: Callable[[sa.Connection, sa.Row], str]

    def rewrite(self, conn: sa.Connection, row: sa.Row, sealed: list[bytes], key_version: int | None) -> None:
        """Store ``sealed`` (one per byte column, under ``key_version``) in ``row``, its checksum with them."""
        values: dict = dict(zip(self.data, sealed), key_version=key_version)
        if "checksum" in self.table.c:
            values["checksum"] = checksum(b"".join(sealed))
        conn.execute(self.table.update().where(*(self.table.c[k] == getattr(row, k) for k in self.key)).values(**values))


def _block_place(blocks: BlockTable) -> Callable[[sa.Row, str], envelope.Place]:
    return lambda row, _: blocks.place([getattr(row, k) for k in blocks.key], row.block_id)


def _fit_tenant(conn: sa.Connection, row: sa.Row) -> str:
    return str(conn.execute(sa.select(fits.c.tenant).where(fits.c.id == row.fit_id)).scalar_one())


SEALED = (
    Sealed(anchor_blocks, (*ANCHOR_BLOCKS.key, "block_id"), ("vectors",), _block_place(ANCHOR_BLOCKS), lambda _, r: r.tenant),
    Sealed(gallery_blocks, (*GALLERY_BLOCKS.key, "block_id"), ("vectors",), _block_place(GALLERY_BLOCKS), lambda _, r: r.tenant),
    Sealed(fit_arrays, ("fit_id", "name"), ("data",),
            lambda r, _: array_place(r.fit_id, r.name, r.dtype, r.shape), _fit_tenant),
    Sealed(pair_stats, ("tenant", "anchor_set", "source", "source_version", "target", "target_version"), ("arrays",),
            lambda r, _: stats_place((r.anchor_set, r.source, r.source_version, r.target, r.target_version),
                                     r.data_version, r.n, r.products), lambda _, r: r.tenant),
    Sealed(calibrations, ("tenant", "a_model", "b_model"), ("a", "b", "same"),
            lambda r, column: calibration_place(r.a_model, r.b_model, r.a_version, r.b_version, r.n, column),
            lambda _, r: r.tenant),
)


@dataclass
class EncryptReport:
    sealed: dict[str, int]  # table -> rows sealed by this run
    already: bool  # the store was encrypted (and complete) before this run
    seconds: float


def _in_clear(conn: sa.Connection, spec: Sealed) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(spec.table)
                            .where(spec.table.c.key_version.is_(None))).scalar())


def _seal_some(conn: sa.Connection, spec: Sealed, sealer: envelope.Envelope, limit: int) -> int:
    """Seal up to ``limit`` rows in clear of one table (the caller's transaction)."""
    t = spec.table
    rows = conn.execute(sa.select(t).where(t.c.key_version.is_(None)).order_by(*(t.c[k] for k in spec.key))
                        .limit(limit)).all()
    for row in rows:
        tenant = spec.tenant(conn, row)
        spec.rewrite(conn, row, *sealer.seal_many(conn, tenant, [(spec.place(row, c), bytes(getattr(row, c)))
                                                                   for c in spec.data]))
    return len(rows)


def _set(conn: sa.Connection, setting: dict) -> None:
    conn.execute(store_settings.delete().where(store_settings.c.name == envelope.SETTING))
    conn.execute(store_settings.insert().values(name=envelope.SETTING, value=json.dumps(setting)))


def _scrub_free_pages(engine: sa.Engine) -> None:
    """Rewrite the database so no free page or WAL frame keeps the bytes that were in clear."""
    raw = engine.raw_connection()  # outside any transaction (VACUUM refuses to run in one)
    try:
        driver = raw.driver_connection
        if engine.dialect.name == "sqlite":
            for statement in ("PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"):
                busy = driver.execute(statement).fetchone()
                if statement.startswith("PRAGMA") and busy and busy[0]:
                    raise StartupError("another connection holds the database (a running server?): stop it and run "
                                       "`convergent encrypt` again to finish")
        else:
            driver.rollback()
            driver.autocommit = True
            for spec in SEALED:
                driver.execute(f"VACUUM FULL {spec.table.name}")
            driver.autocommit = False
    finally:
        raw.close()


def encrypt(engine: sa.Engine, master: LocalMasterKey, keyring_file: Path,
            progress: Callable[[int, int], None] | None = None,
            rows_per_transaction: int = ROWS_PER_TRANSACTION) -> EncryptReport:
    """Seal every row in clear of the store on ``engine`` (migrated to head already) under data
    keys wrapped by tenant keys of the keyring in ``keyring_file`` (created if missing),
    ``rows_per_transaction`` rows at a time; ``progress(done, total)`` after every transaction.
    Resumes an interrupted run; a store of another keyring is :class:`StartupError`."""
    from convergent.server.storage.integrity import full_check

    started = time.perf_counter()
    with engine.connect() as conn:
        setting = envelope.read_setting(conn)
    provider = Keyring(keyring_file, master, create=setting is None)
    if setting is not None and setting["keyring_id"] != provider.key_id:
        raise StartupError(f"this store is encrypted under keyring {setting['keyring_id']}, not under the keyring "
                           f"{keyring_file} ({provider.key_id})")
    if setting is not None and setting.get("complete", True):
        return EncryptReport({}, True, time.perf_counter() - started)
    damage = full_check(engine)
    if damage:
        raise StartupError(f"the store is damaged ({damage[0]}; {len(damage)} findings): restore a backup or remove the "
                           "damaged objects before encrypting (`convergent check --data-dir DIR` lists them)")
    if setting is None:
        setting = envelope.new_setting(provider.key_id, complete=False)
        with db.write_connection(engine) as conn, conn.begin():
            _set(conn, setting)
    sealer = envelope.Envelope(provider, encrypted=True)
    envelope.attach(engine, sealer)
    with engine.connect() as conn:
        total = sum(_in_clear(conn, spec) for spec in SEALED)
    sealed, done = {spec.table.name: 0 for spec in SEALED}, 0
    for spec in SEALED:
        while True:
            with db.write_connection(engine) as conn, conn.begin():
                count = _seal_some(conn, spec, sealer, rows_per_transaction)
            if not count:
                break
            sealed[spec.table.name] += count
            done += count
            if progress is not None:
                progress(done, total)
    _scrub_free_pages(engine)  # before "complete": a crash here is finished by the next run, scrub included
    with db.write_connection(engine) as conn, conn.begin():
        _set(conn, {**setting, "complete": True})
    return EncryptReport(sealed, False, time.perf_counter() - started)
