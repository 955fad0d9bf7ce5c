"""Online backup and restore of the SQLite store (convergent.server.storage.backup).

Consistency is tested against a live server: a writer thread keeps committing uploads (each
one a transaction) while backups are taken; every backup must hold exactly a prefix of the
committed uploads — whole anchor sets only, counts equal to an acknowledged total.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.server.rpc.app import ConvergentServer
from convergent.server.settings import ServerSettings
from convergent.server.storage import backup as bk
from convergent.server.storage import db

DIM = 8
BATCH = 40  # anchors per upload


def settings(data_dir: Path) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, data_dir=data_dir, workers=4)


def vectors(seed: int, n: int = BATCH) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def ids(prefix: str, start: int, n: int = BATCH) -> list[str]:
    return [f"{prefix}-{i}" for i in range(start, start + n)]


def anchor_counts(database: Path) -> dict[tuple[str, str], int]:
    """(anchor set, model) -> rows, read straight from a SQLite file."""
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT anchor_set, model, count(*) FROM anchors GROUP BY anchor_set, model").fetchall()
    finally:
        conn.close()
    return {(s, m): n for s, m, n in rows}


def extract_db(backup_file: Path, folder: Path) -> Path:
    info = bk.restore_sqlite(backup_file, folder)
    return info.database_path


class Writer(threading.Thread):
    """Commits uploads one after another and records what was acknowledged, in order.

    Two patterns: a new anchor set per upload (``s0, s1, ...``, each one transaction) and an
    append of BATCH new ids to one growing set ``grow``. ``acked`` is the number of completed
    iterations; a backup taken between ``acked == a`` and ``acked == b`` must hold k sets with
    a <= k <= b + 1 (one upload may be committed but not yet acknowledged).
    """

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.acked = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.address, timeout=60) as c:
                i = 0
                while not self.stop.is_set():
                    c.upload_anchors("m", anchor_set=f"s{i}", ids=ids("a", 0), vectors=vectors(i))
                    c.upload_anchors("m", anchor_set="grow", ids=ids("g", i * BATCH), vectors=vectors(10_000 + i))
                    i += 1
                    self.acked = i
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def check_prefix(counts: dict[tuple[str, str], int], low: int, high: int) -> int:
    """The backup holds sets s0..s(k-1), each complete, and grow has k or k-1 batches
    (s_i commits before grow's i-th batch); returns k."""
    sets = sorted(int(s[1:]) for (s, m) in counts if s.startswith("s") and m == "m")
    k = len(sets)
    assert sets == list(range(k)), f"not a prefix of the uploads: {sets}"
    assert all(counts[(f"s{i}", "m")] == BATCH for i in range(k)), "an anchor set is incomplete"
    grow = counts.get(("grow", "m"), 0)
    assert grow % BATCH == 0, f"a partial upload is in the backup: grow has {grow} anchors"
    assert grow // BATCH in (k - 1, k) or (k == 0 and grow == 0)
    assert low <= k <= high + 1, f"backup holds {k} uploads; acknowledged {low} before, {high} after"
    return k


def test_backup_while_writing_is_a_prefix_and_restores_bit_identical(tmp_path: Path):
    with ConvergentServer(settings(tmp_path / "live")) as server:
        with Client(server.address, timeout=60) as c:
            c.register_model("m", dim=DIM, normalize=False)
            c.register_model("other", dim=4, normalize=True)
            # Some bulk so a backup is not instantaneous.
            c.upload_anchors("other", anchor_set="bulk", ids=ids("b", 0, 20_000),
                             vectors=np.random.default_rng(7).standard_normal((20_000, 4)))
        live_db = bk.database_path(server.settings.data_dir)
        writer = Writer(server.address)
        writer.start()
        results = []
        try:
            deadline = time.monotonic() + 60
            while writer.acked < 3 and time.monotonic() < deadline and writer.error is None:
                time.sleep(0.01)
            for n in range(5):
                low = writer.acked
                out = tmp_path / f"backup-{n}.tar"
                info = bk.backup_sqlite(live_db, out)
                high = writer.acked
                results.append((out, info, low, high))
                time.sleep(0.05)
        finally:
            writer.stop.set()
            writer.join(60)
        assert writer.error is None, writer.error
        # The point of the test: uploads were committed while backups were being taken.
        assert any(high > low for _, _, low, high in results), "no upload overlapped a backup"
        final_acked = writer.acked

    ks = []
    for n, (out, info, low, high) in enumerate(results):
        assert info.path == out and out.is_file()
        assert info.alembic_revision == db.head_revision()
        restored = extract_db(out, tmp_path / f"check-{n}")
        counts = anchor_counts(restored)
        assert counts[("bulk", "other")] == 20_000
        ks.append(check_prefix(counts, low, high))
        assert info.tables["anchors"] == sum(counts.values())
    assert ks == sorted(ks)

    # Restore the last backup into a fresh data dir and serve it: same models, same anchors,
    # bit-identical vectors (re-uploading the same float32 values stores nothing).
    out, info, _, _ = results[-1]
    k = ks[-1]
    restore_dir = tmp_path / "restored"
    restored = bk.restore_sqlite(out, restore_dir)
    assert restored.database_path == bk.database_path(restore_dir)
    assert restored.sha256 == info.sha256 and not restored.replaced and not restored.needs_migration
    with ConvergentServer(settings(restore_dir)) as server, Client(server.address, timeout=60) as c:
        assert {(m.name, m.dim, m.normalize) for m in c.list_models()} == {("m", DIM, False), ("other", 4, True)}
        assert c.count_anchors("other", anchor_set="bulk") == 20_000
        for i in range(k):
            assert c.count_anchors("m", anchor_set=f"s{i}") == BATCH
            assert c.upload_anchors("m", anchor_set=f"s{i}", ids=ids("a", 0), vectors=vectors(i)) == BATCH
        grow = c.count_anchors("m", anchor_set="grow")
        for i in range(grow // BATCH):
            c.upload_anchors("m", anchor_set="grow", ids=ids("g", i * BATCH), vectors=vectors(10_000 + i))
        assert c.count_anchors("m", anchor_set="grow") == grow
        with pytest.raises(errors.AlreadyExists):  # a different value conflicts
            c.upload_anchors("m", anchor_set="s0", ids=ids("a", 0, 1), vectors=vectors(0, 1) + 1)
        # The data dir is live again: it accepts writes of uploads made after the backup.
        if k < final_acked:
            assert c.upload_anchors("m", anchor_set=f"s{k}", ids=ids("a", 0), vectors=vectors(k)) == BATCH


def make_database(data_dir: Path, n: int = 100, revision: str = "head") -> Path:
    """A small store written through the real server code (no network)."""
    from convergent.server.storage.sql import SqlStore

    path = bk.database_path(data_dir)
    if revision != "head":
        engine = db.create_engine(f"sqlite:///{path}")
        db.migrate(engine, revision)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO models (tenant, name, dim, version, normalize, created_at) "
                "VALUES ('default', 'old', 4, 1, 0, 0.0)"
            )
        engine.dispose()
        return path
    store = SqlStore(f"sqlite:///{path}")
    try:
        store.insert_model("default", "m", 4, False)
    finally:
        store.close()
    return path


@pytest.fixture
def small_backup(tmp_path: Path) -> Path:
    source = make_database(tmp_path / "src")
    out = tmp_path / "b.tar"
    bk.backup_sqlite(source, out)
    return out


def test_backup_file_format(small_backup: Path, tmp_path: Path):
    with tarfile.open(small_backup) as tar:
        assert tar.getnames() == [bk.MANIFEST_NAME, bk.DATABASE_NAME]
        manifest = json.loads(tar.extractfile(bk.MANIFEST_NAME).read())
        data = tar.extractfile(bk.DATABASE_NAME).read()
    import hashlib

    from convergent import __version__

    assert manifest["format"] == "convergent-backup" and manifest["format_version"] == 1
    assert manifest["convergent_version"] == __version__
    assert manifest["alembic_revision"] == db.head_revision()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["database_bytes"] == len(data)
    assert manifest["tables"]["models"] == 1 and manifest["created_at"].endswith("Z")
    assert data.startswith(bk.SQLITE_MAGIC)
    # A self-contained file: rollback journal mode (header bytes 18/19 == 1), no -wal needed.
    assert data[18] == 1 and data[19] == 1
    # No temporary files left beside it.
    assert sorted(p.name for p in small_backup.parent.iterdir() if p.name.startswith(".")) == []
    info = bk.verify_backup(small_backup)
    assert info.sha256 == manifest["sha256"] and info.tables == manifest["tables"]


def test_gzip_backup_round_trip(tmp_path: Path):
    source = make_database(tmp_path / "src")
    out = tmp_path / "b.tar.gz"
    bk.backup_sqlite(source, out)
    with open(out, "rb") as handle:
        assert handle.read(2) == b"\x1f\x8b"
    info = bk.restore_sqlite(out, tmp_path / "dst")
    assert info.tables["models"] == 1


def test_backup_of_missing_database_creates_nothing(tmp_path: Path):
    with pytest.raises(bk.BackupError, match="no database"):
        bk.backup_sqlite(tmp_path / "nope" / "convergent.sqlite3", tmp_path / "b.tar")
    assert not (tmp_path / "nope").exists() and not (tmp_path / "b.tar").exists()


def test_backup_replaces_an_existing_file_atomically(tmp_path: Path):
    source = make_database(tmp_path / "src")
    out = tmp_path / "b.tar"
    out.write_bytes(b"old")
    bk.backup_sqlite(source, out)
    assert bk.verify_backup(out).tables["models"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["b.tar"]


def test_restore_refuses_to_overwrite_without_force(small_backup: Path, tmp_path: Path):
    target_dir = tmp_path / "dst"
    make_database(target_dir)
    path = bk.database_path(target_dir)
    before = path.read_bytes()
    with pytest.raises(bk.RestoreRefused, match="already holds a database.*force"):
        bk.restore_sqlite(small_backup, target_dir)
    assert path.read_bytes() == before
    info = bk.restore_sqlite(small_backup, target_dir, force=True)
    assert info.replaced
    assert not any(Path(f"{path}{s}").exists() for s in ("-wal", "-shm", "-journal"))
    assert [p.name for p in target_dir.iterdir()] == [path.name]


def test_restore_refuses_a_stale_wal_without_force(small_backup: Path, tmp_path: Path):
    target_dir = tmp_path / "dst"
    target_dir.mkdir()
    wal = Path(f"{bk.database_path(target_dir)}-wal")
    wal.write_bytes(b"x" * 32)
    with pytest.raises(bk.RestoreRefused):
        bk.restore_sqlite(small_backup, target_dir)
    bk.restore_sqlite(small_backup, target_dir, force=True)
    assert not wal.exists()


def test_restore_refuses_while_a_server_uses_the_database(small_backup: Path, tmp_path: Path):
    with ConvergentServer(settings(tmp_path / "live")):
        with pytest.raises(bk.RestoreRefused, match="in use"):
            bk.restore_sqlite(small_backup, tmp_path / "live", force=True)


@pytest.mark.parametrize("damage", ["flip-db-byte", "truncate", "not-a-backup", "bad-manifest", "empty"])
def test_corrupted_backup_is_refused_and_changes_nothing(small_backup: Path, tmp_path: Path, damage: str):
    raw = bytearray(small_backup.read_bytes())
    if damage == "flip-db-byte":
        raw[len(raw) // 2] ^= 0xFF  # inside the database member
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "not-a-backup":
        raw = bytearray(b"hello world\n" * 100)
    elif damage == "empty":
        raw = bytearray()
    elif damage == "bad-manifest":
        start = raw.index(b'"format": "convergent-backup"')
        raw[start + 11 : start + 12] = b"X"  # same length, still a valid tar
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(raw))
    target_dir = tmp_path / "dst"
    make_database(target_dir)
    before = bk.database_path(target_dir).read_bytes()
    with pytest.raises(bk.CorruptBackup):
        bk.restore_sqlite(bad, target_dir, force=True)
    with pytest.raises(bk.CorruptBackup):
        bk.verify_backup(bad)
    assert bk.database_path(target_dir).read_bytes() == before
    assert sorted(p.name for p in target_dir.iterdir()) == ["convergent.sqlite3"]


def test_corrupt_source_database_is_not_backed_up(tmp_path: Path):
    source = make_database(tmp_path / "src")
    # Fill a page with garbage past the header: the database no longer passes integrity_check.
    conn = sqlite3.connect(source)
    conn.execute("PRAGMA journal_mode=DELETE")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    raw = bytearray(source.read_bytes())
    raw[page * (pages - 1) : page * pages] = b"\xff" * page
    source.write_bytes(bytes(raw))
    with pytest.raises(bk.BackupError):
        bk.backup_sqlite(source, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_old_revision_is_restored_and_migrated_at_start_up(tmp_path: Path):
    source = make_database(tmp_path / "src", revision="0001")
    out = tmp_path / "old.tar"
    assert bk.backup_sqlite(source, out).alembic_revision == "0001"
    info = bk.restore_sqlite(out, tmp_path / "dst")
    assert info.alembic_revision == "0001" and info.needs_migration
    with ConvergentServer(settings(tmp_path / "dst")) as server, Client(server.address) as c:
        assert c.get_model("old").dim == 4
        assert db.current_revision(server.store.engine) == db.head_revision()


def test_backup_from_a_newer_schema_is_refused(tmp_path: Path):
    source = make_database(tmp_path / "src")
    conn = sqlite3.connect(source)
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()
    out = tmp_path / "new.tar"
    bk.backup_sqlite(source, out)
    with pytest.raises(bk.BackupError, match="newer convergent"):
        bk.restore_sqlite(out, tmp_path / "dst")
    assert not bk.database_path(tmp_path / "dst").exists()


def test_plain_sqlite_file_is_accepted(tmp_path: Path):
    """A copy made with sqlite3's own backup (no manifest) restores after integrity_check."""
    source = make_database(tmp_path / "src")
    plain = tmp_path / "plain.sqlite3"
    src, dst = sqlite3.connect(source), sqlite3.connect(plain)
    src.backup(dst)
    src.close(), dst.close()
    info = bk.restore_sqlite(plain, tmp_path / "dst")
    assert info.convergent_version is None and info.tables["models"] == 1
    with ConvergentServer(settings(tmp_path / "dst")) as server, Client(server.address) as c:
        assert c.get_model("m").dim == 4


def test_database_path_matches_the_server_settings(tmp_path: Path):
    assert f"sqlite:///{bk.database_path(tmp_path)}" == ServerSettings(data_dir=tmp_path).resolved_database_url()
