"""The audit log is written off the request path, in batches, and a clean shutdown loses nothing."""

from __future__ import annotations

import threading

import numpy as np

from convergent.client import Client
from convergent.server.rpc.audit import AuditWriter
from convergent.server.rpc.auth import hash_secret, new_key
from convergent.server.storage import open_store
from convergent.server.storage.key_store import KeyStore


def test_every_audited_call_of_concurrent_clients_is_written_by_a_clean_shutdown(start_server, rng):
    server = start_server(require_auth=True)
    key_id, secret, key = new_key()
    KeyStore(server.store.engine).insert(key_id, "acme", "acme-admin", "admin", hash_secret(secret))
    url = server.settings.resolved_database_url()
    with Client(server.address, api_key=key) as client:
        client.register_model("m", dim=4)
        client.enroll(gallery="g", model="m", ids=[f"p{i}" for i in range(20)], vectors=rng.standard_normal((20, 4)))

    def identify(n: int) -> None:
        with Client(server.address, api_key=key) as c:
            for _ in range(n):
                c.identify(gallery="g", model="m", vectors=np.ones((1, 4)), k=1)

    threads = [threading.Thread(target=identify, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.stop(grace=5.0)  # no flush asked for: stopping writes what is queued
    store = open_store(url)
    try:
        entries = KeyStore(store.engine).audit_entries("acme", limit=1000)
    finally:
        store.close()
    assert sum(e.method == "Identify" and e.outcome == "OK" and e.key_id == key_id for e in entries) == 100


class _CountingKeys:
    """A real KeyStore whose first ``failures`` writes fail, counting the batches."""

    def __init__(self, keys: KeyStore, failures: int = 0) -> None:
        self.keys, self.failures, self.batches = keys, failures, []

    def audit_many(self, entries):  # noqa: ANN001
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        self.batches.append(len(entries))
        self.keys.audit_many(entries)


def test_entries_are_batched_and_survive_a_failed_write(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        keys = _CountingKeys(KeyStore(store.engine), failures=1)
        writer = AuditWriter(keys, interval=0.05, max_batch=500)
        for i in range(1200):
            writer.submit("t", "k", "Identify", f"gallery=g{i}", "OK", f"r{i}")
        assert writer.flush(timeout=30)
        writer.close()
        rows = KeyStore(store.engine).audit_entries("t", limit=5000)
        assert len(rows) == 1200 and {r.target for r in rows} == {f"gallery=g{i}" for i in range(1200)}
        assert max(keys.batches) <= 500 and len(keys.batches) < 1200  # batched, and the failed batch was retried
        assert writer.dropped == 0
    finally:
        store.close()
