"""Envelope encryption of the vault's secrets (AES-256-GCM).

Theory of operation
-------------------
Each vault has one random 32-byte *data key*. It is never stored in the clear: the ``meta``
table holds it *wrapped* (AES-GCM encrypted) under a 32-byte *master key* that comes from the
environment, the OS keyring or a passphrase (see :mod:`interapp.vault.keys`). Changing the
master key therefore only re-wraps 60 bytes.

Every secret blob is sealed with the data key, a fresh random 12-byte nonce and *associated
data* naming the row it belongs to (``b"link:<id>"``, ``b"secret:<name>"``). GCM authenticates
both, so a flipped byte or a ciphertext moved to another row fails to open and raises
:class:`~interapp.errors.VaultTampered`. A master key that cannot unwrap the data key raises
:class:`~interapp.errors.VaultLocked` instead: that is a wrong key, not an attack.

Blob layout: ``b"\\x01" || nonce(12) || ciphertext+tag``.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from interapp.errors import VaultLocked, VaultTampered

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_VERSION: Final = b"\x01"
DEK_AAD: Final = b"interapp-vault-dek-v1"


def new_key() -> bytes:
    """A fresh random 32-byte key."""
    return os.urandom(KEY_BYTES)


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return _VERSION + nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != _VERSION:
        raise InvalidTag()
    return aead.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise VaultLocked(f"the {what} must be exactly {KEY_BYTES} bytes")


def wrap_data_key(master_key: bytes, data_key: bytes) -> bytes:
    """Encrypt ``data_key`` under ``master_key``."""
    _check_key(master_key, "vault key")
    _check_key(data_key, "data key")
    return _seal(AESGCM(master_key), data_key, DEK_AAD)


def unwrap_data_key(master_key: bytes, wrapped: bytes) -> bytes:
    """Decrypt the data key; a wrong master key raises :class:`VaultLocked`."""
    _check_key(master_key, "vault key")
    try:
        data_key = _open(AESGCM(master_key), wrapped, DEK_AAD)
    except InvalidTag:
        raise VaultLocked("the vault key does not open this vault") from None
    if len(data_key) != KEY_BYTES:
        raise VaultTampered("the wrapped data key has the wrong length")
    return data_key


def link_aad(link_id: str) -> bytes:
    """Associated data binding a credential blob to its link row."""
    return b"link:" + link_id.encode()


def secret_aad(name: str) -> bytes:
    """Associated data binding a secret blob to its name."""
    return b"secret:" + name.encode()


class Cipher:
    """Seals and opens blobs with the vault's data key."""

    __slots__ = ("_aead",)

    def __init__(self, data_key: bytes) -> None:
        _check_key(data_key, "data key")
        self._aead = AESGCM(data_key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``aad``."""
        return _seal(self._aead, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt ``blob``; any mismatch raises :class:`VaultTampered`."""
        try:
            return _open(self._aead, bytes(blob), aad)
        except InvalidTag:
            raise VaultTampered("a vault ciphertext failed verification") from None

    def __repr__(self) -> str:
        return "Cipher(<data key>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Cipher is not picklable")
