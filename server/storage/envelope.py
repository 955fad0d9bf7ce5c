"""Envelope encryption of stored vectors and maps (AES-256-GCM, one data key per tenant).

A store is either in clear (the default) or encrypted (``store_settings`` row ``encryption``).
In an encrypted store every vector block, fit array, pair statistic and calibration pair is
*sealed*: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, under the tenant's newest data
key, with associated data naming where the bytes belong (the table, the tenant, the row's key
columns and the data key's version; :func:`associated_data`). The row keeps the data key's
version (``key_version``; NULL: in clear). Moving sealed bytes to another row, table or tenant,
or changing one bit, makes the tag fail: the object is reported damaged (DataLoss), as a failed
checksum is.

Data keys are random 256-bit keys, created on a tenant's first sealed write inside that write's
transaction, and stored only wrapped by the key-encryption key of a
:class:`~convergent.server.storage.master_keys.KeyProvider` (``schema.data_keys``).

The envelope of a store belongs to its engine (:func:`attach`, :func:`of`), so the storage
functions that take a connection find it without another parameter.

Ciphertext has the length of the clear bytes: a sealed block of ``rows`` float32 vectors of
``dim`` is ``rows * dim * 4 + OVERHEAD`` bytes, and slot ``i``'s bytes are at ``NONCE_BYTES +
i * dim * 4`` (AES-GCM is a counter mode), which is how an erasure scrubs a slot of a block it
cannot decrypt (:func:`scrub`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from convergent.server.errors import ConvergentError, DataLoss, FailedPrecondition, StartupError
from convergent.server.storage.master_keys import (KEY_BYTES, KeyProvider, LocalMasterKey, MasterKeyChanged, TenantShredded,
                                                   WrongKey)
from convergent.server.storage.schema import data_keys, metadata, store_settings

NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
SCHEME = "aes-256-gcm/1"
# How long a process seals with the data key it last read as a tenant's newest: a rotation made by
# another process (or replica) is taken up within this time; retired keys are kept at least
# twice as long before they are dropped.
ACTIVE_KEY_TTL_S = 30.0
SETTING = "encryption"

Place = Sequence[object]  # the table's name, then the row's key columns (str or int)


def associated_data(tenant: str, place: Place, key_version: int) -> bytes:
    """The GCM associated data binding sealed bytes to their row: length-prefixed fields."""
    out = bytearray(b"convergent sealed\0")
    for value in (tenant, *place):
        if isinstance(value, int):
            out += b"i" + int(value).to_bytes(8, "big", signed=True)
        else:
            text = str(value).encode()
            out += b"s" + len(text).to_bytes(4, "big") + text
    return bytes(out + b"v" + int(key_version).to_bytes(8, "big"))


def clear_length(stored: int, key_version: int | None) -> int:
    """Bytes of clear data in ``stored`` bytes kept with ``key_version`` (None: in clear)."""
    return stored if key_version is None else stored - OVERHEAD


def scrub(stored: bytearray, key_version: int | None, start: int, end: int) -> None:
    """Overwrite, in place and without the key, the stored bytes of clear range [start, end) with
    zeros: the data key's keystream alone is left there. (For erasing slots of a damaged block.)"""
    offset = 0 if key_version is None else NONCE_BYTES
    stored[offset + start : offset + end] = bytes(end - start)


def read_setting(conn: sa.Connection) -> dict | None:
    """The store's encryption setting ({"scheme", "keyring_id", "since", "complete"}), or None: in clear."""
    value = conn.execute(sa.select(store_settings.c.value).where(store_settings.c.name == SETTING)).scalar()
    return None if value is None else json.loads(value)


