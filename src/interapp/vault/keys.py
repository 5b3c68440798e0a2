"""Where the vault's master key comes from.

Theory of operation
-------------------
:func:`resolve` asks three :class:`KeySource` objects in turn and takes the first key offered:

1. :class:`EnvKey` — ``INTERAPP_VAULT_KEY``. If it is base64/base64url of exactly 32 bytes it is
   the key itself; any other value is a passphrase and goes through the KDF (3).
2. :class:`KeyringKey` — the OS keyring (service ``"interapp"``, user = the vault's location).
   A headless machine has no backend (``keyring``'s *fail*/*null* backend, or calls raise); the
   source then quietly offers nothing. When a *new* vault finds a working keyring it stores a
   fresh random key there. ``INTERAPP_VAULT_KEYRING=0`` turns the keyring off.
3. :class:`PassphraseKey` — a callback that asks the user.

Passphrases are stretched with argon2id (t=3, m=64 MiB, p=1) and the per-vault 16-byte salt
kept, with the parameters, in the vault's ``meta`` table (:class:`KdfParams`). Derivation takes
a noticeable fraction of a second, so results are cached per process, keyed by a hash of
passphrase, salt and parameters. No source ever prints or prompts by itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from interapp.errors import VaultLocked

ENV_VAR: Final = "INTERAPP_VAULT_KEY"
KEYRING_ENV_VAR: Final = "INTERAPP_VAULT_KEYRING"
KEYRING_SERVICE: Final = "interapp"
KEY_BYTES: Final = 32

_kdf_cache: dict[str, bytes] = {}
_kdf_lock = threading.Lock()


@dataclass(frozen=True)
class KdfParams:
    """argon2id parameters and salt, as stored in the vault's ``meta`` table."""

    salt: bytes
    time_cost: int = 3
    memory_cost: int = 65536
    parallelism: int = 1
    hash_len: int = KEY_BYTES

    @classmethod
    def new(cls) -> KdfParams:
        """Default parameters with a fresh random 16-byte salt."""
        return cls(salt=os.urandom(16))

    def to_json(self) -> str:
        """The ``meta`` value."""
        return json.dumps({
            "alg": "argon2id", "salt": base64.b64encode(self.salt).decode(),
            "time_cost": self.time_cost, "memory_cost": self.memory_cost,
            "parallelism": self.parallelism, "hash_len": self.hash_len,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KdfParams:
        """Parse a ``meta`` value written by :meth:`to_json`."""
        doc = json.loads(text)
        if doc.get("alg") != "argon2id":
            raise VaultLocked(f"unsupported vault KDF {doc.get('alg')!r}")
        return cls(salt=base64.b64decode(doc["salt"]), time_cost=int(doc["time_cost"]),
                   memory_cost=int(doc["memory_cost"]), parallelism=int(doc["parallelism"]),
                   hash_len=int(doc["hash_len"]))


def derive_key(passphrase: str, params: KdfParams) -> bytes:
    """argon2id(passphrase, salt) → 32 bytes, cached per process."""
    tag = hashlib.sha256(
        passphrase.encode() + b"\0" + params.salt + b"\0" + params.to_json().encode()
    ).hexdigest()
    with _kdf_lock:
        cached = _kdf_cache.get(tag)
        if cached is not None:
            return cached
        from argon2.low_level import Type, hash_secret_raw

        key = hash_secret_raw(passphrase.encode(), params.salt, time_cost=params.time_cost,
                              memory_cost=params.memory_cost, parallelism=params.parallelism,
                              hash_len=params.hash_len, type=Type.ID)
        _kdf_cache[tag] = key
        return key


def decode_raw_key(value: str) -> bytes | None:
    """The 32 bytes encoded (base64 or base64url, padding optional) in ``value``, else ``None``."""
    text = "".join(value.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_BYTES else None


def encode_key(key: bytes) -> str:
    """A key as unpadded base64url (the form ``INTERAPP_VAULT_KEY`` accepts)."""
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


@dataclass(frozen=True)
class KeyRequest:
    """What a key source gets to know about the vault being opened."""

    kdf: KdfParams
    location: str
    creating: bool


class KeySource(Protocol):
    """One place a master key may come from."""

    name: str

    def get(self, request: KeyRequest) -> tuple[bytes, str] | None:
        """``(key, source name)``, or ``None`` when this source has nothing to offer."""
        ...


class EnvKey:
    """``INTERAPP_VAULT_KEY``: a raw base64 key, or else a passphrase."""

    name = "env"

    def __init__(self, env: Mapping[str, str]) -> None:
        self._value = env.get(ENV_VAR, "")

    def get(self, request: KeyRequest) -> tuple[bytes, str] | None:
        """The raw key, or the key derived from the passphrase; ``None`` if unset."""
        if not self._value:
            return None
        raw = decode_raw_key(self._value)
        if raw is not None:
            return raw, "env-raw"
        return derive_key(self._value, request.kdf), "env-passphrase"


def _keyring_backend() -> object | None:
    """The usable keyring backend, or ``None`` (no backend, fail/null backend, or error)."""
    try:
        import keyring
        import keyring.backends.fail
        import keyring.backends.null

        backend = keyring.get_keyring()
        dead = (keyring.backends.fail.Keyring, keyring.backends.null.Keyring)
        return None if isinstance(backend, dead) else backend
    except Exception:  # any import or backend probing failure means "no keyring"
        return None


class KeyringKey:
    """The OS keyring; silently absent on headless machines."""

    name = "keyring"

    def __init__(self, env: Mapping[str, str]) -> None:
        self._enabled = env.get(KEYRING_ENV_VAR, "1").lower() not in {"0", "no", "off", "false"}

    def get(self, request: KeyRequest) -> tuple[bytes, str] | None:
        """The stored key; for a new vault a fresh key is stored if the keyring works."""
        if not self._enabled or _keyring_backend() is None:
            return None
        import keyring

        try:
            stored = keyring.get_password(KEYRING_SERVICE, request.location)
            if stored:
                raw = decode_raw_key(stored)
                return None if raw is None else (raw, "keyring")
            if not request.creating:
                return None
            key = os.urandom(KEY_BYTES)
            keyring.set_password(KEYRING_SERVICE, request.location, encode_key(key))
            return key, "keyring"
        except Exception:  # a locked or broken keyring is the same as none
            return None


class PassphraseKey:
    """A callback that asks the user for a passphrase."""

    name = "passphrase"

    def __init__(self, callback: Callable[[], str] | None) -> None:
        self._callback = callback

    def get(self, request: KeyRequest) -> tuple[bytes, str] | None:
        """The key derived from the answered passphrase; ``None`` without callback or answer."""
        if self._callback is None:
            return None
        passphrase = self._callback()
        if not passphrase:
            return None
        return derive_key(passphrase, request.kdf), "passphrase"


def default_sources(env: Mapping[str, str],
                    passphrase: Callable[[], str] | None) -> list[KeySource]:
    """Environment, keyring, passphrase — in that order."""
    return [EnvKey(env), KeyringKey(env), PassphraseKey(passphrase)]


def resolve(request: KeyRequest, sources: list[KeySource]) -> tuple[bytes, str]:
    """``(key, source name)`` from the first source that offers one, else :class:`VaultLocked`."""
    for source in sources:
        found = source.get(request)
        if found is not None:
            return found
    raise VaultLocked(
        f"no vault key: set {ENV_VAR} (a passphrase, or base64 of 32 random bytes), "
        "store one in the OS keyring, or give a passphrase"
    )


def resolve_master_key(vault_meta: Mapping[str, str], env: Mapping[str, str],
                       passphrase_callback: Callable[[], str] | None, *,
                       location: str = "", creating: bool = False) -> bytes:
    """The master key for a vault whose ``meta`` rows are ``vault_meta`` (needs ``"kdf"``)."""
    request = KeyRequest(KdfParams.from_json(vault_meta["kdf"]), location, creating)
    return resolve(request, default_sources(env, passphrase_callback))[0]
