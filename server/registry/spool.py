"""Where an upload waits while it streams in: memory, then a temporary file; encrypted when the
store is (an ephemeral AES-256-CTR key that only this process ever holds, so a spooled upload
never reaches a disk in clear)."""

from __future__ import annotations

import secrets
import tempfile
from types import TracebackType

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes


class Spool:
    """Write bytes, :meth:`rewind`, read them back in order (any read sizes)."""

    def __init__(self, memory_bytes: int, encrypted: bool) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=memory_bytes)
        self._cipher = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(secrets.token_bytes(16))) if encrypted else None
        self._encrypt = self._cipher.encryptor() if self._cipher else None
        self._decrypt: CipherContext | None = None

    def write(self, data: bytes) -> None:
        self._file.write(self._encrypt.update(data) if self._encrypt else data)

    def rewind(self) -> None:
        self._file.seek(0)
        self._decrypt = self._cipher.decryptor() if self._cipher else None

    def read(self, size: int) -> bytes:
        data = self._file.read(size)
        return self._decrypt.update(data) if self._decrypt else data

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._file.close()
