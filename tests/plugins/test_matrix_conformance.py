"""The ``matrix`` plug-in passes the conformance kit against a real Synapse.

One Synapse per session (``matrix_synapse``, from :mod:`interapp.testing.synapse`), trusting the
kit's local application (``interapp_home``) for JWT login; new users per test. The harness
drives Synapse with matrix-nio and the admin API — an independent client, so the plug-in is not
only ever checked against itself.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from nio import AsyncClient, JoinResponse, RoomCreateResponse, RoomPreset

from interapp.secret import Secret
from interapp.testing import Account, Harness, HomeApp, PluginConformance, Target
from interapp.testing.synapse import SynapseServer

pytest_plugins = ["interapp.testing.synapse"]


class MatrixHarness(Harness):
    """A real Synapse, driven for the kit."""

    plugin = "matrix"

    def __init__(self, server: SynapseServer) -> None:
        self.server = server
        self.tokens: dict[str, tuple[str, str]] = {}  # MXID → (device id, access token)

    async def target(self) -> tuple[Target, Secret | None]:
        return Target("t", "matrix", self.server.url), None

    async def shared_target(self, home: HomeApp) -> tuple[Target, Secret | None] | None:
        # the session's Synapse trusts home's issuer (jwt_config); audience = its URL
        return Target("shared", "matrix", self.server.url, account_system="shared"), None

    async def new_account(self) -> Account:
        local, password = f"alice_{secrets.token_hex(5)}", secrets.token_urlsafe(12)
        data = await self.server.aregister(local, password)
        self.tokens[data["user_id"]] = (data["device_id"], data["access_token"])
        return Account(username=local, password=password, handle=self.server.user_id(local))

    def _nio(self, account: Account) -> AsyncClient:
        client = AsyncClient(self.server.url, account.seen_as)
        device, token = self.tokens[account.seen_as]
        client.restore_login(account.seen_as, device, token)
        return client

    async def make_buddies(self, a: Account, b: Account) -> None:
        ca, cb = self._nio(a), self._nio(b)
        try:
            room = await ca.room_create(is_direct=True, invite=[b.seen_as],
                                        preset=RoomPreset.trusted_private_chat)
            assert isinstance(room, RoomCreateResponse), room
            joined = await cb.join(room.room_id)
            assert isinstance(joined, JoinResponse), joined
        finally:
            await ca.close()
            await cb.close()

    async def change_password(self, account: Account) -> Account:
        new = secrets.token_urlsafe(12)
        await self.server.admin("POST", f"/v1/reset_password/{account.seen_as}",
                                {"new_password": new, "logout_devices": True})
        self.tokens.pop(account.seen_as, None)
        return Account(account.username, new, account.handle)

    async def restart_server(self) -> None:
        await asyncio.to_thread(self.server.restart)


class TestMatrixPlugin(PluginConformance):
    @pytest.fixture
    def harness(self, matrix_synapse: SynapseServer) -> Harness:
        return MatrixHarness(matrix_synapse)
