"""Envelope encryption for biometric data. Each subject has a random data key; images and embeddings
are sealed with it (AES-256-GCM, the subject id as associated data); the data key is stored wrapped
by a master key (a local key from settings, or a KMS behind the same two methods). Erasure destroys
the wrapped data key, and with it every copy of the subject's images and embeddings at once."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reelfab.errors import PermanentError


class ErasedError(PermanentError):
    """The subject's key was destroyed: their biometric data can no longer be read."""


class DecryptError(PermanentError):
    pass


class KeyWrapper(Protocol):
    name: str

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, context: bytes) -> bytes: ...


class LocalMasterKey:
    """A 256-bit master key held by the registry process (from REELFAB_CONSENT_MASTER_KEY)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"the master key must be 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.name = "local:" + hashlib.sha256(key).hexdigest()[:12]

    @classmethod
    def from_text(cls, text: str) -> LocalMasterKey:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except ValueError as exc:
            raise ValueError(f"REELFAB_CONSENT_MASTER_KEY must be base64 of 32 random bytes: {exc}") from None

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> LocalMasterKey:
        if not path.exists():
            if not create:
                raise ValueError(f"no master key at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(os.urandom(32)).decode())
        return cls.from_text(path.read_text())

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], context)
        except InvalidTag:
            raise DecryptError("a wrapped key does not open under this master key (wrong key or altered)") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(data_key: bytes, plaintext: bytes, context: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, context)


def unseal(data_key: bytes, blob: bytes, context: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(blob[:12], blob[12:], context)
    except InvalidTag:
        raise DecryptError("sealed data does not open with this key (wrong subject or altered)") from None
