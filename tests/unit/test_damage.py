"""Damage on disk is found, never served: bytes flipped in a real SQLite file's vector pages and
id-index pages, rows lost from an id index, a migrated store summed like a new one, and every
write path (overwrite, delete, erase, remove) keeping the checksums and id digests true."""

from __future__ import annotations

import random
import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from convergent.server.errors import DataLoss
from convergent.server.storage import db
from convergent.server.storage.integrity import full_check, quick_check
from convergent.server.storage.sql import SqlStore

T, DIM, N_ANCHORS, N_ITEMS = "t", 64, 6000, 1500
PAGE = 4096


def _ids(n: int) -> list[str]:
    return [f"anchor-{i:06d}" for i in range(n)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A closed SQLite store: model a, anchor set s (6,000 anchors, two uploads), gallery g (1,500 items)."""
    path = tmp_path_factory.mktemp("damage") / "convergent.sqlite3"
    store = SqlStore(f"sqlite:///{path}")
    X = np.random.default_rng(7).standard_normal((N_ANCHORS, DIM)).astype(np.float32)
    ids = _ids(N_ANCHORS)
    a = store.insert_model(T, "a", DIM, False)
    store.write_anchors(T, "s", a, [(ids[:3000], X[:3000]), (ids[3000:], X[3000:])], overwrite=False)
    store.galleries.enroll(T, "g", "a", 1, "exact", [(ids[:N_ITEMS], X[:N_ITEMS])])
    store.close()
    assert not (path.parent / (path.name + "-wal")).exists() or (path.parent / (path.name + "-wal")).stat().st_size == 0
    return path, X


def _copy(pristine: tuple[Path, np.ndarray], tmp_path: Path) -> Path:
    target = tmp_path / "convergent.sqlite3"
    shutil.copy(pristine[0], target)
    return target


def _flip(path: Path, offset: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def _check(path: Path, full: bool = True) -> list:
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        return (full_check if full else quick_check)(engine)
    finally:
        engine.dispose()


def _pages(path: Path, table: str, kind: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ?", (table, kind))]


def _vector_offset(path: Path, vector: np.ndarray, table: str) -> int | None:
    """Where in the file ``vector``'s bytes are stored in one of ``table``'s pages (None: split
    across two overflow pages, so not in one piece)."""
    with sqlite3.connect(path) as conn:
        owned = {r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,))}
    raw, data, at = path.read_bytes(), vector.tobytes(), -1
    while (at := raw.find(data, at + 1)) >= 0:
        if at // PAGE + 1 in owned and (at + len(data) - 1) // PAGE + 1 in owned:
            return at
    return None


def _cell_bytes(page: bytes, pageno: int) -> list[int]:
    """Offsets (in the page) of the bytes of its cells: header and payload, no free space."""
    base = 100 if pageno == 1 else 0
    kind = page[base]
    header = 12 if kind in (2, 5) else 8
    cells = struct.unpack(">H", page[base + 3 : base + 5])[0]
    out: list[int] = []
    for j in range(cells):
        start = struct.unpack(">H", page[base + header + 2 * j : base + header + 2 * j + 2])[0]
        at = start + (4 if kind == 2 else 0)  # an interior index cell starts with its child page
        size, used = 0, 0
        for used in range(1, 10):  # the payload size, a varint
            byte = page[at + used - 1]
            size = (size << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        out += range(start, at + used + size)
    return out


def test_a_clean_store_checks_clean(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    assert _check(path) == [] and _check(path, full=False) == []


@pytest.mark.parametrize("what", ["anchors", "gallery"])
def test_a_flipped_bit_in_any_stored_vector_is_found_and_not_served(pristine, tmp_path, what):
    rng = random.Random(f"vector-{what}")
    X = pristine[1]
    for trial in range(6):
        path = _copy(pristine, tmp_path)
        table = "anchor_blocks" if what == "anchors" else "gallery_blocks"
        offset = None
        while offset is None:
            offset = _vector_offset(path, X[rng.randrange(N_ITEMS)], table)
        _flip(path, offset + rng.randrange(DIM * 4), rng.randrange(8))
        found = _check(path)
        expected = ("anchors", T, "s", "a") if what == "anchors" else ("gallery", T, "g")
        assert any(d.key == expected and "checksum" in d.detail for d in found), (trial, found)
        store = SqlStore(f"sqlite:///{path}")
        try:
            with pytest.raises(DataLoss, match="anchor set 's', model 'a'" if what == "anchors" else "gallery 'g'"):
                if what == "anchors":
                    a = store.get_model(T, "a")
                    with store.read_pairs(T, "s", a, a) as reader:
                        list(reader.iter_pairs())
                else:
                    store.galleries.items(T, "g", DIM)
        finally:
            store.close()


@pytest.mark.parametrize("table", ["anchor_ids", "gallery_item_ids"])
@pytest.mark.parametrize("kind", ["leaf", "internal"])
def test_a_flipped_bit_in_an_id_index_page_is_found_every_time(pristine, tmp_path, table, kind):
    rng = random.Random(f"{table}-{kind}")
    pages = _pages(pristine[0], table, kind)
    assert pages, f"{table} has {kind} pages at this size"
    for trial in range(10):
        path = _copy(pristine, tmp_path)
        pageno = rng.choice(pages)
        page = path.read_bytes()[(pageno - 1) * PAGE : pageno * PAGE]
        offset = rng.choice(_cell_bytes(page, pageno))
        _flip(path, (pageno - 1) * PAGE + offset, rng.randrange(8))
        assert _check(path), f"trial {trial}: page {pageno} byte {offset} flipped and nothing found"


def test_ids_lost_from_the_index_are_data_loss_not_a_smaller_count(pristine, tmp_path):
    path = _copy(pristine, tmp_path)
    with sqlite3.connect(path) as conn:  # what a lost B-tree subtree looks like to a reader
        conn.execute("DELETE FROM anchor_ids WHERE anchor_id >= 'anchor-004000'")
        conn.execute("DELETE FROM gallery_item_ids WHERE item_id >= 'anchor-001000'")
    assert {d.key for d in _check(path, full=False)} == {("anchors", T, "s", "a"), ("gallery", T, "g")}
    store = SqlStore(f"sqlite:///{path}")
    try:
        with pytest.raises(DataLoss, match="id index lists 4000 anchors, its blocks hold 6000"):
            store.count_anchors(T, "s", "a")
        a = store.get_model(T, "a")
        with pytest.raises(DataLoss, match="anchor set 's'"), store.read_pairs(T, "s", a, a):
            pass
        with pytest.raises(DataLoss, match="gallery 'g'.*counts 1500 items, its id index lists 1000"):
            store.galleries.items(T, "g", DIM)
        store.serve_damaged(_check(path))  # --allow-damaged: refused before any row is read
        with pytest.raises(DataLoss, match="start-up check found it"):
            store.galleries.items(T, "g", DIM)
    finally:
        store.close()


def test_every_write_path_keeps_checksums_and_id_digests_true(tmp_path, rng):
    """Overwrites, deletes, erasures and removals re-sum what they change: a store they went
    through checks clean, and its sums equal those a fresh migration computes from the data."""
    url = f"sqlite:///{tmp_path / 'convergent.sqlite3'}"
    store = SqlStore(url)
    a, b = store.insert_model(T, "a", 8, False), store.insert_model(T, "b", 8, False)
    ids = _ids(900)
    for model in (a, b):
        store.write_anchors(T, "s", model, [(ids, rng.standard_normal((900, 8)))], overwrite=False)
    store.write_anchors(T, "s", a, [(ids[100:200], rng.standard_normal((100, 8)))], overwrite=True)
    store.delete_anchors(T, "s", "b", ids[300:350])
    store.galleries.enroll(T, "g", "a", 1, "exact", [(ids[:400], rng.standard_normal((400, 8)))])
    store.galleries.remove(T, "g", ids[50:80])
    store.erase(T, ids[0:20] + ids[390:395])
    assert store.check(full=True) == []
    with store.engine.connect() as conn:
        written = {t: conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1, 2, 3")).all()
                   for t in ("anchor_blocks", "gallery_blocks")}
    db.downgrade(store.engine, "0009")
    db.migrate(store.engine)  # 0010 sums the data as it is
    with store.engine.connect() as conn:
        for table, rows in written.items():
            assert conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1, 2, 3")).all() == rows, table
    assert store.check(full=True) == []
    store.close()


def test_a_backup_of_a_damaged_store_is_refused(pristine, tmp_path):
    from convergent.server.storage.backup import BackupError, backup_sqlite

    path = _copy(pristine, tmp_path)
    offset = None
    rows = iter(range(N_ITEMS))
    while offset is None:
        offset = _vector_offset(path, pristine[1][next(rows)], "gallery_blocks")
    backup_sqlite(path, tmp_path / "clean.tar")  # the same store before the flip backs up
    _flip(path, offset, 3)
    with pytest.raises(BackupError, match="holds damaged data: gallery 'g'"):
        backup_sqlite(path, tmp_path / "damaged.tar")
    assert not (tmp_path / "damaged.tar").exists()
