"""The audit log, written off the request path: calls queue their entry, one thread writes them
in batches (one transaction per batch), and :meth:`AuditWriter.close` writes what is queued
before storage closes, so a clean shutdown loses no audited event. A killed process loses at
most the entries of the last ``interval`` seconds; the call's own effect (an erasure, a delete)
is committed by the call itself, never by its audit entry."""

from __future__ import annotations

import logging
import queue
import threading
import time

from convergent.server.storage.protocols import KeyStorage

log = logging.getLogger("convergent.audit")

_STOP = object()


class AuditWriter:
    """Batches ``(tenant, key_id, method, target, outcome, request_id)`` entries into the store.

    interval: seconds an entry may wait before its batch is written; max_batch: entries per
    transaction. A failed write is retried with the next batch (entries are kept, up to
    ``max_pending``; past that the oldest are dropped and the count is logged)."""

    def __init__(self, keys: KeyStorage, interval: float = 0.2, max_batch: int = 500, max_pending: int = 100_000) -> None:
        self.keys, self.interval, self.max_batch, self.max_pending = keys, interval, max_batch, max_pending
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[tuple] = []
        self._idle = threading.Condition()
        self._written = 0
        self._submitted = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, tenant: str, key_id: str, method: str, target: str, outcome: str, request_id: str) -> None:
        """Queue one entry (returns at once; the time is taken now)."""
        with self._idle:
            self._submitted += 1
        self._queue.put((time.time(), tenant, key_id, method, target[:512], outcome, request_id))

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every entry submitted so far is written (False on timeout)."""
        with self._idle:
            target = self._submitted
            return self._idle.wait_for(lambda: self._written + self.dropped >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the audit writer did not finish within %.0f s; %d entries may be lost", timeout, len(self._pending))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=self.interval if self._pending else None)
            except queue.Empty:
                item = None
            deadline = time.monotonic() + self.interval
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                self._pending.append(item)
                if len(self._pending) >= self.max_batch:
                    break
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    item = None
            if stopping:  # everything queued before the stop marker
                while True:
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if rest is not _STOP:
                        self._pending.append(rest)
            self._write(final=stopping)

    def _write(self, final: bool) -> None:
        attempts = 3 if final else 1
        while self._pending and attempts:
            batch = self._pending[: self.max_batch]
            try:
                self.keys.audit_many(batch)
            except Exception:  # noqa: BLE001 - a busy or failing database must not stop the writer
                attempts -= 1
                log.exception("writing %d audit entries failed; %s", len(batch), "retrying" if attempts else "giving up")
                if final and attempts:
                    time.sleep(0.5)
                if len(self._pending) > self.max_pending:
                    excess = len(self._pending) - self.max_pending
                    del self._pending[:excess]
                    self._count(dropped=excess)
                    log.error("dropped the %d oldest audit entries (more than %d waiting)", excess, self.max_pending)
                continue
            del self._pending[: len(batch)]
            self._count(written=len(batch))
        if final and self._pending:
            self._count(dropped=len(self._pending))
            log.error("%d audit entries could not be written at shutdown", len(self._pending))
            self._pending.clear()

    def _count(self, written: int = 0, dropped: int = 0) -> None:
        with self._idle:
            self._written += written
            self.dropped += dropped
            self._idle.notify_all()
