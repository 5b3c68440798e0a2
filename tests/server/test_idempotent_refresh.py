"""Rotation with an idempotency key: the same retry gets the same pair; anything else is re-use."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from server_kit import RunningServer, app_name, make_client, make_user, password_login

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


def test_the_idempotent_replay_ends_after_a_short_window(tmp_path: Path) -> None:
    """An old refresh token with its idempotency key gets the same pair back only within
    ``refresh_replay_seconds`` of the rotation (a crash-and-retry is quick); later the same
    request is re-use: the family is revoked, so a stolen (token, key) pair is worth minutes,
    not the 30-day refresh lifetime."""
    window = 2
    with RunningServer(app_name("replay"), f"sqlite:///{tmp_path / 'r.db'}",
                       refresh_replay_seconds=window) as srv, srv.client() as http:
        client = make_client(srv.db_url)
        user = make_user(srv.db_url)
        first = password_login(http, client, user.username)
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                "idempotency_key": "crash-safe-key-1"}
        rotated = http.post("/oauth/token", auth=client.basic(), data=form)
        assert rotated.status_code == 200, rotated.text
        replay = http.post("/oauth/token", auth=client.basic(), data=form)  # within the window
        assert replay.status_code == 200 and replay.json() == rotated.json()
        time.sleep(window + 1.0)
        late = http.post("/oauth/token", auth=client.basic(), data=form)
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant", late.text
        assert "family" in late.json()["error_description"]
        # treated as re-use: the successor (never used) is revoked with its family
        successor = rotated.json()
        assert http.get("/v1/me", headers={
            "Authorization": f"Bearer {successor['access_token']}"}).status_code == 401
        dead = http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "refresh_token", "refresh_token": successor["refresh_token"]})
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"


def test_the_replay_window_defaults_to_minutes() -> None:
    from interapp.server.settings import ServerSettings

    default = ServerSettings(app="w", db_url="sqlite:///x", issuer="http://127.0.0.1:1")
    assert 60 <= default.refresh_replay_seconds <= 600
