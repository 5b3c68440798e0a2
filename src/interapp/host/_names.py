"""Names of the host's own secrets in the vault (private: faces never read the vault)."""

from __future__ import annotations

from typing import Final

LOCAL_CLIENT_SECRET: Final = "local:client_secret"
LOCAL_SESSION: Final = "local:session"


def target_client_secret(target: str) -> str:
    """The vault name of a target's client secret."""
    return f"target:{target}:client_secret"


def cursor(target: str, local_account: str | None) -> str:
    """The vault name of the last event cursor seen on ``target`` for ``local_account``."""
    return f"cursor:{target}:{local_account}"


def link_way(link_id: str) -> str:
    """The vault name of the way link ``link_id`` was made (or last repaired) with."""
    return f"link_way:{link_id}"
