"""A real server on a damaged file and on a full disk: a damaged store is refused at start and
named by ``convergent check``; with ``--allow-damaged`` the rest is served and the damaged gallery
answers DATA_LOSS; a full disk is RESOURCE_EXHAUSTED saying so, stores nothing, keeps reads
working and takes writes again once space is freed (a real tmpfs the test mounts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convergent.client import Client, errors
from convergent.server.errors import StartupError
from convergent.server.rpc.app import ConvergentServer

BIN = Path(sys.executable).with_name("convergent")
DIM = 16


def _enrol_two_galleries(server: ConvergentServer, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    good, bad = (rng.standard_normal((40, DIM)).astype(np.float32) for _ in range(2))
    with Client(server.address, timeout=20) as c:
        c.register_model("m", dim=DIM, normalize=False)  # stored bytes are the bytes sent
        c.enroll(gallery="good", model="m", ids=[f"g{i}" for i in range(40)], vectors=good)
        c.enroll(gallery="bad", model="m", ids=[f"b{i}" for i in range(40)], vectors=bad)
    return good, bad


def _flip_one_stored_vector(database: Path, vectors: np.ndarray) -> None:
    raw = bytearray(database.read_bytes())
    for row in vectors:
        at = raw.find(row.tobytes())
        if at >= 0:
            raw[at + 5] ^= 0x10
            database.write_bytes(bytes(raw))
            return
    raise AssertionError("no enrolled vector found whole in the file")


def test_a_damaged_store_is_refused_named_by_check_and_served_in_part_when_allowed(start_server, tmp_path, rng):
    data = tmp_path / "data"
    server = start_server(data_dir=data)
    good, bad = _enrol_two_galleries(server, rng)
    server.stop(grace=1.0)
    _flip_one_stored_vector(data / "convergent.sqlite3", bad)

    with pytest.raises(StartupError, match="the store is damaged: gallery 'bad' .*fail their checksum.*--allow-damaged"):
        start_server(data_dir=data)

    check = subprocess.run([str(BIN), "check", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "DAMAGED  gallery 'bad' (tenant 'default'): vector blocks [1] fail their checksum" in check.stdout
    assert "1 findings" in check.stdout and "80 gallery items" in check.stdout

    served = start_server(data_dir=data, allow_damaged=True)
    with Client(served.address, timeout=20) as c:
        assert c.identify(gallery="good", vectors=good[:3], model="m", k=1).ids == [["g0"], ["g1"], ["g2"]]
        with pytest.raises(errors.DataLoss, match="gallery 'bad'.*damaged"):
            c.identify(gallery="bad", vectors=bad[:3], model="m", k=1)


def test_check_of_a_clean_store_exits_zero_and_of_a_missing_one_says_where_it_looked(start_server, tmp_path, rng):
    data = tmp_path / "data"
    server = start_server(data_dir=data)
    _enrol_two_galleries(server, rng)
    clean = subprocess.run([str(BIN), "check", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "no damage found" in clean.stdout, clean.stdout + clean.stderr
    missing = subprocess.run([str(BIN), "check", "--data-dir", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no database at" in missing.stderr


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MiB tmpfs mounted for this test (root only; skipped with the reason elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); this test needs a real full disk")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_resource_exhausted_stores_nothing_and_recovers_without_restart(start_server, small_disk, rng):
    server = start_server(data_dir=small_disk / "data")
    ids = [f"a{i:06d}" for i in range(20_000)]
    with Client(server.address, timeout=60) as c:
        c.register_model("m", dim=128, normalize=False)
        c.upload_anchors("m", anchor_set="s", ids=ids[:1000], vectors=rng.standard_normal((1000, 128)))
        c.enroll(gallery="g", model="m", ids=ids[:10], vectors=rng.standard_normal((10, 128)))
        filler = small_disk / "filler"
        with open(filler, "wb") as f:  # leave about 2 MiB free
            free = shutil.disk_usage(small_disk).free
            f.write(b"\0" * max(0, free - 2 * 1024 * 1024))
        big = rng.standard_normal((19_000, 128))  # ~10 MiB of vectors: cannot fit
        for _ in range(2):
            with pytest.raises(errors.ResourceExhausted, match="the server's storage is full: nothing of this call was stored"):
                c.upload_anchors("m", anchor_set="s", ids=ids[1000:], vectors=big)
        assert c.count_anchors("m", "s") == 1000  # nothing half-written
        assert c.identify(gallery="g", vectors=rng.standard_normal((2, 128)), model="m", k=3).ids  # reads work
        filler.unlink()
        c.upload_anchors("m", anchor_set="s", ids=ids[1000:], vectors=big)  # no restart
        assert c.count_anchors("m", "s") == 20_000
    assert server.store.check(full=True) == []
