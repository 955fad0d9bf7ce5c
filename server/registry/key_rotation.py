"""The background worker of an encrypted store: rotates data keys by age (``data_key_max_age_days``)
and re-seals rows still under retired keys, a few rows per transaction, while the server serves.
Nothing it does changes a vector: only the data key that seals it."""

from __future__ import annotations

import logging
import threading

from convergent.server.settings import ServerSettings
from convergent.server.storage.protocols import KeyRotationStorage

log = logging.getLogger("convergent.keys")
DAY_S = 86_400.0


class KeyRotationWorker:
    """One daemon thread; :meth:`stop` ends it between two steps."""

    def __init__(self, rotation: KeyRotationStorage, settings: ServerSettings) -> None:
        self.rotation, self.settings = rotation, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="convergent-key-rotation", daemon=True)
        self.resealed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._pass()
            except Exception:  # a failed pass is logged and tried again later; serving goes on
                log.exception("key rotation pass failed; retrying in %.0f s", self.settings.key_rotation_interval_seconds)
            self._stop.wait(self.settings.key_rotation_interval_seconds)

    def _pass(self) -> None:
        if self.settings.data_key_max_age_days is not None:
            for tenant, version in self.rotation.rotate_older_than(self.settings.data_key_max_age_days * DAY_S):
                log.info("tenant %r: data key %d is the newest now (the older ones retire)", tenant, version)
        while not self._stop.is_set():
            report = self.rotation.step()
            self.resealed += report.resealed
            for entry in report.damaged:
                log.error("cannot re-seal a damaged row: %s", entry)
            for tenant, version in report.dropped_keys:
                log.info("tenant %r: retired data key %d is used by no row any more and was destroyed", tenant, version)
            if report.resealed == 0:
                return
