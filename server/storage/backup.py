"""Online backup and restore of the SQLite store.

Backup format (one file, ``format_version`` 1): an uncompressed POSIX tar archive — gzip
compressed when the file name ends in ``.gz`` or ``.tgz`` (float32 embeddings compress by
only ~10 %, so compression is off by default) — holding exactly two members, in this order:

``manifest.json``
    ``{"format": "convergent-backup", "format_version": 1, "convergent_version": "0.1.0",
    "alembic_revision": "0002", "created_at": "2026-…Z", "created_at_unix": 1.7e9,
    "database": "convergent.sqlite3", "database_bytes": N, "sha256": "…",
    "tables": {"anchors": 123, …}, "source": "/data/convergent.sqlite3"}``
``convergent.sqlite3``
    a self-contained SQLite database (rollback journal, no ``-wal`` file needed).

:func:`backup_sqlite` copies the live database with SQLite's online backup API
(:meth:`sqlite3.Connection.backup`) in a single step, i.e. inside one read transaction: the
copy is the database as of one commit, never a torn mixture, and in WAL mode writers go on
committing while it runs. The copy is checked with ``PRAGMA integrity_check``, hashed, and
the archive is written to a temporary file in the destination folder, fsynced and renamed
over ``out``: a crash leaves either the previous file or the complete new one. Peak extra
disk in that folder: about twice the database size (the staged copy and the archive).

:func:`restore_sqlite` refuses to replace an existing database unless ``force``, and
refuses in any case while another connection (a running server) has that database open.
It checks the manifest, the size and sha256 of the database and ``PRAGMA integrity_check``
before anything is replaced, removes stale ``-wal`` / ``-shm`` / ``-journal`` files, and
renames the verified file into place. An older schema revision is fine: ``convergent
serve`` upgrades it with the Alembic migrations at start-up. A database from a newer
convergent (a revision this version does not know) is refused.

A plain SQLite file (for example one written by ``sqlite3 db ".backup file"``) is also
accepted by :func:`restore_sqlite` and :func:`verify_backup`; it has no manifest, so only
``PRAGMA integrity_check`` and the schema revision are checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from convergent.server.errors import ConvergentError

FORMAT = "convergent-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATABASE_NAME = "convergent.sqlite3"
SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")
_CHUNK = 1024 * 1024


class BackupError(ConvergentError):
    """A backup could not be written, read or restored; the message says why and what to do."""


class CorruptBackup(BackupError):
    """The backup file is damaged, truncated, tampered with, or not a convergent backup."""


class RestoreRefused(BackupError):
    """The restore would overwrite a database (without ``force``) or one that is in use."""


@dataclass(frozen=True)
class BackupInfo:
    """What :func:`backup_sqlite` wrote (or :func:`verify_backup` found)."""

    path: Path
    size_bytes: int  # of the backup file
    database_bytes: int
    sha256: str  # of the database inside
    convergent_version: str | None
    alembic_revision: str | None
    created_at: str | None  # ISO 8601, UTC
    tables: dict[str, int] = field(default_factory=dict)  # rows per table
    seconds: float = 0.0


@dataclass(frozen=True)
class RestoreInfo:
    """What :func:`restore_sqlite` put in place."""

    database_path: Path
    database_bytes: int
    sha256: str
    convergent_version: str | None  # that wrote the backup (None: plain SQLite file)
    alembic_revision: str | None  # of the restored database
    head_revision: str  # of this convergent; the server migrates up to it at start-up
    created_at: str | None
    tables: dict[str, int]
    replaced: bool  # an existing database was overwritten (force)
    seconds: float = 0.0

    @property
    def needs_migration(self) -> bool:
        return self.alembic_revision != self.head_revision


# --------------------------------------------------------------------------- helpers
def database_path(data_dir: Path) -> Path:
    """The SQLite file ``convergent serve --data-dir DATA_DIR`` uses (without CONVERGENT_DATABASE_URL)."""
    import sqlalchemy as sa

    from convergent.server.settings import ServerSettings

    # model_construct: no validation and no environment, just the default URL for this folder.
    url = ServerSettings.model_construct(data_dir=Path(data_dir), database_url=None).resolved_database_url()
    return Path(sa.engine.make_url(url).database or "")


def _sqlite_uri(path: Path, mode: str) -> str:
    return f"{path.resolve().as_uri()}?mode={mode}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _check_database(path: Path, what: str) -> tuple[str | None, dict[str, int]]:
    """``PRAGMA integrity_check`` of the file at ``path``; its Alembic revision and row counts
    (of tables and views: ``anchors`` is a view of one row per anchor since migration 0008)."""
    try:
        conn = sqlite3.connect(_sqlite_uri(path, "ro"), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise CorruptBackup(f"{what} is not a readable SQLite database: {exc}") from exc
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            raise CorruptBackup(f"{what} fails PRAGMA integrity_check: {'; '.join(map(str, rows[:5]))}")
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        counts = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
        revision = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = None if row is None else str(row[0])
        _check_sums(path, what, revision)
        return revision, counts
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise CorruptBackup(f"{what} is not a valid SQLite database: {exc}") from exc
    finally:
        conn.close()


@contextlib.contextmanager
def _temp_path(folder: Path, prefix: str, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh file name in ``folder`` (same file system as the final name); removed on exit
    unless it was renamed away."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        for side in ("", *_SIDE_FILES):
            _unlink(Path(f"{path}{side}"))


def _check_sums(path: Path, what: str, revision: str | None) -> None:
    """:class:`CorruptBackup` if the counts, id digests or checksums of a store at this release's
    schema find damage (:func:`~convergent.server.storage.integrity.full_check`, read-only); an
    older schema has no checksums yet (its migration adds them)."""
    import sqlalchemy as sa

    from convergent.server.storage.db import head_revision
    from convergent.server.storage.integrity import full_check

    if revision != head_revision():
        return
    engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(_sqlite_uri(path, "ro"), uri=True))
    try:
        damage = full_check(engine)
    finally:
        engine.dispose()
    if damage:
        raise CorruptBackup(f"{what} holds damaged data: {'; '.join(map(str, damage[:5]))}")


# --------------------------------------------------------------------------- backup
def backup_sqlite(database_path: Path, out: Path) -> BackupInfo:
    """Write a consistent backup of the SQLite database at ``database_path`` to ``out``.

    Safe while a server is serving and writing (WAL mode): see the module docstring for the
    format and the guarantees. Raises :class:`BackupError` if the database does not exist or
    the copy does not verify.
    """
    from convergent import __version__

    started = time.monotonic()
    source_path = Path(database_path)
    out = Path(out)
    if not source_path.is_file():
        raise BackupError(f"no database at {source_path}")
    if out.exists() and out.is_dir():
        raise BackupError(f"{out} is a directory; give the backup file's name")
    out.parent.mkdir(parents=True, exist_ok=True)

    with _temp_path(out.parent, f".{out.name}.", ".sqlite3.tmp") as staged:
        # mode=rw: never create an empty database by accident (mode=ro cannot join a WAL
        # database whose -shm it may not create). The source is only read.
        try:
            source = sqlite3.connect(_sqlite_uri(source_path, "rw"), uri=True, timeout=60)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot open {source_path}: {exc}") from exc
        try:
            target = sqlite3.connect(staged, isolation_level=None)
            try:
                # pages=-1: the whole database in one step, inside one read transaction, so the
                # copy is one committed state; writers are not blocked in WAL mode.
                source.backup(target, pages=-1)
                # A self-contained single file: rollback journal instead of WAL.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise BackupError(f"online backup of {source_path} failed: {exc}") from exc
        finally:
            source.close()

        revision, tables = _check_database(staged, "the backup copy")
        _fsync_file(staged)
        sha = _sha256(staged)
        size = staged.stat().st_size
        now = time.time()
        created_at = datetime.fromtimestamp(now, timezone.utc).isoformat().replace("+00:00", "Z")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "convergent_version": __version__,
            "alembic_revision": revision,
            "created_at": created_at,
            "created_at_unix": now,
            "database": DATABASE_NAME,
            "database_bytes": size,
            "sha256": sha,
            "tables": tables,
            "source": str(source_path.resolve()),
        }
        gz = out.name.endswith((".gz", ".tgz"))
        with _temp_path(out.parent, f".{out.name}.", ".tmp") as archive:
            with tarfile.open(archive, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                data = json.dumps(manifest, indent=2, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size, info.mtime, info.mode = len(data), int(now), 0o600
                tar.addfile(info, io.BytesIO(data))
                info = tarfile.TarInfo(DATABASE_NAME)
                info.size, info.mtime, info.mode = size, int(now), 0o600
                with open(staged, "rb") as handle:
                    tar.addfile(info, handle)
            _fsync_file(archive)
            os.replace(archive, out)
        _fsync_dir(out.parent)

    return BackupInfo(
        path=out, size_bytes=out.stat().st_size, database_bytes=size, sha256=sha,
        convergent_version=__version__, alembic_revision=revision, created_at=created_at,
        tables=tables, seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------- reading
def _is_sqlite_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _read_manifest(tar: tarfile.TarFile, backup: Path) -> dict:
    member = tar.next()
    if member is None or member.name != MANIFEST_NAME or not member.isfile():
        raise CorruptBackup(f"{backup} is not a convergent backup (its first member is not {MANIFEST_NAME})")
    handle = tar.extractfile(member)
    try:
        manifest = json.loads(handle.read()) if handle is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptBackup(f"{backup}: {MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptBackup(f"{backup} is not a convergent backup (no {FORMAT!r} manifest)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{backup} has backup format version {manifest.get('format_version')!r}; "
            f"this convergent reads version {FORMAT_VERSION} (use the convergent that wrote it)"
        )
    for key, kind in (("sha256", str), ("database_bytes", int), ("database", str)):
        if not isinstance(manifest.get(key), kind):
            raise CorruptBackup(f"{backup}: manifest field {key!r} is missing or malformed")
    return manifest


def _extract_verified(backup: Path, dest: Path) -> dict:
    """Copy the database out of ``backup`` into ``dest`` and check it against the manifest.
    Returns the manifest (``{}`` for a plain SQLite file)."""
    if _is_sqlite_file(backup):
        with open(backup, "rb") as src, open(dest, "wb") as dst:
            while block := src.read(_CHUNK):
                dst.write(block)
        manifest: dict = {}
        try:  # a copy of a WAL-mode file: make it self-contained (rollback journal)
            conn = sqlite3.connect(dest, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=DELETE")
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise CorruptBackup(f"{backup} is not a valid SQLite database: {exc}") from exc
    else:
        try:
            with tarfile.open(backup, "r:*") as tar:
                manifest = _read_manifest(tar, backup)
                member = tar.next()
                if member is None or member.name != manifest["database"] or not member.isfile():
                    raise CorruptBackup(f"{backup}: the database member {manifest['database']!r} is missing")
                source = tar.extractfile(member)
                assert source is not None  # a regular file member
                digest = hashlib.sha256()
                written = 0
                with open(dest, "wb") as dst:
                    while block := source.read(_CHUNK):
                        digest.update(block)
                        dst.write(block)
                        written += len(block)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise CorruptBackup(f"{backup} is damaged or not a convergent backup: {exc}") from exc
        if written != manifest["database_bytes"]:
            raise CorruptBackup(
                f"{backup} is truncated or altered: database has {written} bytes, "
                f"the manifest says {manifest['database_bytes']}"
            )
        if digest.hexdigest() != manifest["sha256"]:
            raise CorruptBackup(f"{backup} is damaged or altered: the database's sha256 does not match the manifest")
    with open(dest, "rb+") as handle:
        os.fsync(handle.fileno())
    return manifest


def verify_backup(backup: Path) -> BackupInfo:
    """Check a backup without restoring it (manifest, size, sha256, integrity_check)."""
    started = time.monotonic()
    backup = Path(backup)
    if not backup.is_file():
        raise BackupError(f"no backup file at {backup}")
    with tempfile.TemporaryDirectory(prefix="convergent-verify-") as folder:
        staged = Path(folder) / DATABASE_NAME
        manifest = _extract_verified(backup, staged)
        revision, tables = _check_database(staged, f"the database in {backup}")
        sha = manifest.get("sha256") or _sha256(staged)
        size = staged.stat().st_size
    return BackupInfo(
        path=backup, size_bytes=backup.stat().st_size, database_bytes=size, sha256=sha,
        convergent_version=manifest.get("convergent_version"), alembic_revision=revision,
        created_at=manifest.get("created_at"), tables=tables, seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------- restore


from convergent.server.storage.restore import restore_sqlite  # noqa: E402 - re-exported (restore.py imports this module)

__all__ = ["BackupError", "BackupInfo", "CorruptBackup", "RestoreInfo", "RestoreRefused", "backup_sqlite",
           "database_path", "restore_sqlite", "verify_backup"]
