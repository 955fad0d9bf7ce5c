"""Faults of the storage under the server (disk full, a damaged file), read as the domain errors they mean.

A database driver reports a full disk or a damaged file as its own exception (SQLite:
``database or disk is full``, ``database disk image is malformed``; PostgreSQL: SQLSTATE 53100,
XX001). :func:`domain_error` turns those into :class:`ResourceExhausted` and :class:`DataLoss`
with a message for the caller, so the one status table reports them as RESOURCE_EXHAUSTED and
DATA_LOSS instead of INTERNAL. A failed write rolls its transaction back whole, so nothing is
half-written; reads keep working, and writes work again once space is freed.
"""

from __future__ import annotations

import errno

from convergent.server.errors import DataLoss, ResourceExhausted

SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 11, 13, 26
PG_DISK_FULL, PG_OUT_OF_MEMORY = "53100", "53200"
PG_DAMAGED = ("XX001", "XX002")  # data_corrupted, index_corrupted

STORAGE_FULL = (
    "the server's storage is full: nothing of this call was stored; reads still work, and writes "
    "work again once the operator frees space (no restart needed)"
)
STORAGE_DAMAGED = (
    "the server's database file is damaged ({detail}); nothing was served from the damaged part: "
    "the operator should run `convergent check --data-dir DIR` and restore from a backup"
)


def _storage_full() -> ResourceExhausted:
    return ResourceExhausted(STORAGE_FULL, reason="STORAGE_FULL")


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI exception behind a SQLAlchemy one (``exc`` itself otherwise)."""
    return getattr(exc, "orig", None) or exc


def domain_error(exc: BaseException) -> BaseException:
    """``exc`` as a domain error when it is a storage fault (full disk, damaged file), else ``exc``."""
    orig = _driver_error(exc)
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if sqlite_code is not None:
        primary = int(sqlite_code) & 0xFF  # extended codes carry the primary in the low byte
        if primary == SQLITE_FULL:
            return _storage_full()
        if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return DataLoss(STORAGE_DAMAGED.format(detail=str(orig)))
    if "Could not decode to UTF-8" in str(orig):  # Python's sqlite3 reading text bytes a write never stored
        return DataLoss(STORAGE_DAMAGED.format(detail="a stored name is not valid UTF-8"))
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate == PG_DISK_FULL:
        return _storage_full()
    if sqlstate in PG_DAMAGED:
        return DataLoss(STORAGE_DAMAGED.format(detail=sqlstate))
    if isinstance(orig, OSError) and orig.errno in (errno.ENOSPC, errno.EDQUOT):
        return _storage_full()
    return exc
