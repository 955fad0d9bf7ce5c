"""The master key and the key-provider interface: what wraps the tenants' data keys, kept out of
the database.

A :class:`KeyProvider` wraps and unwraps a tenant's data key under that tenant's key-encryption
key, and can destroy the latter (crypto-shredding); the database only ever holds wrapped data
keys (``schema.data_keys``). The provider of this release is the
:class:`~convergent.server.storage.keyring.Keyring`: tenant keys in a file, sealed by one 256-bit
:class:`LocalMasterKey` read from a file (``--master-key-file``, which must not be readable by
group or others, as ssh demands of private keys) or from the environment
(``CONVERGENT_MASTER_KEY``). A KMS or Vault provider implements the same four members (a KMS key
per tenant; destroying it is the shredding).

Wrapping is AES-256-GCM with the tenant and the data key's version as associated data: a wrapped
key copied to another tenant or version does not unwrap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from convergent.server.errors import StartupError

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
WRAP_FORMAT = b"\x01"  # first byte of a secret sealed by a local master key (AES-256-GCM)
MASTER_KEY_ENV = "CONVERGENT_MASTER_KEY"


class KeyProvider(Protocol):
    """Wraps tenants' data keys with per-tenant key-encryption keys that never live in the database."""

    @property
    def key_id(self) -> str:
        """Names the provider's keys (safe to store and log; reveals nothing of them)."""
        ...

    def wrap(self, tenant: str, version: int, data_key: bytes) -> bytes:
        """``data_key`` (32 bytes) wrapped for (tenant, version)."""
        ...

    def unwrap(self, tenant: str, version: int, wrapped: bytes) -> bytes:
        """The data key of (tenant, version); :class:`WrongKey` if it was not wrapped for them,
        :class:`TenantShredded` if the tenant's key-encryption key was destroyed."""
        ...

    def shred(self, tenant: str) -> None:
        """Destroy the tenant's key-encryption key: every data key wrapped for it, in the store and
        in every backup of it, stops opening."""
        ...


class WrongKey(StartupError):
    """A wrapped key does not open with the key-encryption key given."""


class MasterKeyChanged(WrongKey):
    """The keyring was sealed again by another master key since this process opened it (a
    rotation while serving): restart with the new key."""


class TenantShredded(Exception):
    """The tenant's key-encryption key was destroyed: its data keys cannot be unwrapped."""


def _context(tenant: str, version: int) -> bytes:
    name = tenant.encode()
    return b"convergent data key\0" + len(name).to_bytes(4, "big") + name + int(version).to_bytes(8, "big")


def fingerprint(kek: bytes) -> str:
    """16 hex digits naming a key (a hash of it, not the key)."""
    return hashlib.sha256(b"convergent key id\0" + kek).hexdigest()[:16]


class LocalMasterKey:
    """A 32-byte master key held in this process (from a file or the environment): seals and
    opens small secrets (the keyring's tenant keys) with AES-256-GCM."""

    def __init__(self, kek: bytes, source: str) -> None:
        if len(kek) != KEY_BYTES:
            raise StartupError(f"{source} holds {len(kek)} bytes of key; a master key is {KEY_BYTES} bytes "
                               "(create one with `convergent keygen --out FILE`)")
        self._aead, self.source, self._id = AESGCM(kek), source, fingerprint(kek)

    @property
    def key_id(self) -> str:
        return self._id

    def seal(self, secret: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return WRAP_FORMAT + nonce + self._aead.encrypt(nonce, secret, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """The secret; :class:`InvalidTag` if this key did not seal it for ``context``."""
        if sealed[:1] != WRAP_FORMAT:
            raise InvalidTag
        return self._aead.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], context)

    def __repr__(self) -> str:  # never the key
        return f"LocalMasterKey(id={self.key_id}, from {self.source})"


def parse_key(text: str, source: str) -> bytes:
    """A master key written as 64 hex digits or as base64 of 32 bytes (surrounding space ignored)."""
    text = text.strip()
    try:
        if len(text) == 2 * KEY_BYTES:
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise StartupError(f"{source} is not a master key: write 32 random bytes as base64 or 64 hex digits "
                           "(`convergent keygen --out FILE` makes one)") from None


def read_key_file(path: Path) -> LocalMasterKey:
    """The master key in ``path``; :class:`StartupError` if it is missing, unreadable, malformed,
    or readable by group or others (chmod 600 it)."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StartupError(f"the master key file {path} is open to group or others (mode {stat.filemode(mode)}); "
                               f"only its owner may read it: chmod 600 {path}")
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise StartupError(f"the master key file {path} does not exist (create one with `convergent keygen --out "
                           f"{path}`, and keep a copy away from the data and its backups)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read the master key file {path}: {exc}") from None
    return LocalMasterKey(parse_key(text, f"the master key file {path}"), f"file {path}")


def from_environment(value: str) -> LocalMasterKey:
    return LocalMasterKey(parse_key(value, f"${MASTER_KEY_ENV}"), f"${MASTER_KEY_ENV}")


def load(key_file: Path | None, key_value: str | None) -> LocalMasterKey | None:
    """The master key the settings name (a file, else the environment value), or None: no encryption."""
    if key_file is not None and key_value:
        raise StartupError(f"give the master key once: --master-key-file or ${MASTER_KEY_ENV}, not both")
    if key_file is not None:
        return read_key_file(key_file)
    return from_environment(key_value) if key_value else None


def write_new_key(path: Path) -> LocalMasterKey:
    """Create ``path`` (which must not exist) holding a new random master key, mode 0600."""
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(base64.b64encode(key).decode() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return LocalMasterKey(key, f"file {path}")
