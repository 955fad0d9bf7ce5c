"""Envelope encryption in the store itself, on SQLite and PostgreSQL: no enrolled vector, anchor,
calibration pair or fit array is in clear in the database (nor in a PostgreSQL dump), sealed
bytes moved to another row or tenant or changed by one bit are DataLoss naming the object,
erasure zeroes a sealed slot, and a rolled-back first write leaves no data key behind."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from convergent.server.errors import DataLoss, StartupError
from convergent.server.records import FitRecord
from convergent.server.storage import envelope, master_keys
from convergent.server.storage.anchor_blocks import model_vectors
from convergent.server.storage.blocks import checksum, fetch
from convergent.server.storage.gallery_store import GALLERY_BLOCKS
from convergent.server.storage.schema import data_keys, gallery_blocks
from convergent.server.storage.sql import SqlStore
from tests.conftest import runs_found

DIM = 16


@pytest.fixture
def master(tmp_path: Path) -> master_keys.LocalMasterKey:
    return master_keys.write_new_key(tmp_path / "master.key")


def _fill(store: SqlStore, rng: np.random.Generator, tenant: str = "t") -> dict[str, np.ndarray]:
    """Anchors of a and b, a gallery g of b, calibration pairs and a fit with a known W."""
    anchors = rng.standard_normal((300, DIM)).astype(np.float32)
    gallery = rng.standard_normal((200, DIM)).astype(np.float32)
    W = rng.standard_normal((DIM, DIM))
    a = store.insert_model(tenant, "a", DIM, False)
    b = store.insert_model(tenant, "b", DIM, False)
    ids = [f"x{i}" for i in range(len(anchors))]
    store.write_anchors(tenant, "s", a, [(ids, anchors)], overwrite=False)
    store.write_anchors(tenant, "s", b, [(ids, anchors @ W.astype(np.float32))], overwrite=False)
    store.galleries.enroll(tenant, "g", "b", b.version, "exact", [([f"p{i}" for i in range(200)], gallery)])
    store.galleries.enroll(tenant, "h", "b", b.version, "exact", [([f"q{i}" for i in range(200)], gallery[::-1].copy())])
    pairs = rng.standard_normal((50, DIM)).astype(np.float32)
    store.galleries.save_calibration(tenant, "a", a.version, "b", b.version, pairs, pairs[::-1].copy(), np.arange(50) % 2 == 0)
    record = FitRecord(id=f"fit-{tenant}", method="affine", requested_method="affine", source="a", source_version=a.version,
                       target="b", target_version=b.version, anchor_set="s", data_version=1, params={}, metrics={},
                       warnings=[], converged=True, created_at=1.0)
    store.fits.insert(tenant, record, {}, {"W": W, "b": np.zeros(DIM)})
    return {"anchors": anchors, "gallery": gallery, "pairs": pairs, "W": W}


def _database_bytes(url: str, tmp_path: Path) -> bytes:
    """The SQLite file and its WAL, or a plain pg_dump of the database."""
    if url.startswith("sqlite"):
        path = Path(sa.engine.make_url(url).database)
        return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))  # the server's own version first
    pg_dump = str(found[-1]) if found else shutil.which("pg_dump")
    if pg_dump is None:
        pytest.fail("pg_dump not found (Debian's postgresql package has it; .ci/run installs it)")
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    out = tmp_path / "dump.sql"
    subprocess.run([pg_dump, "--format=plain", "--file", str(out), plain], check=True, timeout=120,
                   env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
    return out.read_bytes()


def _with_bytea_decoded(dump: bytes) -> bytes:
    """A plain pg_dump writes bytea as ``\\x`` and hex digits: the dump with those decoded after it."""
    return dump + b"".join(bytes.fromhex(m.decode()) for m in re.findall(rb"\\\\x((?:[0-9a-f]{2})+)", dump))


@pytest.mark.parametrize("encrypted", [False, True], ids=["in-clear", "encrypted"])
def test_no_stored_vector_or_map_is_in_clear_in_the_database(database_url, tmp_path, rng, master, encrypted):
    store = SqlStore(database_url, master if encrypted else None, tmp_path / "keyring.json")
    known = _fill(store, rng)
    runs = {"anchors": known["anchors"], "gallery": known["gallery"], "calibration pairs": known["pairs"],
            "fit W (float64)": known["W"]}
    assert store.galleries.items("t", "g", DIM)[2].tobytes() == known["gallery"].tobytes()  # read back exactly
    store.close()
    blob = _database_bytes(database_url, tmp_path)
    if not database_url.startswith("sqlite"):
        blob = _with_bytea_decoded(blob)
    seen = {name: runs_found(blob, vectors) for name, vectors in runs.items()}
    if encrypted:
        assert seen == dict.fromkeys(runs, 0.0), seen
    else:  # the same search finds them in a store in clear (bar runs cut by a page boundary): it can fail
        assert all(seen[name] >= 0.95 for name in runs), seen


def test_sealed_bytes_copied_to_another_row_or_tenant_or_changed_are_data_loss(database_url, tmp_path, rng, master):
    store = SqlStore(database_url, master, tmp_path / "keyring.json")
    _fill(store, rng, "t")
    _fill(store, rng, "u")
    c = gallery_blocks.c

    def block(tenant: str, gallery: str) -> sa.Row:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(c.vectors, c.key_version).where(c.tenant == tenant, c.gallery == gallery)).one()

    def put(tenant: str, gallery: str, data: bytes, key_version: int) -> None:
        with store.engine.begin() as conn:
            conn.execute(gallery_blocks.update().where(c.tenant == tenant, c.gallery == gallery)
                         .values(vectors=data, checksum=checksum(data), key_version=key_version))

    original = block("t", "h")
    for source, target in ((("t", "g"), ("t", "h")), (("u", "h"), ("t", "h"))):  # another gallery; another tenant
        moved = block(*source)
        put(*target, moved.vectors, moved.key_version)
        with pytest.raises(DataLoss, match=r"gallery 'h' \(tenant 't'\).*fail authentication"):
            store.galleries.items("t", "h", DIM)
    flipped = bytearray(original.vectors)
    flipped[100] ^= 0x01
    put("t", "h", bytes(flipped), original.key_version)
    with pytest.raises(DataLoss, match="fail authentication"):
        store.galleries.items("t", "h", DIM)
    put("t", "h", original.vectors, original.key_version)
    assert store.galleries.items("t", "h", DIM)[1] == [f"q{i}" for i in range(200)]
    put("t", "h", np.zeros(200 * DIM, np.float32).tobytes(), None)  # bytes in clear slipped into an encrypted store
    with pytest.raises(DataLoss, match="in clear in an encrypted store"):
        store.galleries.items("t", "h", DIM)
    store.close()


def test_every_sealed_object_reads_back_and_a_wrong_key_or_none_is_refused(tmp_path, rng, master):
    url = f"sqlite:///{tmp_path / 'db' / 'convergent.sqlite3'}"
    store = SqlStore(url, master)
    known = _fill(store, rng)
    store.close()
    reopened = SqlStore(url, master_keys.read_key_file(tmp_path / "master.key"))
    a, b = reopened.get_model("t", "a"), reopened.get_model("t", "b")
    assert reopened.galleries.items("t", "g", DIM)[2].tobytes() == known["gallery"].tobytes()
    _, _, arrays = reopened.fits.load("t", "fit-t")
    np.testing.assert_array_equal(arrays["W"], known["W"])
    pairs = reopened.galleries.load_calibration("t", "a", a.version, DIM, "b", b.version, DIM)
    np.testing.assert_array_equal(pairs[0], known["pairs"])
    with reopened.engine.connect() as conn:
        ids, stored = model_vectors(conn, "t", "s", "a", DIM)
    np.testing.assert_array_equal(stored, known["anchors"][np.argsort([f"x{i}" for i in range(300)])])
    reopened.close()
    other = master_keys.write_new_key(tmp_path / "other.key")
    with pytest.raises(StartupError, match=f"sealed by master key id {master.key_id}, not by the master key given \\(id {other.key_id}"):
        SqlStore(url, other)
    with pytest.raises(StartupError, match="encrypted \\(keyring [0-9a-f]{16}\\) and no master key"):
        SqlStore(url)
    keyring = tmp_path / "db" / "keyring.json"
    moved = keyring.rename(tmp_path / "elsewhere.json")
    with pytest.raises(StartupError, match="keyring .* does not exist"):
        SqlStore(url, master)
    with pytest.raises(StartupError, match="is not this store's keyring"):  # another store's keyring
        SqlStore(f"sqlite:///{tmp_path / 'other' / 'c.sqlite3'}", master).close()
        SqlStore(url, master, tmp_path / "other" / "keyring.json")
    moved.rename(keyring)
    locked = SqlStore(url, locked_ok=True)  # `convergent keys` touches no vector
    locked.keys.insert("k1", "t", "n", "reader", "0" * 64)
    with pytest.raises(StartupError, match="no master key"):
        locked.galleries.items("t", "g", DIM)
    locked.close()


def test_a_key_given_to_a_store_in_clear_is_refused_with_the_way_to_encrypt_it(tmp_path, rng, master):
    url = f"sqlite:///{tmp_path / 'db' / 'convergent.sqlite3'}"
    _fill(SqlStore(url), rng)
    with pytest.raises(StartupError, match="holds vectors in clear.*convergent encrypt"):
        SqlStore(url, master)
    SqlStore(url).close()  # still served in clear


def test_erasure_zeroes_a_sealed_slot(database_url, tmp_path, rng, master):
    store = SqlStore(database_url, master, tmp_path / "keyring.json")
    known = _fill(store, rng)
    store.galleries.remove("t", "g", ["p3"])
    with store.engine.connect() as conn:
        [(_, clear)] = list(fetch(conn, GALLERY_BLOCKS, ("t", "g"), [1]))
    block = np.frombuffer(clear, np.float32).reshape(-1, DIM)
    assert not block[3].any() and np.array_equal(block[4], known["gallery"][4])
    _, ids, vectors = store.galleries.items("t", "g", DIM)
    assert "p3" not in ids and len(vectors) == 199
    store.close()


def test_scrub_overwrites_the_clear_range_of_sealed_bytes_without_the_key():
    sealed = bytes(range(256)) * 2
    out = bytearray(sealed)
    envelope.scrub(out, 1, 16, 32)
    assert out[envelope.NONCE_BYTES + 16 : envelope.NONCE_BYTES + 32] == bytes(16)
    assert out[: envelope.NONCE_BYTES + 16] == sealed[: envelope.NONCE_BYTES + 16]
    assert out[envelope.NONCE_BYTES + 32 :] == sealed[envelope.NONCE_BYTES + 32 :]


def test_a_rolled_back_first_write_leaves_no_data_key_and_the_next_write_reads_back(tmp_path, rng, master):
    url = f"sqlite:///{tmp_path / 'db' / 'convergent.sqlite3'}"
    store = SqlStore(url, master)
    model = store.insert_model("t", "a", DIM, False)
    vectors = rng.standard_normal((10, DIM)).astype(np.float32)

    def refuse(change: object) -> None:
        raise RuntimeError("the caller went away")

    with pytest.raises(RuntimeError):
        store.galleries.enroll("t", "g", "a", model.version, "exact", [([f"i{k}" for k in range(10)], vectors)],
                               before_commit=refuse)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(data_keys)).scalar() == 0
    store.galleries.enroll("t", "g", "a", model.version, "exact", [([f"i{k}" for k in range(10)], vectors)])
    store.close()
    again = SqlStore(url, master)
    assert again.galleries.items("t", "g", DIM)[2].tobytes() == vectors.tobytes()
    with again.engine.connect() as conn:
        assert conn.execute(sa.select(data_keys.c.version)).scalars().all() == [1]
    again.close()


def test_master_key_files_must_be_private_and_well_formed(tmp_path):
    path = tmp_path / "k"
    key = master_keys.write_new_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert master_keys.read_key_file(path).key_id == key.key_id
    with pytest.raises(FileExistsError):
        master_keys.write_new_key(path)
    path.chmod(0o644)
    with pytest.raises(StartupError, match="chmod 600"):
        master_keys.read_key_file(path)
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(StartupError, match="is not a master key"):
        master_keys.read_key_file(bad)
    short = tmp_path / "short"
    short.write_text(base64.b64encode(bytes(16)).decode())
    short.chmod(0o600)
    with pytest.raises(StartupError, match="16 bytes of key; a master key is 32"):
        master_keys.read_key_file(short)
    with pytest.raises(StartupError, match="does not exist"):
        master_keys.read_key_file(tmp_path / "missing")
    assert master_keys.from_environment("11" * 32).key_id == master_keys.LocalMasterKey(b"\x11" * 32, "x").key_id
    assert "11" not in repr(master_keys.from_environment("11" * 32))


@pytest.mark.parametrize("encrypted", [False, True], ids=["in-clear", "encrypted"])
def test_an_upload_spooled_to_disk_is_in_clear_there_only_when_the_store_is(rng, encrypted):
    from convergent.server.registry.spool import Spool

    vectors = rng.standard_normal((2000, DIM)).astype(np.float32)
    with Spool(memory_bytes=1024, encrypted=encrypted) as spool:
        for start in range(0, 2000, 300):
            spool.write(vectors[start : start + 300].tobytes())
        on_disk = spool._file._file  # rolled over to a real temporary file
        assert hasattr(on_disk, "fileno")
        on_disk.seek(0)
        raw = on_disk.read()
        spool.rewind()
        back = b"".join(spool.read(size) for size in (7, 64 * 100, 10**7))
    assert back == vectors.tobytes()
    assert runs_found(raw, vectors) == (0.0 if encrypted else 1.0)


def test_encrypting_a_store_in_place_seals_every_row_and_leaves_no_clear_copy(database_url, tmp_path, rng, master):
    from convergent.server.storage import db
    from convergent.server.storage.encrypt_store import encrypt

    store = SqlStore(database_url)
    known = _fill(store, rng)
    store.close()
    engine = db.create_engine(database_url)
    seen: list[tuple[int, int]] = []
    keyring = tmp_path / "keyring.json"
    report = encrypt(engine, master, keyring, lambda done, total: seen.append((done, total)), rows_per_transaction=2)
    assert not report.already and report.sealed["gallery_blocks"] == 2 and report.sealed["fit_arrays"] == 2
    assert seen[-1][0] == seen[-1][1] == sum(report.sealed.values())
    assert encrypt(engine, master, keyring).already
    with pytest.raises(StartupError, match="not by the master key given"):
        encrypt(engine, master_keys.LocalMasterKey(bytes(32), "zeros"), keyring)
    engine.dispose()
    reopened = SqlStore(database_url, master, keyring)
    assert reopened.galleries.items("t", "g", DIM)[2].tobytes() == known["gallery"].tobytes()
    np.testing.assert_array_equal(reopened.fits.load("t", "fit-t")[2]["W"], known["W"])
    reopened.close()
    blob = _database_bytes(database_url, tmp_path)
    if not database_url.startswith("sqlite"):
        blob = _with_bytea_decoded(blob)
    runs = {"anchors": known["anchors"], "gallery": known["gallery"], "pairs": known["pairs"], "W": known["W"]}
    assert {name: runs_found(blob, v) for name, v in runs.items()} == dict.fromkeys(runs, 0.0)


def _versions(store: SqlStore) -> dict[str, set]:
    """key_version values of every sealed table."""
    from convergent.server.storage.encrypt_store import SEALED

    with store.engine.connect() as conn:
        return {spec.table.name: set(conn.execute(sa.select(spec.table.c.key_version).distinct()).scalars())
                for spec in SEALED}


def test_data_key_rotation_reseals_every_row_resumes_after_a_stop_and_destroys_the_old_key(database_url, tmp_path, rng, master):
    keyring = tmp_path / "keyring.json"
    store = SqlStore(database_url, master, keyring)
    known = _fill(store, rng)
    versions = _versions(store)
    assert versions["pair_stats"] == set() and all(v == {1} for k, v in versions.items() if k != "pair_stats"), versions
    assert store.rotation.rotate_data_key("t") == 2
    first = store.rotation.step(rows=3)  # then the process "stops"
    assert first.resealed == 3
    store.close()
    store = SqlStore(database_url, master, keyring)  # a new process goes on
    new_rows = rng.standard_normal((5, DIM)).astype(np.float32)
    store.galleries.enroll("t", "g", "b", 1, "exact", [([f"n{i}" for i in range(5)], new_rows)])  # sealed under 2
    while not (report := store.rotation.step(rows=4, grace_s=0.0)).idle:
        assert not report.damaged
    assert all(v == {2} for k, v in _versions(store).items() if k != "pair_stats"), _versions(store)
    assert [(r.tenant, r.version) for r in store.rotation.keys()] == [("t", 2)]  # key 1 destroyed
    np.testing.assert_array_equal(store.galleries.items("t", "g", DIM)[2], np.vstack([known["gallery"], new_rows]))
    np.testing.assert_array_equal(store.fits.load("t", "fit-t")[2]["W"], known["W"])
    store.close()


def test_a_retired_key_still_in_use_or_within_its_grace_is_kept(tmp_path, rng, master):
    store = SqlStore(f"sqlite:///{tmp_path / 'db' / 'c.sqlite3'}", master)
    _fill(store, rng)
    store.rotation.rotate_data_key("t")
    assert store.rotation.step(rows=10_000, grace_s=0.0).resealed > 0
    assert store.rotation.step(grace_s=3600.0).dropped_keys == []  # nothing uses key 1, but it retired just now
    assert store.rotation.step(grace_s=0.0).dropped_keys == [("t", 1)]
    store.close()


def test_master_key_rotation_rewraps_the_keyring_and_the_old_key_stops_opening_it(tmp_path, rng, master):
    from convergent.server.storage.key_rotation import rotate_master_key

    url = f"sqlite:///{tmp_path / 'db' / 'c.sqlite3'}"
    store = SqlStore(url, master)
    known = _fill(store, rng)
    store.close()
    keyring = tmp_path / "db" / "keyring.json"
    before = keyring.read_bytes()
    new = master_keys.write_new_key(tmp_path / "new.key")
    rotate_master_key(keyring, master, new)
    assert keyring.read_bytes() != before
    with pytest.raises(StartupError, match=f"sealed by master key id {new.key_id}"):
        SqlStore(url, master)
    again = SqlStore(url, new)
    assert again.galleries.items("t", "g", DIM)[2].tobytes() == known["gallery"].tobytes()
    again.close()


def test_a_deleted_tenants_data_is_unreadable_in_a_backup_taken_before(tmp_path, rng, master):
    from convergent.server.storage import backup as backups
    from convergent.server.storage.key_rotation import delete_tenant
    from convergent.server.storage.keyring import Keyring

    data = tmp_path / "data"
    url = f"sqlite:///{data / 'convergent.sqlite3'}"
    store = SqlStore(url, master)
    kept, gone = _fill(store, rng, "t"), _fill(store, rng, "u")
    store.close()
    backup = tmp_path / "before.tar"
    backups.backup_sqlite(data / "convergent.sqlite3", backup)
    deleted = delete_tenant(store.engine, Keyring(data / "keyring.json", master), "u")
    assert deleted["gallery_blocks"] == 2 and deleted["data_keys"] == 1 and deleted["fit_arrays"] == 2
    restored = tmp_path / "restored"
    backups.restore_sqlite(backup, restored)
    shutil.copy(data / "keyring.json", restored / "keyring.json")  # the keyring kept apart, as it is now
    old = SqlStore(f"sqlite:///{restored / 'convergent.sqlite3'}", master)
    assert old.galleries.items("t", "g", DIM)[2].tobytes() == kept["gallery"].tobytes()
    with pytest.raises(DataLoss, match="crypto-shredded"):
        old.galleries.items("u", "g", DIM)
    with pytest.raises(DataLoss, match="crypto-shredded"):
        old.fits.load("u", "fit-u")
    a, b = old.get_model("u", "a"), old.get_model("u", "b")
    with pytest.raises(DataLoss, match="crypto-shredded"):
        old.galleries.load_calibration("u", "a", a.version, DIM, "b", b.version, DIM)
    with old.engine.connect() as conn, pytest.raises(DataLoss, match="crypto-shredded"):
        model_vectors(conn, "u", "s", "a", DIM)
    # a tenant of that name enrolled again gets a new key; the restored rows stay unreadable
    old.galleries.enroll("u", "fresh", "b", b.version, "exact", [(["z"], gone["gallery"][:1])])
    assert old.galleries.items("u", "fresh", DIM)[1] == ["z"]
    with pytest.raises(DataLoss, match="crypto-shredded|fail authentication"):
        old.galleries.items("u", "g", DIM)
    old.close()
