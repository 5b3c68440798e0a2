"""The host's session with its *local* application (an interapp server).

The local user's tokens live in the vault as one encrypted secret (``local:session``); the
client secret as ``local:client_secret``. Refreshing rotates the refresh token, so it is
single-flight and the new pair is saved before the access token is used.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from interapp.errors import ConfigError, NeedsReauth, OAuthError
from interapp.host.config import LocalApp
from interapp.plugins.interapp_server.api import ServerClient
from interapp.secret import Secret
from interapp.vault import Vault

SESSION = "local:session"
CLIENT_SECRET = "local:client_secret"
MARGIN = 30.0


class LocalSession:
    """Logs the user in to the local application and keeps that login fresh."""

    def __init__(self, local: LocalApp, vault: Vault) -> None:
        self.local = local
        self.vault = vault
        self.client = ServerClient(local.server, client_id=local.client_id,
                                   client_secret=vault.get_secret(CLIENT_SECRET))
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP pool."""
        await self.client.aclose()

    def _save(self, body: dict[str, object]) -> None:
        self.vault.put_secret(SESSION, Secret(json.dumps({
            "access_token": body["access_token"], "refresh_token": body["refresh_token"],
            "expires_at": body["expires_at"]})))

    def _load(self) -> dict[str, str] | None:
        raw = self.vault.get_secret(SESSION)
        if raw is None:
            return None
        data: dict[str, str] = json.loads(raw.reveal())
        return data

    async def login(self, username: str, password: Secret) -> dict[str, object]:
        """Password grant at the local application; stores the session; returns the profile."""
        try:
            body = await self.client.password_grant(username, password)
        except OAuthError as exc:
            raise NeedsReauth(f"the local application refused the login: {exc.message}") \
                from exc
        self._save(body)
        self.client.access_token = Secret(str(body["access_token"]))
        me: dict[str, object] = await self.client.api("GET", "/v1/me")
        self.local = replace(self.local, username=str(me["username"]))
        return me

    def logout(self) -> None:
        """Forget the local session."""
        self.vault.delete_secret(SESSION)

    async def access_token(self) -> Secret:
        """A live access token for the local application (refreshing it when needed)."""
        async with self._lock:
            data = self._load()
            if data is None:
                raise ConfigError("not logged in to the local application: run "
                                  "'interapp login USERNAME'")
            if float(data["expires_at"]) - MARGIN < time.time():
                try:
                    body = await self.client.refresh_grant(Secret(data["refresh_token"]))
                except OAuthError as exc:
                    raise NeedsReauth("the local login has expired or was revoked: run "
                                      "'interapp login USERNAME' again") from exc
                self._save(body)  # saved before use: a crash cannot lose the session
                data = {k: str(v) for k, v in body.items()}
            token = Secret(data["access_token"])
            self.client.access_token = token
            return token

    async def assertion_for(self, audience: str) -> Secret:
        """RFC 8693: an assertion about the local user, addressed to ``audience``."""
        token = await self.access_token()
        return await self.client.exchange_for_assertion(token, audience)
