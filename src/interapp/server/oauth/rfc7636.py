"""RFC 7636: Proof Key for Code Exchange, ``S256`` only (``plain`` is refused, RFC 9700 §2.1.1).

The authorization request carries ``code_challenge = BASE64URL(SHA256(code_verifier))``; the
token request carries the verifier, 43-128 characters of ``[A-Za-z0-9-._~]`` (§4.1).
"""

from __future__ import annotations

import base64
import hashlib
import re

from interapp.errors import InvalidGrant, InvalidRequest
from interapp.secret import constant_time_equals

S256 = "S256"
METHODS = [S256]
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # a SHA-256 in unpadded base64url


def check_challenge(challenge: str | None, method: str | None) -> str:
    """The ``code_challenge`` of an authorization request; InvalidRequest unless S256."""
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE, RFC 7636, method S256)")
    if (method or "plain") != S256:
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge must be 43 base64url characters (S256)")
    return challenge


def challenge_of(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify(verifier: str | None, challenge: str) -> None:
    """InvalidGrant unless ``verifier`` belongs to ``challenge`` (§4.6)."""
    if not verifier:
        raise InvalidRequest("missing parameter: code_verifier (PKCE)")
    if not _VERIFIER.match(verifier):
        raise InvalidGrant("the code_verifier is not 43-128 unreserved characters")
    if not constant_time_equals(challenge_of(verifier), challenge):
        raise InvalidGrant("the code_verifier does not match the code_challenge")
