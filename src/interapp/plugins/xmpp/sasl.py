"""SASL SCRAM with stored keys, for slixmpp.

slixmpp's own SCRAM (``slixmpp.util.sasl.mechanisms.SCRAM``) only knows the password: it computes
``SaltedPassword = Hi(password, salt, i)`` during every login. RFC 5802 needs far less on the
client side: ``ClientKey = HMAC(SaltedPassword, "Client Key")`` to build the proof and
``ServerKey = HMAC(SaltedPassword, "Server Key")`` to check the server's signature (mutual
authentication). :class:`StoredKeySCRAM` is slixmpp's SCRAM with one change: when the
credentials carry ``scram_client_key`` / ``scram_server_key`` (and the salt and iteration count
they were derived with) it uses them instead of the password; when they do not, it derives them
from the password exactly as before and keeps them in :attr:`StoredKeySCRAM.derived`, so the
caller can store the keys (never the password) after the first login.

The keys are bound to the salt: a password change on the server picks a new salt, and the
mechanism then aborts at once (:attr:`StoredKeySCRAM.stale`) instead of sending a useless proof.

:func:`install` puts the class in slixmpp's mechanism registry in place of ``SCRAM`` for every
``SCRAM-*`` name. Without the extra credentials it behaves exactly like the original, so other
slixmpp users in the same process see no difference.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import b64decode, b64encode
from dataclasses import dataclass
from typing import Any

from slixmpp.util.sasl import client as sasl_client
from slixmpp.util.sasl import mechanisms as sasl_mechanisms
from slixmpp.util.sasl.client import SASLCancelled as _SASLCancelled

_Cancelled: Any = _SASLCancelled  # slixmpp's class is untyped

#: Extra credential names the mechanism accepts (base64 text, iterations as decimal text).
KEY_FIELDS = ("scram_salt", "scram_iterations", "scram_client_key", "scram_server_key")


@dataclass(frozen=True)
class ScramKeys:
    """What a SCRAM login needs instead of the password (bound to ``salt`` + ``iterations``)."""

    mechanism: str  # e.g. "SCRAM-SHA-1" (without -PLUS)
    salt: bytes
    iterations: int
    client_key: bytes
    server_key: bytes

    def as_credentials(self) -> dict[str, str]:
        """The slixmpp ``credentials`` entries for :class:`StoredKeySCRAM`."""
        return {"scram_salt": b64encode(self.salt).decode(),
                "scram_iterations": str(self.iterations),
                "scram_client_key": b64encode(self.client_key).decode(),
                "scram_server_key": b64encode(self.server_key).decode()}


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


class StoredKeySCRAM(sasl_mechanisms.SCRAM):
    """slixmpp's SCRAM, able to log in with stored ClientKey/ServerKey (module docstring)."""

    optional_credentials = set(sasl_mechanisms.SCRAM.optional_credentials) | set(KEY_FIELDS)

    derived: ScramKeys | None
    stale: bool

    def setup(self, name: str) -> None:
        """As SCRAM's, plus the fields this class reports back."""
        self.derived = None
        self.stale = False
        super().setup(name)  # type: ignore[no-untyped-call]

    def _cred(self, name: str) -> bytes:
        value = self.credentials.get(name) or b""
        return value if isinstance(value, bytes) else str(value).encode()

    def process_2(self, challenge: bytes) -> bytes:
        """Answer the server-first message with the proof (RFC 5802 §3)."""
        self.step = 2
        data = self.parse(challenge)
        if b"m" in data:
            raise _Cancelled("Received reserved attribute.")
        salt = b64decode(data[b"s"])
        iterations = int(data[b"i"])
        nonce = data[b"r"]
        if nonce[:len(self.cnonce)] != self.cnonce:
            raise _Cancelled("Invalid nonce")

        cbind_data = b""
        if self.use_channel_binding and self.credentials["channel_binding"]:
            cbind_data = self.credentials["channel_binding"]
        cbind_input = self.gs2_header + cbind_data
        channel_binding = b"c=" + b64encode(cbind_input).replace(b"\n", b"")
        client_final_without_proof = channel_binding + b",r=" + nonce

        stored_client_key = self._cred("scram_client_key")
        if stored_client_key:
            if (b64decode(self._cred("scram_salt")) != salt
                    or int(self._cred("scram_iterations") or b"0") != iterations):
                self.stale = True
                raise _Cancelled("stored SCRAM keys belong to another salt: the password "
                                    "was changed on the server")
            client_key = b64decode(stored_client_key)
            server_key = b64decode(self._cred("scram_server_key"))
        else:
            salted = hashlib.pbkdf2_hmac(self._digest().name, self._cred("password"), salt,
                                         iterations)
            client_key = self.HMAC(salted, b"Client Key")
            server_key = self.HMAC(salted, b"Server Key")
        base = self.name[:-5] if self.name.endswith("-PLUS") else self.name
        self.derived = ScramKeys(base, salt, iterations, client_key, server_key)

        stored_key = self._digest(client_key).digest()
        auth_message = (self.client_first_message_bare + b"," + challenge + b","
                        + client_final_without_proof)
        client_signature = self.HMAC(stored_key, auth_message)
        client_proof = _xor(client_key, client_signature)
        self.server_signature = self.HMAC(server_key, auth_message)
        return bytes(client_final_without_proof + b",p=" + b64encode(client_proof))

    @property
    def _digest(self) -> Any:
        """The hashlib constructor of the mechanism's hash (set by SCRAM's setup)."""
        return self.hash

    def HMAC(self, key: bytes, msg: bytes) -> bytes:
        """HMAC with the mechanism's hash (slixmpp's method name)."""
        return hmac.new(key, msg, self._digest).digest()


def install() -> None:
    """Use :class:`StoredKeySCRAM` for every ``SCRAM-*`` mechanism slixmpp knows (idempotent)."""
    registry: dict[str, Any] = sasl_client.MECHANISMS
    for name, cls in list(registry.items()):
        if cls is sasl_mechanisms.SCRAM:
            registry[name] = StoredKeySCRAM


__all__ = ["KEY_FIELDS", "ScramKeys", "StoredKeySCRAM", "install"]