class Envelope:
    """How one store keeps its vector bytes: in clear (``provider`` None, not ``encrypted``),
    sealed (both), or locked (``encrypted`` but no provider: every seal and open refuses)."""

    def __init__(self, provider: KeyProvider | None = None, encrypted: bool = False) -> None:
        self.provider, self.encrypted = provider, encrypted
        self._keys: dict[tuple[str, int], AESGCM] = {}
        self._active: dict[str, tuple[int, float]] = {}  # tenant -> (newest data key, when read)
        # keys created inside a write transaction not yet known committed: per transaction
        self._pending: weakref.WeakKeyDictionary[sa.RootTransaction, dict[str, tuple[int, AESGCM]]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ keys
    def _provider(self) -> KeyProvider:
        if self.provider is None:
            raise StartupError("the store is encrypted and no master key was given (--master-key-file or "
                               "$CONVERGENT_MASTER_KEY)")
        return self.provider

    def _unwrap(self, tenant: str, version: int, wrapped: bytes) -> AESGCM:
        return AESGCM(self._provider().unwrap(tenant, version, wrapped))

    def _pending_in(self, conn: sa.Connection) -> dict[str, tuple[int, AESGCM]]:
        transaction = conn.get_transaction()
        with self._lock:
            return self._pending.get(transaction, {}) if transaction is not None else {}

    def _sealing_key(self, conn: sa.Connection, tenant: str) -> tuple[int, AESGCM]:
        """The tenant's newest data key; created (in the caller's write transaction) if it has none."""
        created = self._pending_in(conn).get(tenant)
        if created is not None:
            return created
        with self._lock:
            active = self._active.get(tenant)
            if active is not None and time.monotonic() - active[1] < ACTIVE_KEY_TTL_S:
                return active[0], self._keys[(tenant, active[0])]
        c = data_keys.c
        row = conn.execute(sa.select(c.version, c.wrapped).where(c.tenant == tenant, c.retired_at.is_(None))
                           .order_by(c.version.desc()).limit(1)).first()
        if row is not None:  # committed (this transaction's own keys are pending)
            version = int(row.version)
            try:
                aead = self._unwrap(tenant, version, row.wrapped)
            except TenantShredded:  # a restored backup's key of a shredded tenant: a new tenant key, new data keys
                return self.new_data_key(conn, tenant)
            except MasterKeyChanged:
                raise
            except WrongKey as exc:
                raise DataLoss(f"tenant {tenant!r} cannot write sealed data: {exc}") from None
            with self._lock:
                self._keys[(tenant, version)] = aead
                self._active[tenant] = (version, time.monotonic())
            return version, aead
        return self.new_data_key(conn, tenant)

    def new_data_key(self, conn: sa.Connection, tenant: str) -> tuple[int, AESGCM]:
        """Create the tenant's next data key in the caller's write transaction: (version, key)."""
        c = data_keys.c
        last = conn.execute(sa.select(sa.func.max(c.version)).where(c.tenant == tenant)).scalar()
        version = int(last or 0) + 1
        key = secrets.token_bytes(KEY_BYTES)
        provider = self._provider()
        conn.execute(data_keys.insert().values(tenant=tenant, version=version, wrapped=provider.wrap(tenant, version, key),
                                               kek_id=provider.key_id, created_at=time.time()))
        # Known to this transaction only until it commits (the next transaction reads the row):
        # a rolled-back key never reaches the cache.
        transaction = conn.get_transaction()
        created = (version, AESGCM(key))
        if transaction is not None:
            with self._lock:
                self._pending.setdefault(transaction, {})[tenant] = created
        return created

    def _opening_key(self, conn: sa.Connection, tenant: str, version: int,
                     damaged: Callable[[str], ConvergentError]) -> AESGCM:
        created = self._pending_in(conn).get(tenant)
        if created is not None and created[0] == version:
            return created[1]
        with self._lock:
            aead = self._keys.get((tenant, version))
        if aead is not None:
            return aead
        c = data_keys.c
        wrapped = conn.execute(sa.select(c.wrapped).where(c.tenant == tenant, c.version == version)).scalar()
        if wrapped is None:
            raise damaged(f"its data key {version} is not in the store (the tenant's keys were destroyed, or the "
                          "key table was damaged), so its sealed bytes cannot be read")
        try:
            aead = self._unwrap(tenant, version, wrapped)
        except MasterKeyChanged as exc:
            raise FailedPrecondition(f"cannot open data of tenant {tenant!r}: {exc}") from None
        except TenantShredded:
            raise damaged(f"tenant {tenant!r} has no key in the keyring (its keys were destroyed: crypto-shredded), so "
                          "its sealed bytes cannot be read") from None
        except WrongKey:
            raise damaged(f"its data key {version} does not open with tenant {tenant!r}'s key in the keyring: the "
                          "tenant's key was destroyed since (crypto-shredded) and made anew, or the key was changed") from None
        with self._lock:
            self._keys[(tenant, version)] = aead
        return aead

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached data keys (of one tenant, or all): after their rows changed elsewhere."""
        with self._lock:
            for key in [k for k in self._keys if tenant is None or k[0] == tenant]:
                del self._keys[key]
            for name in [t for t in self._active if tenant is None or t == tenant]:
                del self._active[name]

    # ------------------------------------------------------------------ bytes
    def seal(self, conn: sa.Connection, tenant: str, place: Place, data: bytes) -> tuple[bytes, int | None]:
        """(bytes to store, their ``key_version``) for clear ``data`` that belongs at ``place``."""
        sealed, version = self.seal_many(conn, tenant, [(place, data)])
        return sealed[0], version

    def seal_many(self, conn: sa.Connection, tenant: str, items: Sequence[tuple[Place, bytes]]) -> tuple[list[bytes], int | None]:
        """Several byte columns of one row, all under the same data key: (sealed bytes, key_version)."""
        if not self.encrypted:
            return [data for _, data in items], None
        try:
            version, aead = self._sealing_key(conn, tenant)
        except MasterKeyChanged as exc:
            raise FailedPrecondition(f"cannot seal data for tenant {tenant!r}: {exc}") from None
        out = []
        for place, data in items:
            nonce = secrets.token_bytes(NONCE_BYTES)
            out.append(nonce + aead.encrypt(nonce, data, associated_data(tenant, place, version)))
        return out, version

    def open(self, conn: sa.Connection, tenant: str, place: Place, stored: bytes, key_version: int | None,
             damaged: Callable[[str], ConvergentError]) -> bytes:
        """The clear bytes of ``stored`` (kept at ``place`` with ``key_version``); ``damaged(detail)``
        is raised when they fail authentication or are in clear in an encrypted store."""
        if key_version is None:
            if self.encrypted:
                raise damaged("its bytes are in clear in an encrypted store (written around the encryption, or "
                              "replaced)")
            return stored
        if len(stored) < OVERHEAD:
            raise damaged(f"its sealed bytes are {len(stored)} bytes long, shorter than a nonce and a tag")
        aead = self._opening_key(conn, tenant, int(key_version), damaged)
        try:
            return aead.decrypt(bytes(stored[:NONCE_BYTES]), bytes(stored[NONCE_BYTES:]),
                                associated_data(tenant, place, int(key_version)))
        except InvalidTag:
            raise damaged("its sealed bytes fail authentication (AES-GCM tag): they changed after they were "
                          "written, or were copied from another row or tenant") from None


PLAIN = Envelope()
_BY_ENGINE: weakref.WeakKeyDictionary[sa.Engine, Envelope] = weakref.WeakKeyDictionary()


def attach(engine: sa.Engine, envelope: Envelope) -> None:
    """Make ``envelope`` how the store on ``engine`` keeps its bytes."""
    _BY_ENGINE[engine] = envelope


def of(conn: sa.Connection) -> Envelope:
    """The envelope of the store ``conn`` belongs to (:data:`PLAIN` if none was attached)."""
    return _BY_ENGINE.get(conn.engine, PLAIN)


def sealed_tables() -> list[sa.Table]:
    """The tables whose bytes an encrypted store seals: those with a ``key_version`` column."""
    return [table for table in metadata.sorted_tables if "key_version" in table.c]


def _holds_sealable_rows(conn: sa.Connection) -> bool:
    return any(conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None
               for table in sealed_tables())


def configure(engine: sa.Engine, master: LocalMasterKey | None, keyring_file: Path | None,
              locked_ok: bool = False) -> Envelope:
    """Attach to ``engine`` the envelope its store's setting and the key given call for:

    - a store in clear, no key: in clear; a new (empty) store and a key: encrypted from now on
      (its keyring is created in ``keyring_file``);
    - an encrypted store, its master key and its keyring: sealed; another master key, a missing
      keyring or another store's: :class:`StartupError` saying which;
    - an encrypted store and no key: :class:`StartupError`, or (``locked_ok``, for tools that
      touch no vector, such as ``convergent keys``) a locked envelope;
    - a store holding data in clear, and a key: :class:`StartupError` (``convergent encrypt``
      seals it); a store whose encryption did not finish: :class:`StartupError` (run it again).
    """
    from convergent.server.storage import db
    from convergent.server.storage.keyring import Keyring

    if master is not None and keyring_file is None:
        raise StartupError("an encrypted store needs a keyring file (--keyring-file)")
    created = False
    with db.write_connection(engine) as conn, conn.begin():
        setting = read_setting(conn)
        if setting is None and master is not None:
            if _holds_sealable_rows(conn):
                raise StartupError("this store holds vectors in clear, and a master key was given: encrypt the store "
                                   "first with `convergent encrypt --data-dir DIR --master-key-file FILE` (or start "
                                   "without the key to serve it in clear)")
            assert keyring_file is not None
            setting, created = new_setting(Keyring(keyring_file, master, create=True).key_id, complete=True), True
            conn.execute(store_settings.insert().values(name=SETTING, value=json.dumps(setting)))
    if setting is None:
        envelope = Envelope()
    elif master is None:
        if not locked_ok:
            raise StartupError(f"this store is encrypted (keyring {setting['keyring_id']}) and no master key was given: "
                               "start with --master-key-file FILE or $CONVERGENT_MASTER_KEY")
        envelope = Envelope(None, encrypted=True)
    else:
        assert keyring_file is not None
        keyring = Keyring(keyring_file, master, create=created)
        if keyring.key_id != setting["keyring_id"]:
            raise StartupError(f"the keyring {keyring_file} (id {keyring.key_id}) is not this store's keyring (id "
                               f"{setting['keyring_id']}); give the store's own with --keyring-file")
        if not setting.get("complete", True):
            raise StartupError("this store's encryption was interrupted; finish it with `convergent encrypt --data-dir "
                               "DIR --master-key-file FILE` (it resumes where it stopped)")
        envelope = Envelope(keyring, encrypted=True)
    attach(engine, envelope)
    return envelope


def default_keyring_file(engine: sa.Engine) -> Path | None:
    """``keyring.json`` beside a SQLite file; None for other databases (give ``--keyring-file``)."""
    from convergent.server.storage.keyring import FILE_NAME

    database = engine.url.database
    return Path(database).parent / FILE_NAME if engine.dialect.name == "sqlite" and database else None


def new_setting(keyring_id: str, complete: bool) -> dict:
    """The ``encryption`` setting of a store sealed under the keyring ``keyring_id``."""
    return {"scheme": SCHEME, "keyring_id": keyring_id, "since": time.time(), "complete": complete}
