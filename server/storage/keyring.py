"""The keyring: one random key-encryption key per tenant, sealed by the master key, in a small file
beside the data (``DATA_DIR/keyring.json`` unless ``--keyring-file``), never in the database.

Key hierarchy: master key (a file or environment variable, elsewhere) -> tenant key (here, sealed
by the master key with the keyring's id and the tenant as associated data) -> data keys (in the
database's ``data_keys``, wrapped by the tenant key) -> sealed vectors and maps.

Why a file apart from the database: a backup of the database holds the wrapped data keys, so a
tenant whose key is deleted from the database alone would still be readable from every older
backup. Deleting the tenant's key here (:meth:`Keyring.shred`) makes its data keys unreadable
everywhere at once: crypto-shredding. Keep copies of the keyring with the master key, apart from the
data backups; a copy older than a shredding still holds that tenant's key.

The file is JSON, rewritten whole (a temporary file, fsync, rename, fsync of the folder: a crash
leaves the old keyring or the new one) under an exclusive ``flock`` of ``keyring.json.lock`` so that
a server and an offline command (``convergent tenant delete``, ``convergent rotate-master-key``)
never lose each other's changes. A tenant key is created on the tenant's first sealed write.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from convergent.server.errors import StartupError
from convergent.server.storage.master_keys import (
    KEY_BYTES,
    NONCE_BYTES,
    LocalMasterKey,
    MasterKeyChanged,
    TenantShredded,
    WrongKey,
    _context,
)

FORMAT = "convergent-keyring"
FORMAT_VERSION = 1
FILE_NAME = "keyring.json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _tenant_context(keyring_id: str, tenant: str) -> bytes:
    return f"convergent tenant key\0{keyring_id}\0".encode() + tenant.encode()


class Keyring:
    """Tenant key-encryption keys sealed by a master key: the :class:`KeyProvider` of this release."""

    def __init__(self, path: Path, master: LocalMasterKey, create: bool = False) -> None:
        """Open the keyring at ``path`` (``create``: make a new one if there is none)."""
        self.path, self.master = path, master
        self._lock = threading.Lock()
        self._tenants: dict[str, AESGCM] = {}
        self._contents = self._read() if path.exists() else None
        if self._contents is None:
            if not create:
                raise StartupError(f"the keyring {path} does not exist: the store's tenant keys are in it. Restore it "
                                   "from where it was copied (with the master key), or give its place with --keyring-file")
            with self._locked():
                if not path.exists():
                    check_id = secrets.token_hex(8)
                    self._write({"format": FORMAT, "format_version": FORMAT_VERSION, "keyring_id": check_id,
                                 "master_key_id": master.key_id, "created_at": time.time(),
                                 "check": _b64(master.seal(b"convergent keyring", _tenant_context(check_id, ""))),
                                 "tenants": {}, "shredded": {}})
                self._contents = self._read()

    # ------------------------------------------------------------------ the file
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            contents = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot read the keyring {self.path}: {exc}") from None
        if not isinstance(contents, dict) or contents.get("format") != FORMAT or contents.get("format_version") != FORMAT_VERSION:
            raise StartupError(f"{self.path} is not a convergent keyring of format {FORMAT_VERSION}")
        try:
            check = base64.b64decode(contents["check"], validate=True)
            keyring_id, tenants, shredded = str(contents["keyring_id"]), contents["tenants"], contents["shredded"]
            if not isinstance(tenants, dict) or not isinstance(shredded, dict):
                raise ValueError("tenants and shredded must be objects")
        except (KeyError, ValueError, TypeError) as exc:
            raise StartupError(f"the keyring {self.path} is damaged ({exc}): restore it from its copy") from None
        try:
            self.master.open(check, _tenant_context(keyring_id, ""))
        except InvalidTag:
            known = getattr(self, "_contents", None)  # None while the constructor reads the file
            changed = known is not None and known.get("keyring_id") == keyring_id
            kind = MasterKeyChanged if changed else WrongKey
            raise kind(f"the keyring {self.path} is sealed by master key id {contents.get('master_key_id')}, not by the "
                       f"master key {'this process holds' if changed else 'given'} (id {self.master.key_id}, from "
                       f"{self.master.source}){'; restart with the new master key' if changed else ''}") from None
        return contents

    def _write(self, contents: dict) -> None:
        """Replace the file atomically and durably (the caller holds the lock)."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(contents, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    # ------------------------------------------------------------------ KeyProvider
    @property
    def key_id(self) -> str:
        """The keyring's id: recorded in the store it serves, kept across master-key rotations."""
        assert self._contents is not None
        return str(self._contents["keyring_id"])

    def _tenant_key(self, tenant: str, create: bool) -> AESGCM:
        with self._lock:
            if tenant in self._tenants:
                return self._tenants[tenant]
            contents = self._contents
            assert contents is not None
            if tenant not in contents["tenants"]:
                contents = self._contents = self._read()  # another process may have added it
            if tenant not in contents["tenants"]:
                if not create:  # never had one, or it was shredded
                    raise TenantShredded(tenant)
                with self._locked():
                    contents = self._contents = self._read()
                    if tenant not in contents["tenants"]:
                        sealed = self.master.seal(secrets.token_bytes(KEY_BYTES), _tenant_context(self.key_id, tenant))
                        contents["tenants"][tenant] = {"key": _b64(sealed), "created_at": time.time()}
                        contents["shredded"].pop(tenant, None)
                        self._write(contents)
            try:
                key = self.master.open(base64.b64decode(contents["tenants"][tenant]["key"]),
                                       _tenant_context(self.key_id, tenant))
            except InvalidTag:
                raise WrongKey(f"the key of tenant {tenant!r} in the keyring {self.path} does not open with the master "
                               "key: the keyring was changed") from None
            self._tenants[tenant] = AESGCM(key)
            return self._tenants[tenant]

    def wrap(self, tenant: str, version: int, data_key: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return b"\x02" + nonce + self._tenant_key(tenant, create=True).encrypt(nonce, data_key, _context(tenant, version))

    def unwrap(self, tenant: str, version: int, wrapped: bytes) -> bytes:
        if wrapped[:1] != b"\x02":
            raise WrongKey(f"the data key {version} of tenant {tenant!r} is wrapped in a format this convergent does not know")
        aead = self._tenant_key(tenant, create=False)
        try:
            return aead.decrypt(wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :], _context(tenant, version))
        except InvalidTag:
            raise WrongKey(f"the data key {version} of tenant {tenant!r} does not open with the tenant's key in the "
                           f"keyring {self.path}: it was wrapped by another keyring, or changed") from None

    def shred(self, tenant: str) -> None:
        with self._lock, self._locked():
            contents = self._contents = self._read()
            contents["tenants"].pop(tenant, None)
            contents["shredded"][tenant] = time.time()
            self._write(contents)
            self._tenants.pop(tenant, None)

    def rewrap(self, new_master: LocalMasterKey) -> Keyring:
        """This keyring's tenant keys sealed by ``new_master`` instead (same keyring id): the
        master-key rotation. Returns the keyring opened with the new master key."""
        with self._lock, self._locked():
            contents = self._read()
            for tenant, entry in contents["tenants"].items():
                key = self.master.open(base64.b64decode(entry["key"]), _tenant_context(self.key_id, tenant))
                entry["key"] = _b64(new_master.seal(key, _tenant_context(self.key_id, tenant)))
            contents["master_key_id"] = new_master.key_id
            contents["check"] = _b64(new_master.seal(b"convergent keyring", _tenant_context(self.key_id, "")))
            contents["rotated_at"] = time.time()
            self._write(contents)
        return Keyring(self.path, new_master)

    def tenants(self) -> list[str]:
        with self._lock:
            self._contents = self._read()
            return sorted(self._contents["tenants"])
