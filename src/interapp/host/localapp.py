"""The host's session with its *local* application (an interapp server).

The local user's tokens live in the vault as one encrypted secret; the client secret beside it
(names in :mod:`._names`). Refreshing rotates the refresh token, so it is single-flight and the
new pair is saved before the access token is used.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from interapp.client import ServerClient
from interapp.errors import NeedsReauth, NotSignedIn, OAuthError
from interapp.host._names import LOCAL_CLIENT_SECRET, LOCAL_SESSION
from interapp.host.config import LocalApp
from interapp.secret import Secret
from interapp.vault.aio import AsyncVault

MARGIN = 30.0


class LocalSession:
    """Logs the user in to the local application and keeps that login fresh."""

    def __init__(self, local: LocalApp, vault: AsyncVault, client_secret: Secret | None) -> None:
        self.local = local
        self.vault = vault
        self.client = ServerClient(local.server, client_id=local.client_id,
                                   client_secret=client_secret)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, local: LocalApp, vault: AsyncVault) -> LocalSession:
        """A session for ``local``, with the client secret read from the vault."""
        return cls(local, vault, await vault.get_secret(LOCAL_CLIENT_SECRET))

    async def aclose(self) -> None:
        """Close the HTTP pool."""
        await self.client.aclose()

    async def _save(self, body: dict[str, object]) -> None:
        await self.vault.put_secret(LOCAL_SESSION, Secret(json.dumps({
            "access_token": body["access_token"], "refresh_token": body["refresh_token"],
            "expires_at": body["expires_at"]})))

    async def _load(self) -> dict[str, str] | None:
        raw = await self.vault.get_secret(LOCAL_SESSION)
        if raw is None:
            return None
        data: dict[str, str] = json.loads(raw.reveal())
        return data

    async def has_session(self) -> bool:
        """Whether tokens of a signed-in user are stored."""
        return await self.vault.get_secret(LOCAL_SESSION) is not None

    async def login(self, username: str, password: Secret) -> dict[str, object]:
        """Password grant at the local application; stores the session; returns the profile."""
        try:
            body = await self.client.password_grant(username, password)
        except OAuthError as exc:
            raise NeedsReauth(f"the local application refused the sign-in: {exc.message}") \
                from exc
        await self._save(body)
        self.client.access_token = Secret(str(body["access_token"]))
        me: dict[str, object] = await self.client.api("GET", "/v1/me")
        self.local = replace(self.local, username=str(me["username"]))
        return me

    async def logout(self) -> None:
        """Forget the local session."""
        await self.vault.delete_secret(LOCAL_SESSION)

    async def access_token(self) -> Secret:
        """A live access token for the local application (refreshing it when needed)."""
        async with self._lock:
            data = await self._load()
            if data is None:
                raise NotSignedIn("nobody is signed in to the local application")
            if float(data["expires_at"]) - MARGIN < time.time():
                try:
                    body = await self.client.refresh_grant(Secret(data["refresh_token"]))
                except OAuthError as exc:
                    raise NeedsReauth("the sign-in at the local application has expired or "
                                      "was revoked: sign in again") from exc
                await self._save(body)  # saved before use: a crash cannot lose the session
                data = {k: str(v) for k, v in body.items()}
            token = Secret(data["access_token"])
            self.client.access_token = token
            return token

    async def assertion_for(self, audience: str) -> Secret:
        """RFC 8693: an assertion about the local user, addressed to ``audience``."""
        token = await self.access_token()
        return await self.client.exchange_for_assertion(token, audience)
