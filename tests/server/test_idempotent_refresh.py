"""Rotation with an idempotency key: the same retry gets the same pair; anything else is re-use."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from interapp.secret import Secret
from interapp.server import accounts, passwords
from interapp.server.embedded import EmbeddedServer
from interapp.server.storage import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _setup(tmp: Path) -> tuple[str, str]:
    db = Database.open(f"sqlite:///{tmp}/a.db")
    async with db.begin() as conn:
        await accounts.create_user(conn, "alice", password_hash=passwords.hash_sync(Secret("pw")))
        cid, secret = await accounts.create_client(conn, "c", public=False)
    await db.close()
    assert secret is not None
    return cid, secret.reveal()


async def test_same_key_same_pair_then_chain_continues(tmp_path: Path) -> None:
    cid, secret = await _setup(tmp_path)
    async with EmbeddedServer("a", f"sqlite:///{tmp_path}/a.db") as srv, \
            httpx.AsyncClient(base_url=srv.url, auth=(cid, secret)) as http:
        first = (await http.post("/oauth/token", data={
            "grant_type": "password", "username": "alice", "password": "pw"})).json()
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                "idempotency_key": "k" * 20}
        a = await http.post("/oauth/token", data=form)
        b = await http.post("/oauth/token", data=form)  # the client crashed and retries
        assert a.status_code == b.status_code == 200
        assert a.json()["refresh_token"] == b.json()["refresh_token"]
        assert a.json()["access_token"] == b.json()["access_token"]
        me = await http.get("/v1/me", headers={
            "Authorization": f"Bearer {b.json()['access_token']}"}, auth=None)
        assert me.json()["username"] == "alice"
        nxt = await http.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": b.json()["refresh_token"]})
        assert nxt.status_code == 200
        # once the successor was used, the old retry is plain re-use: the family is revoked
        again = await http.post("/oauth/token", data=form)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        dead = await http.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": nxt.json()["refresh_token"]})
        assert dead.status_code == 400


async def test_a_different_key_is_reuse(tmp_path: Path) -> None:
    cid, secret = await _setup(tmp_path)
    async with EmbeddedServer("a", f"sqlite:///{tmp_path}/a.db") as srv, \
            httpx.AsyncClient(base_url=srv.url, auth=(cid, secret)) as http:
        first = (await http.post("/oauth/token", data={
            "grant_type": "password", "username": "alice", "password": "pw"})).json()
        rt = first["refresh_token"]
        short = await http.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": rt, "idempotency_key": "x"})
        assert short.status_code == 400 and short.json()["error"] == "invalid_request"
        ok = await http.post("/oauth/token", data={"grant_type": "refresh_token",
                                                   "refresh_token": rt,
                                                   "idempotency_key": "key-one-123"})
        assert ok.status_code == 200
        bad = await http.post("/oauth/token", data={"grant_type": "refresh_token",
                                                    "refresh_token": rt,
                                                    "idempotency_key": "key-two-456"})
        assert bad.json()["error"] == "invalid_grant"
        gone = await http.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": ok.json()["refresh_token"]})
        assert gone.json()["error"] == "invalid_grant"
