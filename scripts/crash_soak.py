#!/usr/bin/env python
"""Crash-safety soak: SIGKILL a ``convergent serve`` process while a client writes to it.

One data folder is reused across every kill. Each cycle starts the server, lets one client
thread stream anchor uploads (some deliberately slow, so that a kill can land mid-stream),
gallery enrolments and ridge fits, kills the server with SIGKILL after a seeded random
delay (even cycles: 30-600 ms after the client starts; odd cycles: 0-60 ms after a
1500-row upload starts, aimed at the server's write transaction, commit and acknowledgement),
and then reads the SQLite file directly (the server is dead) to check that

* every acknowledged upload / enrolment is present and bit-identical (models are registered
  with ``normalize=False``, so the stored bytes are the float32 bytes that were sent);
* a write whose acknowledgement never came is entirely present or entirely absent (every
  write uses its own id prefix, so its rows can be told apart);
* nothing else is stored, the set's ``data_version`` counts the committed uploads, every
  acknowledged fit is stored with its arrays and each fit's ``n_anchors`` is the pair count
  committed when it ran, and ``PRAGMA integrity_check`` is ``ok``.

The next cycle's start checks the counts again through the SDK; after the last kill a final
restart re-uploads everything (a no-op only if every stored vector is bit-identical), fits
once more, and stops the server with SIGTERM.

    python scripts/crash_soak.py --kills 200 --seed 7

Only loopback is used (the server binds 127.0.0.1); every loop is bounded in count and time.
``tests/e2e/test_crash_safety.py`` runs the same harness with fewer kills.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from convergent.client import Client, errors
from convergent.v1 import anchors_pb2, anchors_pb2_grpc
from convergent.wire import encode_matrix

TENANT = "default"
DIM = 16
ANCHOR_SET = "crash"
GALLERY = "crash-g"
MODEL_A, MODEL_B = "crash-a", "crash-b"
DB_FILE = "convergent.sqlite3"
MAX_OPS_PER_CYCLE = 2000  # a cycle also ends at the kill; this only bounds a runaway loop
BULK_ROWS = 1500  # rows of the upload that aimed kills target (~10 ms of server-side writing)


# ----------------------------------------------------------------------------- server process
def server_command(data_dir: Path) -> list[str]:
    """``convergent serve`` from this interpreter's environment, bound to loopback on a free port."""
    exe = Path(sys.executable).with_name("convergent")
    base = [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "convergent.server"]
    return [*base, "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]


class ServerProcess:
    """A server subprocess; its output (stdout and stderr) is drained in the background, the tail kept."""

    def __init__(self, data_dir: Path, startup_timeout: float = 60.0) -> None:
        self.process = subprocess.Popen(
            server_command(data_dir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.address = ""
        deadline = time.monotonic() + startup_timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {''.join(self.tail)}")
            self.tail.append(line)
            match = re.search(r'listening on ([^\s"]+)', line)
            if match:
                self.address = match.group(1)
                break
        else:
            self.process.kill()
            raise RuntimeError(f"no 'listening on' line within {startup_timeout:.0f} s")
        host = self.address.rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            self.process.kill()
            raise RuntimeError(f"server is not on loopback: {self.address}")
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail.append(line)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._drain.join(timeout=10)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._drain.join(timeout=10)
        return code

    def log(self) -> str:
        return "".join(self.tail)


# ----------------------------------------------------------------------------- ledger of writes
@dataclass
class Write:
    """One upload (key = model) or enrolment (key = gallery): one stream, one transaction."""

    kind: str
    key: str
    ids: list[str]
    vectors: np.ndarray  # float32 (n, DIM): exactly what was sent
    cycle: int
    state: str = "sent"  # sent -> acked (by the server) ; sent -> committed | absent (after a kill)

    @property
    def durable(self) -> bool:
        return self.state in ("acked", "committed")


@dataclass
class FitAttempt:
    cycle: int
    expected_pairs: int
    fit_id: str | None = None  # set when acknowledged, or when found in the store after a kill
    state: str = "sent"


@dataclass
class Ledger:
    """Everything the client sent and what it knows about each write."""

    writes: list[Write] = field(default_factory=list)
    fits: list[FitAttempt] = field(default_factory=list)
    ids: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))  # durable ids per key
    committed_uploads: int = 0  # uploads that inserted rows (each adds 1 to the set's data_version)

    def mark_durable(self, write: Write, state: str) -> None:
        write.state = state
        self.ids[write.key].update(write.ids)
        if write.kind == "upload":
            self.committed_uploads += 1

    def count(self, key: str) -> int:
        return len(self.ids[key])

    def pairs(self) -> int:
        return len(self.ids[MODEL_A] & self.ids[MODEL_B])


@dataclass
class CycleReport:
    cycle: int
    kill_after_s: float
    ops_acked: int
    in_flight: str  # what was unacknowledged at the kill: "" or e.g. "upload crash-a (48 rows): committed"
    when: str = ""  # how the kill was timed


@dataclass
class SoakResult:
    seed: int
    kills: int = 0
    cycles: list[CycleReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    uploads_acked: int = 0
    enrolls_acked: int = 0
    fits_acked: int = 0
    in_flight_committed: int = 0
    in_flight_absent: int = 0
    anchors: int = 0
    gallery: int = 0

    def kill_times(self) -> str:
        return ", ".join(
            f"#{c.cycle}@{c.kill_after_s * 1e3:.0f}ms" + (f" (bulk+{c.when.split()[0]}ms)" if "bulk" in c.when else "")
            for c in self.cycles
        )

    def summary(self) -> str:
        lines = [
            f"crash soak: seed={self.seed} kills={self.kills} in {self.seconds:.1f} s; "
            f"acknowledged: {self.uploads_acked} uploads, {self.enrolls_acked} enrolls, {self.fits_acked} fits; "
            f"unacknowledged at a kill: {self.in_flight_committed} committed, {self.in_flight_absent} absent; "
            f"stored: {self.anchors} anchors, {self.gallery} gallery items; failures: {len(self.failures)}",
            f"kill times (after the client started): {self.kill_times()}",
        ]
        lines += [f"  cycle {c.cycle}: {c.ops_acked} ops acked, in flight: {c.in_flight or '-'}" for c in self.cycles if c.in_flight]
        lines += [f"FAILURE: {f}" for f in self.failures]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the client side
def _slow_upload(channel: grpc.Channel, model: str, ids: list[str], X: np.ndarray, pause: float) -> int:
    """An upload stream of 8-row chunks with a pause between them (so a kill can land mid-stream)."""
    stub = anchors_pb2_grpc.AnchorServiceStub(channel)

    def requests():  # noqa: ANN202
        starts = range(0, len(ids), 8)
        for start in starts:
            request = anchors_pb2.UploadAnchorsRequest(ids=ids[start : start + 8], vectors=encode_matrix(X[start : start + 8]))
            if start == 0:
                request.model, request.anchor_set = model, ANCHOR_SET
            request.last = start == starts[-1]  # the server stores nothing of a stream without it
            yield request
            time.sleep(pause)

    return stub.UploadAnchors(requests(), timeout=10).total


def _workload(
    address: str, ledger: Ledger, cycle: int, seed: int, killed: threading.Event, failures: list[str], acked: list[int],
    bulk_group: int = -1, bulk_started: threading.Event | None = None,
) -> None:
    """Write until the server dies: per group an upload of model A and of model B (same ids),
    every 3rd group an enrolment, every 4th a ridge fit. Group ``bulk_group`` has BULK_ROWS rows
    and sets ``bulk_started`` just before its model-B upload (the one that completes the pairs),
    so that the caller can aim a kill at the server's write transaction and commit.
    Errors before the kill are failures."""
    rng = np.random.default_rng([seed, cycle])
    channel = grpc.insecure_channel(address)
    client = Client(address, timeout=5)

    def call(what: str, fn):  # noqa: ANN001, ANN202
        try:
            return True, fn()
        except (errors.ConvergentError, grpc.RpcError) as exc:
            if not killed.is_set():
                failures.append(f"cycle {cycle}: {what} failed before the kill: {exc}")
            return False, None

    try:
        for group in range(MAX_OPS_PER_CYCLE):
            if killed.is_set():
                return
            bulk = group == bulk_group
            n = BULK_ROWS if bulk else int(rng.integers(8, 49))
            ids = [f"c{cycle}g{group}-{k}" for k in range(n)]
            for model in (MODEL_A, MODEL_B):
                X = rng.standard_normal((n, DIM)).astype(np.float32)
                write = Write("upload", model, ids, X, cycle)
                ledger.writes.append(write)
                if bulk and model == MODEL_B and bulk_started is not None:
                    bulk_started.set()
                if rng.random() < 0.4 and not bulk:
                    pause = float(rng.uniform(0.002, 0.01))
                    ok, total = call(f"slow upload {model}", lambda: _slow_upload(channel, model, ids, X, pause))
                else:
                    ok, total = call(
                        f"upload {model}",
                        lambda: client.upload_anchors(model, anchor_set=ANCHOR_SET, ids=ids, vectors=X, chunk_size=16),
                    )
                if not ok:
                    return
                ledger.mark_durable(write, "acked")
                acked[0] += 1
                if total != ledger.count(model):
                    failures.append(f"cycle {cycle}: upload {model} returned total {total}, expected {ledger.count(model)}")
            if group % 3 == 2:
                m = int(rng.integers(4, 17))
                X = rng.standard_normal((m, DIM)).astype(np.float32)
                write = Write("enroll", GALLERY, [f"c{cycle}e{group}-{k}" for k in range(m)], X, cycle)
                ledger.writes.append(write)
                ok, size = call("enroll", lambda: client.enroll(gallery=GALLERY, model=MODEL_B, ids=write.ids, vectors=X, chunk_size=8))
                if not ok:
                    return
                ledger.mark_durable(write, "acked")
                acked[0] += 1
                if size != ledger.count(GALLERY):
                    failures.append(f"cycle {cycle}: enroll returned size {size}, expected {ledger.count(GALLERY)}")
            if group % 4 == 3 and ledger.pairs() >= 10:
                attempt = FitAttempt(cycle, ledger.pairs())
                ledger.fits.append(attempt)
                ok, fit = call("fit", lambda: client.fit_alignment(MODEL_A, MODEL_B, ANCHOR_SET, method="ridge", alpha=1.0))
                if not ok:
                    return
                attempt.fit_id, attempt.state = fit.id, "acked"
                acked[0] += 1
                if fit.metrics["n_anchors"] != attempt.expected_pairs:
                    failures.append(
                        f"cycle {cycle}: fit {fit.id} saw {fit.metrics['n_anchors']:.0f} pairs, "
                        f"{attempt.expected_pairs} were committed"
                    )
    finally:
        client.close()
        channel.close()


# ----------------------------------------------------------------------------- the store, read directly
def check_store(db_path: Path, ledger: Ledger, cycle: int) -> tuple[list[str], str]:
    """Compare the SQLite file of a dead server with the ledger; resolve unacknowledged writes.

    Returns (failures, what was in flight)."""
    failures: list[str] = []
    in_flight: list[str] = []
    con = sqlite3.connect(db_path)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        anchors = {
            (model, anchor_id): bytes(vector)
            for model, anchor_id, vector in con.execute(
                "SELECT model, anchor_id, vector FROM anchors WHERE tenant = ? AND anchor_set = ?", (TENANT, ANCHOR_SET)
            )
        }
        items = {
            (GALLERY, item): bytes(vector)
            for item, vector in con.execute(
                "SELECT item_id, vector FROM gallery_items WHERE tenant = ? AND gallery = ?", (TENANT, GALLERY)
            )
        }
        row = con.execute(
            "SELECT data_version FROM anchor_sets WHERE tenant = ? AND name = ?", (TENANT, ANCHOR_SET)
        ).fetchone()
        data_version = 0 if row is None else int(row[0])
        fits = {
            fit_id: json.loads(metrics)
            for fit_id, metrics in con.execute("SELECT id, metrics FROM fits WHERE tenant = ?", (TENANT,))
        }
        arrays: dict[str, set[str]] = collections.defaultdict(set)
        for fit_id, name in con.execute("SELECT fit_id, name FROM fit_arrays"):
            arrays[fit_id].add(name)
    finally:
        con.close()
    if integrity != "ok":
        failures.append(f"cycle {cycle}: PRAGMA integrity_check says {integrity!r}")

    stored = {**anchors, **items}
    for write in ledger.writes:
        keys = [(write.key, i) for i in write.ids]
        present = [k for k in keys if k in stored]
        what = f"{write.kind} {write.key} ({len(keys)} rows, cycle {write.cycle})"
        if write.state == "absent":
            if present:
                failures.append(f"{what}: was absent after its kill, now {len(present)} rows are stored")
            continue
        if write.state == "sent":  # unacknowledged: all or nothing
            if len(present) == len(keys):
                ledger.mark_durable(write, "committed")
                in_flight.append(f"{what}: committed")
            elif not present:
                write.state = "absent"
                in_flight.append(f"{what}: absent")
                continue
            else:
                failures.append(f"{what}: unacknowledged and PARTIALLY stored ({len(present)} of {len(keys)} rows)")
                write.state = "absent"
                continue
        elif len(present) != len(keys):
            failures.append(f"{what}: acknowledged ({write.state}) but only {len(present)} of {len(keys)} rows are stored")
            continue
        sent = np.ascontiguousarray(write.vectors, dtype="<f4")
        for row, key in enumerate(keys):
            if stored[key] != sent[row].tobytes():
                failures.append(f"{what}: row {key[1]!r} is stored with other bytes than were sent")
                break
    expected = {(key, i) for key, ids in ledger.ids.items() for i in ids}
    extra = set(stored) - expected
    if extra:
        failures.append(f"cycle {cycle}: {len(extra)} stored rows belong to no durable write, e.g. {sorted(extra)[:3]}")
    if data_version != ledger.committed_uploads:
        failures.append(
            f"cycle {cycle}: data_version of {ANCHOR_SET!r} is {data_version}, "
            f"{ledger.committed_uploads} uploads were committed"
        )

    known = {a.fit_id for a in ledger.fits if a.fit_id}
    for attempt in ledger.fits:
        if attempt.fit_id and attempt.fit_id not in fits:
            failures.append(f"fit {attempt.fit_id} (cycle {attempt.cycle}) was acknowledged but is not stored")
    unknown = sorted(set(fits) - known)
    pending = [a for a in ledger.fits if a.state == "sent"]
    if len(unknown) > len(pending):
        failures.append(f"cycle {cycle}: {len(unknown)} stored fits were never requested: {unknown}")
    for attempt in pending:
        match = [f for f in unknown if fits[f].get("n_anchors") == attempt.expected_pairs]
        if match:
            attempt.fit_id, attempt.state = match[0], "committed"
            unknown.remove(match[0])
            in_flight.append(f"fit ({attempt.expected_pairs} pairs): committed")
        else:
            attempt.state = "absent"
            in_flight.append(f"fit ({attempt.expected_pairs} pairs): absent")
    if unknown:
        failures.append(f"cycle {cycle}: stored fits {unknown} match no request (wrong n_anchors?)")
    # Every fit is a ridge map: each must be stored with the same, non-empty set of arrays.
    shapes = collections.Counter(frozenset(arrays.get(fit_id, ())) for fit_id in fits)
    if shapes:
        usual = shapes.most_common(1)[0][0]
        for fit_id in fits:
            names = frozenset(arrays.get(fit_id, ()))
            if not names or names != usual:
                failures.append(f"cycle {cycle}: fit {fit_id} is stored with arrays {sorted(names)}, the others with {sorted(usual)}")
    return failures, "; ".join(in_flight)


def check_through_sdk(address: str, ledger: Ledger) -> list[str]:
    """After a restart: the counts the server reports equal the ledger's."""
    failures = []
    with Client(address, timeout=10) as client:
        client.wait_until_serving(timeout=30)
        for model in (MODEL_A, MODEL_B):
            count = client.count_anchors(model, anchor_set=ANCHOR_SET)
            if count != ledger.count(model):
                failures.append(f"after restart: count_anchors({model}) = {count}, ledger says {ledger.count(model)}")
        if ledger.count(GALLERY):
            size = client.count_gallery(GALLERY)
            if size != ledger.count(GALLERY):
                failures.append(f"after restart: gallery size {size}, ledger says {ledger.count(GALLERY)}")
    return failures


def final_check(address: str, ledger: Ledger) -> list[str]:
    """Re-upload every durable write (bit-identical -> no-op), compare counts, fit once more."""
    failures = check_through_sdk(address, ledger)
    with Client(address, timeout=30) as client:
        for model in (MODEL_A, MODEL_B):
            writes = [w for w in ledger.writes if w.kind == "upload" and w.key == model and w.durable]
            if not writes:
                continue
            ids = [i for w in writes for i in w.ids]
            X = np.vstack([w.vectors for w in writes])
            try:
                total = client.upload_anchors(model, anchor_set=ANCHOR_SET, ids=ids, vectors=X)
            except errors.AlreadyExists as exc:
                failures.append(f"re-upload of every durable {model} vector conflicts (not bit-identical): {exc}")
                continue
            if total != len(ids):
                failures.append(f"re-upload of {model}: total {total}, expected {len(ids)}")
        if ledger.pairs() >= 10:
            fit = client.fit_alignment(MODEL_A, MODEL_B, ANCHOR_SET, method="ridge", alpha=1.0)
            if fit.metrics["n_anchors"] != ledger.pairs():
                failures.append(f"final fit saw {fit.metrics['n_anchors']:.0f} pairs, ledger says {ledger.pairs()}")
            if set(client.export_fit(fit.id)) < {"W", "b"}:
                failures.append("final fit exports no W / b")
            stored = {f.id for f in client.list_fits()}
            missing = {a.fit_id for a in ledger.fits if a.fit_id} - stored
            if missing:
                failures.append(f"fits missing after restart: {sorted(missing)}")
    return failures


# ----------------------------------------------------------------------------- the soak
def run_soak(
    kills: int, seed: int, data_dir: Path, min_delay: float = 0.03, max_delay: float = 0.6,
    log=print,  # noqa: ANN001
) -> SoakResult:
    """``kills`` cycles of start -> write -> SIGKILL -> check, on one data folder; then a final
    restart and check. Kill delays are drawn from ``seed``; the result lists them."""
    started = time.monotonic()
    result = SoakResult(seed=seed)
    rng = np.random.default_rng(seed)
    ledger = Ledger()
    db_path = Path(data_dir) / DB_FILE
    log(f"crash soak: seed={seed}, kills={kills}, data dir {data_dir}")

    server = ServerProcess(data_dir)
    with Client(server.address, timeout=10) as client:
        client.wait_until_serving(timeout=30)
        client.register_model(MODEL_A, DIM, normalize=False)
        client.register_model(MODEL_B, DIM, normalize=False)
    for cycle in range(kills):
        if cycle:
            server = ServerProcess(data_dir)
            result.failures += [f"cycle {cycle}: {f}" for f in check_through_sdk(server.address, ledger)]
        # Odd cycles aim at a bulk upload's write transaction / commit / acknowledgement; even
        # cycles kill at any moment.
        aimed = cycle % 2 == 1
        delay = float(rng.uniform(0.0, 0.06) if aimed else rng.uniform(min_delay, max_delay))
        bulk_group = int(rng.integers(1, 5)) if aimed else -1
        killed, bulk_started = threading.Event(), threading.Event()
        failures: list[str] = []
        acked = [0]
        worker = threading.Thread(
            target=_workload, args=(server.address, ledger, cycle, seed, killed, failures, acked, bulk_group, bulk_started),
            daemon=True,
        )
        started_at = time.monotonic()
        worker.start()
        if aimed and not bulk_started.wait(timeout=10):
            failures.append(f"cycle {cycle}: the bulk upload did not start within 10 s")
        time.sleep(delay)
        kill_after = time.monotonic() - started_at
        killed.set()
        server.kill()
        result.kills += 1
        worker.join(timeout=30)
        if worker.is_alive():
            failures.append(f"cycle {cycle}: the client thread did not finish within 30 s of the kill")
        store_failures, in_flight = check_store(db_path, ledger, cycle)
        failures += store_failures
        when = f"{delay * 1e3:.1f} ms into the bulk upload" if aimed else f"{delay * 1e3:.0f} ms"
        result.cycles.append(CycleReport(cycle, kill_after, acked[0], in_flight, when))
        result.failures += failures
        log(f"  kill {cycle + 1}/{kills} at {when} ({kill_after * 1e3:.0f} ms after the client started): "
            f"{acked[0]} ops acked; in flight: {in_flight or '-'}"
            + (f"; {len(failures)} FAILURES" if failures else ""))
        if failures:
            log("\n".join(f"    {f}" for f in failures) + "\n    server log tail:\n" + server.log()[-3000:])

    server = ServerProcess(data_dir)
    try:
        result.failures += final_check(server.address, ledger)
    finally:
        code = server.terminate()
    if code != 0:
        result.failures.append(f"final server exited with {code} on SIGTERM: {server.log()[-2000:]}")
    result.seconds = time.monotonic() - started
    result.uploads_acked = sum(w.state == "acked" and w.kind == "upload" for w in ledger.writes)
    result.enrolls_acked = sum(w.state == "acked" and w.kind == "enroll" for w in ledger.writes)
    result.fits_acked = sum(a.state == "acked" for a in ledger.fits)
    result.in_flight_committed = sum(w.state == "committed" for w in ledger.writes) + sum(
        a.state == "committed" for a in ledger.fits
    )
    result.in_flight_absent = sum(w.state == "absent" for w in ledger.writes) + sum(a.state == "absent" for a in ledger.fits)
    result.anchors = ledger.count(MODEL_A) + ledger.count(MODEL_B)
    result.gallery = ledger.count(GALLERY)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs (cycles) [50]")
    parser.add_argument("--seed", type=int, default=None, help="seed of the data and kill delays [random, printed]")
    parser.add_argument("--min-delay", type=float, default=0.03, help="earliest kill after the client starts, s [0.03]")
    parser.add_argument("--max-delay", type=float, default=0.6, help="latest kill after the client starts, s [0.6]")
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder [a new temporary one]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.kills > 100_000:
        parser.error("--kills must be in 1..100000")
    if not 0 <= args.min_delay <= args.max_delay <= 60:
        parser.error("need 0 <= --min-delay <= --max-delay <= 60")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    temporary = None
    data_dir = args.data_dir
    if data_dir is None:
        temporary = tempfile.mkdtemp(prefix="convergent-crash-")
        data_dir = Path(temporary) / "data"
    try:
        result = run_soak(args.kills, seed, data_dir, args.min_delay, args.max_delay)
    finally:
        if temporary and not args.keep:
            import shutil

            shutil.rmtree(temporary, ignore_errors=True)
    print(result.summary())
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
