"""A real server encrypting at rest: a data folder and a backup tar of it hold no enrolled vector,
anchor, calibration pair or exported map in clear (and the same search finds them in a store in
clear); identify answers the same encrypted and in clear, and after a restart; `convergent serve`
refuses a missing or wrong key, and a key given to a store in clear, with one clear line and no
traceback; Milvus with encryption is refused unless allowed."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.server.errors import StartupError
from convergent.server.storage import backup as backups
from convergent.server.storage import master_keys
from tests.conftest import runs_found

BIN = Path(sys.executable).with_name("convergent")
DIM, N_ANCHORS, N_ITEMS = 32, 400, 300


def _federate(address: str, rng: np.random.Generator) -> dict:
    """Anchors of a and b (b = a R + noise), an affine fit, a gallery of b, calibration pairs; identify."""
    X = rng.standard_normal((N_ANCHORS, DIM)).astype(np.float32)
    R = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
    Y = X @ R + 0.01 * rng.standard_normal((N_ANCHORS, DIM)).astype(np.float32)
    gallery = Y[:N_ITEMS]
    with Client(address, timeout=60) as c:
        c.register_model("a", dim=DIM, normalize=False)  # stored bytes are the bytes sent
        c.register_model("b", dim=DIM, normalize=False)
        ids = [f"x{i}" for i in range(N_ANCHORS)]
        c.upload_anchors("a", anchor_set="s", ids=ids, vectors=X)
        c.upload_anchors("b", anchor_set="s", ids=ids, vectors=Y)
        fit = c.fit_alignment("a", "b", anchor_set="s", method="ridge", seed=3)
        W = c.export_fit(fit.id)
        c.enroll(gallery="g", model="b", ids=[f"p{i}" for i in range(N_ITEMS)], vectors=gallery)
        c.calibrate(X[:100], "a", Y[:100], "b", same=[i % 2 == 0 for i in range(100)])
        found = c.identify(gallery="g", vectors=X[:50], model="a", k=5)
    return {"anchors": X, "gallery": gallery, "W": next(v for k, v in W.items() if v.ndim == 2 and v.size >= DIM * DIM),
            "pairs": X[:100], "ids": found.ids, "scores": np.asarray(found.scores)}


def _folder_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".key")


def _tar_bytes(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        return b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())


@pytest.mark.parametrize("encrypted", [False, True], ids=["in-clear", "encrypted"])
def test_the_data_folder_and_its_backup_hold_no_template_in_clear(start_server, tmp_path, rng, encrypted):
    data = tmp_path / "data"
    keys = {"master_key_file": master_keys.write_new_key(tmp_path / "master.key") and tmp_path / "master.key"} if encrypted else {}
    server = start_server(data_dir=data, **keys)
    known = _federate(server.address, rng)
    backup = tmp_path / "store.tar"
    backups.backup_sqlite(backups.database_path(data), backup)  # while serving
    server.stop(grace=1.0)
    runs = {name: known[name] for name in ("anchors", "gallery", "pairs", "W")}
    for where, blob in (("data folder", _folder_bytes(data)), ("backup", _tar_bytes(backup))):
        seen = {name: runs_found(blob, vectors) for name, vectors in runs.items()}
        if encrypted:
            assert seen == dict.fromkeys(runs, 0.0), (where, seen)
        else:  # the same search finds them in clear: it can fail
            assert min(seen.values()) >= 0.95, (where, seen)


def test_identify_answers_the_same_encrypted_in_clear_and_after_a_restart(start_server, tmp_path):
    plain = start_server(data_dir=tmp_path / "plain")
    key_file = tmp_path / "master.key"
    master_keys.write_new_key(key_file)
    sealed = start_server(data_dir=tmp_path / "sealed", master_key_file=key_file)
    clear, encrypted = (_federate(s.address, np.random.default_rng(11)) for s in (plain, sealed))
    assert encrypted["ids"] == clear["ids"]
    np.testing.assert_allclose(encrypted["scores"], clear["scores"], rtol=0, atol=1e-6)  # same math, other threads
    sealed.stop(grace=1.0)
    again = start_server(data_dir=tmp_path / "sealed", master_key_file=key_file)
    with Client(again.address, timeout=30) as c:
        after = c.identify(gallery="g", vectors=clear["anchors"][:50], model="a", k=5)
        assert c.export_fit(c.list_fits()[0].id).keys()
    assert after.ids == encrypted["ids"]
    np.testing.assert_array_equal(np.asarray(after.scores), encrypted["scores"])


def _serve(data: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([str(BIN), "serve", "--port", "0", "--data-dir", str(data), *flags], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_serve_refuses_a_missing_or_wrong_key_and_a_key_for_a_store_in_clear_in_one_line(start_server, tmp_path, rng):
    key_file, other = tmp_path / "master.key", tmp_path / "other.key"
    key, wrong = master_keys.write_new_key(key_file), master_keys.write_new_key(other)
    data = tmp_path / "sealed"
    server = start_server(data_dir=data, master_key_file=key_file)
    with Client(server.address, timeout=20) as c:
        c.register_model("m", dim=4, normalize=False)
        c.enroll(gallery="g", model="m", ids=["i"], vectors=np.ones((1, 4), np.float32))
    server.stop(grace=1.0)
    cases = [
        ((), None, "is encrypted (keyring "),
        (("--master-key-file", str(other)), None, f"sealed by master key id {key.key_id}, not by the master key given "
                                                  f"(id {wrong.key_id}"),
        ((), {"CONVERGENT_MASTER_KEY": (tmp_path / "other.key").read_text().strip()}, "not by the master key given"),
        (("--master-key-file", str(tmp_path / "missing.key")), None, "does not exist"),
    ]
    for flags, env, message in cases:
        done = _serve(data, *flags, env=env)
        assert done.returncode != 0 and message in done.stderr, (flags, done.stderr)
        assert "Traceback" not in done.stderr
    clear = tmp_path / "clear"
    plain = start_server(data_dir=clear)
    with Client(plain.address, timeout=20) as c:
        c.register_model("m", dim=4, normalize=False)
        c.enroll(gallery="g", model="m", ids=["i"], vectors=np.ones((1, 4), np.float32))
    plain.stop(grace=1.0)
    done = _serve(clear, "--master-key-file", str(key_file))
    assert done.returncode != 0 and "holds vectors in clear" in done.stderr and "convergent encrypt" in done.stderr
    assert "Traceback" not in done.stderr


def test_milvus_with_an_encrypted_store_is_refused_unless_allowed(start_server, tmp_path):
    key_file = tmp_path / "master.key"
    master_keys.write_new_key(key_file)
    with pytest.raises(StartupError, match="Milvus keeps the vectors it searches in clear"):
        start_server(master_key_file=key_file, gallery_backend="milvus", milvus_uri=str(tmp_path / "m.db"))


def test_keygen_makes_a_private_key_file_and_never_overwrites_one(tmp_path):
    out = tmp_path / "master.key"
    made = subprocess.run([str(BIN), "keygen", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and "created master key" in made.stdout, made.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    key_id = master_keys.read_key_file(out).key_id
    assert key_id in made.stdout
    again = subprocess.run([str(BIN), "keygen", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    assert master_keys.read_key_file(out).key_id == key_id


def _sealed_rows(database: Path) -> tuple[int, int]:
    """(sealed, all) rows of gallery_blocks, read as a plain SQLite reader would."""
    import sqlite3

    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as conn:  # closed: not held open
        return conn.execute("SELECT count(key_version), count(*) FROM gallery_blocks").fetchone()


def test_convergent_encrypt_seals_a_store_in_place_survives_kill_9_and_resumes(start_server, tmp_path, rng):
    import os
    import signal
    import time

    from convergent.server.storage.sql import SqlStore

    data = tmp_path / "data"
    server = start_server(data_dir=data)
    known = _federate(server.address, rng)
    server.stop(grace=1.0)
    store = SqlStore(f"sqlite:///{backups.database_path(data)}")  # 1,500 one-item blocks: a long migration
    extra = rng.standard_normal((1500, DIM)).astype(np.float32)
    store.galleries.enroll("default", "many", "b", 1, "exact", [([f"m{i}"], extra[i : i + 1]) for i in range(1500)])
    store.close()
    key_file = tmp_path / "master.key"
    master_keys.write_new_key(key_file)
    command = [str(BIN), "encrypt", "--data-dir", str(data), "--master-key-file", str(key_file), "--rows-per-transaction", "1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert b"checking and sealing" in first.stdout.readline()  # past its check that no one else has the file open
    deadline = time.monotonic() + 60
    while _sealed_rows(backups.database_path(data))[0] < 200 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.poll() is None, "the migration ended before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    sealed, total = _sealed_rows(backups.database_path(data))
    assert 200 <= sealed < total
    for flags, message in (((), "no master key was given"), (("--master-key-file", str(key_file)), "encryption was interrupted")):
        refused = _serve(data, *flags)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "encrypted the store" in second.stdout, second.stderr
    assert _sealed_rows(backups.database_path(data)) == (total, total)
    runs = {name: known[name] for name in ("anchors", "gallery", "pairs", "W")} | {"many": extra}
    blob = _folder_bytes(data)
    assert {name: runs_found(blob, v) for name, v in runs.items()} == dict.fromkeys(runs, 0.0)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "encrypted already" in again.stdout
    served = start_server(data_dir=data, master_key_file=key_file)
    with Client(served.address, timeout=30) as c:
        after = c.identify(gallery="g", vectors=known["anchors"][:50], model="a", k=5)
        assert c.identify(gallery="many", vectors=extra[:20], model="b", k=1).ids == [[f"m{i}"] for i in range(20)]
    assert after.ids == known["ids"]


def _rows_under(database: Path, version: int) -> int:
    import sqlite3

    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as conn:  # closed: not held open
        return sum(conn.execute(f"SELECT count(*) FROM {table} WHERE key_version = ?", (version,)).fetchone()[0]
                   for table in ("anchor_blocks", "gallery_blocks", "fit_arrays", "pair_stats", "calibrations"))


def test_data_key_rotation_while_serving_keeps_every_identify_answer(start_server, tmp_path, rng, monkeypatch):
    import threading
    import time

    from convergent.server.storage import envelope

    monkeypatch.setattr(envelope, "ACTIVE_KEY_TTL_S", 1.0)  # the server takes up the new key within 1 s
    data, key_file = tmp_path / "data", tmp_path / "master.key"
    master_keys.write_new_key(key_file)
    server = start_server(data_dir=data, master_key_file=key_file, key_rotation_interval_seconds=0.2)
    known = _federate(server.address, rng)
    extra = rng.standard_normal((400, DIM)).astype(np.float32)
    with Client(server.address, timeout=60) as c:
        for i in range(0, 400, 10):  # 40 more blocks to re-seal
            c.enroll(gallery="g2", model="b", ids=[f"e{j}" for j in range(i, i + 10)], vectors=extra[i : i + 10])
        baseline = c.identify(gallery="g2", vectors=extra[::7], model="b", k=3)
    database = backups.database_path(data)
    before = _rows_under(database, 1)
    stop, outcomes, written = threading.Event(), [], []

    def load() -> None:
        with Client(server.address, timeout=60) as c:
            while not stop.is_set():
                mapped = c.identify(gallery="g", vectors=known["anchors"][:50], model="a", k=5)
                direct = c.identify(gallery="g2", vectors=extra[::7], model="b", k=3)
                outcomes.append(mapped.ids == known["ids"] and np.array_equal(np.asarray(mapped.scores), known["scores"])
                                and direct.ids == baseline.ids)
                name = f"w{len(written)}"
                c.enroll(gallery="g3", model="b", ids=[name], vectors=extra[len(written) % 400 : len(written) % 400 + 1])
                written.append(name)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        rotated = subprocess.run([str(BIN), "rotate-data-key", "default", "--data-dir", str(data), "--master-key-file",
                                  str(key_file)], capture_output=True, text=True, timeout=120)
        assert rotated.returncode == 0 and "data key 2 is the newest" in rotated.stdout, rotated.stderr
        deadline = time.monotonic() + 60
        while _rows_under(database, 1) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # writes go on under the new key
    finally:
        stop.set()
        worker.join(60)
    assert _rows_under(database, 1) == 0 and _rows_under(database, 2) >= before, (before, _rows_under(database, 2))
    assert len(outcomes) >= 5 and all(outcomes), (len(outcomes), outcomes.count(False))
    assert server.key_rotation is not None and server.key_rotation.resealed >= before - 5
    server.stop(grace=1.0)
    again = start_server(data_dir=data, master_key_file=key_file)
    with Client(again.address, timeout=30) as c:
        assert c.identify(gallery="g", vectors=known["anchors"][:50], model="a", k=5).ids == known["ids"]
        assert c.count_gallery("g3") == len(written)
        assert c.identify(gallery="g3", vectors=extra[:1], model="b", k=1).ids[0][0] in written


def test_tenant_delete_destroys_the_key_first_and_a_backup_taken_before_reads_nothing_of_it(start_server, tmp_path, rng):
    data, key_file = tmp_path / "data", tmp_path / "master.key"
    master_keys.write_new_key(key_file)
    server = start_server(data_dir=data, master_key_file=key_file)
    known = _federate(server.address, rng)
    made = subprocess.run([str(BIN), "backup", str(tmp_path / "before.tar"), "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and "restoring it needs the master key and the keyring" in made.stdout, made.stderr
    server.stop(grace=1.0)
    command = [str(BIN), "tenant", "delete", "default", "--data-dir", str(data), "--master-key-file", str(key_file)]
    dry = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "would delete tenant 'default' (2 models" in dry.stdout, dry.stderr
    done = subprocess.run([*command, "--yes"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "its key is destroyed" in done.stdout, done.stderr
    assert "default" not in (data / "keyring.json").read_text().split('"shredded"')[0]
    after = start_server(data_dir=data, master_key_file=key_file)
    with Client(after.address, timeout=30) as c:
        assert c.list_models() == [] and c.list_galleries() == []
    after.stop(grace=1.0)
    restored = tmp_path / "restored"
    back = subprocess.run([str(BIN), "restore", str(tmp_path / "before.tar"), "--data-dir", str(restored)],
                          capture_output=True, text=True, timeout=120)
    assert back.returncode == 0 and "put its keyring at" in back.stdout, back.stderr
    (restored / "keyring.json").write_bytes((data / "keyring.json").read_bytes())  # the keyring as it is now
    old = start_server(data_dir=restored, master_key_file=key_file)
    with Client(old.address, timeout=30) as c:
        assert [m.name for m in c.list_models()] == ["a", "b"]  # the rows came back: the vectors did not
        with pytest.raises(errors.DataLoss, match="crypto-shredded"):
            c.identify(gallery="g", vectors=known["anchors"][:5], model="a", k=1)
        with pytest.raises(errors.DataLoss, match="crypto-shredded"):
            c.export_fit(c.list_fits()[0].id)
