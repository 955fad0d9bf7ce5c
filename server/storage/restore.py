"""Restore of the SQLite store from a backup (the format and the guarantees: :mod:`.backup`)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from convergent.server.storage.backup import (
    BackupError,
    RestoreInfo,
    RestoreRefused,
    _check_database,
    _extract_verified,
    _fsync_dir,
    _sha256,
    _sqlite_uri,
    _temp_path,
    _unlink,
    database_path,
    _SIDE_FILES,
)


def _known_revision(revision: str) -> bool:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from convergent.server.storage import db

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:
        return False


def in_use(path: Path) -> bool:
    """True if another connection (any process, this one included) has the database open.

    An exclusive-locking-mode connection cannot take its lock while any other connection holds
    the WAL index (every open connection of a WAL database does). Side effect when free: the
    old database's WAL is checkpointed, which is harmless because it is about to be replaced.
    """
    try:
        conn = sqlite3.connect(_sqlite_uri(path, "rw"), uri=True, isolation_level=None, timeout=0)
    except sqlite3.Error:
        return False  # unreadable: nothing can be serving it
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    except sqlite3.DatabaseError:
        return False  # a damaged old database is replaced like any other
    finally:
        conn.close()


def restore_sqlite(backup: Path, data_dir: Path, force: bool = False) -> RestoreInfo:
    """Put the database from ``backup`` into ``data_dir`` for ``convergent serve --data-dir``.

    Raises :class:`RestoreRefused` if a database is there and ``force`` is false, or if it is
    open (stop the server first); :class:`CorruptBackup` if the backup does not verify (nothing
    is changed then); :class:`BackupError` for a backup from a newer schema.
    """
    from convergent.server.storage import db

    started = time.monotonic()
    backup = Path(backup)
    if not backup.is_file():
        raise BackupError(f"no backup file at {backup}")
    target = database_path(data_dir)
    existing = [p for p in (target, *(Path(f"{target}{s}") for s in _SIDE_FILES)) if p.exists()]
    if existing and not force:
        raise RestoreRefused(
            f"{target.parent} already holds a database ({target.name}); "
            "restoring would replace it: pass force=True (--force) to overwrite it"
        )
    if target.exists() and in_use(target):
        raise RestoreRefused(f"{target} is in use (is a server running on {target.parent}?); stop it first")
    target.parent.mkdir(parents=True, exist_ok=True)

    head = db.head_revision()
    with _temp_path(target.parent, f".{target.name}.restore-", ".tmp") as staged:
        manifest = _extract_verified(backup, staged)
        revision, tables = _check_database(staged, f"the database in {backup}")
        if revision is not None and not _known_revision(revision):
                raise BackupError(
                    f"{backup} holds schema revision {revision!r}, which this convergent (head "
                    f"{head!r}) does not know: it was written by a newer convergent; upgrade first"
                )
        sha = manifest.get("sha256") or _sha256(staged)
        size = staged.stat().st_size
        # Stale side files of the old database would be replayed into the new one: remove them
        # first, then rename the verified file into place (atomic on one file system).
        for suffix in _SIDE_FILES:
            _unlink(Path(f"{target}{suffix}"))
        replaced = target.exists()
        os.replace(staged, target)
        _fsync_dir(target.parent)

    return RestoreInfo(
        database_path=target, database_bytes=size, sha256=sha,
        convergent_version=manifest.get("convergent_version"), alembic_revision=revision,
        head_revision=head, created_at=manifest.get("created_at"), tables=tables,
        replaced=replaced or bool(existing), seconds=time.monotonic() - started,
    )
